"""fmm-harmonize: image harmonization with attention-based feature modulation (FMM, BMVC 2020).

    from engine import load
    with load("auto", device="gpu") as backend:          # device: auto (the default), cpu or gpu
        out = backend.harmonize(rgb, mask)   # uint8 (H, W, 3) and a [0, 1] mask -> uint8 (H, W, 3)
"""
__version__ = "0.1.0"


def load(backend: str = "auto", model=None, device: str = "auto", **options):
    """A loaded backend ("auto" or a registry name: onnxruntime, tensorrt, torch) on a device (auto, cpu, gpu);
    see engine.runtime.backends.load."""
    from .runtime.backends import load as _load

    return _load(backend, model, device, **options)


__all__ = ["__version__", "load"]
