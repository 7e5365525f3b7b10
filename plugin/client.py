"""The GIMP side's way to the engine (standard library only): a running `harmonize serve`, started in
the background by the first call that finds none, reused by later calls until it exits after an idle
time. Two calls at once start one server; a stale socket is replaced by the server that starts."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

try:
    from . import protocol, rendezvous
except ImportError:  # installed as plain files beside the plug-in
    import protocol  # type: ignore[no-redef]
    import rendezvous  # type: ignore[no-redef]

CONFIG_NAME = "engine.json"
IDLE_MINUTES = 10  # a server the plug-in starts exits after this long without a request
START_TIMEOUT = 120.0  # seconds for a new server to load its model and answer


class EngineError(Exception):
    """The engine could not be reached or refused the request; the message is for the user."""


class OtherVersion(EngineError):
    """The engine that answered (`who`) is another version of fmm-harmonize (its protocol version `theirs`)."""

    def __init__(self, who: str, theirs: int):
        super().__init__(f"{who} is another version of fmm-harmonize (its protocol {theirs}, this plug-in's "
                         f"{protocol.VERSION})")
        self.theirs = theirs


def read_config(folder: str | Path) -> dict:
    """The config the installer wrote beside the plug-in: the engine's interpreter, address, key file,
    devices and idle time."""
    path = Path(folder) / CONFIG_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise EngineError(f"{path} is damaged ({exc}); run: harmonize gimp install") from None


def address_of(config: dict) -> str | tuple[str, int]:
    """The configured address (JSON gives a list for host and port), else the default one."""
    address = config.get("address") or rendezvous.default_address()
    return tuple(address) if isinstance(address, list) else address


def _key(config: dict) -> bytes:
    path = config.get("key_file")
    if not path:
        raise EngineError("the engine listens on TCP, which needs the key in engine.key; run: harmonize gimp install")
    try:
        return rendezvous.read_key(path)
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot read the engine's key {path} ({exc}); run: harmonize gimp install") from None


def connect(address, config: dict | None = None, timeout: float = 30.0) -> socket.socket:
    """A connection to a listening server: over a Unix socket, one in a folder of this user's own; over
    TCP, one that proved it holds the user's key, as this side proved it too. OSError when nothing listens
    there; EngineError when what is there is not this user's engine (nothing of a request was sent)."""
    family = socket.AF_INET if isinstance(address, tuple) else socket.AF_UNIX
    if family == socket.AF_UNIX:
        try:
            rendezvous.private_folder(Path(address).parent, create=False)
        except rendezvous.UnsafeFolder as exc:
            raise EngineError(str(exc)) from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address if family == socket.AF_INET else str(address))
        if family == socket.AF_INET:
            verdict = protocol.answer(sock, _key(config or {}))
            if not verdict.get("ok"):
                raise EngineError(verdict.get("error", "the engine refused the connection"))
    except protocol.VersionMismatch as exc:
        sock.close()
        raise OtherVersion(f"the engine at {_where(address)}", exc.theirs) from None
    except protocol.ProtocolError as exc:
        sock.close()
        raise EngineError(f"something other than this user's engine answers at {_where(address)} ({exc}); nothing "
                          "was sent to it") from None
    except BaseException:
        sock.close()
        raise
    return sock


def _where(address) -> str:
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)


def _exchange(sock: socket.socket, message: bytes, timeout: float) -> tuple[dict, bytes]:
    with sock:
        sock.settimeout(timeout)
        try:
            try:
                sock.sendall(message)
            except OSError as sending:  # refused while it was being sent? Then its reason is waiting to be read
                try:
                    reply = protocol.receive(sock)
                except protocol.VersionMismatch:
                    raise  # an engine of another version said so and hung up: that is its reason
                except (protocol.ProtocolError, OSError):
                    raise sending from None
            else:
                reply = protocol.receive(sock)
        except TimeoutError:
            raise EngineError(f"the engine did not answer within {timeout:g} s") from None
        except protocol.VersionMismatch as exc:
            raise OtherVersion("the engine that answered", exc.theirs) from None
        except (protocol.ProtocolError, OSError) as exc:  # Closed included: it went away mid-request
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise EngineError(f"the engine stopped during the request ({why}); the next call starts it "
                              "again") from None
    header, payload = reply
    if not header.get("ok"):
        raise EngineError(header.get("error", "the engine failed without saying why"))
    return header, payload


def send(message: bytes, config: dict | None = None, timeout: float = 600.0, status=None) -> tuple[dict, bytes]:
    """Send one message to the engine, starting a server when none runs, and return its reply (header,
    payload). `status(text)` hears what is going on ("Starting the engine")."""
    config = config or {}
    try:
        sock = open_engine(config, status)
        if status:
            status("Harmonize Layer: harmonizing")
        return _exchange(sock, message, timeout)
    except OtherVersion as exc:  # an engine left running from before an upgrade: replace it, once
        stop_other_version(address_of(config), exc)
        if status:
            status("Harmonize Layer: restarting the engine (another version of it was running)")
        return _exchange(open_engine(config, status), message, timeout)


STOP_TIMEOUT = 15.0  # seconds for an engine of another version to exit once asked


