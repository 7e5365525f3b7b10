"""Atomic writes: on disk a temporary file beside the target, renamed over it only once complete; at a
URL one whole put, which an object store either keeps entire or never shows."""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .paths import is_local, store_errors


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it to `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def put_whole(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all: atomic_path on disk; at a URL the filesystem's pipe_file,
    one PUT (s3fs: a multipart upload from 100 MiB, aborted when a part fails), never a stream of parts
    that a failure could leave half-sent. No folder is made at a URL: a mistyped bucket fails, not appears."""
    if is_local(path):
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        return
    with store_errors(path):
        path.fs.pipe_file(path.path, data)
