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


def decoded(header, payload):
    request = protocol.Request.decode(header, payload)
    return request.width, request.height, request.rect


def refused(header, payload, match):
    with pytest.raises(protocol.ProtocolError, match=match):
        protocol.Request.decode(header, payload)


def test_canvas_and_rect_limits_hold_exactly_where_they_are_set():
    assert decoded(*harmonize(1, 1, (0, 0, 1, 1))) == (1, 1, (0, 0, 1, 1))
    assert decoded(*harmonize(4, 3, (1, 1, 3, 2))) == (4, 3, (1, 1, 3, 2)), "touching both edges"
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
        protocol.Request.decode(*harmonize(strength=strength))
    for strength in (-0.01, 1.01, 1.5, 2, True, "1"):
        refused(*harmonize(strength=strength), "is not within 0..1")
    assert protocol.Request.decode(*harmonize()).device == "auto"
    refused(*harmonize(device=None), "device None is not one of auto, cpu, gpu")


def test_pixel_formats_and_their_sizes():
    for fmt, size in protocol.FORMATS.items():
        W, H, w, h = 4, 3, 2, 2
        payload = bytes(W * H * 3 + w * h * 3 * size + w * h)
        request = protocol.Request.decode(*harmonize(W, H, (0, 0, w, h), payload, format=fmt, linear=True))
        assert (request.format, request.linear, request.result_size()) == (fmt, True, w * h * 3 * size)
        assert len(request.rgb) == w * h * 3 * size and len(request.mask) == w * h and len(request.background) == 36
        refused(*harmonize(W, H, (0, 0, w, h), payload[:-1], format=fmt), f"expected {len(payload)} .* {fmt} layer")
    refused(*harmonize(format="u12"), "format 'u12' is not one of u8, u16, u32, float")
    refused(*harmonize(linear=1), "linear 1 is not true or false")


def message(header: dict, payload: bytes = b"") -> bytes:
    head = json.dumps(header).encode()
    return protocol.PREFIX.pack(protocol.MAGIC, protocol.VERSION, len(head)) + head + payload


def test_payload_sizes_and_the_header_limit():
    assert protocol.receive(BytesStream(message({"op": "ping"}))) == ({"op": "ping"}, b""), "no payload field: 0"
    for size in (True, -1, 1.5, "3", protocol.MAX_PAYLOAD + 1):
        with pytest.raises(protocol.ProtocolError, match="out of bounds"):
            protocol.receive(BytesStream(message({"payload": size}, b"xyz")))
    with pytest.raises(protocol.ProtocolError, match=r"out of bounds \(max 0 bytes\)"):
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


def test_a_request_is_one_type_from_the_dialog_to_the_engine_and_back():
    request = protocol.Request(2, 1, (1, 0, 1, 1), b"CCCCCC", b"rgb", b"m", 0.5, "cpu")
    header, payload = protocol.receive(BytesStream(request.encode()))
    assert header == {"op": "harmonize", "width": 2, "height": 1, "rect": [1, 0, 1, 1], "strength": 0.5,
                      "device": "cpu", "format": "u8", "linear": False, "payload": 10}
    assert payload == b"CCCCCCrgbm"
    assert protocol.Request.decode(header, payload) == request
    wide = protocol.Request(2, 1, (1, 0, 1, 1), b"CCCCCC", bytes(12), b"m", format="float", linear=True)
    assert protocol.Request.decode(*protocol.receive(BytesStream(wide.encode()))) == wide
    result = protocol.Result(bytes(12), "onnxruntime", "cpu")
    header, payload = protocol.receive(BytesStream(result.encode()))
    assert protocol.Result.decode(header, payload, wide) == result
    with pytest.raises(protocol.ProtocolError, match="returned 3 bytes for a 1x1 float layer"):
        protocol.Result.decode(header, payload[:3], wide)


