"""Wire format between the GIMP plug-in and the engine (standard library only: GIMP's Python has no numpy).

A message is: magic b"FMMH", version (1 byte), header length (4 bytes, big-endian), a JSON header, then
`header["payload"]` raw bytes. Sizes are bounded, the header's nesting too, and a message must arrive whole
within its deadline, so a malformed, hostile or slow message is refused before anything large is
allocated or a thread is held for long. Requests: {"op": "ping"}, and a harmonize request, one `Request`
from the plug-in's dialog to the engine (its fields in the header, its pixels as the payload), answered by
one `Result`. Replies: {"ok": true, ...}, or {"ok": false, "error": "..."}.

Over TCP (no private socket file) each side proves to the other that it holds the key in engine.key
before any picture moves: the server sends {"op": "challenge", "nonce": S}; the client answers {"op":
"auth", "nonce": C, "mac": HMAC(key, "client", S, C)}; the server replies {"ok": true, "mac": HMAC(key,
"server", S, C)} or an error and closes, and the client sends nothing more unless that MAC is right. Both
nonces are fresh per connection, so no proof can be replayed, and the role names keep one side's proof
from passing for the other's. Nothing with a payload is read before the client's proof.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import struct
import time
from dataclasses import dataclass

MAGIC = b"FMMH"
VERSION = 3  # 3: the server proves the key too (2: only the client did)
PREFIX = struct.Struct(">4sBI")
MAX_HEADER = 64 * 1024
MAX_DEPTH = 16  # a header nests two deep; json would recurse once per bracket of a hostile one
MAX_PIXELS = 100_000_000  # 100 megapixels: twice GIMP's usual 50 MP ceiling
# A layer's samples on the wire, by GIMP precision: bytes per sample (native byte order, as GEGL hands them).
# GIMP's half float travels as float, which holds every half exactly.
FORMATS = {"u8": 1, "u16": 2, "u32": 4, "float": 4, "double": 8}
MAX_PAYLOAD = MAX_PIXELS * (3 + 3 * 8 + 1)  # the largest canvas (RGB u8) with as large a double layer and mask
# What a request's "device" may name, in the plug-in's menu order; the engine's list
# (engine/runtime/backends DEVICES, the words of --device) is tested to be the same, since this side cannot
# import the engine.
DEVICES = ("auto", "cpu", "gpu")


class ProtocolError(Exception):
    """A message that does not follow the format; the connection should be closed."""


class VersionMismatch(ProtocolError):
    """A message of another protocol version: the other side is another version of fmm-harmonize."""

    def __init__(self, theirs: int):
        super().__init__(f"protocol version {theirs} is not supported (this side speaks {VERSION}): the plug-in "
                         "and the engine are from different versions; run: harmonize gimp install")
        self.theirs = theirs


class Closed(ProtocolError):
    """The peer closed the connection between messages: a normal end, not an error."""


def encode(header: dict, payload: bytes = b"") -> bytes:
    """One message as bytes."""
    head = json.dumps({**header, "payload": len(payload)}).encode()
    return PREFIX.pack(MAGIC, VERSION, len(head)) + head + payload


CHUNK = 256 * 1024


def _read_exactly(sock, n: int, between_messages: bool = False, deadline: float | None = None) -> bytearray:
    """n bytes; memory grows only with what arrived, so an announced size costs nothing until it is sent.
    TimeoutError once the monotonic `deadline` passes, however the bytes trickle in."""
    buf = bytearray()
    scratch = memoryview(bytearray(min(n, CHUNK)))
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the message did not arrive in time")
            sock.settimeout(left)
        k = sock.recv_into(scratch, min(n - len(buf), CHUNK))
        if k == 0:
            if not buf and between_messages:
                raise Closed("connection closed")
            raise ProtocolError(f"connection closed after {len(buf)} of {n} bytes")
        buf += scratch[:k]
    return buf


_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[][{}]')  # a JSON string (skipped whole) or a bracket


def _nesting(text: bytes) -> int:
    """How deep the brackets of JSON `text` nest (those inside strings do not count)."""
    depth = deepest = 0
    for token in _TOKENS.findall(text):
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def receive(sock, max_payload: int = MAX_PAYLOAD, timeout: float | None = None) -> tuple[dict, bytearray]:
    """Read one message from a socket, whole within `timeout` seconds when given (TimeoutError after);
    ProtocolError on anything malformed or over `max_payload`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    magic, version, length = PREFIX.unpack(_read_exactly(sock, PREFIX.size, True, deadline))
    if magic != MAGIC:
        raise ProtocolError("not an fmm-harmonize message (bad magic)")
    if version != VERSION:
        raise VersionMismatch(version)
    if length > MAX_HEADER:
        raise ProtocolError(f"header of {length} bytes exceeds {MAX_HEADER}")
    text = bytes(_read_exactly(sock, length, deadline=deadline))
    if _nesting(text) > MAX_DEPTH:
        raise ProtocolError(f"header nests deeper than {MAX_DEPTH} levels")
    try:
        header = json.loads(text)
    except ValueError:
        raise ProtocolError("header is not JSON") from None
    if not isinstance(header, dict):
        raise ProtocolError("header is not a JSON object")
    size = header.get("payload", 0)
    if not _is_int(size) or not 0 <= size <= max_payload:
        raise ProtocolError(f"payload size {size!r} is out of bounds (max {max_payload} bytes)")
    return header, _read_exactly(sock, size, deadline=deadline)


