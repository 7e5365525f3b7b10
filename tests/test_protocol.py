"""The wire protocol's checks at their boundaries, found by the mutation pass: every limit holds exactly where
it is set, and a stream ends cleanly only between messages."""
import json
import struct

import pytest
from conftest import BytesStream

from plugin import protocol


def harmonize(W=4, H=3, rect=(0, 0, 4, 3), payload=None, **fields):
    header = {"op": "harmonize", "width": W, "height": H, "rect": list(rect), **fields}
    x, y, w, h = rect
    return header, payload if payload is not None else bytes(W * H * 3 + w * h * 4)


def refused(header, payload, match):
    with pytest.raises(protocol.ProtocolError, match=match):
        protocol.check_harmonize(header, payload)


def test_canvas_and_rect_limits_hold_exactly_where_they_are_set():
    assert protocol.check_harmonize(*harmonize(1, 1, (0, 0, 1, 1))) == (1, 1, (0, 0, 1, 1))
    assert protocol.check_harmonize(*harmonize(4, 3, (1, 1, 3, 2))) == (4, 3, (1, 1, 3, 2)), "touching both edges"
    for W, H in ((0, 3), (4, 0), (-1, 3), (4.0, 3), (True, 3)):
        refused(*harmonize(W, H, (0, 0, 1, 1), payload=b""), "bad canvas size")
    side = int(protocol.MAX_PIXELS ** 0.5)
    assert side * side == protocol.MAX_PIXELS
    refused(*harmonize(side, side, (0, 0, 1, 1), payload=b""), "payload is 0 bytes"), "the largest canvas is allowed"
    refused(*harmonize(side + 1, side, (0, 0, 1, 1), payload=b""), "bad canvas size")
    for rect in ((0, 0, 0, 3), (0, 0, 4, 0), (1, 0, 4, 3), (0, 1, 4, 3), (-1, 0, 2, 2), (0, -1, 2, 2),
                 (3, 0, 2, 1), (0, 2, 1, 2)):
        refused(*harmonize(4, 3, rect, payload=b""), "is not inside the 4x3 canvas")
    refused(*harmonize(rect=(0, 0, 4.0, 3), payload=b""), r"bad rect \[0, 0, 4.0, 3\]: expected \[x, y, w, h\]")


def test_strength_and_device_limits():
    for strength in (0, 0.0, 0.5, 1, 1.0):
        protocol.check_harmonize(*harmonize(strength=strength))
    for strength in (-0.01, 1.01, 1.5, 2, True, "1"):
        refused(*harmonize(strength=strength), "is not within 0..1")
    protocol.check_harmonize(*harmonize())  # no device: auto
    refused(*harmonize(device=None), "device None is not one of auto, cpu, gpu")


def message(header: dict, payload: bytes = b"") -> bytes:
    head = json.dumps(header).encode()
    return protocol.PREFIX.pack(protocol.MAGIC, protocol.VERSION, len(head)) + head + payload


def test_payload_sizes_and_the_header_limit():
    assert protocol.receive(BytesStream(message({"op": "ping"}))) == ({"op": "ping"}, b""), "no payload field: 0"
    for size in (True, -1, 1.5, "3", protocol.MAX_PAYLOAD + 1):
        with pytest.raises(protocol.ProtocolError, match="out of bounds"):
            protocol.receive(BytesStream(message({"payload": size}, b"xyz")))
    with pytest.raises(protocol.ProtocolError, match=r"out of bounds \(max 0\)"):
        protocol.receive(BytesStream(message({"payload": 1}, b"x")), max_payload=0)
    padded = b'{"op": "ping"' + b" " * (protocol.MAX_HEADER - 14) + b"}"
    assert len(padded) == protocol.MAX_HEADER
    raw = protocol.PREFIX.pack(protocol.MAGIC, protocol.VERSION, len(padded)) + padded
    assert protocol.receive(BytesStream(raw))[0] == {"op": "ping"}, "a header of exactly the limit is read"
    with pytest.raises(protocol.ProtocolError, match="exceeds"):
        protocol.receive(BytesStream(protocol.PREFIX.pack(protocol.MAGIC, protocol.VERSION, protocol.MAX_HEADER + 1)))
    with pytest.raises(protocol.ProtocolError, match="header is not a JSON object"):
        protocol.receive(BytesStream(message([1, 2])))


