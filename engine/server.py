"""`harmonize serve`: the engine as a local server that keeps the model loaded for the GIMP plug-in.

A Unix socket with 0600 permissions (127.0.0.1 only where AF_UNIX is missing). Each connection gets
a thread, but requests run one at a time behind a lock: one model, one GPU, queued. Bounded: at most
`max_connections` at once (one more gets a "busy" reply), a read that stalls for `read_timeout`
seconds closes its connection, and a message's memory grows only as its bytes arrive. Every request
gets a reply, an error reply for anything malformed or any failure, and the server keeps serving.
`--stdio` answers one request from stdin to stdout, which is how the plug-in runs the engine when no
server is up.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import socketserver
import stat
import sys
import threading
from pathlib import Path

import numpy as np

from plugin import protocol

from .errors import HarmonizeError
from .fullres import harmonize_over

log = logging.getLogger("engine")


class Engine:
    """Loaded backends by name, and the lock that queues requests."""

    def __init__(self, backend: str = "auto", model: str | None = None):
        from .backends import load

        self.load = load
        self.default = load(backend, model)
        self.loaded = {self.default.name: self.default}
        self.lock = threading.Lock()

    def backend(self, name: str | None):
        """The default backend for "auto", else that backend with its shipped model, loaded once (`load`
        refuses a name outside the registry)."""
        if name in (None, "auto"):
            return self.default
        if name not in self.loaded:
            self.loaded[name] = self.load(name)
        return self.loaded[name]

    def handle(self, header: dict, payload: bytes) -> bytes:
        """One request to one reply; every error becomes an error reply."""
        try:
            op = header.get("op")
            if op == "ping":
                from . import __version__

                return protocol.encode({"ok": True, "version": __version__, "backend": self.default.name,
                                        "protocol": protocol.VERSION})
            if op != "harmonize":
                raise protocol.ProtocolError(f"unknown op {op!r}")
            W, H, (x, y, w, h) = protocol.check_harmonize(header, payload)
            canvas = np.frombuffer(payload, np.uint8, W * H * 3).reshape(H, W, 3)
            layer = np.frombuffer(payload, np.uint8, w * h * 3, offset=W * H * 3).reshape(h, w, 3)
            m8 = np.frombuffer(payload, np.uint8, w * h, offset=W * H * 3 + w * h * 3).reshape(h, w)
            with self.lock:
                backend = self.backend(header.get("backend"))
                out = harmonize_over(backend.harmonize, canvas, layer, m8, (x, y, w, h),
                                     float(header.get("strength", 1.0)))
            return protocol.encode({"ok": True, "width": w, "height": h}, out.tobytes())
        except (protocol.ProtocolError, HarmonizeError, ValueError) as exc:
            return protocol.encode({"ok": False, "error": str(exc)})
        except Exception as exc:  # a runtime failure (CUDA, out of memory) still reaches the user as text
            log.exception("request failed")
            return protocol.encode({"ok": False, "error": f"the engine failed: {type(exc).__name__}: {exc}"})


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        engine: Engine = self.server.engine  # type: ignore[attr-defined]
        self.request.settimeout(self.server.read_timeout)  # type: ignore[attr-defined]
        while True:
            try:
                header, payload = protocol.receive(self.request)
            except protocol.Closed:
                return
            except protocol.ProtocolError as exc:
                log.warning("bad request: %s", exc)
                reply, header = protocol.encode({"ok": False, "error": str(exc)}), None
            except socket.timeout:
                log.warning("closing a connection that sent nothing for %s s", self.request.gettimeout())
                reply, header = protocol.encode({"ok": False, "error": "request timed out"}), None
            except OSError:
                return
            else:
                reply = engine.handle(header, payload)
            try:
                self.request.sendall(reply)
            except OSError:  # the client went away; the next one is served as usual
                return
            if header is None:  # after a malformed message the stream cannot be trusted: close it
                return


class _Bounded(socketserver.ThreadingMixIn):
    """A thread per connection, at most `max_connections` of them; one more is told the engine is busy."""

    daemon_threads = True
    max_connections = 8
    read_timeout = 30.0

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(protocol.encode({"ok": False, "error": f"the engine is busy ({self.max_connections} "
                                                 "connections open); try again"}))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class UnixServer(_Bounded, socketserver.UnixStreamServer):
    pass


class TcpServer(_Bounded, socketserver.TCPServer):
    allow_reuse_address = True


def make_server(engine: Engine, address=None, max_connections: int = 8,
                read_timeout: float = 30.0) -> socketserver.BaseServer:
    """A bound server (not yet serving); refuses to start over a live one or over a file that is not a
    socket."""
    address = address or protocol.default_address()
    if isinstance(address, tuple):
        server = TcpServer(("127.0.0.1", address[1]), _Handler)
    else:
        path = Path(address)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise HarmonizeError(f"{path} exists and is not a socket; refusing to replace it "
                                     "(give another --socket)")
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(str(path))
                raise HarmonizeError(f"an engine server is already listening on {path}")
            except (ConnectionRefusedError, FileNotFoundError):
                path.unlink()  # a stale socket from a server that died
            finally:
                probe.close()
        old = os.umask(0o177)  # the socket is born 0600: only this user may talk to it
        try:
            server = UnixServer(str(path), _Handler)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
    server.engine = engine  # type: ignore[attr-defined]
    server.max_connections, server.read_timeout = max_connections, read_timeout  # type: ignore[attr-defined]
    server.slots = threading.BoundedSemaphore(max_connections)  # type: ignore[attr-defined]
    return server


def serve(backend: str = "auto", model: str | None = None, address=None) -> None:
    """Serve until SIGINT or SIGTERM, then remove the socket."""
    server = make_server(Engine(backend, model), address)
    where = server.server_address
    stop = lambda *_: threading.Thread(target=server.shutdown).start()  # noqa: E731
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("serving on %s (Ctrl-C stops)", where)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        if isinstance(where, str):
            Path(where).unlink(missing_ok=True)
        log.info("stopped")


def serve_stdio(backend: str = "auto", model: str | None = None) -> None:
    """Answer one request read from stdin on stdout (the plug-in's fallback when no server runs)."""
    try:
        header, payload = protocol.receive(protocol.FileStream(sys.stdin.buffer))
    except protocol.ProtocolError as exc:
        reply = protocol.encode({"ok": False, "error": str(exc)})
    else:
        try:
            engine = Engine(backend, model)
        except Exception as exc:  # the plug-in shows this text; a bare exit would say nothing
            reply = protocol.encode({"ok": False, "error": str(exc) if isinstance(exc, HarmonizeError)
                                     else f"the engine failed to start: {type(exc).__name__}: {exc}"})
        else:
            reply = engine.handle(header, payload)
    sys.stdout.buffer.write(reply)
    sys.stdout.buffer.flush()