def test_a_header_nested_too_deep_is_refused_without_recursing():
    """32,000 brackets made json recurse until RecursionError, which nothing caught."""
    over = protocol.MAX_DEPTH + 1
    for brackets in (b"[" * 32_000, b'{"a":' * 10_000, b"[" * over + b"]" * over):
        raw = protocol.PREFIX.pack(protocol.MAGIC, protocol.VERSION, len(brackets)) + brackets
        with pytest.raises(protocol.ProtocolError, match=f"nests deeper than {protocol.MAX_DEPTH} levels"):
            protocol.receive(BytesStream(raw))
    deep = {"op": "ping", "x": [[[["a]]]]{{{"]]]], "y": '\\"' + "[" * 40}  # brackets in strings do not count
    assert protocol.receive(BytesStream(message(deep)))[0] == deep
    nested: list = []
    for _ in range(protocol.MAX_DEPTH - 2):
        nested = [nested]
    assert protocol._nesting(json.dumps({"a": nested}).encode()) == protocol.MAX_DEPTH
    protocol.receive(BytesStream(message({"a": nested})))  # exactly the limit is read


class Trickle(BytesStream):
    """A peer that sends one byte per read, `pause` seconds apart, and takes timeouts as a socket does."""

    def __init__(self, data: bytes, pause: float):
        super().__init__(data)
        self.pause, self.timeout = pause, None

    def settimeout(self, seconds):
        self.timeout = seconds

    def recv_into(self, view, n):
        import time

        if self.timeout is not None and self.timeout < self.pause:
            time.sleep(self.timeout)
            raise TimeoutError("timed out")
        time.sleep(self.pause)
        return super().recv_into(view, 1)


def test_a_message_must_arrive_whole_within_its_deadline_however_it_trickles():
    import time

    data = message({"op": "ping", "pad": "x" * 40})
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        protocol.receive(Trickle(data, 0.05), timeout=0.5)  # every byte within 0.05 s, the whole not within 0.5
    assert time.monotonic() - start < 1.0
    assert protocol.receive(Trickle(data, 0.001), timeout=5)[0]["op"] == "ping"


def test_the_canvas_limit_is_named():
    side = int(protocol.MAX_PIXELS ** 0.5)
    protocol.check_canvas(side, side)
    with pytest.raises(protocol.ProtocolError, match="10001x10000: 100.01 megapixels, where the engine takes at "
                                                     "most 100 megapixels"):
        protocol.check_canvas(10_001, 10_000)
    with pytest.raises(protocol.ProtocolError, match="12000x12000: 144.00 megapixels"):  # before any bytes are copied
        protocol.Request(12_000, 12_000, (0, 0, 1, 1), b"", b"", b"").encode()
    most = protocol.MAX_PIXELS * (3 + 3 * max(protocol.FORMATS.values()) + 1)
    assert protocol.MAX_PAYLOAD >= most, "the largest request allowed must fit"


KEY = b"k" * 64


def test_each_proof_is_an_hmac_of_both_nonces_named_for_its_side():
    import hashlib
    import hmac

    assert protocol._mac(KEY, "client", "s", "c") == hmac.new(KEY, b"client\ns\nc", hashlib.sha256).hexdigest()
    proofs = {protocol._mac(KEY, role, s, c) for role in ("client", "server") for s, c in (("s", "c"), ("s", "d"),
                                                                                            ("t", "c"))}
    assert len(proofs) == 6, "a proof that ignored a nonce or the side could be replayed or reflected"


class Peer:
    """One side of a conversation, as bytes: what it is sent is kept, what it says is read from `script`."""

    def __init__(self, script: bytes):
        self.stream, self.sent = BytesStream(script), b""

    def recv_into(self, view, n):
        return self.stream.recv_into(view, n)

    def settimeout(self, seconds):
        pass

    def sendall(self, data):
        self.sent += data


class Server(Peer):
    """An engine's side: challenges with `nonce`, then proves `key` (or says `verdict` instead)."""

    def __init__(self, key: bytes, nonce: str = "s" * 32, verdict: dict | None = None):
        super().__init__(message({"op": "challenge", "nonce": nonce}))
        self.key, self.nonce, self.verdict = key, nonce, verdict

    def sendall(self, data):
        super().sendall(data)
        auth = json.loads(data[protocol.PREFIX.size:])
        self.client_nonce = auth["nonce"]
        reply = self.verdict or {"ok": True, "mac": protocol._mac(self.key, "server", self.nonce, auth["nonce"])}
        self.stream = BytesStream(message(reply))


def said(peer) -> list[dict]:
    out, data = [], peer.sent
    while data:
        n = protocol.PREFIX.unpack(data[:protocol.PREFIX.size])[2]
        out.append(json.loads(data[protocol.PREFIX.size:protocol.PREFIX.size + n]))
        data = data[protocol.PREFIX.size + n:]
    return out