def test_messages_back_to_back_are_read_one_at_a_time():
    big = bytes(range(256)) * (protocol.CHUNK // 256 + 3)  # more than one read's chunk
    stream = BytesStream(message({"n": 1, "payload": len(big)}, big) + message({"n": 2, "payload": 3}, b"abc"))
    assert protocol.receive(stream) == ({"n": 1, "payload": len(big)}, big)
    assert protocol.receive(stream) == ({"n": 2, "payload": 3}, b"abc")
    with pytest.raises(protocol.Closed):
        protocol.receive(stream)


def test_a_stream_ends_cleanly_only_between_messages():
    with pytest.raises(protocol.Closed, match="connection closed"):
        protocol.receive(BytesStream(b""))
    whole = message({"op": "ping"})
    for cut in (3, protocol.PREFIX.size + 2):
        with pytest.raises(protocol.ProtocolError, match="connection closed after") as stopped:
            protocol.receive(BytesStream(whole[:cut]))
        assert not isinstance(stopped.value, protocol.Closed), "a message broken off is not a clean end"
    with pytest.raises(protocol.ProtocolError, match="bad magic"):
        protocol.receive(BytesStream(b"XXXX" + whole[4:]))
    head = struct.pack(">4sBI", protocol.MAGIC, 7, 2) + b"{}"
    with pytest.raises(protocol.ProtocolError, match="version 7 is not supported"):
        protocol.receive(BytesStream(head))


def test_harmonize_request_lays_out_canvas_rgb_and_mask_in_order():
    data = protocol.harmonize_request(2, 1, (1, 0, 1, 1), b"CCCCCC", b"rgb", b"m", 0.5, "cpu")
    header, payload = protocol.receive(BytesStream(data))
    assert header == {"op": "harmonize", "width": 2, "height": 1, "rect": [1, 0, 1, 1], "strength": 0.5,
                      "device": "cpu", "payload": 10}
    assert payload == b"CCCCCCrgbm"


def test_the_key_check_is_an_hmac_of_the_nonce():
    import hashlib
    import hmac

    key = b"k" * 64
    assert protocol._mac(key, "abc") == hmac.new(key, b"abc", hashlib.sha256).hexdigest()
    assert protocol._mac(key, "abc") != protocol._mac(key, "abd"), "a MAC that ignored the nonce could be replayed"


class Peer:
    """One side of a conversation, as bytes: what it is sent is kept, what it says is read from `script`."""

    def __init__(self, script: bytes):
        self.stream, self.sent = BytesStream(script), b""

    def recv_into(self, view, n):
        return self.stream.recv_into(view, n)

    def sendall(self, data):
        self.sent += data


def test_the_client_answers_only_a_real_challenge():
    key = b"k" * 64
    good = Peer(message({"op": "challenge", "nonce": "n1"}) + message({"ok": True}))
    assert protocol.answer(good, key) == {"ok": True}
    assert json.loads(good.sent[protocol.PREFIX.size:])["mac"] == protocol._mac(key, "n1")
    busy = Peer(message({"ok": False, "error": "the engine is busy"}))
    assert protocol.answer(busy, key)["error"] == "the engine is busy" and busy.sent == b""
    for first in ({"op": "hello", "nonce": "n"}, {"op": "challenge", "nonce": 5}, {"op": "challenge"}):
        odd = Peer(message(first))
        assert protocol.answer(odd, key) == {"ok": False, "error": "the server sent no key challenge"}, first
        assert odd.sent == b"", "nothing of the key's proof goes to a server that did not ask"
    with pytest.raises(protocol.ProtocolError, match=r"out of bounds \(max 0\)"):
        protocol.answer(Peer(message({"op": "challenge", "nonce": "n", "payload": 1}, b"x")), key)
    with pytest.raises(protocol.ProtocolError, match=r"out of bounds \(max 0\)"):
        protocol.answer(Peer(message({"op": "challenge", "nonce": "n"}) + message({"ok": True, "payload": 1}, b"x")),
                        key)


class Answering(Peer):
    """A client that answers the server's challenge with the right MAC and `extra` bytes of payload."""

    def __init__(self, key: bytes, extra: bytes):
        super().__init__(b"")
        self.key, self.extra, self.said = key, extra, []

    def sendall(self, data):
        self.said.append(json.loads(data[protocol.PREFIX.size:]))
        if len(self.said) == 1:
            reply = {"op": "auth", "mac": protocol._mac(self.key, self.said[0]["nonce"]), "payload": len(self.extra)}
            self.stream = BytesStream(message(reply, self.extra))


def test_the_server_takes_no_payload_before_the_key_check():
    key = b"k" * 64
    for extra in (b"", b"x"):  # the right MAC, with and without a payload behind it
        client = Answering(key, extra)
        assert protocol.challenge(client, key) is (extra == b"")
        assert client.said[-1]["ok"] is (extra == b""), client.said[-1]
