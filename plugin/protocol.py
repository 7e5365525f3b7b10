"""Wire format between the GIMP plug-in and the engine (standard library only: GIMP's Python has no numpy).

A message is: magic b"FMMH", version (1 byte), header length (4 bytes, big-endian), a JSON header, then
`header["payload"]` raw bytes. Sizes are bounded so a malformed or hostile message is refused before
anything large is allocated. Requests: {"op": "ping"}, and {"op": "harmonize", "width", "height", "rect",
"strength", "device"} whose payload is the canvas without the layer, then the layer's RGB and mask in
rect (all u8). Replies: {"ok": true, ...} with the layer's new RGB u8 (and the backend and device that
made it), or {"ok": false, "error": "..."}.

Over TCP (no private socket file) the server first proves the client is its user's: it sends
{"op": "challenge", "nonce"}, the client answers {"op": "auth", "mac"} (HMAC-SHA256 of the nonce under the
key in engine.key), and the server replies {"ok": true} or an error and closes. Nothing with a payload is
read before that.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import struct

MAGIC = b"FMMH"
VERSION = 2
PREFIX = struct.Struct(">4sBI")
MAX_HEADER = 64 * 1024
MAX_PIXELS = 100_000_000  # 100 megapixels: twice GIMP's usual 50 MP ceiling
MAX_PAYLOAD = MAX_PIXELS * 4
# What a request's "device" may name, in the plug-in's menu order; the engine's list
# (engine/backends DEVICES) is tested to be the same, since this side cannot import the engine.
DEVICES = ("auto", "cpu", "gpu")


class ProtocolError(Exception):
    """A message that does not follow the format; the connection should be closed."""


class Closed(ProtocolError):
    """The peer closed the connection between messages: a normal end, not an error."""


def encode(header: dict, payload: bytes = b"") -> bytes:
    """One message as bytes."""
    head = json.dumps({**header, "payload": len(payload)}).encode()
    return PREFIX.pack(MAGIC, VERSION, len(head)) + head + payload


CHUNK = 256 * 1024


def _read_exactly(sock, n: int, between_messages: bool = False) -> bytearray:
    """n bytes; memory grows only with what arrived, so an announced size costs nothing until it is sent."""
    buf = bytearray()
    scratch = memoryview(bytearray(min(n, CHUNK)))
    while len(buf) < n:
        k = sock.recv_into(scratch, min(n - len(buf), CHUNK))
        if k == 0:
            if not buf and between_messages:
                raise Closed("connection closed")
            raise ProtocolError(f"connection closed after {len(buf)} of {n} bytes")
        buf += scratch[:k]
    return buf


def receive(sock, max_payload: int = MAX_PAYLOAD) -> tuple[dict, bytearray]:
    """Read one message from a socket; ProtocolError on anything malformed or over `max_payload`."""
    magic, version, length = PREFIX.unpack(_read_exactly(sock, PREFIX.size, between_messages=True))
    if magic != MAGIC:
        raise ProtocolError("not an fmm-harmonize message (bad magic)")
    if version != VERSION:
        raise ProtocolError(f"protocol version {version} is not supported (this side speaks {VERSION})")
    if length > MAX_HEADER:
        raise ProtocolError(f"header of {length} bytes exceeds {MAX_HEADER}")
    try:
        header = json.loads(_read_exactly(sock, length))
    except ValueError:
        raise ProtocolError("header is not JSON") from None
    if not isinstance(header, dict):
        raise ProtocolError("header is not a JSON object")
    size = header.get("payload", 0)
    if not _is_int(size) or not 0 <= size <= max_payload:
        raise ProtocolError(f"payload size {size!r} is out of bounds (max {max_payload})")
    return header, _read_exactly(sock, size)


def harmonize_request(width: int, height: int, rect: tuple[int, int, int, int], background: bytes,
                      rgb: bytes, mask: bytes, strength: float = 1.0, device: str = "auto") -> bytes:
    """Harmonize a layer over a canvas: the canvas as seen without the layer (RGB u8, width x height),
    and in `rect` = (x, y, w, h) the layer's RGB u8 and its mask u8. The reply is the layer's new RGB."""
    return encode({"op": "harmonize", "width": width, "height": height, "rect": list(rect),
                   "strength": strength, "device": device}, background + rgb + mask)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON's true is no size


def check_harmonize(header: dict, payload: bytes) -> tuple[int, int, tuple[int, int, int, int]]:
    """Validate a harmonize request's sizes; returns (width, height, rect)."""
    W, H, rect = header.get("width"), header.get("height"), header.get("rect")
    if not (_is_int(W) and _is_int(H) and W > 0 and H > 0 and W * H <= MAX_PIXELS):
        raise ProtocolError(f"bad canvas size {W!r}x{H!r}")
    if not (isinstance(rect, list) and len(rect) == 4 and all(_is_int(v) for v in rect)):
        raise ProtocolError(f"bad rect {rect!r}: expected [x, y, w, h]")
    x, y, w, h = rect
    if not (0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= W and y + h <= H):
        raise ProtocolError(f"rect {rect} is not inside the {W}x{H} canvas")
    want = W * H * 3 + w * h * 4
    if len(payload) != want:
        raise ProtocolError(f"payload is {len(payload)} bytes, expected {want} for a {W}x{H} canvas and {w}x{h} layer")
    strength = header.get("strength", 1.0)
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
        raise ProtocolError(f"strength {strength!r} is not within 0..1")
    device = header.get("device", "auto")
    if device not in DEVICES:
        raise ProtocolError(f"device {device!r} is not one of {', '.join(DEVICES)}")
    return W, H, (x, y, w, h)


def _mac(key: bytes, nonce: str) -> str:
    return hmac.new(key, nonce.encode(), hashlib.sha256).hexdigest()


def challenge(sock, key: bytes) -> bool:
    """The server's side of the key check: True when the client proved it holds `key`; otherwise the
    client got an error reply and the connection should be closed."""
    nonce = secrets.token_hex(16)
    sock.sendall(encode({"op": "challenge", "nonce": nonce}))
    try:
        header, _ = receive(sock, max_payload=0)
    except ProtocolError as exc:
        header = {"error": str(exc)}
    mac = header.get("mac")
    if header.get("op") == "auth" and isinstance(mac, str) and hmac.compare_digest(mac, _mac(key, nonce)):
        sock.sendall(encode({"ok": True}))
        return True
    sock.sendall(encode({"ok": False, "error": "not authorized: this engine answers only its own user's "
                         "plug-in (the key in engine.key); reinstall with: harmonize gimp install"}))
    return False


def answer(sock, key: bytes) -> dict:
    """The client's side of the key check; returns the server's verdict (a reply header)."""
    header, _ = receive(sock, max_payload=0)
    if header.get("op") != "challenge" or not isinstance(header.get("nonce"), str):
        return header if "error" in header else {"ok": False, "error": "the server sent no key challenge"}
    sock.sendall(encode({"op": "auth", "mac": _mac(key, header["nonce"])}))
    return receive(sock, max_payload=0)[0]
