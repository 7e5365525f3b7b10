"""ONNX -> TensorRT FP16 engine with our attention-modulation plugin (build_engine.py, `harmonize build`).

The FP16 ONNX sets the precision (TensorRT 11 and TensorRT for RTX networks are strongly typed). The
plugin is registered before parsing, so the parser takes it for every `harmony` node; the build log
must then report each plugin layer's serialized data, which is checked, not assumed. Beside the engine
a JSON sidecar records what it was built from and for, so that lookup.py refuses a
stale or foreign engine. By default the engine, its sidecar and the timing cache go to the user's cache
folder (lookup.engines_dir(), made this user's alone), never into the installed package.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_path
from ..cache import private_cache
from ..errors import HarmonizeError
from . import device as cuda_device
from .library import PLUGIN_VERSION, load_tensorrt
from .lookup import engine_path, engines_dir, sidecar_path, timing_cache_path
from .plugin import register_plugin

log = logging.getLogger("engine")
trt = load_tensorrt()


@dataclass(frozen=True)
class BuildProfile:
    """The engine's optimisation profile: square working sizes from `min_size` to `max_size`, optimised
    for `opt_size` (None: the model's own working size, from its ONNX metadata), batch 1 to `max_batch`."""

    min_size: int = 64
    opt_size: int | None = None
    max_size: int = 512
    max_batch: int = 4


def ensure_rtx_library_link() -> None:
    """TensorRT for RTX's parser dlopens libtensorrt_rtx.so when it meets a plugin node, but the wheel
    ships only libtensorrt_rtx.so.1: without the link the process aborts. Make it, or say how."""
    if "rtx" not in trt.__name__:
        return
    import tensorrt_rtx_libs

    folder = Path(tensorrt_rtx_libs.__file__).parent
    link, target = folder / "libtensorrt_rtx.so", folder / "libtensorrt_rtx.so.1"
    if link.exists() or not target.exists():
        return
    try:
        link.symlink_to(target.name)
    except OSError as exc:
        raise HarmonizeError(f"TensorRT for RTX needs a link {link} -> {target.name} ({exc}); "
                             f"create it with: ln -s {target.name} {link}") from None


class BuildLogger(trt.ILogger):
    """A TensorRT logger that keeps every message (the proof that the plugin was used is in the build log)."""

    def __init__(self, verbose: bool = False):
        trt.ILogger.__init__(self)
        self.verbose = verbose
        self.lines: list[str] = []

    def log(self, severity, msg):
        self.lines.append(msg)
        if severity <= trt.ILogger.Severity.WARNING:
            log.warning("tensorrt: %s", msg)
        elif self.verbose:
            log.debug("tensorrt: %s", msg)


def build_engine(onnx_path: str | Path, out: str | Path | None = None, *, compute_capability: int | None = None,
                 profile: BuildProfile = BuildProfile(), timing_cache: str | Path | None = None,
                 verbose: bool = False) -> Path:
    """Build and write the engine for `compute_capability` (None: this machine's GPU) and its sidecar;
    returns the engine path."""
    ensure_rtx_library_link()
    onnx_path = Path(onnx_path)
    onnx_bytes = onnx_path.read_bytes()
    import onnx

    try:
        model_meta = {p.key: p.value for p in onnx.load_from_string(onnx_bytes).metadata_props}
    except Exception as exc:  # protobuf's DecodeError and friends
        raise HarmonizeError(f"{onnx_path}: cannot parse it as ONNX ({type(exc).__name__})") from None
    if "size" not in model_meta:
        raise HarmonizeError(f"{onnx_path}: no working size in its metadata; export it with: harmonize export")
    min_size, max_size, max_batch = profile.min_size, profile.max_size, profile.max_batch
    opt_size = profile.opt_size or int(model_meta["size"])
    cc = compute_capability or cuda_device.compute_capability()
    if cc is None:
        raise HarmonizeError("no GPU found to build for; name one with --compute-capability (e.g. 86)")
    out = Path(out) if out else engine_path(onnx_path, cc)
    cache_path = Path(timing_cache) if timing_cache else timing_cache_path(cc)
    if any(path.parent.resolve() == engines_dir().resolve() for path in (out, cache_path)):
        private_cache("engines")  # made 0700, or refused when someone else could write into it
    register_plugin(target_cc=cc)  # the plugins the parser creates compile their PTX for sm_cc
    logger = BuildLogger(verbose)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise HarmonizeError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    if "rtx" in trt.__name__:
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(trt.ComputeCapability, f"SM{cc}"), 0)
    shapes = builder.create_optimization_profile()
    for name, channels in (("image", 3), ("mask", 1)):
        shapes.set_shape(name, (1, channels, min_size, min_size), (1, channels, opt_size, opt_size),
                         (max_batch, channels, max_size, max_size))
    config.add_optimization_profile(shapes)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=True)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise HarmonizeError(f"TensorRT failed to build {onnx_path}; run with --verbose for its log")
    plugin_layers = [m for m in logger.lines if re.search(r"Serialized custom layer data size", m, re.I)]
    expected = sum(1 for i in range(network.num_layers) if network.get_layer(i).type == trt.LayerType.PLUGIN_V3)
    if expected == 0 or len(plugin_layers) < expected:
        raise HarmonizeError(f"the parser did not take our plugin for the harmony nodes "
                             f"({expected} plugin layers, {len(plugin_layers)} serialized)")
    with atomic_path(out) as tmp:
        tmp.write_bytes(bytes(serialized))
    with atomic_path(cache_path) as tmp:
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    meta = dict(
        head=model_meta.get("head", "affine"), working_size=int(model_meta["size"]),
        lab_mix=float(model_meta.get("lab_mix", 0)),
        library=f"{trt.__name__} {trt.__version__}", gpu=cuda_device.gpu_name(), compute_capability=cc,
        onnx=str(onnx_path), onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest(), plugin_version=PLUGIN_VERSION,
        plugin_layers=expected, plugin_log=plugin_layers, build_seconds=round(time.perf_counter() - start, 1),
        profile=dict(min=[1, min_size, min_size], opt=[1, opt_size, opt_size], max=[max_batch, max_size, max_size]),
    )
    with atomic_path(sidecar_path(out)) as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
    return out
