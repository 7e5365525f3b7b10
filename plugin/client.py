"""The GIMP side's way to the engine (standard library only): a running `harmonize serve`, else the
engine's interpreter started for the one call (`harmonize serve --stdio`)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

try:
    from . import protocol
except ImportError:  # installed as plain files beside the plug-in
    import protocol  # type: ignore[no-redef]

CONFIG_NAME = "engine.json"


class EngineError(Exception):
    """The engine could not be reached or refused the request; the message is for the user."""


def read_config(folder: str | Path) -> dict:
    """The config the installer wrote beside the plug-in: the engine's interpreter and address."""
    path = Path(folder) / CONFIG_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise EngineError(f"{path} is damaged ({exc}); run: harmonize gimp install") from None


def connect(address) -> socket.socket:
    family = socket.AF_INET if isinstance(address, tuple) else socket.AF_UNIX
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.connect(address if family == socket.AF_INET else str(address))
    except OSError:
        sock.close()
        raise
    return sock


def _address(address) -> str | tuple[str, int]:
    """A configured address (JSON gives a list for host and port), else the default one."""
    address = address or protocol.default_address()
    return tuple(address) if isinstance(address, list) else address


def _exchange(sock: socket.socket, message: bytes, timeout: float) -> tuple[dict, bytes]:
    with sock:
        sock.settimeout(timeout)
        try:
            sock.sendall(message)
            reply = protocol.receive(sock)
        except socket.timeout:
            raise EngineError(f"the engine did not answer within {timeout:.0f} s") from None
        except protocol.ProtocolError as exc:  # Closed included: the engine went away mid-request
            raise EngineError(f"the engine broke off the request ({exc})") from None
        except OSError as exc:
            raise EngineError(f"lost the connection to the engine ({exc.strerror or exc})") from None
    return _reply(reply)


def request(message: bytes, config: dict | None = None, timeout: float = 600.0) -> tuple[dict, bytes]:
    """Send one message to the engine and return its reply (header, payload)."""
    config = config or {}
    try:
        sock = connect(_address(config.get("address")))
    except OSError:
        return _one_shot(message, config, timeout)
    return _exchange(sock, message, timeout)


def ping(address=None, timeout: float = 600.0) -> dict:
    """A running server's reply to ping; OSError when none listens, EngineError when it fails to answer
    (it starts no engine)."""
    return _exchange(connect(_address(address)), protocol.encode({"op": "ping"}), timeout)[0]


def _one_shot(message: bytes, config: dict, timeout: float) -> tuple[dict, bytes]:
    python = config.get("python") or sys.executable
    cmd = [python, "-m", "engine.cli", "serve", "--stdio"]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise EngineError(f"cannot start the engine ({python}): {exc}; run: harmonize gimp install") from None
    try:
        proc.stdin.write(message)
        proc.stdin.close()
        reply = protocol.receive(protocol.FileStream(proc.stdout))
    except (protocol.ProtocolError, OSError) as exc:
        proc.kill()
        err = proc.stderr.read().decode(errors="replace").strip().splitlines()
        raise EngineError(f"the engine failed: {err[-1] if err else exc}") from None
    finally:
        proc.wait(timeout)
    return _reply(reply)


def _reply(reply: tuple[dict, bytes]) -> tuple[dict, bytes]:
    header, payload = reply
    if not header.get("ok"):
        raise EngineError(header.get("error", "the engine failed without saying why"))
    return header, payload


def harmonize(width: int, height: int, rect, background: bytes, rgb: bytes, mask: bytes,
              strength: float = 1.0, backend: str = "auto", config: dict | None = None) -> bytes:
    """The layer's harmonized RGB u8 in `rect`, given the canvas without it and its RGB and mask there."""
    message = protocol.harmonize_request(width, height, rect, background, rgb, mask, strength, backend)
    header, payload = request(message, config)
    if len(payload) != rect[2] * rect[3] * 3:
        raise EngineError(f"the engine returned {len(payload)} bytes for a {rect[2]}x{rect[3]} layer")
    return payload