def test_the_client_trusts_only_a_server_that_proves_the_key():
    good = Server(KEY)
    assert protocol.answer(good, KEY) == {"ok": True}
    (auth,) = said(good)
    assert auth["op"] == "auth" and len(auth["nonce"]) == 32 and auth["mac"] == protocol._mac(
        KEY, "client", good.nonce, auth["nonce"])
    nonces = {(s := Server(KEY), protocol.answer(s, KEY), s.client_nonce)[2] for _ in range(5)}
    assert len(nonces) == 5
    # A listener without the key: it says ok, or proves with another key, or replays an old proof, or reflects ours.
    old = protocol._mac(KEY, "server", "s" * 32, "c" * 32)
    for impostor in (Server(b"x" * 64), Server(KEY, verdict={"ok": True}),
                     Server(KEY, verdict={"ok": True, "mac": old}), Server(KEY, verdict={"ok": True, "mac": "0" * 64})):
        with pytest.raises(protocol.ProtocolError, match="could not prove it holds the key"):
            protocol.answer(impostor, KEY)
    reflect = Server(KEY)
    reflect.sendall = lambda data: (Peer.sendall(reflect, data), setattr(reflect, "stream", BytesStream(message(
        {"ok": True, "mac": json.loads(data[protocol.PREFIX.size:])["mac"]}))))
    with pytest.raises(protocol.ProtocolError, match="could not prove"):
        protocol.answer(reflect, KEY)


def test_the_client_answers_only_a_real_challenge():
    busy = Peer(message({"ok": False, "error": "the engine is busy"}))
    assert protocol.answer(busy, KEY)["error"] == "the engine is busy" and busy.sent == b""
    for first in ({"op": "hello", "nonce": "n" * 32}, {"op": "challenge", "nonce": 5}, {"op": "challenge"},
                  {"op": "challenge", "nonce": "short"}, {"ok": True}):
        odd = Peer(message(first))
        with pytest.raises(protocol.ProtocolError, match="no key challenge"):
            protocol.answer(odd, KEY)
        assert odd.sent == b"", "nothing of the key's proof goes to a server that did not ask"
    with pytest.raises(protocol.ProtocolError, match=r"out of bounds \(max 0 bytes\)"):
        protocol.answer(Peer(message({"op": "challenge", "nonce": "n" * 32, "payload": 1}, b"x")), KEY)
    refused = Server(KEY, verdict={"ok": False, "error": protocol.NOT_AUTHORIZED})
    assert protocol.answer(refused, KEY) == {"ok": False, "error": protocol.NOT_AUTHORIZED}


class Client(Peer):
    """A client that answers the server's challenge with `mac_key`'s proof and `extra` bytes of payload."""

    def __init__(self, mac_key: bytes, extra: bytes = b"", nonce: str = "c" * 32):
        super().__init__(b"")
        self.key, self.extra, self.nonce = mac_key, extra, nonce

    def sendall(self, data):
        super().sendall(data)
        if len(said(self)) == 1:
            challenge = said(self)[0]
            reply = {"op": "auth", "nonce": self.nonce, "mac": protocol._mac(self.key, "client", challenge["nonce"],
                                                                               self.nonce), "payload": len(self.extra)}
            self.stream = BytesStream(message(reply, self.extra))


def test_the_server_checks_the_client_and_takes_no_payload_before_the_proof():
    client = Client(KEY)
    welcome, _ = protocol.receive(BytesStream(protocol.check_client(client, KEY, 5)))
    challenge = said(client)[0]
    assert welcome == {"ok": True, "mac": protocol._mac(KEY, "server", challenge["nonce"], client.nonce), "payload": 0}
    assert len({said(c)[0]["nonce"] for c in (Client(KEY), Client(KEY)) if protocol.check_client(c, KEY, 5)}) == 2
    for bad, match in ((Client(b"x" * 64), "proof is wrong"), (Client(KEY, b"x"), r"out of bounds \(max 0 bytes\)"),
                       (Client(KEY, nonce="short"), "did not answer")):
        with pytest.raises(protocol.ProtocolError, match=match):
            protocol.check_client(bad, KEY, 5)
