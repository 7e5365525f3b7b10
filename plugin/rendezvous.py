"""Where the GIMP plug-in and the engine server meet (standard library only; both sides import it).

The server's address (a Unix socket file, or 127.0.0.1 and a port where AF_UNIX is missing), the folder
beside it for its locks and log (this user's alone, or refused), the key each side proves itself with over
TCP, how the engine's interpreter is started away from the current folder, and whether GIMP runs in a
Flatpak sandbox, which cannot start the engine and sees only part of the host's folders.
"""
from __future__ import annotations

import os
import secrets
import socket
import stat
import time
from pathlib import Path

TCP_PORT = 47913
FLATPAK_APP = "org.gimp.GIMP"


def in_flatpak(environ=None, info: Path = Path("/.flatpak-info")) -> bool:
    """True inside a Flatpak sandbox: FLATPAK_ID is set, or /.flatpak-info exists."""
    environ = os.environ if environ is None else environ
    return bool(environ.get("FLATPAK_ID")) or info.exists()


def flatpak_socket(home: str | Path | None = None) -> str:
    """A socket path that a Flatpak GIMP and the host both see: under the app's folder in the home
    (the sandbox does not share the host's $XDG_RUNTIME_DIR)."""
    home = Path(home or os.path.expanduser("~"))
    return str(home / ".var" / "app" / FLATPAK_APP / "cache" / "fmm-harmonize" / "engine.sock")


def default_address() -> str | tuple[str, int]:
    """The server's Unix socket path (in a Flatpak, the one both sides see), or 127.0.0.1:port where
    AF_UNIX is missing."""
    if not hasattr(socket, "AF_UNIX"):
        return ("127.0.0.1", TCP_PORT)
    if in_flatpak():
        return flatpak_socket()
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fmm-harmonize", "engine.sock")


def runtime_dir(address) -> Path:
    """The folder for the server's locks and log: the socket's own, or a per-user one for TCP."""
    if isinstance(address, str):
        return Path(address).parent
    base = os.environ.get("LOCALAPPDATA") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fmm-harmonize"


def _stem(address) -> str:
    return Path(address).name if isinstance(address, str) else f"engine-{address[1]}"


def server_lock_path(address) -> Path:
    """Held by a serving server for its whole life: a free lock means any socket file is stale."""
    return runtime_dir(address) / f"{_stem(address)}.lock"


def start_lock_path(address) -> Path:
    """Held by a client while it starts a server, so that two calls at once start one."""
    return runtime_dir(address) / f"{_stem(address)}.starting"


def log_path(address) -> Path:
    """Where a server started by the plug-in writes its log (the last start's only)."""
    return runtime_dir(address) / f"{_stem(address)}.log"


class UnsafeFolder(Exception):
    """The folder for the engine's socket, locks and log could be changed by someone else."""


# Never follow a link planted where the server's lock or log goes (0 where the system has no such flag).
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def private_folder(folder: str | Path, create: bool = True) -> Path:
    """`folder`, made 0700 when missing (when `create`; FileNotFoundError otherwise). As ssh-agent checks
    its own: UnsafeFolder when it is a link or no folder, belongs to another user, or gives group or others
    any access. (Windows: a folder under the user's own profile, whose permissions Windows keeps.)"""
    folder = Path(folder)
    if create:
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass
    info = os.lstat(folder)
    if os.name == "nt":
        return folder
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UnsafeFolder(f"{folder} is a link or not a folder; the engine keeps its socket only in a folder of "
                           "your own: remove it, or give another place (harmonize serve --socket)")
    if info.st_uid != os.getuid():
        raise UnsafeFolder(f"{folder} belongs to user id {info.st_uid}, not to you ({os.getuid()}); the engine "
                           "keeps its socket only in a folder of your own: give another place (harmonize serve "
                           "--socket), or remove it")
    if info.st_mode & 0o077:
        raise UnsafeFolder(f"{folder} is open to other users (mode {stat.S_IMODE(info.st_mode):o}); the engine "
                           f"keeps its socket only in a folder of your own: chmod 700 {folder}")
    return folder


def open_private(path: str | Path, flags: int) -> int:
    """os.open of a file in a private folder, made 0600, never through a link planted in its place."""
    path = Path(path)
    private_folder(path.parent)
    try:
        return os.open(path, flags | os.O_CREAT | NOFOLLOW, 0o600)
    except OSError:
        if os.path.islink(path):
            raise UnsafeFolder(f"{path} is a link; the engine never writes through one: remove it") from None
        raise


def isolated(python: str, code: str, root: str | None = None) -> list[str]:
    """The command that runs `code` in the engine's interpreter apart from the current folder and the
    environment's PYTHON* settings (-I), with the engine package taken from `root`, the folder that holds
    it, when given. Run it with `cwd=os.path.dirname(python)`, a folder as trusted as the interpreter."""
    head = "import sys\n" + (f"sys.path.insert(0, {str(root)!r})\n" if root else "")
    return [python, "-I", "-c", head + code]


CLI = "from engine.cli import main\nsys.exit(main(sys.argv[1:]))"  # `isolated(python, CLI) + [verb, ...]`


class FileLock:
    """An exclusive lock on a file (flock, or msvcrt on Windows), released on `release` or when the
    process dies, so a killed holder never leaves it taken."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self, timeout: float = 0.0) -> bool:
        """Take the lock, waiting up to `timeout` seconds; False when another process holds it."""
        fd = open_private(self.path, os.O_RDWR)
        deadline = time.monotonic() + timeout
        while True:
            try:
                _lock(fd)
                self.fd = fd
                return True
            except OSError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.05)

    def note(self, text: str) -> None:
        """Write `text` into the held lock file, after its first byte (Windows locks that byte against
        reading too), for others to read with `read_note`."""
        os.ftruncate(self.fd, 1)
        os.lseek(self.fd, 1, os.SEEK_SET)
        os.write(self.fd, text.encode())

    def read_note(self) -> str:
        """What the holder wrote with `note`, or "" when nothing is written."""
        with open(self.path, "rb") as f:
            f.seek(1)
            return f.read(64).decode(errors="replace").strip()

    def held(self) -> bool:
        """Whether another process holds the lock now."""
        if not self.acquire():
            return True
        self.release()
        return False

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            _unlock(fd)
            os.close(fd)


if os.name == "nt":
    import msvcrt

    def _lock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def new_key() -> str:
    """A new random key, as engine.key holds it."""
    return secrets.token_hex(32)


def write_key(path: str | Path, key: str | None = None) -> Path:
    """`key` (a new random one when None) in a file only this user may read (0600 where the system has
    modes), made anew so that no one else's file or link is written through."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write((key or new_key()) + "\n")
    return path


def read_key(path: str | Path) -> bytes:
    """The key in `path`; OSError when it cannot be read, ValueError when it is not a key."""
    key = Path(path).read_text().strip()
    if len(key) < 32:
        raise ValueError(f"{path} holds no key")
    return key.encode()