def stop_other_version(address, found: OtherVersion) -> None:
    """Stop the engine of another version serving at `address`, by the pid it wrote into its lock file (in
    this user's own folder), and wait until it has gone; EngineError, saying what to do, where it cannot."""
    lock = rendezvous.FileLock(rendezvous.server_lock_path(address))
    try:
        pid = int(lock.read_note() or 0)
    except (OSError, ValueError):
        pid = 0
    if not pid:  # a server from before servers wrote their pid
        raise EngineError(f"an engine of another version of fmm-harmonize (protocol {found.theirs}) is running at "
                          f"{_where(address)}; it exits after {IDLE_MINUTES} idle minutes, or stop it now (end "
                          "its 'harmonize serve' process) and call again")
    if lock.held():
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError as exc:
            raise EngineError(f"cannot stop the engine of another version (pid {pid}) at {_where(address)}: "
                              f"{exc.strerror or exc}") from None
    if not lock.acquire(timeout=STOP_TIMEOUT):
        raise EngineError(f"the engine of another version (pid {pid}) at {_where(address)} did not stop within "
                          f"{STOP_TIMEOUT:.0f} s of being asked")
    lock.release()


def ping(config: dict | None = None, timeout: float = 30.0) -> dict:
    """A running server's reply to ping; OSError when none listens (it starts no server)."""
    config = config or {}
    return _exchange(connect(address_of(config), config), protocol.encode({"op": "ping"}), timeout)[0]


def _try_connect(address, config: dict) -> socket.socket | None:
    """A connection to the server, or None when nothing listens there (yet)."""
    try:
        return connect(address, config)
    except OSError:
        return None


def open_engine(config: dict, status=None) -> socket.socket:
    """A connection to the engine server, starting one in the background when none answers."""
    address = address_of(config)
    sock = _try_connect(address, config)
    if sock is not None:
        return sock
    if rendezvous.in_flatpak():
        raise EngineError(flatpak_message(config, address))
    starting = rendezvous.FileLock(rendezvous.start_lock_path(address))
    try:
        started = starting.acquire(timeout=START_TIMEOUT)
    except rendezvous.UnsafeFolder as exc:
        raise EngineError(str(exc)) from None
    if not started:
        raise EngineError(f"another call has been starting the engine for {START_TIMEOUT:.0f} s; see "
                          f"{rendezvous.log_path(address)}")
    try:
        sock = _try_connect(address, config)  # the call that held the lock may have started it meanwhile
        if sock is not None:
            return sock
        if status:
            status("Harmonize Layer: starting the engine (the first call loads the model)")
        return _wait_for_server(_start_server(config, address), address, config)
    finally:
        starting.release()


def flatpak_message(config: dict, address) -> str:
    """What GIMP shows when it runs in a Flatpak sandbox and no server answers."""
    python = config.get("python")
    harmonize = str(Path(python).with_name("harmonize")) if python else "harmonize"
    return ("GIMP runs as a Flatpak, whose sandbox cannot start the engine. Start it outside GIMP, in a "
            f"terminal, and keep it running: {harmonize} serve --flatpak (it listens on {address})")


def _start_server(config: dict, address) -> subprocess.Popen:
    python = config.get("python")
    if not python:
        raise EngineError("no engine interpreter is configured; run: harmonize gimp install")
    args = ["serve", "--idle-minutes", str(config.get("idle_minutes", IDLE_MINUTES))]
    if isinstance(address, tuple):
        args += ["--port", str(address[1]), "--key-file", str(config.get("key_file", ""))]
    else:
        args += ["--socket", str(address)]
    cmd = rendezvous.isolated(python, rendezvous.CLI, config.get("engine_path")) + args
    if os.name == "nt":  # no console window, and not ended with GIMP's
        detach = dict(creationflags=subprocess.CREATE_NO_WINDOW | subprocess.CREATE_NEW_PROCESS_GROUP)
    else:
        detach = dict(start_new_session=True)
    try:
        with os.fdopen(rendezvous.open_private(rendezvous.log_path(address), os.O_WRONLY | os.O_TRUNC), "wb") as out:
            # GIMP's working folder may be anyone's: the engine starts in its interpreter's own
            return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    close_fds=True, cwd=os.path.dirname(python) or None, **detach)
    except rendezvous.UnsafeFolder as exc:
        raise EngineError(str(exc)) from None
    except OSError as exc:
        raise EngineError(f"cannot start the engine ({python}): {exc.strerror or exc}; run: harmonize gimp "
                          "install") from None


def _wait_for_server(proc: subprocess.Popen, address, config: dict) -> socket.socket:
    deadline = time.monotonic() + START_TIMEOUT
    while (sock := _try_connect(address, config)) is None:
        if proc.poll() is not None:
            sock = _try_connect(address, config)  # it may have found another server that had just started
            if sock is not None:
                return sock
            lines = rendezvous.log_path(address).read_text(errors="replace").strip().splitlines()
            raise EngineError(f"the engine did not start: {lines[-1] if lines else f'exit status {proc.returncode}'}"
                              f" (log: {rendezvous.log_path(address)})")
        if time.monotonic() > deadline:
            raise EngineError(f"the engine did not answer within {START_TIMEOUT:.0f} s of starting (log: "
                              f"{rendezvous.log_path(address)})")
        time.sleep(0.05)
    return sock


def harmonize(request: protocol.Request, config: dict | None = None, status=None) -> protocol.Result:
    """The engine's Result for one Request (the layer's new RGB in its rect and format, and which backend
    and device made it), starting the engine when none runs."""
    try:
        message = request.encode()
    except protocol.ProtocolError as exc:
        raise EngineError(str(exc)) from None
    header, payload = send(message, config, status=status)
    try:
        return protocol.Result.decode(header, payload, request)
    except protocol.ProtocolError as exc:
        raise EngineError(str(exc)) from None