def check_canvas(width, height) -> None:
    """ProtocolError naming the limit unless width x height is a canvas the engine takes."""
    if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
        raise ProtocolError(f"bad canvas size {width!r}x{height!r}")
    if width * height > MAX_PIXELS:
        raise ProtocolError(f"bad canvas size {width}x{height}: {width * height / 1e6:.2f} megapixels, where the "
                            f"engine takes at most {MAX_PIXELS // 1_000_000} megapixels")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON's true is no size


@dataclass(frozen=True)
class Request:
    """One Harmonize Layer call, as the dialog makes it and the engine takes it.

    `background` is what the engine needs of the canvas: the image without the layer, RGB u8 (perceptual),
    width x height, since the network and the colour statistics see 8 bits. The layer's RGB in `rect`
    (x, y, w, h) comes in the layer's own precision (`format`, a key of FORMATS, in linear light or
    perceptual), so the engine gives back every pixel outside the object exactly as it was; `mask` is u8."""

    width: int
    height: int
    rect: tuple[int, int, int, int]
    background: bytes
    rgb: bytes
    mask: bytes
    strength: float = 1.0
    device: str = "auto"
    format: str = "u8"
    linear: bool = False

    def encode(self) -> bytes:
        """The request as one message; ProtocolError, before anything is copied, for a canvas over the limit."""
        check_canvas(self.width, self.height)
        return encode({"op": "harmonize", "width": self.width, "height": self.height, "rect": list(self.rect),
                       "strength": self.strength, "device": self.device, "format": self.format,
                       "linear": self.linear}, b"".join((self.background, self.rgb, self.mask)))

    @classmethod
    def decode(cls, header: dict, payload: bytes) -> Request:
        """The request a harmonize message holds; ProtocolError naming the first field that is wrong."""
        W, H, rect = header.get("width"), header.get("height"), header.get("rect")
        check_canvas(W, H)
        if not (isinstance(rect, list) and len(rect) == 4 and all(_is_int(v) for v in rect)):
            raise ProtocolError(f"bad rect {rect!r}: expected [x, y, w, h]")
        x, y, w, h = rect
        if not (0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= W and y + h <= H):
            raise ProtocolError(f"rect {rect} is not inside the {W}x{H} canvas")
        fmt, linear = header.get("format", "u8"), header.get("linear", False)
        if not isinstance(fmt, str) or fmt not in FORMATS:
            raise ProtocolError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
        if not isinstance(linear, bool):
            raise ProtocolError(f"linear {linear!r} is not true or false")
        layer = w * h * 3 * FORMATS[fmt]
        want = W * H * 3 + layer + w * h
        if len(payload) != want:
            raise ProtocolError(f"payload is {len(payload)} bytes, expected {want} for a {W}x{H} canvas and {w}x{h} "
                                f"{fmt} layer")
        strength = header.get("strength", 1.0)
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
            raise ProtocolError(f"strength {strength!r} is not within 0..1")
        device = header.get("device", "auto")
        if device not in DEVICES:
            raise ProtocolError(f"device {device!r} is not one of {', '.join(DEVICES)}")
        view = memoryview(payload)
        return cls(W, H, (x, y, w, h), view[:W * H * 3], view[W * H * 3:W * H * 3 + layer], view[W * H * 3 + layer:],
                   float(strength), device, fmt, linear)

    def result_size(self) -> int:
        """The bytes of the layer's new RGB that answer this request."""
        return self.rect[2] * self.rect[3] * 3 * FORMATS[self.format]


