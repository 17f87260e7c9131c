"""The frames between pagerd and its sender processes: what goes in comes out, however cut."""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pagerd.core.ports import Attempt, Page, Verdict
from pagerd.core.records import OutboxRow
from pagerd.notify.ipc import (
    HEADER,
    MAX_FRAME_BYTES,
    EmailSettings,
    FrameError,
    FrameReader,
    FromWorker,
    Link,
    Ready,
    Result,
    Send,
    Settings,
    ToWorker,
    frame,
)
from tests.doubles import T0
from tests.harness import eventually

SETTINGS = Settings(
    sms_url="http://127.0.0.1:9/sms",
    sms_timeout_s=5.0,
    webhook_timeout_s=5.0,
    allow_hosts=("127.0.0.1",),
    email=EmailSettings("localhost", 25, "pagerd@localhost", False, "", 10.0),
    email_password=None,
    log_format="json",
    log_level="info",
)


def a_page(index: int = 0, message: str = "Too many 5xx!") -> Page:
    row = OutboxRow(
        id=f"inc-{index}-0-sms",
        incident_id=f"inc-{index}",
        service_id="payments-api",
        channel="sms",
        recipient="+15550000001",
        level=1,
        step=0,
        message=message,
        created_at=T0 + timedelta(microseconds=index),
        attempts=2,
        next_attempt_at=T0 + timedelta(seconds=3),
        last_error="HTTP 503",
    )
    return Page(row, "Payments API", f"pagerd: {message}", f"[pagerd] {message}", "https://a/ack")


def test_every_message_comes_out_as_it_went_in() -> None:
    to_worker: FrameReader[ToWorker] = FrameReader(ToWorker)
    from_worker: FrameReader[FromWorker] = FrameReader(FromWorker)
    sent: list[ToWorker] = [SETTINGS, Send(7, a_page())]
    answered: list[FromWorker] = [
        Ready(1234),
        Result.of(7, Attempt(Verdict.RETRY, "HTTP 429", 2.0)),
    ]
    assert to_worker.feed(b"".join(frame(m) for m in sent)) == sent
    assert from_worker.feed(b"".join(frame(m) for m in answered)) == answered


def test_an_attempt_survives_the_trip_with_its_page_whole() -> None:
    """The page that comes out is the page that went in: the same id, so the same key."""
    (received,) = FrameReader[ToWorker](ToWorker).feed(frame(Send(1, a_page(3))))
    assert isinstance(received, Send)
    assert received.page == a_page(3)
    assert received.page.row.created_at == a_page(3).row.created_at  # to the microsecond
    result = Result.of(1, Attempt(Verdict.LOCAL, "EMFILE: pagerd is out of file descriptors"), 2)
    (back,) = FrameReader[FromWorker](FromWorker).feed(frame(result))
    assert isinstance(back, Result)
    assert back.attempt() == Attempt(Verdict.LOCAL, "EMFILE: pagerd is out of file descriptors")
    assert back.refused == 2


@given(
    messages=st.lists(st.text(max_size=300), min_size=1, max_size=12),
    cuts=st.lists(st.integers(min_value=1, max_value=64), max_size=40),
)
def test_frames_cut_anywhere_come_out_whole_and_in_order(
    messages: list[str], cuts: list[int]
) -> None:
    sent = [Send(i, a_page(i, message)) for i, message in enumerate(messages)]
    stream = b"".join(frame(m) for m in sent)
    reader: FrameReader[ToWorker] = FrameReader(ToWorker)
    received: list[ToWorker] = []
    position = 0
    for cut in cuts:
        received += reader.feed(stream[position : position + cut])
        position += cut
    received += reader.feed(stream[position:])
    assert received == sent


def test_a_frame_past_the_limit_is_refused_before_it_is_read() -> None:
    """What came before it is read; it, and whatever follows, is not."""
    reader: FrameReader[ToWorker] = FrameReader(ToWorker)
    assert reader.feed(frame(SETTINGS) + HEADER.pack(MAX_FRAME_BYTES + 1)) == [SETTINGS]
    assert reader.broken is not None
    assert "past" in str(reader.broken)
    assert reader.feed(frame(SETTINGS)) == []
    with pytest.raises(FrameError, match="past"):
        frame(Send(1, a_page(message="x" * (MAX_FRAME_BYTES + 1))))


def test_a_frame_that_does_not_decode_is_refused() -> None:
    for garbage in (HEADER.pack(3) + b"\x93\x01\x02", frame(SETTINGS)):  # the other way's
        reader: FrameReader[FromWorker] = FrameReader(FromWorker)
        assert reader.feed(frame(Ready(1)) + garbage) == [Ready(1)]
        assert reader.broken is not None
        assert "does not decode" in str(reader.broken)


async def test_a_link_delivers_every_frame_in_order() -> None:
    """Frames queued in one turn of the loop (one write) arrive whole and in order."""
    ours, theirs = socket.socketpair()
    got: list[FromWorker] = []
    lost: list[BaseException | None] = []
    loop = asyncio.get_running_loop()
    sender: Link[ToWorker] = Link(ToWorker, lambda m: None, lambda r: None)
    receiver: Link[FromWorker] = Link(FromWorker, got.append, lost.append)
    await loop.create_unix_connection(lambda: sender, sock=theirs)
    await loop.create_unix_connection(lambda: receiver, sock=ours)
    answers = [Result.of(i, Attempt(Verdict.SENT, "HTTP 200")) for i in range(500)]
    for answer in answers:
        sender.send(answer)
    await eventually(lambda: len(got) == len(answers), timeout=5, what="every frame")
    assert got == answers
    assert lost == []
    sender.close()


async def test_a_link_ends_when_the_peer_breaks_the_protocol() -> None:
    ours, theirs = socket.socketpair()
    lost: list[BaseException | None] = []
    got: list[FromWorker] = []
    link: Link[FromWorker] = Link(FromWorker, got.append, lost.append)
    await asyncio.get_running_loop().create_unix_connection(lambda: link, sock=ours)
    with theirs:
        theirs.sendall(frame(Ready(1)) + HEADER.pack(2) + b"\xc1\xc1")
        await eventually(lambda: lost != [], timeout=5, what="the link lost")
    assert got == [Ready(1)]
    assert isinstance(lost[0], FrameError)
    assert link.closed


async def test_a_link_closed_by_the_peer_is_lost_once_without_a_reason() -> None:
    ours, theirs = socket.socketpair()
    lost: list[BaseException | None] = []
    link: Link[FromWorker] = Link(FromWorker, lambda m: None, lost.append)
    await asyncio.get_running_loop().create_unix_connection(lambda: link, sock=ours)
    theirs.close()
    await eventually(lambda: lost != [], timeout=5, what="the link lost")
    link.send(Ready(1))  # after the end: dropped, not raised
    await asyncio.sleep(0)
    assert lost == [None]
