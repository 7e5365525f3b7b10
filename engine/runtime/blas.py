"""numpy's OpenBLAS kept to one thread in the processes that harmonize. Their parallelism is their own (the
batch's loader and writer threads, ONNX Runtime's threads); OpenBLAS's threads, woken by each band's 3x3
colour map, then spin on cores those need: 10 to 12 % of a 2-core batch's CPU (perf) for 0.6 % of its work,
and the GIMP engine's answer to a 12 MP layer took 0.51 to 0.53 s against 0.47 to 0.49 s with one thread (in
process, median of 5, three alternating runs; the round trip through the socket hides it in its noise).
numpy has no call for this, so the loaded library is asked by name, as threadpoolctl does.
"""
from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable
from pathlib import Path

# numpy's wheels carry OpenBLAS as scipy-openblas, whose calls have a prefix and a suffix; a system one has neither
OPENBLAS_CALLS = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                  ("openblas_get_num_threads", "openblas_set_num_threads"))


def openblas_libraries() -> list[ctypes.CDLL]:
    """The OpenBLAS libraries loaded in this process (none without /proc, as on Windows and macOS)."""
    with contextlib.suppress(OSError):
        maps = [line.split(maxsplit=5) for line in Path("/proc/self/maps").read_text().splitlines()]
        paths = {m[5] for m in maps if len(m) == 6 and "openblas" in m[5].rsplit("/", 1)[-1].lower()}
        return [ctypes.CDLL(path) for path in sorted(paths)]
    return []


def one_blas_thread() -> Callable[[], None]:
    """Keep numpy's OpenBLAS to one thread; the call returned puts it back as it was."""
    import numpy  # noqa: F401  (its OpenBLAS is loaded with it)

    restore = []
    for lib in openblas_libraries():
        for get, put in OPENBLAS_CALLS:
            if hasattr(lib, get) and hasattr(lib, put):
                restore.append((getattr(lib, put), getattr(lib, get)()))
                getattr(lib, put)(1)
                break

    def as_before() -> None:
        for put, threads in restore:
            put(threads)
    return as_before