@dataclass(frozen=True)
class Result:
    """The engine's answer to a Request: the layer's new RGB in its rect and format, and the backend and
    device (cpu or gpu) that made it."""

    rgb: bytes
    backend: str
    device: str

    def encode(self) -> bytes:
        return encode({"ok": True, "backend": self.backend, "device": self.device}, self.rgb)

    @classmethod
    def decode(cls, header: dict, payload: bytes, request: Request) -> Result:
        """The result in a reply to `request`; ProtocolError when its size is not the request's."""
        if len(payload) != request.result_size():
            raise ProtocolError(f"the engine returned {len(payload)} bytes for a {request.rect[2]}x{request.rect[3]} "
                                f"{request.format} layer")
        return cls(bytes(payload), str(header.get("backend")), str(header.get("device")))


# --- The key proof over TCP, in both directions ---

NOT_AUTHORIZED = "not authorized: this engine answers only its own user's plug-in (the key in engine.key)"


def _mac(key: bytes, role: str, server_nonce: str, client_nonce: str) -> str:
    """One side's proof: the key's HMAC over both nonces of this connection, named for the side."""
    text = "\n".join((role, server_nonce, client_nonce)).encode()
    return hmac.new(key, text, hashlib.sha256).hexdigest()


def _nonce(value) -> bool:
    return isinstance(value, str) and 16 <= len(value) <= 128


def check_client(sock, key: bytes, timeout: float) -> bytes:
    """The server's side: challenge the client and check its proof, all within `timeout` seconds. Returns
    the reply that admits the client (it carries the server's proof) for the caller to send, or raises
    ProtocolError (or TimeoutError) when the client did not prove it holds `key`: the caller then replies
    NOT_AUTHORIZED and closes."""
    server_nonce = secrets.token_hex(16)
    sock.sendall(encode({"op": "challenge", "nonce": server_nonce}))
    header, _ = receive(sock, max_payload=0, timeout=timeout)
    client_nonce, mac = header.get("nonce"), header.get("mac")
    if header.get("op") != "auth" or not _nonce(client_nonce) or not isinstance(mac, str):
        raise ProtocolError("the client did not answer the key challenge")
    if not hmac.compare_digest(mac, _mac(key, "client", server_nonce, client_nonce)):
        raise ProtocolError("the client's key proof is wrong")
    return encode({"ok": True, "mac": _mac(key, "server", server_nonce, client_nonce)})


def answer(sock, key: bytes) -> dict:
    """The client's side: answer the server's challenge with a nonce of its own, and check the server's
    proof. Returns the server's verdict when it refused ({"ok": false, "error"}), {"ok": true} once the
    server proved it holds `key`; ProtocolError when the peer is not an engine holding the key (nothing
    but the proof was sent to it)."""
    header, _ = receive(sock, max_payload=0)
    server_nonce = header.get("nonce")
    if header.get("op") != "challenge" or not _nonce(server_nonce):
        if header.get("ok") is False and isinstance(header.get("error"), str):
            return header
        raise ProtocolError("it sent no key challenge")
    client_nonce = secrets.token_hex(16)
    sock.sendall(encode({"op": "auth", "nonce": client_nonce, "mac": _mac(key, "client", server_nonce,
                                                                          client_nonce)}))
    verdict, _ = receive(sock, max_payload=0)
    if verdict.get("ok") is not True:
        return verdict if isinstance(verdict.get("error"), str) else {"ok": False, "error": NOT_AUTHORIZED}
    mac = verdict.get("mac")
    if not isinstance(mac, str) or not hmac.compare_digest(mac, _mac(key, "server", server_nonce, client_nonce)):
        raise ProtocolError("it could not prove it holds the key in engine.key")
    return {"ok": True}
