"""`harmonize serve`: a local server that keeps the model loaded for the GIMP plug-in.

A Unix socket with 0600 permissions in a folder of the user's own (checked, or refused), or 127.0.0.1
where AF_UNIX is missing, where client and server each prove they hold the user's key before any picture
moves (plugin/protocol.py). Each connection gets a thread, but requests run one at a time behind a lock:
one model, one GPU, queued. Bounded: a TCP connection must prove the key within `auth_timeout` seconds,
and until it has, it takes none of the `max_connections` slots (it has slots of its own) and does not
keep the server from its idle exit; one connection over the limit gets a "busy" reply; a message must
arrive whole within `message_timeout` seconds, however slowly its bytes trickle; a message's memory grows
only as its bytes arrive. Every request gets a reply, an error reply and one log line for anything
malformed or any failure, and the server keeps serving. A server holds a lock file for its whole life, so
a socket file whose lock is free is stale and is replaced. It stops (after `idle_minutes` without a
connection, on SIGTERM or Ctrl-C) by first ceasing to accept: the socket file goes, connections already
waiting are answered, the lock is freed for a new server, and the requests in flight are finished.
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

from plugin import protocol, rendezvous

from ..errors import HarmonizeError
from ..runtime.blas import one_blas_thread
from . import layer

log = logging.getLogger("engine")

AUTH_TIMEOUT = 5.0  # seconds for a TCP client to prove the key: what the plug-in needs is milliseconds
MESSAGE_TIMEOUT = 60.0  # seconds for one message to arrive whole: a 100-megapixel request locally takes 1-2
FINISH_TIMEOUT = 120.0  # seconds a stopping server waits for the requests in flight
UNPROVED = 32  # TCP connections at once that have yet to prove the key (each ends within AUTH_TIMEOUT)


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
        from .devices import load_device

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
            request = protocol.Request.decode(header, payload)
            with self.lock:
                return layer.answer(self.backend(request.device), request).encode()
        except (protocol.ProtocolError, HarmonizeError, ValueError) as exc:
            return protocol.encode({"ok": False, "error": str(exc)})
        except Exception as exc:  # a runtime failure (CUDA, out of memory) still reaches the user as text
            log.exception("request failed")
            return protocol.encode({"ok": False, "error": f"the engine failed: {type(exc).__name__}: {exc}"})


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: _Bounded = self.server  # type: ignore[assignment]
        sock = self.request
        if server.key is not None:
            if not self._prove(server, sock):
                return
        elif not server.slots.acquire(blocking=False):  # Unix: the socket's permissions are the proof
            _busy(server, sock)
            return
        server.count(+1)
        try:
            self._serve(server, sock)
        finally:
            server.count(-1)
            server.slots.release()

    def _prove(self, server, sock) -> bool:
        """TCP: the client proves the key on an unproved slot; then it takes a slot, or is told "busy"."""
        try:
            try:
                welcome = protocol.check_client(sock, server.current_key(), server.auth_timeout)
            finally:
                server.unproved.release()
        except (protocol.ProtocolError, TimeoutError) as exc:
            why = "it did not prove the key in time" if isinstance(exc, TimeoutError) else exc
            log.warning("refused a connection: %s", why)
            try:
                sock.sendall(protocol.encode({"ok": False, "error": protocol.NOT_AUTHORIZED}))
                _drain(sock)
            except OSError:
                pass
            return False
        except OSError:  # the client went away during the key check
            return False
        if not server.slots.acquire(blocking=False):
            _busy(server, sock)
            return False
        try:
            sock.settimeout(server.message_timeout)
            sock.sendall(welcome)
        except OSError:
            server.slots.release()
            return False
        return True

    def _serve(self, server, sock) -> None:
        pool: BackendPool = server.pool
        while True:
            try:
                header, payload = protocol.receive(sock, timeout=server.message_timeout)
            except protocol.Closed:
                return
            except protocol.ProtocolError as exc:
                log.warning("bad request: %s", exc)
                reply, header = protocol.encode({"ok": False, "error": str(exc)}), None
            except TimeoutError:
                log.warning("closing a connection whose message did not arrive within %g s", server.message_timeout)
                reply, header = protocol.encode({"ok": False, "error": "request timed out: a message must arrive "
                                                 f"whole within {server.message_timeout:g} s"}), None
            except OSError:
                return
            else:
                reply = pool.handle(header, payload)
            try:
                sock.settimeout(server.message_timeout)  # what the read's deadline left is no time to send
                sock.sendall(reply)
                if header is None:  # after a malformed message the stream cannot be trusted: close it,
                    _drain(sock)  # but let the client read why first
            except OSError:  # the client went away; the next one is served as usual
                return
            if header is None or server.stopping:
                return


def _busy(server, sock) -> None:
    try:
        sock.settimeout(1.0)
        sock.sendall(protocol.encode({"ok": False, "error": f"the engine is busy ({server.max_connections} "
                                      "connections open); try again"}))
    except OSError:
        pass


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
    """A thread per connection: at most `max_connections` proved ones (one more is told the engine is busy)
    and, on TCP, at most UNPROVED that have yet to prove the key. Counts the proved connections and
    the time of the last, for the idle exit, and stops accepting before it closes."""

    daemon_threads = True
    max_connections = 8
    auth_timeout = AUTH_TIMEOUT
    message_timeout = MESSAGE_TIMEOUT
    key: bytes | None = None
    key_file: Path | None = None
    lock: rendezvous.FileLock | None = None
    open_connections = 0
    last_active = 0.0
    stopping = False
    closed = False

    def configure(self, pool, lock, key, key_file, max_connections, message_timeout, auth_timeout) -> None:
        self.pool, self.lock, self.key, self.key_file = pool, lock, key, key_file
        self.max_connections, self.message_timeout, self.auth_timeout = max_connections, message_timeout, auth_timeout
        self.slots = threading.BoundedSemaphore(max_connections)
        self.unproved = threading.BoundedSemaphore(UNPROVED)
        self.slots_lock = threading.Lock()
        self.last_active = time.monotonic()

    def current_key(self) -> bytes:
        """The key clients must prove: re-read from its file each time, so a new key made while this server
        runs (harmonize gimp install --new-key) holds at once."""
        if self.key_file is not None:
            try:
                self.key = rendezvous.read_key(self.key_file)
            except (OSError, ValueError) as exc:
                log.warning("cannot read the key %s (%s); keeping the one read before", self.key_file, exc)
        if self.key is None:
            raise protocol.ProtocolError("this engine has no key to check")
        return self.key

    def process_request(self, request, client_address) -> None:
        # Before its proof, a connection takes a slot of the unproved ones only; one that needs no proof
        # (Unix) takes its slot in the handler, where a refusal is answered off this accepting thread.
        if self.key is not None and not self.unproved.acquire(blocking=False):
            _busy(self, request)  # a flood of connections that prove nothing: refused at once
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            if self.key is not None:
                self.unproved.release()
            raise

    def handle_error(self, request, client_address) -> None:
        import sys

        exc = sys.exc_info()[1]
        log.error("a connection failed: %s: %s", type(exc).__name__, exc)  # one line, never a traceback

    def count(self, step: int) -> None:
        with self.slots_lock:
            self.open_connections += step
            self.last_active = time.monotonic()

    def idle_for(self) -> float:
        """Seconds since the last proved connection ended, 0 while one is open."""
        with self.slots_lock:
            return 0.0 if self.open_connections else time.monotonic() - self.last_active

    def stop_accepting(self) -> None:
        """Take no new connection: the socket file goes first (a new call then starts a new engine rather
        than reaching this one), connections already waiting to be accepted are served, then the
        listening socket closes and the lock is freed. The requests in flight go on."""
        self.stopping = True
        if isinstance(self.server_address, str):
            Path(self.server_address).unlink(missing_ok=True)
        self.socket.setblocking(False)
        while True:
            try:
                request, client_address = self.socket.accept()
            except OSError:  # none left waiting (BlockingIOError), or the socket is gone
                break
            request.setblocking(True)
            self.process_request(request, client_address)
        self.server_close()

    def finish_requests(self, seconds: float = FINISH_TIMEOUT) -> bool:
        """Wait up to `seconds` for the proved connections to end; False if some were still open."""
        deadline = time.monotonic() + seconds
        while self.open_connections and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self.open_connections

    def server_close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if isinstance(self.server_address, str):
            Path(self.server_address).unlink(missing_ok=True)
        super().server_close()
        if self.lock is not None:
            self.lock.release()


class UnixServer(_Bounded, socketserver.UnixStreamServer):
    pass


class TcpServer(_Bounded, socketserver.TCPServer):
    # NOTE: on Windows SO_REUSEADDR would let another program bind this port too; there it takes it whole.
    allow_reuse_address = os.name != "nt"

    def server_bind(self) -> None:
        if os.name == "nt":
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        super().server_bind()


def make_server(pool: BackendPool, address=None, max_connections: int = 8, message_timeout: float = MESSAGE_TIMEOUT,
                key: bytes | None = None, key_file: str | Path | None = None,
                auth_timeout: float = AUTH_TIMEOUT) -> _Bounded:
    """A bound server (not yet serving). It holds the address's lock file until `server_close`, and
    refuses to start while another server holds it, in a folder that is not the user's own, over a file
    that is not a socket, or on TCP without a key (`key`, or `key_file`, read again at every proof)."""
    address = address or rendezvous.default_address()
    if key_file is not None:
        key = rendezvous.read_key(key_file)
    if isinstance(address, tuple) and key is None:
        raise HarmonizeError("a server on TCP needs the plug-in's key (--key-file): without it any local "
                             "program could use the engine")
    lock = rendezvous.FileLock(rendezvous.server_lock_path(address))
    try:
        if not lock.acquire():
            raise HarmonizeError(f"an engine server is already running on {address}")
        lock.note(str(os.getpid()))  # so that a plug-in of another version can stop this server
    except rendezvous.UnsafeFolder as exc:
        raise HarmonizeError(str(exc)) from None
    try:
        server = _bind(address)
    except BaseException:
        lock.release()
        raise
    server.configure(pool, lock, key, None if key_file is None else Path(key_file), max_connections, message_timeout,
                 auth_timeout)
    return server


def _bind(address) -> _Bounded:
    if isinstance(address, tuple):
        return TcpServer(("127.0.0.1", address[1]), _Handler)
    path = Path(address)
    if len(os.fsencode(path)) > 107:
        raise HarmonizeError(f"{path} is too long for a socket path ({len(os.fsencode(path))} bytes; the limit is "
                             "107): give a shorter --socket")
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
          idle_minutes: float = 0.0, key_file: str | Path | None = None) -> None:
    """Serve until SIGINT or SIGTERM, or `idle_minutes` without a connection (0: never); then stop
    accepting, finish the requests in flight and remove the socket."""
    server = make_server(BackendPool(backend, model), address, key=key, key_file=key_file)
    one_blas_thread()  # for the engine's life: its own threads and ONNX Runtime's are its parallelism
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("serving on %s (%s; Ctrl-C stops)", server.server_address,
             f"exits after {idle_minutes:g} idle minutes" if idle_minutes > 0 else "until stopped")
    run(server, stop, idle_minutes * 60)


def run(server: _Bounded, stop: threading.Event, idle_seconds: float = 0.0) -> None:
    """Serve on a thread of its own until `stop` is set or no proved connection came for `idle_seconds`
    (0: never); then stop accepting, finish the requests in flight, and close."""
    loop = threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.1), daemon=True)
    loop.start()
    try:
        while not stop.wait(0.1):
            if idle_seconds > 0 and server.idle_for() >= idle_seconds:
                log.info("no request for %g s: stopping", idle_seconds)
                break
    finally:
        server.shutdown()  # the accepting loop ends; what it had not yet accepted is served below
        server.stop_accepting()
        if not server.finish_requests():
            log.warning("stopped with requests still in flight after %g s", FINISH_TIMEOUT)
        log.info("stopped")
