"""`harmonize import`: the FMM authors' released checkpoint as a project checkpoint of the `paper` network.

The authors (github.com/Dominoer/bmvc2020_image_harmonization) save `{"epoch", "state_dict"[, "optimizer"]}`,
keys prefixed `module.` when trained under DataParallel, with modules Down1..Down9 (encoder), FB_FMM (with
its self-attention SA), Up1..Up3 (decoder) and output. Their encoder and decoder convolutions carry a bias
before each BatchNorm; ours do not. At inference BatchNorm subtracts its running mean right after, so the
bias is folded into it (running_mean - bias): the same function, and the same training behaviour (in
training BatchNorm removes any constant the convolution adds). Every key must be used and every shape must
match, or nothing is written.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..atomic import atomic_path
from ..errors import InputError
from .model import create_model

# The authors' blocks, in order, and where each lives in FMMNet.
ENCODER = {f"Down{i + 1}": name for i, name in enumerate(
    ["enc1.0", "enc1.1", "enc2.0", "enc2.1", "enc3.0", "enc3.1", "enc3.2", "enc3.3", "enc4"])}
DECODER = {"Up1": "dec1", "Up2": "dec2", "Up3": "dec3"}
PROJECTIONS = {"query_conv": "q", "key_conv": "k", "value_conv": "v"}
BN_BUFFERS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _read(path: Path) -> tuple[dict[str, torch.Tensor], object]:
    """The checkpoint's state dict without DataParallel's `module.` prefix, and its epoch."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except Exception as exc:  # a truncated zip, a pickle that is not tensors: torch raises many kinds
        raise InputError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = sorted(map(str, ckpt))[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise InputError(f"{path}: expected the authors' {{'epoch', 'state_dict'}} checkpoint, found {found}")
    epoch = ckpt.get("epoch") if "state_dict" in ckpt else None
    return {k.removeprefix("module."): v for k, v in state.items()}, epoch


def _attention_key(key: str) -> str | None:
    """FB_FMM.SA.query_conv.weight -> fmm.self_attention.q.weight; None for any other key."""
    parts = key.split(".")
    if parts[0] != "FB_FMM":
        return None
    prefix, parts = "fmm.", parts[1:]
    if parts[:1] == ["SA"]:
        prefix, parts = "fmm.self_attention.", parts[1:]
    if parts == ["gamma"]:
        return prefix + "gamma"
    if len(parts) == 2 and parts[0] in PROJECTIONS and parts[1] in ("weight", "bias"):
        return f"{prefix}{PROJECTIONS[parts[0]]}.{parts[1]}"
    return None


def map_state_dict(theirs: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Their state dict as FMMNet's (conv biases folded into BatchNorm); also the keys it did not use."""
    ours: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        used.add(key)
        return theirs[key]

    for blocks in (ENCODER, DECODER):
        for src, dst in blocks.items():
            if f"{src}.conv2d.weight" not in theirs:
                continue  # reported as missing by the caller's comparison
            ours[f"{dst}.0.weight"] = take(f"{src}.conv2d.weight")
            for name in BN_BUFFERS:
                if f"{src}.bn.{name}" in theirs:
                    ours[f"{dst}.1.{name}"] = take(f"{src}.bn.{name}")
            bias = f"{src}.conv2d.bias"
            if bias in theirs and f"{dst}.1.running_mean" in ours:
                ours[f"{dst}.1.running_mean"] = ours[f"{dst}.1.running_mean"] - take(bias)
    for key in theirs:
        if key in ("output.weight", "output.bias"):
            ours["out." + key.removeprefix("output.")] = take(key)
        elif (mapped := _attention_key(key)) is not None:
            ours[mapped] = take(key)
    return ours, sorted(set(theirs) - used)


def import_authors(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the authors' checkpoint as a project checkpoint of the `paper` configuration."""
    checkpoint = Path(checkpoint)
    theirs, epoch = _read(checkpoint)
    ours, unused = map_state_dict(theirs)
    model = create_model("paper")
    want = model.state_dict()
    problems = [f"unexpected key {k}" for k in unused]
    problems += [f"missing key for {k}" for k in want if k not in ours]
    problems += [f"{k}: shape {tuple(v.shape)} where the paper network has {tuple(want[k].shape)}"
                 for k, v in ours.items() if k in want and v.shape != want[k].shape]
    problems += [f"unexpected key {k}" for k in ours if k not in want]
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise InputError(f"{checkpoint}: not the authors' FMM network: {'; '.join(problems[:8])}{more}")
    model.load_state_dict({k: v.to(want[k].dtype) for k, v in ours.items()})
    with atomic_path(out) as tmp:
        torch.save(dict(config=model.config, model=model.state_dict(), step=epoch, seed=None,
                        source=f"authors' checkpoint {checkpoint.name}"), tmp)
    return Path(out)

