"""A dependency-free progress line with rate and ETA: redrawn on a terminal, a line a while otherwise."""
from __future__ import annotations

import sys
import time


class Progress:
    """Progress over `total` items; `update(done, extra)` redraws at most a few times a second."""

    def __init__(self, total: int, label: str, initial: int = 0, stream=None, enabled: bool = True):
        self.total, self.label, self.initial = total, label, initial
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.enabled = enabled
        self.start = self.last = time.monotonic()

    def update(self, done: int, extra: str = "") -> None:
        now = time.monotonic()
        interval = 0.2 if self.tty else 30.0
        if not self.enabled or (now - self.last < interval and done < self.total):
            return
        self.last = now
        rate = (done - self.initial) / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta != float("inf") else "?"
        line = f"{self.label}: {done}/{self.total} {rate:.2f}/s ETA {eta_s} {extra}".rstrip()
        self.stream.write(("\r\x1b[K" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
