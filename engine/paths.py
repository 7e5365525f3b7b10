"""Where inputs and outputs live: local paths, or fsspec URLs (s3://, gs://, az://, file://, memory://, ...)
through universal-pathlib (the 'urls' extra) and the URL's own filesystem package (s3fs, gcsfs, adlfs).
Outputs at a URL are written in one put (`atomic.put_whole`), which object stores make atomic; a store's own
errors are said as this project's (`store_errors`): refused credentials name the bucket, before any work."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import HarmonizeError, InputError, MissingDependencyError, install_hint

FILESYSTEMS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
               "abfss": "adlfs", "http": "aiohttp", "https": "aiohttp"}
# Where each store's client takes its credentials from: what a refusal tells the user to check.
CREDENTIALS = {
    "s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or the machine's role), and "
          "AWS_ENDPOINT_URL for a store that is not AWS",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS (or the machine's service account)",
    "az": "AZURE_STORAGE_CONNECTION_STRING (or AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY)",
}
CREDENTIALS.update(s3a=CREDENTIALS["s3"], gcs=CREDENTIALS["gs"], abfs=CREDENTIALS["az"], abfss=CREDENTIALS["az"])


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


def bucket_of(path: Path) -> str:
    """A URL's bucket (or container), as scheme://name."""
    scheme, rest = str(path).split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


@contextlib.contextmanager
def store_errors(path: Path) -> Iterator[None]:
    """Say an object store's errors about `path` as this project's: a refusal of the credentials is an
    InputError naming the bucket and where the credentials come from; the client library's own exceptions
    (a cut connection, a timeout: botocore's, aiohttp's) are an OSError saying what it said. Local paths pass."""
    try:
        yield
    except (HarmonizeError, FileNotFoundError):
        raise
    except PermissionError as exc:
        if is_local(path):
            raise
        scheme = str(path).split("://", 1)[0].lower()
        where = CREDENTIALS.get(scheme, "the credentials of its filesystem package")
        raise InputError(f"{path}: the store refused access to {bucket_of(path)} ({exc}); check the "
                         f"credentials this machine uses for it: {where}") from None
    except OSError:
        raise
    except Exception as exc:
        if is_local(path):
            raise
        raise OSError(f"{type(exc).__name__}: {exc}") from exc


def exists(path: Path) -> bool:
    """Whether `path` exists; at a URL, refused credentials raise an InputError naming the bucket."""
    with store_errors(path):
        return path.exists()
