"""Where inputs and outputs live: local paths, or fsspec URLs (s3://, gs://, az://, file://, memory://, ...)
through universal-pathlib (the 'urls' extra) and the URL's own filesystem package (s3fs, gcsfs, adlfs).
Outputs at a URL are written in one put, which object stores make atomic."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError, MissingDependencyError, install_hint

FILESYSTEMS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
               "abfss": "adlfs", "http": "aiohttp", "https": "aiohttp"}


def as_path(text: str | Path) -> Path:
    """A local Path, or a UPath for a URL; MissingDependencyError naming exactly what a URL needs."""
    if not (isinstance(text, str) and "://" in text):
        return Path(text)
    scheme = text.split("://", 1)[0].lower()
    package = FILESYSTEMS.get(scheme)
    try:
        import fsspec
        from upath import UPath

        fsspec.get_filesystem_class(scheme)  # UPath itself would fail only at the first read
        return UPath(text)
    except ImportError:
        need = " and ".join(["universal-pathlib", *([package] if package else [])])
        how = install_hint("urls") + (f", then: pip install {package}" if package else "")
        raise MissingDependencyError(f"{text}: a {scheme}:// path needs {need}; install with: {how}") from None
    except ValueError:
        raise InputError(f"{text}: {scheme}:// is no kind of URL that fsspec knows") from None


def is_local(path: Path) -> bool:
    """Whether the operating system can open it by name (a plain path, or a file:// URL)."""
    try:
        os.fspath(path)
        return True
    except TypeError:
        return False
