"""TensorRT backend: an engine from build_engine.py, run through cuda.bindings (no pycuda, no torch).

As TensorRT's common_runtime.py: every I/O tensor's device buffer is sized from the engine's own
shapes and types (the profile's largest input shapes, and the output shape they give), allocated
once and reused on one stream.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from ...errors import HarmonizeError
from ...tensorrt import device as cuda_device
from ...tensorrt.device import cuda_call
from ...tensorrt.library import load_tensorrt
from ...tensorrt.lookup import check_engine
from ...tensorrt.plugin import register_plugin
from ...tensorrt.runtime_cache import RuntimeCache, runtime_cache_path
from .base import Backend


class TensorRTBackend(Backend):
    """An FP16 engine whose sidecar matches this machine (library, GPU, plugin version, and the ONNX
    model it was built from when `onnx` is given)."""

    name = "tensorrt"
    device = "gpu"

    def __init__(self, model: str | Path, onnx: str | Path | None = None):
        from cuda.bindings import driver

        self.driver = driver
        self.buffers, self.stream, self.ctx, self.kernels = {}, None, None, None
        t = load_tensorrt()
        engine_path = Path(model)
        meta = check_engine(engine_path, Path(onnx) if onnx else None)
        self.ctx = cuda_device.retain_primary_context()
        try:
            register_plugin()
            self.logger = t.Logger(t.Logger.WARNING)
            self.runtime = t.Runtime(self.logger)
            data = engine_path.read_bytes()
            self.engine = self.runtime.deserialize_cuda_engine(data)
            if self.engine is None:
                raise HarmonizeError(f"{engine_path}: TensorRT could not load it; rebuild with build_engine.py")
            self.kernels = RuntimeCache(self.engine, runtime_cache_path(data))  # TensorRT-RTX's compiled kernels
            self.context, self.ran = self.kernels.context, False
            self.stream = cuda_call(driver.cuStreamCreate(0))
            self.size = int(meta.get("working_size", meta["profile"]["opt"][1]))
            self.head = meta.get("head", "affine")
            self.lab_mix = float(meta.get("lab_mix", 0))
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == t.TensorIOMode.INPUT]
            self.outputs = [n for n in names if n not in self.inputs]
            self.dtypes = {n: np.dtype(t.nptype(self.engine.get_tensor_dtype(n))) for n in names}
            for n in self.inputs:  # the largest shapes the profile allows, so one allocation serves every call
                self.context.set_input_shape(n, tuple(self.engine.get_tensor_profile_shape(n, 0)[2]))
            for n in names:
                nbytes = int(np.prod(tuple(self.context.get_tensor_shape(n)))) * self.dtypes[n].itemsize
                self.buffers[n] = cuda_call(driver.cuMemAlloc(nbytes))
                self.context.set_tensor_address(n, int(self.buffers[n]))
        except BaseException:  # the context, stream and buffers taken so far are given back
            with contextlib.suppress(Exception):
                self.close()
            raise

    def infer_impl(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        d = self.driver
        feeds = {"image": image, "mask": mask}
        for name in self.inputs:
            arr = np.ascontiguousarray(feeds[name], self.dtypes[name])
            feeds[name] = arr  # kept alive until the stream has copied it
            if not self.context.set_input_shape(name, arr.shape):
                raise HarmonizeError(f"{name} {arr.shape} is outside the engine's profile; rebuild it with "
                                     "build_engine.py --max-size/--max-batch")
            cuda_call(d.cuMemcpyHtoDAsync(self.buffers[name], arr.ctypes.data, arr.nbytes, self.stream))
        output = self.outputs[0]
        out = np.empty(tuple(self.context.get_tensor_shape(output)), self.dtypes[output])
        if not self.context.execute_async_v3(int(self.stream)):
            raise HarmonizeError("TensorRT failed to run the engine")
        cuda_call(d.cuMemcpyDtoHAsync(out.ctypes.data, self.buffers[output], out.nbytes, self.stream))
        cuda_call(d.cuStreamSynchronize(self.stream))
        if not self.ran:  # the first run compiled TensorRT-RTX's kernels: kept now, not only at a clean close
            self.ran = True
            self.kernels.save()
        return out.astype(np.float32)

    def close_impl(self) -> None:
        if self.kernels is not None:
            self.kernels.save()
        for ptr in self.buffers.values():
            cuda_call(self.driver.cuMemFree(ptr))
        self.buffers = {}
        if self.stream is not None:
            cuda_call(self.driver.cuStreamDestroy(self.stream))
        if self.ctx is not None:
            cuda_device.release_primary_context()
