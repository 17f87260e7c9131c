"""What pagerd and its sender processes say to each other: length-prefixed msgpack frames.

One stream socket (a ``socketpair``) joins the daemon to each sender process. Every
frame is a 4-byte big-endian length, then that many bytes of one msgpack message.
The daemon sends ``Settings`` once, then a ``Send`` per attempt; the process answers
``Ready`` once its senders are built, then a ``Result`` per ``Send`` (by its id, in
whatever order the attempts end). A frame past ``MAX_FRAME_BYTES`` or one that does not
decode is a broken peer: the link is closed, never resynchronised.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import msgspec

from pagerd.core.ports import Attempt, Page, Verdict

HEADER = struct.Struct("!I")
# A page is an alert's message and a few names: far below this. Bigger is a broken peer.
MAX_FRAME_BYTES = 4 * 1024 * 1024


class EmailSettings(msgspec.Struct, frozen=True):
    """``[notify.email]`` as a sender process needs it (``SmtpSettings``)."""

    host: str
    port: int
    sender: str
    starttls: bool
    username: str
    timeout_s: float


class Settings(msgspec.Struct, frozen=True, tag="settings", array_like=True):
    """How a sender process sends: the daemon's ``[notify]`` and ``[log]``."""

    sms_url: str
    sms_timeout_s: float
    webhook_timeout_s: float
    allow_hosts: tuple[str, ...]
    email: EmailSettings
    email_password: str | None
    log_format: str
    log_level: str


class Send(msgspec.Struct, frozen=True, tag="send", array_like=True):
    """Make one attempt at ``page`` (its channel is ``page.row.channel``)."""

    id: int
    page: Page


class Ready(msgspec.Struct, frozen=True, tag="ready", array_like=True):
    """The process has built its senders and takes ``Send``."""

    pid: int


class Result(msgspec.Struct, frozen=True, tag="result", array_like=True):
    """How the attempt of ``Send`` ``id`` went; ``refused``: webhook addresses the egress
    rule refused since the last ``Result`` (counted in the daemon's metrics)."""

    id: int
    verdict: str
    detail: str
    retry_after_s: float | None = None
    refused: int = 0

    @classmethod
    def of(cls, request_id: int, attempt: Attempt, refused: int = 0) -> Result:
        verdict = attempt.verdict.value
        return cls(request_id, verdict, attempt.detail, attempt.retry_after_s, refused)

    def attempt(self) -> Attempt:
        return Attempt(Verdict(self.verdict), self.detail, self.retry_after_s)


ToWorker = Settings | Send
FromWorker = Ready | Result
M = TypeVar("M")


class FrameError(ValueError):
    """The peer sent what is not a frame of the protocol (after ``decoded``, whole ones)."""

    def __init__(self, message: str, decoded: list[Any] | None = None) -> None:
        super().__init__(message)
        self.decoded = decoded or []


_ENCODER = msgspec.msgpack.Encoder()


def frame(message: ToWorker | FromWorker) -> bytes:
    """One message as it goes on the wire, header included."""
    payload = _ENCODER.encode(message)
    if len(payload) > MAX_FRAME_BYTES:
        raise FrameError(f"a frame of {len(payload)} bytes is past {MAX_FRAME_BYTES}")
    return HEADER.pack(len(payload)) + payload


class FrameReader(Generic[M]):
    """Cuts a byte stream into messages; keeps a frame's start until its end comes.

    A broken frame ends the stream: ``broken`` says why, and nothing after it is read.
    """

    def __init__(self, kind: Any) -> None:
        self._decoder: msgspec.msgpack.Decoder[M] = msgspec.msgpack.Decoder(kind)
        self._buffer = bytearray()
        self.broken: FrameError | None = None

    def feed(self, data: bytes) -> list[M]:
        """The messages ``data`` completes, in order, up to a broken frame if any."""
        if self.broken is not None:
            return []
        try:
            return self._cut(data)
        except FrameError as error:
            self.broken = error
            return error.decoded  # whole frames of this reader, decoded as M

    def _cut(self, data: bytes) -> list[M]:
        buffer = self._buffer
        buffer += data
        messages: list[M] = []
        start = 0
        size = len(buffer)
        while size - start >= HEADER.size:
            (length,) = HEADER.unpack_from(buffer, start)
            if length > MAX_FRAME_BYTES:
                msg = f"a frame of {length} bytes is past {MAX_FRAME_BYTES}"
                raise FrameError(msg, messages)
            end = start + HEADER.size + length
            if end > size:
                break
            try:
                messages.append(self._decoder.decode(memoryview(buffer)[start + HEADER.size : end]))
            except msgspec.DecodeError as error:
                raise FrameError(f"a frame that does not decode: {error}", messages) from error
            start = end
        del buffer[:start]
        return messages


class Link(asyncio.Protocol, Generic[M]):
    """One end of the socket: frames out, coalesced per turn of the loop; messages in.

    ``on_message`` is called for each message in order; ``on_lost`` once, when the peer
    closed, died or broke the protocol (the reason, or None for a clean end of stream).
    """

    def __init__(
        self,
        kind: Any,
        on_message: Callable[[M], None],
        on_lost: Callable[[BaseException | None], None],
    ) -> None:
        self._reader: FrameReader[M] = FrameReader(kind)
        self._on_message = on_message
        self._on_lost = on_lost
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        for message in self._reader.feed(data):
            self._on_message(message)
        if self._reader.broken is not None:
            self._lose(self._reader.broken)

    def eof_received(self) -> bool:
        return False  # close our end too: a peer that stops sending is gone

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(exc)

    def send(self, message: ToWorker | FromWorker) -> None:
        """Queue ``message``; every frame queued in this turn of the loop goes in one write."""
        if self.closed:
            return
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(frame(message))

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self._transport is not None and not self.closed and out:
            self._transport.write(b"".join(out))

    def close(self) -> None:
        """Send what is queued, then close: the peer reads the end of the stream."""
        self._flush()
        if self._transport is not None:
            self._transport.close()

    def _lose(self, reason: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        if self._transport is not None:
            self._transport.abort()
        self._on_lost(reason)
