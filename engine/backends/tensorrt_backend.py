"""TensorRT backend: an engine from build_engine.py, run through cuda.bindings (no pycuda, no torch).

One stream; device buffers sized for the profile's largest shapes, allocated once and reused.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..build import check_engine
from ..errors import HarmonizeError
from ..tensorrt_plugin import cuda_call, register_plugin, trt
from .base import Backend


class TensorRTBackend(Backend):
    """An FP16 engine whose sidecar matches this machine (library, GPU, plugin version)."""

    name = "tensorrt"

    def __init__(self, model: str | Path, onnx: str | Path | None = None):
        from cuda.bindings import driver

        self.driver = driver
        t = trt()
        engine_path = Path(model)
        meta = check_engine(engine_path, Path(onnx) if onnx else None)
        cuda_call(driver.cuInit(0))
        self.ctx = cuda_call(driver.cuDevicePrimaryCtxRetain(cuda_call(driver.cuDeviceGet(0))))
        cuda_call(driver.cuCtxSetCurrent(self.ctx))
        register_plugin()
        self.logger = t.Logger(t.Logger.WARNING)
        self.runtime = t.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise HarmonizeError(f"{engine_path}: TensorRT could not load it; rebuild with build_engine.py")
        self.context = self.engine.create_execution_context()
        self.stream = cuda_call(driver.cuStreamCreate(0))
        self.size = int(meta.get("working_size", meta["profile"]["opt"][1]))
        self.head = meta.get("head", "affine")
        self.lab_mix = float(meta.get("lab_mix", 0))
        self.output = self.engine.get_tensor_name(self.engine.num_io_tensors - 1)
        self.dtype = np.float16 if self.engine.get_tensor_dtype("image") == t.DataType.HALF else np.float32
        self.out_dtype = np.float16 if self.engine.get_tensor_dtype(self.output) == t.DataType.HALF else np.float32
        maxb, maxs = meta["profile"]["max"][0], meta["profile"]["max"][1]
        itemsize = np.dtype(self.dtype).itemsize
        sizes = {"image": maxb * 3 * maxs * maxs * itemsize, "mask": maxb * maxs * maxs * itemsize,
                 self.output: maxb * 3 * maxs * maxs * 4}
        self.buffers = {name: cuda_call(driver.cuMemAlloc(n)) for name, n in sizes.items()}
        for name, ptr in self.buffers.items():
            self.context.set_tensor_address(name, int(ptr))

    def infer(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        d = self.driver
        feeds = {"image": np.ascontiguousarray(image, self.dtype), "mask": np.ascontiguousarray(mask, self.dtype)}
        for name, arr in feeds.items():
            self.context.set_input_shape(name, arr.shape)
            cuda_call(d.cuMemcpyHtoDAsync(self.buffers[name], arr.ctypes.data, arr.nbytes, self.stream))
        out = np.empty(tuple(self.context.get_tensor_shape(self.output)), self.out_dtype)
        if not self.context.execute_async_v3(int(self.stream)):
            raise HarmonizeError("TensorRT failed to run the engine")
        cuda_call(d.cuMemcpyDtoHAsync(out.ctypes.data, self.buffers[self.output], out.nbytes, self.stream))
        cuda_call(d.cuStreamSynchronize(self.stream))
        return out.astype(np.float32)

    def close(self) -> None:
        for ptr in self.buffers.values():
            cuda_call(self.driver.cuMemFree(ptr))
        self.buffers = {}
        cuda_call(self.driver.cuStreamDestroy(self.stream))
        cuda_call(self.driver.cuDevicePrimaryCtxRelease(cuda_call(self.driver.cuDeviceGet(0))))
