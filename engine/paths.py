"""Where inputs and outputs live: local paths, or fsspec URLs (s3://, gs://, az://, file://, memory://, ...)
through universal-pathlib, which the 'ray' extra installs; a URL's own filesystem package (s3fs, gcsfs)
is the user's to install. Outputs at a URL are written in one put, which object stores make atomic."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import require


def as_path(text: str | Path) -> Path:
    """A local Path, or a UPath for a URL."""
    if isinstance(text, str) and "://" in text:
        return require("upath", "ray").UPath(text)
    return Path(text)


def is_local(path: Path) -> bool:
    """Whether the operating system can open it by name (a plain path, or a file:// URL)."""
    try:
        os.fspath(path)
        return True
    except TypeError:
        return False
