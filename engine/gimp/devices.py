"""The devices the GIMP plug-in's dialog offers (plugin/protocol.py DEVICES: auto, cpu, gpu) and the backend
for each: the backend registry's own words, which the dialog shares."""
from __future__ import annotations

from pathlib import Path

from plugin.protocol import DEVICES

from ..runtime.backends import Backend, load, probed


def devices(model: str | Path | None = None) -> tuple[str, ...]:
    """The devices a plug-in may ask this engine for: auto and cpu, and gpu where a registry entry runs the
    model on this machine's GPU."""
    gpu = any(choice is not None for _, choice, _ in probed("gpu", model))
    return DEVICES if gpu else DEVICES[:2]


def load_device(device: str, model: str | Path | None = None) -> Backend:
    """A loaded backend for a device the plug-in names, as `load` chooses it (an InputError for a device it
    does not know, or where nothing here runs the model on that device)."""
    return load("auto", model, device=device)
