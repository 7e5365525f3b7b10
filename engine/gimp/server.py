"""`harmonize serve`: a local server that keeps the model loaded for the GIMP plug-in.

A Unix socket with 0600 permissions, or 127.0.0.1 where AF_UNIX is missing, where every client must first
prove it holds the user's key (plugin/protocol.py). Each connection gets a thread, but requests run one
at a time behind a lock: one model, one GPU, queued. Bounded: at most `max_connections` at once (one more
gets a "busy" reply), a read that stalls for `read_timeout` seconds closes its connection, and a
message's memory grows only as its bytes arrive. Every request gets a reply, an error reply for anything
malformed or any failure, and the server keeps serving. A server holds a lock file for its whole life, so
a socket file whose lock is free is stale and is replaced; one started by the plug-in exits after
`idle_minutes` without a connection.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import socketserver
import stat
import threading
import time
from pathlib import Path

import numpy as np

from plugin import protocol, rendezvous

from ..errors import HarmonizeError
from ..runtime.fullres import harmonize_over

log = logging.getLogger("engine")


class BackendPool:
    """The server's loaded backends, one per device asked for, and the lock that queues requests."""

    def __init__(self, backend: str = "auto", model: str | None = None):
        from ..runtime.backends import load

        self.model = model
        self.default = load(backend, model)
        self.loaded = {"auto": self.default}
        self.lock = threading.Lock()

    def backend(self, device: str):
        """The backend that runs this pool's model on `device` ("auto": the one the server started
        with, which also serves the device it runs on), loaded on first use."""
        from ..runtime.backends import load_device

        if device == self.default.device:
            return self.default
        if device not in self.loaded:
            self.loaded[device] = load_device(device, self.model)
        return self.loaded[device]

    def handle(self, header: dict, payload: bytes) -> bytes:
        """One request to one reply; every error becomes an error reply."""
        try:
            op = header.get("op")
            if op == "ping":
                from .. import __version__

                return protocol.encode({"ok": True, "version": __version__, "backend": self.default.name,
                                        "device": self.default.device, "protocol": protocol.VERSION,
                                        "pid": os.getpid()})
            if op != "harmonize":
                raise protocol.ProtocolError(f"unknown op {op!r}")
            W, H, (x, y, w, h) = protocol.check_harmonize(header, payload)
            canvas = np.frombuffer(payload, np.uint8, W * H * 3).reshape(H, W, 3)
            layer = np.frombuffer(payload, np.uint8, w * h * 3, offset=W * H * 3).reshape(h, w, 3)
            m8 = np.frombuffer(payload, np.uint8, w * h, offset=W * H * 3 + w * h * 3).reshape(h, w)
            with self.lock:
                backend = self.backend(header.get("device", "auto"))
                out = harmonize_over(backend.harmonize, canvas, layer, m8, (x, y, w, h),
                                     float(header.get("strength", 1.0)))
            return protocol.encode({"ok": True, "width": w, "height": h, "backend": backend.name,
                                    "device": backend.device}, out.tobytes())
        except (protocol.ProtocolError, HarmonizeError, ValueError) as exc:
            return protocol.encode({"ok": False, "error": str(exc)})
        except Exception as exc:  # a runtime failure (CUDA, out of memory) still reaches the user as text
            log.exception("request failed")
            return protocol.encode({"ok": False, "error": f"the engine failed: {type(exc).__name__}: {exc}"})


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        pool: BackendPool = self.server.pool  # type: ignore[attr-defined]
        self.request.settimeout(self.server.read_timeout)  # type: ignore[attr-defined]
        key = self.server.key  # type: ignore[attr-defined]
        try:
            if key is not None and not protocol.challenge(self.request, key):
                _drain(self.request)
                return
        except OSError:  # a timeout or a client that went away during the key check
            return
        while True:
            try:
                header, payload = protocol.receive(self.request)
            except protocol.Closed:
                return
            except protocol.ProtocolError as exc:
                log.warning("bad request: %s", exc)
                reply, header = protocol.encode({"ok": False, "error": str(exc)}), None
            except TimeoutError:
                log.warning("closing a connection that sent nothing for %s s", self.request.gettimeout())
                reply, header = protocol.encode({"ok": False, "error": "request timed out"}), None
            except OSError:
                return
            else:
                reply = pool.handle(header, payload)
            try:
                self.request.sendall(reply)
            except OSError:  # the client went away; the next one is served as usual
                return
            if header is None:  # after a malformed message the stream cannot be trusted: close it
                return


