"""`harmonize train-round`: a round's candidates, one after another in one process, sharing the pictures
decoded once on the device; what a lent GPU's call runs (recipes/gpu-round-6.sh).

A round is a file of data (recipes/round-6.json): options every candidate shares ("common", TrainConfig's
fields) and each candidate's own ("candidates": name -> fields). A candidate goes on from the weights of a
previous round's checkpoint kept in START ("from": its file name there), or of any file ("init"), with a
learning-rate schedule of its own over its share of MINUTES (a warm restart: a schedule stretched over the
rounds before would leave it a few percent of its rate). A round run again resumes each candidate where its
full checkpoint in RUNS stopped (OUT/runs unless given; a lent machine's call keeps them out of OUT, whose
files come back only under 16 MiB). Every checkpoint comes back slimmed to float16 weights, split into parts of
at most `part_limit` bytes: join them with `cat NAME.pt.part* > NAME.pt`.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import sys
import traceback
from pathlib import Path

import torch

from ..errors import InputError
from .config import TrainConfig
from .train import slim_checkpoint, train

PART_LIMIT = 15 * 2**20  # a lent machine returns files of at most 16 MiB: a margin under it
_PER_RUN = ("data", "device", "resume", "minutes", "pause_after")  # set by the round, not by its file
_ROUND_ONLY = ("from", "share", "comment")  # a candidate's own keys that are not TrainConfig's


def read_round(path: str | Path) -> tuple[dict, dict[str, dict]]:
    """A round file's common options and candidates, every name checked against TrainConfig's fields."""
    try:
        spec = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read a round ({exc})") from None
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    common, candidates = spec.get("common", {}), spec.get("candidates", {})
    if not candidates:
        raise InputError(f"{path}: no candidates")
    for where, options in [("common", common), *candidates.items()]:
        unknown = set(options) - fields - set(_ROUND_ONLY)
        if unknown:
            raise InputError(f"{path}: {where}: unknown options {', '.join(sorted(unknown))}")
        fixed = set(options) & set(_PER_RUN)
        if fixed:
            raise InputError(f"{path}: {where}: {', '.join(sorted(fixed))} are the round's, not the file's")
    return common, candidates


def split_file(path: Path, limit: int = PART_LIMIT) -> list[Path]:
    """`path` itself when it is at most `limit` bytes, else parts NAME.part1, NAME.part2... of at most `limit`
    bytes each (the file removed), which `cat` joins in order."""
    if path.stat().st_size <= limit:
        return [path]
    data, parts = path.read_bytes(), []
    for k, offset in enumerate(range(0, len(data), limit), 1):
        part = path.with_name(f"{path.name}.part{k}")
        part.write_bytes(data[offset:offset + limit])
        parts.append(part)
    path.unlink()
    return parts


class RoundFailed(Exception):
    """Some candidates of a round failed; the others' checkpoints were written (`written`)."""

    def __init__(self, failed: list[str], written: list[Path]):
        super().__init__(f"candidates that failed: {', '.join(failed)} (the traceback of each is above)")
        self.failed, self.written = failed, written


def train_round(round_file: str | Path, data: str | Path, start: str | Path, out: str | Path, minutes: float,
                device: str = "cuda", part_limit: int = PART_LIMIT, batch_size: int | None = None,
                channels_last: bool | None = None, make_ahead: bool | None = None,
                runs: str | Path | None = None) -> list[Path]:
    """Train every candidate of `round_file` in turn for its share of `minutes`, each written slimmed to
    float16 (split at `part_limit`) into `out` as soon as it is done; `batch_size` in place of the file's (a dry
    run on the CPU), `channels_last` and `make_ahead` in place of the candidates' (as measured on the machine),
    full checkpoints in `runs` (default OUT/runs). A candidate that
    fails does not stop the others: RoundFailed names it at the end."""
    common, candidates = read_round(round_file)
    start, out = Path(start), Path(out)
    runs = Path(runs) if runs else out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    total_share = sum(float(c.get("share", 1.0)) for c in candidates.values())
    settings = {}
    for name, options in candidates.items():  # every candidate checked before any trains
        fields = {k: v for k, v in {**common, **options}.items() if k not in _ROUND_ONLY}
        if batch_size is not None:
            fields["batch_size"] = batch_size
        if channels_last is not None:
            fields["channels_last"] = channels_last
        if make_ahead is not None:
            fields["make_ahead"] = make_ahead
        if "from" in options:
            fields["init"] = str(start / options["from"])
        if fields.get("init") and not Path(fields["init"]).exists():
            raise InputError(f"{fields['init']}: candidate {name} starts from it, and it is not there")
        share = minutes * float(options.get("share", 1.0)) / total_share
        settings[name] = TrainConfig(**fields, data=str(data), device=device, resume=True, minutes=share)
    written, failed = [], []
    for name, c in settings.items():
        ckpt = runs / f"{name}.pt"
        print(f"round: {name}, {c.minutes:.2f} min", file=sys.stderr, flush=True)
        try:
            train(ckpt, c)
        except Exception:  # noqa: BLE001 - a lent GPU's minutes are too rare to lose the other candidates to one
            traceback.print_exc()
            print(f"round: {name} failed", file=sys.stderr, flush=True)
            failed.append(name)
        if device.startswith("cuda"):  # out of the except block: its traceback no longer holds the run's tensors
            # the next round's batch and make sizes are chosen from this figure (an H100 has 80 GB, an H200 141)
            print(f"round: {name} peaked at {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB of device "
                  f"memory", file=sys.stderr, flush=True)
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        # NOTE: written now, so a call cut short by its time limit still brings back the candidates done; a
        # failed one brings back its last checkpoint, if it saved one
        if ckpt.exists():
            written += split_file(slim_checkpoint(ckpt, out / f"{name}.pt", half=True), part_limit)
    if failed:
        raise RoundFailed(failed, written)
    return written
