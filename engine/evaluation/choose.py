"""`harmonize choose`: does a candidate beat the shipped model by more than noise?

The rule (docs/results.md, fixed 2026-12-04 before any round-6 score): on the real triples (the 32 of
../shared/bench's validation and benchmark together), a candidate replaces the baseline only when its mean
per-image PSNR gain, paired triple by triple, is at least twice its standard error, and its mean fMSE does
not rise. Proviso: on held-out synthetic composites (`harmonize heldout --recipe iharmony4`, photos no run
trains on) its mean PSNR does not fall below the baseline's. Among candidates that pass, the largest gain.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .evaluate import Scores

SIGMAS = 2.0  # a gain counts when it is at least this many paired standard errors


@dataclass(frozen=True)
class Paired:
    """A candidate against the baseline on the same triples: the mean per-image differences and the PSNR
    difference's standard error (the std of the differences over sqrt(n), ddof 1)."""

    n: int
    psnr_gain: float
    psnr_se: float
    fmse_change: float

    @property
    def sigmas(self) -> float:
        """The gain in standard errors (inf for a gain with no spread, nan with one triple)."""
        if self.n < 2:
            return float("nan")
        return self.psnr_gain / self.psnr_se if self.psnr_se > 0 else math.copysign(math.inf, self.psnr_gain)


def paired(baseline: Scores, candidate: Scores, column: str = "full") -> Paired:
    """Mean per-image PSNR gain with its standard error, and fMSE change, over the triples both scored."""
    names = [n for n in baseline.rows if n in candidate.rows]
    if not names:
        raise ValueError("the baseline and the candidate share no triple")
    gain = np.array([candidate.rows[n][f"PSNR {column}"] - baseline.rows[n][f"PSNR {column}"] for n in names])
    fmse = np.array([candidate.rows[n][f"fMSE {column}"] - baseline.rows[n][f"fMSE {column}"] for n in names])
    se = float(gain.std(ddof=1) / math.sqrt(len(gain))) if len(gain) > 1 else float("nan")
    return Paired(len(names), float(gain.mean()), se, float(fmse.mean()))


@dataclass(frozen=True)
class Verdict:
    """Whether a candidate passes the rule, and each part of the reason."""

    real: Paired
    heldout: Paired | None

    @property
    def gain_counts(self) -> bool:
        return self.real.n > 1 and self.real.psnr_gain >= SIGMAS * self.real.psnr_se and self.real.psnr_gain > 0

    @property
    def fmse_holds(self) -> bool:
        return self.real.fmse_change <= 0

    @property
    def heldout_holds(self) -> bool:
        return self.heldout is not None and self.heldout.psnr_gain >= 0

    @property
    def real_passes(self) -> bool:
        """The rule's part on the real triples: the proviso can only turn this pass into a fail."""
        return self.gain_counts and self.fmse_holds

    @property
    def passes(self) -> bool:
        return self.real_passes and self.heldout_holds

    def reason(self) -> str:
        """One line: PASSES, or what failed (the proviso only where the real triples passed or it was scored)."""
        held = "held-out composites not scored" if self.heldout is None else "loses on the held-out composites"
        proviso = self.heldout_holds or (self.heldout is None and not self.real_passes)
        failed = [why for ok, why in ((self.gain_counts, f"gain under {SIGMAS:g} standard errors"),
                                      (self.fmse_holds, "fMSE rises"), (proviso, held)) if not ok]
        return "fails: " + ", ".join(failed) if failed else "PASSES"


def verdict(baseline: Scores, candidate: Scores, heldout_baseline: Scores | None = None,
            heldout_candidate: Scores | None = None) -> Verdict:
    """The rule applied: paired on the real triples, and on the held-out composites when both were scored."""
    held = paired(heldout_baseline, heldout_candidate) if heldout_baseline and heldout_candidate else None
    return Verdict(paired(baseline, candidate), held)


def report(verdicts: dict[str, Verdict]) -> str:
    """A Markdown table of every candidate's verdict, and the winner: the passing candidate of largest gain."""
    lines = ["| candidate | triples | PSNR gain (dB) | SE | gain / SE | fMSE change | held-out gain (dB) | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for name, v in verdicts.items():
        r, h = v.real, v.heldout
        held = f"{h.psnr_gain:+.3f} ± {h.psnr_se:.3f} ({h.n})" if h else "-"
        lines.append(f"| {name} | {r.n} | {r.psnr_gain:+.3f} | {r.psnr_se:.3f} | {r.sigmas:+.2f} | "
                     f"{r.fmse_change:+.1f} | {held} | {v.reason()} |")
    passing = {n: v for n, v in verdicts.items() if v.passes}
    winner = max(passing, key=lambda n: passing[n].real.psnr_gain) if passing else None
    lines.append(f"\nwinner: {winner}" if winner else "\nno candidate passes: the baseline stays")
    return "\n".join(lines)


def write_csv(path: str | Path, verdicts: dict[str, Verdict]) -> None:
    """The verdicts as CSV rows (docs/results/)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["candidate", "triples", "psnr_gain_db", "psnr_se_db", "gain_over_se", "fmse_change",
                    "heldout_n", "heldout_gain_db", "heldout_se_db", "verdict"])
        for name, v in verdicts.items():
            r, h = v.real, v.heldout
            w.writerow([name, r.n, f"{r.psnr_gain:.4f}", f"{r.psnr_se:.4f}", f"{r.sigmas:.3f}",
                        f"{r.fmse_change:.2f}", h.n if h else "", f"{h.psnr_gain:.4f}" if h else "",
                        f"{h.psnr_se:.4f}" if h else "", v.reason()])