def _drain(sock, limit: int = 1 << 20, seconds: float = 1.0) -> None:
    """Close our side and discard what the client still sends (a bounded amount, into one small buffer):
    closing over unread bytes would reset the connection and lose the reply already sent."""
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(seconds)
    scratch, seen = bytearray(64 * 1024), 0
    while seen < limit:
        n = sock.recv_into(scratch)
        if not n:
            return
        seen += n


class _Bounded(socketserver.ThreadingMixIn):
    """A thread per connection, at most `max_connections` of them; one more is told the engine is busy.
    Counts open connections and the time of the last, for the idle exit."""

    daemon_threads = True
    max_connections = 8
    read_timeout = 30.0
    key: bytes | None = None
    lock: rendezvous.FileLock | None = None
    open_connections = 0
    last_active = 0.0

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
        self._count(+1)
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._count(-1)
            self.slots.release()

    def _count(self, step: int) -> None:
        with self.slots_lock:
            self.open_connections += step
            self.last_active = time.monotonic()

    def idle_for(self) -> float:
        """Seconds since the last connection ended, 0 while one is open."""
        with self.slots_lock:
            return 0.0 if self.open_connections else time.monotonic() - self.last_active

    def server_close(self) -> None:
        super().server_close()
        if isinstance(self.server_address, str):
            Path(self.server_address).unlink(missing_ok=True)
        if self.lock is not None:
            self.lock.release()


class UnixServer(_Bounded, socketserver.UnixStreamServer):
    pass


class TcpServer(_Bounded, socketserver.TCPServer):
    allow_reuse_address = True


def make_server(pool: BackendPool, address=None, max_connections: int = 8, read_timeout: float = 30.0,
                key: bytes | None = None) -> socketserver.BaseServer:
    """A bound server (not yet serving). It holds the address's lock file until `server_close`, and
    refuses to start while another server holds it, over a file that is not a socket, or on TCP without
    a key."""
    address = address or rendezvous.default_address()
    if isinstance(address, tuple) and key is None:
        raise HarmonizeError("a server on TCP needs the plug-in's key (--key-file): without it any local "
                             "program could use the engine")
    lock = rendezvous.FileLock(rendezvous.server_lock_path(address))
    if not lock.acquire():
        raise HarmonizeError(f"an engine server is already running on {address}")
    try:
        server = _bind(address)
    except BaseException:
        lock.release()
        raise
    server.pool, server.lock, server.key = pool, lock, key  # type: ignore[attr-defined]
    server.max_connections, server.read_timeout = max_connections, read_timeout  # type: ignore[attr-defined]
    server.slots = threading.BoundedSemaphore(max_connections)  # type: ignore[attr-defined]
    server.slots_lock = threading.Lock()  # type: ignore[attr-defined]
    server.last_active = time.monotonic()  # type: ignore[attr-defined]
    return server


def _bind(address) -> socketserver.BaseServer:
    if isinstance(address, tuple):
        return TcpServer(("127.0.0.1", address[1]), _Handler)
    path = Path(address)
    if len(os.fsencode(path)) > 107:
        raise HarmonizeError(f"{path} is too long for a socket path ({len(os.fsencode(path))} bytes; the limit is "
                             "107): give a shorter --socket")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise HarmonizeError(f"{path} exists and is not a socket; refusing to replace it (give another --socket)")
        path.unlink()  # its server's lock was free: a stale socket from a server that died
    old = os.umask(0o177)  # the socket is born 0600: only this user may talk to it
    try:
        server = UnixServer(str(path), _Handler)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return server


def serve(backend: str = "auto", model: str | None = None, address=None, key: bytes | None = None,
          idle_minutes: float = 0.0) -> None:
    """Serve until SIGINT or SIGTERM, or `idle_minutes` without a connection (0: never), then remove the
    socket."""
    server = make_server(BackendPool(backend, model), address, key=key)

    def stop(*_) -> None:  # shutdown waits for serve_forever, which runs on this thread: ask from another
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if idle_minutes > 0:
        threading.Thread(target=_stop_when_idle, args=(server, idle_minutes * 60), daemon=True).start()
    log.info("serving on %s (%s; Ctrl-C stops)", server.server_address,
             f"exits after {idle_minutes:g} idle minutes" if idle_minutes > 0 else "until stopped")
    try:
        server.serve_forever()
    finally:
        server.server_close()
        log.info("stopped")


def _stop_when_idle(server, seconds: float) -> None:
    while server.idle_for() < seconds:
        time.sleep(min(1.0, seconds / 4))
    log.info("no request for %g s: stopping", seconds)
    server.shutdown()
