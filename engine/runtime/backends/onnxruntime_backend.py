"""ONNX Runtime backend: the default runtime, on the CPU, or on a GPU provider where one is installed (the
registry's probe says which)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ...errors import InputError, require
from .base import Backend

log = logging.getLogger("engine")


class OnnxRuntimeBackend(Backend):
    """An ONNX model exported by `harmonize export`; FP16 models take and give float16."""

    name = "onnxruntime"

    def __init__(self, model: str | Path, providers: list[str] | tuple[str, ...] = ("CPUExecutionProvider",),
                 threads: int | None = None):
        ort = require("onnxruntime", install="pip install onnxruntime")
        if not Path(model).exists():
            raise InputError(f"{model}: no such ONNX model")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        # Threads that spin between runs take the CPU from a batch's loader and writer threads.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # The arena would keep the network's largest activations for the process's life: 20 to 48 MiB more
        # at a batch's peak (measured at 256 px, where the network allocates little a run).
        opts.enable_cpu_mem_arena = False
        try:
            self.session = ort.InferenceSession(str(model), opts, providers=list(providers))
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise InputError(f"{model}: ONNX Runtime cannot load it ({exc})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.size, self.head, self.lab_mix = int(meta["size"]), meta["head"], float(meta.get("lab_mix", 0))
        self.dtype = np.float16 if self.session.get_inputs()[0].type == "tensor(float16)" else np.float32
        self.providers = self.session.get_providers()
        self.device = "cpu" if self.providers[0] == "CPUExecutionProvider" else "gpu"
        log.debug("onnxruntime providers: %s", self.providers)

    def infer_impl(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feed = {"image": image.astype(self.dtype), "mask": mask.astype(self.dtype)}
        return self.session.run(None, feed)[0].astype(np.float32)
