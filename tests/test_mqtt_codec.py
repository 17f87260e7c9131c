"""pagerd's MQTT 3.1.1 codec against the standard: packets as the spec lays them out, a
byte stream cut anywhere, malformed input refused with its reason, and an oversized
PUBLISH read past without being held."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pagerd.intake.mqtt_codec import (
    ConnAck,
    ControlPacket,
    Decoder,
    PingResp,
    ProtocolError,
    PubAck,
    SubAck,
    connect_packet,
    puback_packets,
    publish_packet,
    remaining_length,
    subscribe_packet,
)
from tests import mqtt_wire

CONNACK = b"\x20\x02\x00\x00"
PINGRESP = b"\xd0\x00"
Event = tuple[object, ...]


@dataclass
class Recorder:
    """A decoder and everything it handed on, in order."""

    max_payload: int = 65_536
    events: list[Event] = field(default_factory=list)
    pause_after: int | None = None  # pause the decoder once this many events came

    def __post_init__(self) -> None:
        self.decoder = Decoder(self.max_payload, self._publish, self._oversized, self._control)

    def _note(self, event: Event) -> None:
        self.events.append(event)
        if self.pause_after is not None and len(self.events) >= self.pause_after:
            self.decoder.paused = True

    def _publish(self, topic: str, payload: bytes, packet_id: int | None) -> None:
        self._note(("publish", topic, payload, packet_id))

    def _oversized(self, topic: str, size: int, packet_id: int | None) -> None:
        self._note(("oversized", topic, size, packet_id))

    def _control(self, packet: ControlPacket) -> None:
        self._note(("control", packet))

    def feed(self, stream: bytes, cuts: list[int] | None = None) -> list[Event]:
        at = 0
        for cut in sorted(cuts or []):
            self.decoder.feed(stream[at:cut])
            at = cut
        self.decoder.feed(stream[at:])
        return self.events


def connected() -> Recorder:
    recorder = Recorder()
    recorder.feed(CONNACK)
    recorder.events.clear()
    return recorder


# --- the remaining length (§2.2.3) ---------------------------------------------------------

# The standard's table 2.4: the first and last value of each number of bytes.
BOUNDARIES = [
    (0, b"\x00"),
    (127, b"\x7f"),
    (128, b"\x80\x01"),
    (16_383, b"\xff\x7f"),
    (16_384, b"\x80\x80\x01"),
    (2_097_151, b"\xff\xff\x7f"),
    (2_097_152, b"\x80\x80\x80\x01"),
    (268_435_455, b"\xff\xff\xff\x7f"),
]


@pytest.mark.parametrize(("length", "encoded"), BOUNDARIES)
def test_remaining_length_is_encoded_as_the_standard_tabulates(length: int, encoded: bytes) -> None:
    assert remaining_length(length) == encoded == mqtt_wire.varint(length)


@pytest.mark.parametrize("length", [-1, 268_435_456])
def test_a_remaining_length_mqtt_cannot_express_is_refused(length: int) -> None:
    with pytest.raises(ValueError, match="remaining length"):
        remaining_length(length)


@pytest.mark.parametrize(("length", "encoded"), BOUNDARIES[1:7])
def test_a_publish_whose_remaining_length_sits_on_a_boundary_is_decoded(
    length: int, encoded: bytes
) -> None:
    """A QoS 1 PUBLISH of exactly that remaining length (topic "t": 5 bytes before the payload)."""
    payload = bytes(range(256)) * (length // 256 + 1)
    payload = payload[: length - 5]
    packet = publish_packet("t", payload, qos=1, packet_id=9)
    assert packet[1 : 1 + len(encoded)] == encoded
    recorder = connected()
    recorder.decoder.max_payload = length
    # Fed in 1000-byte pieces: the length's own bytes are cut apart in some of them.
    cuts = list(range(1, len(packet), 1000))
    assert recorder.feed(packet, cuts) == [("publish", "t", payload, 9)]


def test_a_remaining_length_of_five_bytes_is_malformed() -> None:
    with pytest.raises(ProtocolError, match="remaining length over four bytes"):
        connected().feed(b"\x30\xff\xff\xff\xff\x01")


# --- a byte stream cut anywhere --------------------------------------------------------------

topics = st.text(st.characters(exclude_characters="\x00+#", codec="utf-8"), min_size=1, max_size=40)
publishes = st.builds(
    lambda topic, payload, qos, packet_id, retain, dup: (
        publish_packet(
            topic,
            payload,
            qos=qos,
            retain=retain,
            packet_id=packet_id if qos else None,
            dup=dup and qos == 1,
        ),
        ("publish", topic, payload, packet_id if qos else None),
    ),
    topics,
    st.binary(max_size=3_000),
    st.sampled_from([0, 1]),
    st.integers(1, 0xFFFF),
    st.booleans(),
    st.booleans(),
)
controls = st.one_of(
    st.integers(1, 0xFFFF).map(lambda i: (b"\x40\x02" + i.to_bytes(2, "big"), PubAck(i))),
    st.just((PINGRESP, PingResp())),
    st.tuples(st.integers(1, 0xFFFF), st.lists(st.sampled_from([0, 1, 2, 0x80]), min_size=1)).map(
        lambda t: (
            b"\x90" + remaining_length(2 + len(t[1])) + t[0].to_bytes(2, "big") + bytes(t[1]),
            SubAck(t[0], tuple(t[1])),
        )
    ),
)
packets = st.lists(st.one_of(publishes, controls), max_size=25)


def _expected(drawn: list[tuple[bytes, object]], max_payload: int) -> list[Event]:
    out: list[Event] = [("control", ConnAck(session_present=True, return_code=0))]
    for _, meaning in drawn:
        if isinstance(meaning, tuple):
            _, topic, payload, packet_id = meaning
            assert isinstance(payload, bytes)
            if len(payload) > max_payload:
                out.append(("oversized", topic, len(payload), packet_id))
            else:
                out.append(meaning)
        else:
            out.append(("control", meaning))
    return out


@settings(max_examples=300, deadline=None)
@given(packets, st.data())
def test_a_stream_cut_anywhere_gives_every_packet_once_and_in_order(
    drawn: list[tuple[bytes, object]], data: st.DataObject
) -> None:
    stream = b"\x20\x02\x01\x00" + b"".join(packet for packet, _ in drawn)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=40), label="cuts")
    max_payload = data.draw(st.sampled_from([65_536, 1_000, 0]), label="max payload")
    recorder = Recorder(max_payload)

    events = recorder.feed(stream, cuts)

    assert events == _expected(drawn, max_payload)
    assert recorder.decoder.buffered == 0


@settings(max_examples=200, deadline=None)
@given(topics, st.binary(max_size=20_000), st.sampled_from([0, 1]), st.integers(1, 0xFFFF))
def test_a_publish_is_encoded_as_an_independent_encoder_does(
    topic: str, payload: bytes, qos: int, packet_id: int
) -> None:
    ours = publish_packet(topic, payload, qos=qos, packet_id=packet_id if qos else None)
    assert ours == mqtt_wire.publish_packet(topic, payload, packet_id, qos=qos)


@settings(max_examples=100, deadline=None)
@given(packets, st.integers(1, 50), st.data())
def test_a_paused_decoder_hands_on_nothing_more_until_fed_again(
    drawn: list[tuple[bytes, object]], pause_after: int, data: st.DataObject
) -> None:
    stream = b"\x20\x02\x01\x00" + b"".join(packet for packet, _ in drawn)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10), label="cuts")
    expected = _expected(drawn, 65_536)
    recorder = Recorder(pause_after=pause_after)

    recorder.feed(stream, cuts)

    assert recorder.events == expected[:pause_after]
    recorder.pause_after = None
    recorder.decoder.paused = False
    recorder.decoder.feed(b"")
    assert recorder.events == expected


# --- encoding what a client sends ------------------------------------------------------------


def test_connect_is_laid_out_as_the_standard_shows() -> None:
    """§3.1: protocol name, level 4, flags, keepalive, then id, will, user name, password."""
    packet = connect_packet(
        "pagerd",
        clean_session=False,
        keepalive_s=15,
        will=("pagerd/status", b"offline", 1, True),
        username="u",
        password="p",
    )
    body = (
        b"\x00\x04MQTT\x04"
        + bytes([0x80 | 0x40 | 0x20 | 0x08 | 0x04])  # user, password, will retain, QoS 1, will
        + b"\x00\x0f"
        + b"\x00\x06pagerd"
        + b"\x00\x0dpagerd/status"
        + b"\x00\x07offline"
        + b"\x00\x01u"
        + b"\x00\x01p"
    )
    assert packet == b"\x10" + bytes([len(body)]) + body
    assert connect_packet("x", clean_session=True, keepalive_s=0) == (
        b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x00\x00\x01x"
    )


def test_subscribe_and_puback_are_laid_out_as_the_standard_shows() -> None:
    assert subscribe_packet(10, [("a/+", 1), ("b/#", 0)]) == (
        b"\x82\x0e\x00\x0a\x00\x03a/+\x01\x00\x03b/#\x00"
    )
    assert (
        puback_packets([1, 0x1234, 0xFFFF]) == b"\x40\x02\x00\x01\x40\x02\x12\x34\x40\x02\xff\xff"
    )


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: publish_packet("", b""), "must not be empty"),
        (lambda: publish_packet("a/+", b""), "wildcards"),
        (lambda: publish_packet("a/#", b""), "wildcards"),
        (lambda: publish_packet("a\x00b", b""), "U\\+0000"),
        (lambda: publish_packet("a", b"", qos=1), "needs a packet id"),
        (lambda: publish_packet("a", b"", qos=1, packet_id=0), "1..65535"),
        (lambda: publish_packet("a", b"", packet_id=3), "QoS 0 PUBLISH has no packet id"),
        (lambda: publish_packet("a", b"", qos=2, packet_id=3), "QoS 0 or 1"),
        (lambda: publish_packet("t" * 65_536, b""), "over MQTT's 65535"),
        (lambda: subscribe_packet(1, []), "at least one topic filter"),
        (lambda: subscribe_packet(1, [("a/b#", 1)]), "# must be the whole last level"),
        (lambda: subscribe_packet(1, [("a/#/b", 1)]), "# must be the whole last level"),
        (lambda: subscribe_packet(1, [("a+/b", 1)]), "\\+ must be a whole level"),
        (lambda: subscribe_packet(1, [("a", 3)]), "QoS"),
        (lambda: connect_packet("", clean_session=False, keepalive_s=1), "clean session"),
        (lambda: connect_packet("x", clean_session=True, keepalive_s=1, password="p"), "user"),
        (lambda: connect_packet("x", clean_session=True, keepalive_s=70_000), "keepalive"),
    ],
)
def test_what_mqtt_cannot_carry_is_refused_before_it_is_sent(make: object, says: str) -> None:
    assert callable(make)
    with pytest.raises(ValueError, match=says):
        make()


# --- malformed input from a broker -----------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "says"),
    [
        (b"\x30\x06\x00\x02\xff\xfe\x00\x07", "topic is not UTF-8"),
        (b"\x30\x02\x00\x00", "topic name ''"),
        (b"\x30\x05\x00\x03a/+", "topic name 'a/\\+'"),
        (b"\x30\x05\x00\x03a\x00b", "topic name"),
        (b"\x32\x05\x00\x09a\x00\x07", "its topic runs past the packet"),
        (b"\x32\x03\x00\x01a", "its topic runs past the packet"),
        (b"\x30\x01\x00", "no room for its topic"),
        (b"\x32\x05\x00\x01a\x00\x00", "packet id 0"),
        (b"\x34\x05\x00\x01a\x00\x07", "QoS 2 PUBLISH"),
        (b"\x36\x05\x00\x01a\x00\x07", "QoS 3"),
        (b"\x38\x03\x00\x01a", "DUP set at QoS 0"),
        (b"\x20\x02\x00\x00", "a second CONNACK"),
        (b"\x40\x03\x00\x01\x00", "malformed PUBACK: remaining length 3"),
        (b"\x40\x02\x00\x00", "malformed PUBACK: packet id 0"),
        (b"\x41\x02\x00\x01", "reserved flags"),
        (b"\x90\x02\x00\x01", "malformed SUBACK: remaining length 2"),
        (b"\x90\x03\x00\x01\x03", "malformed SUBACK: return code 0x3"),
        (b"\x90\xff\xff\x03", "malformed SUBACK: remaining length"),
        (b"\xd0\x01\x00", "malformed PINGRESP"),
        (b"\x50\x02\x00\x01", "unexpected PUBREC"),
        (b"\x62\x02\x00\x01", "unexpected PUBREL"),
        (b"\xb0\x02\x00\x01", "unexpected UNSUBACK"),
        (b"\xc0\x00", "unexpected PINGREQ"),
        (b"\x10\x00", "unexpected CONNECT"),
        (b"\xe0\x00", "unexpected DISCONNECT"),
        (b"\x00\x00", "unexpected reserved type 0"),
        (b"\xf0\x00", "unexpected reserved type 15"),
    ],
)
def test_a_malformed_packet_is_refused_with_its_reason(stream: bytes, says: str) -> None:
    recorder = connected()
    good = publish_packet("a/b", b"before", qos=1, packet_id=1)
    with pytest.raises(ProtocolError, match=says):
        recorder.feed(good + stream + good)
    assert recorder.events == [("publish", "a/b", b"before", 1)], "what came before, only"


def test_a_huge_declared_length_of_a_control_packet_is_refused_before_it_is_read() -> None:
    """A SUBACK claiming 2 MB is refused from its fixed header: nothing waits for the rest."""
    with pytest.raises(ProtocolError, match="SUBACK"):
        connected().feed(b"\x90\x80\x80\x80\x01\x00")


@pytest.mark.parametrize(
    ("stream", "says"),
    [
        (PINGRESP, "PINGRESP before CONNACK"),
        (publish_packet("a", b"x"), "PUBLISH before CONNACK"),
        (b"\x20\x02\x02\x00", "malformed CONNACK: reserved flags"),
        (b"\x20\x02\x00\x06", "unknown return code 6"),
        (b"\x20\x03\x00\x00\x00", "malformed CONNACK: remaining length 3"),
    ],
)
def test_the_first_packet_must_be_a_well_formed_connack(stream: bytes, says: str) -> None:
    with pytest.raises(ProtocolError, match=says):
        Recorder().feed(stream)


@pytest.mark.parametrize("code", [0, 1, 2, 3, 4, 5])
def test_each_connack_return_code_is_handed_on(code: int) -> None:
    assert Recorder().feed(b"\x20\x02\x01" + bytes([code])) == [
        ("control", ConnAck(session_present=True, return_code=code))
    ]


# --- the size limit --------------------------------------------------------------------------


def test_an_oversized_publish_is_dropped_as_it_arrives_and_reported_after_its_last_byte() -> None:
    """50 MB through a decoder limited to 64 KiB, 64 KiB at a time: at no point does it keep
    more than a few bytes of it, and the message after it is handed on after it."""
    recorder = connected()
    limit = 65_536
    before = publish_packet("pagerd/alert/a", b"first", qos=1, packet_id=1)
    header = publish_packet("pagerd/alert/huge", b"", qos=1, packet_id=2)
    size = 50_000_000
    # The same fixed header as a 50 MB payload's, written by hand to keep the test small.
    huge_head = b"\x32" + remaining_length(len(header) - 2 + size) + header[2:]
    after = publish_packet("pagerd/alert/b", b"last", qos=0)
    chunk = b"z" * 65_536

    recorder.decoder.feed(before + huge_head[:3])
    recorder.decoder.feed(huge_head[3:] + chunk[:1000])
    sent = 1000
    while sent + len(chunk) < size:
        recorder.decoder.feed(chunk)
        sent += len(chunk)
        assert recorder.events == [("publish", "pagerd/alert/a", b"first", 1)], "not before"
    recorder.decoder.feed(b"z" * (size - sent) + after)

    assert recorder.events == [
        ("publish", "pagerd/alert/a", b"first", 1),
        ("oversized", "pagerd/alert/huge", size, 2),
        ("publish", "pagerd/alert/b", b"last", None),
    ]
    assert recorder.decoder.largest_buffer < 100, "only the head of the huge packet was kept"
    assert limit < size


def test_a_payload_of_exactly_the_limit_is_a_message_and_one_byte_more_is_not() -> None:
    recorder = connected()
    recorder.decoder.max_payload = 100
    recorder.feed(
        publish_packet("t", b"a" * 100, qos=1, packet_id=1)
        + publish_packet("t", b"b" * 101, qos=1, packet_id=2)
    )
    assert recorder.events == [("publish", "t", b"a" * 100, 1), ("oversized", "t", 101, 2)]


def test_an_oversized_publish_ending_with_a_read_is_reported_without_waiting_for_more() -> None:
    recorder = connected()
    recorder.decoder.max_payload = 10
    packet = publish_packet("t", b"x" * 1000, qos=1, packet_id=5)
    recorder.feed(packet, [20])
    assert recorder.events == [("oversized", "t", 1000, 5)]


def test_an_oversized_publish_finished_while_paused_is_reported_on_resuming() -> None:
    recorder = connected()
    recorder.decoder.max_payload = 10
    packet = publish_packet("t", b"x" * 1000, qos=1, packet_id=5)
    recorder.decoder.feed(packet[:20])
    recorder.decoder.paused = True
    recorder.decoder.feed(packet[20:] + PINGRESP)
    assert recorder.events == []
    recorder.decoder.paused = False
    recorder.decoder.feed(b"")
    assert recorder.events == [("oversized", "t", 1000, 5), ("control", PingResp())]
