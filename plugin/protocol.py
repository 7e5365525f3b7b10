"""Wire format between the GIMP plug-in and the engine (standard library only: GIMP's Python has no numpy).

A message is: magic b"FMMH", version (1 byte), header length (4 bytes, big-endian), a JSON header, then
`header["payload"]` raw bytes. Sizes are bounded so a malformed or hostile message is refused before
anything large is allocated. Requests: {"op": "ping"}, and {"op": "harmonize", "width", "height", "rect",
"strength", "backend"} whose payload is the canvas without the layer, then the layer's RGB and mask in
rect (all u8). Replies: {"ok": true, ...} with the layer's new RGB u8, or {"ok": false, "error": "..."}.
"""
from __future__ import annotations

import json
import os
import socket
import struct

MAGIC = b"FMMH"
VERSION = 1
PREFIX = struct.Struct(">4sBI")
MAX_HEADER = 64 * 1024
MAX_PIXELS = 100_000_000  # 100 megapixels: twice GIMP's usual 50 MP ceiling
MAX_PAYLOAD = MAX_PIXELS * 4
TCP_PORT = 47913
# What a request's "backend" may name: the engine's registry (engine/backends) and "auto", in the
# plug-in's menu order; a test holds the two equal, since this side cannot import the engine.
BACKENDS = ("auto", "onnxruntime", "tensorrt", "torch")


def default_address() -> str | tuple[str, int]:
    """The server's Unix socket path, or 127.0.0.1:port where AF_UNIX is missing."""
    if not hasattr(socket, "AF_UNIX"):
        return ("127.0.0.1", TCP_PORT)
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fmm-harmonize", "engine.sock")


class ProtocolError(Exception):
    """A message that does not follow the format; the connection should be closed."""


class Closed(ProtocolError):
    """The peer closed the connection between messages: a normal end, not an error."""


class FileStream:
    """recv_into over a binary file (a pipe, stdin), so `receive` reads it like a socket."""

    def __init__(self, f):
        self.f = f

    def recv_into(self, view, n):
        return self.f.readinto(view[:n]) or 0


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


def receive(sock) -> tuple[dict, bytearray]:
    """Read one message from a socket; ProtocolError on anything malformed or oversized."""
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
    if not isinstance(size, int) or not 0 <= size <= MAX_PAYLOAD:
        raise ProtocolError(f"payload size {size!r} is out of bounds (max {MAX_PAYLOAD})")
    return header, _read_exactly(sock, size)


def harmonize_request(width: int, height: int, rect: tuple[int, int, int, int], background: bytes,
                      rgb: bytes, mask: bytes, strength: float = 1.0, backend: str = "auto") -> bytes:
    """Harmonize a layer over a canvas: the canvas as seen without the layer (RGB u8, width x height),
    and in `rect` = (x, y, w, h) the layer's RGB u8 and its mask u8. The reply is the layer's new RGB."""
    return encode({"op": "harmonize", "width": width, "height": height, "rect": list(rect),
                   "strength": strength, "backend": backend}, background + rgb + mask)


def check_harmonize(header: dict, payload: bytes) -> tuple[int, int, tuple[int, int, int, int]]:
    """Validate a harmonize request's sizes; returns (width, height, rect)."""
    W, H, rect = header.get("width"), header.get("height"), header.get("rect")
    if not (isinstance(W, int) and isinstance(H, int) and W > 0 and H > 0 and W * H <= MAX_PIXELS):
        raise ProtocolError(f"bad canvas size {W!r}x{H!r}")
    if not (isinstance(rect, list) and len(rect) == 4 and all(isinstance(v, int) for v in rect)):
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
    backend = header.get("backend", "auto")
    if not isinstance(backend, str):
        raise ProtocolError(f"backend {backend!r} is not a name")
    return W, H, (x, y, w, h)
