"""`harmonize` verbs, one module per group; each module's `register(sub)` adds its verbs to the parser.
Options several verbs share are declared once here. Heavy imports stay inside the verb that needs them."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def add_verb(sub, name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
    """A verb's parser; its --help names the file that holds the verb's code."""
    where = Path(func.__code__.co_filename).resolve()
    where = where.relative_to(ROOT) if where.is_relative_to(ROOT) else where
    p = sub.add_parser(name, help=help, description=f"{help[0].upper()}{help[1:]}. (code: {where})")
    p.set_defaults(func=func, verb_parser=p)
    return p


LATER: dict[str, tuple[argparse.ArgumentParser, Callable[[argparse.ArgumentParser], None]]] = {}


def add_options_later(p: argparse.ArgumentParser, verb: str, add: Callable[[argparse.ArgumentParser], None]) -> None:
    """Options whose definitions import what the other verbs should not pay for (train's come from
    engine/training): `add(p)` runs only when `verb` is the one being parsed (engine/cli.py)."""
    LATER[verb] = (p, add)


def add_backend(p: argparse.ArgumentParser, default: str = "auto", auto: bool = True, device: bool = True) -> None:
    """--backend, its choices from the backend registry (engine/runtime/backends), and --device."""
    from ..runtime.backends import DEVICES, REGISTRY

    names = ("auto", *sorted(REGISTRY)) if auto else tuple(sorted(REGISTRY))
    lines = ["auto: the first in this list that runs the model here, on the GPU first"] if auto else []
    lines += [f"{name}: {spec.summary}" for name, spec in REGISTRY.items()]
    p.add_argument("--backend", choices=names, default=default, help=f"(default {default}) " + "; ".join(lines))
    if device:
        p.add_argument("--device", choices=DEVICES, default="auto",
                       help="(default auto) where the model runs: auto takes the GPU where this machine can "
                            "(harmonize doctor says how), gpu refuses to start without one, cpu runs anywhere")


def add_model(p: argparse.ArgumentParser, help: str = "model file (default: the shipped one)", **kwargs) -> None:
    p.add_argument("--model", help=help, **kwargs)


def add_reference(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", help="PyTorch checkpoint (default: the shipped weights)")


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")


def unit(text: str) -> float:
    """argparse type: a number in 0..1."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not within 0..1")
    return value


def positive(text: str) -> float:
    """argparse type: a number above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not above 0")
    return value


def reference_backend(args: argparse.Namespace):
    """The PyTorch reference `--reference` names, else the shipped weights."""
    from ..runtime.backends import load

    return load("torch", args.reference, device="cpu")
