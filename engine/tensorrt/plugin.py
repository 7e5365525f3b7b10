"""The TensorRT plugin for harmony::AttentionModulation, and the PTX launcher it shares with `gpu_check`.

A Python IPluginV3 (OneCore/OneBuild/OneRuntime) with an IPluginCreatorV3One, registered under the
ONNX node's name and namespace, so TensorRT's ONNX parser takes it for every `harmony` node. At build
time it compiles the Triton kernels to PTX for the target compute capability and serializes that PTX
into the engine with the plugin version; at run time `enqueue` loads the PTX once through cuda.bindings
and launches both kernels on TensorRT's stream. Works with `tensorrt` and `tensorrt_rtx` (see `trt()`).
"""
from __future__ import annotations

import json
import logging

import numpy as np

from .device import cuda_call
from ..errors import MissingDependencyError, install_hint
from ..network.op import EPS, OP_DOMAIN, OP_NAME

PLUGIN_VERSION = "1"
log = logging.getLogger("engine")


def trt():
    """The TensorRT module: `tensorrt` where installed, else TensorRT for RTX (`tensorrt_rtx`)."""
    try:
        import tensorrt

        return tensorrt
    except ImportError:
        pass
    try:
        import tensorrt_rtx

        return tensorrt_rtx
    except ImportError:
        raise MissingDependencyError(
            "neither tensorrt nor tensorrt_rtx is installed; install one with: " + install_hint("tensorrt")
        ) from None


# ------------------------------------------------------------------------------ PTX launching


PTX_TYPES = {"i32": "u32", "fp32": "f32"}  # Triton argument types as PTX params; pointers are u64


def kernel_args(kind: str, ptrs: dict[str, int], n: int, cq: int, c: int) -> list[tuple[str, int | float]]:
    """The declared arguments of one kernel as (ptx type, value), in the order of its signature
    (triton_op.ARGUMENTS), without the hidden scratch pointers Triton appends (see `launch_args`)."""
    from .kernels import ARGUMENTS

    values = {**ptrs, "n": n, "cq": cq, "c": c, "eps": EPS}
    return [("u64" if ty.startswith("*") else PTX_TYPES[ty], values[name]) for name, ty in ARGUMENTS[kind]]


def launch_args(kind: str, ptrs: dict[str, int], n: int, cq: int, c: int) -> list[tuple[str, int | float]]:
    """Everything the PTX entry takes: the declared arguments, then Triton's global and profile scratch
    pointers (Triton 3.3 and later; null, since these kernels need no scratch)."""
    return kernel_args(kind, ptrs, n, cq, c) + [("u64", 0), ("u64", 0)]


class PtxKernels:
    """The two kernels loaded from PTX into the current CUDA context, launched through cuda.bindings."""

    def __init__(self, compiled: dict[str, dict]):
        from cuda.bindings import driver

        self.driver = driver
        self.compiled = compiled
        self.functions = {}
        for kind, k in compiled.items():
            module = cuda_call(driver.cuModuleLoadData(k["ptx"].encode() + b"\0"))
            self.functions[kind] = cuda_call(driver.cuModuleGetFunction(module, k["name"].encode()))
            if k["shared"] > 48 * 1024:
                cuda_call(driver.cuFuncSetAttribute(
                    self.functions[kind], driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    k["shared"]))

    def launch(self, ptrs: dict[str, int], b: int, c: int, cq: int, n: int, stream: int) -> None:
        """Both kernels on `stream`: attention into ptrs["hba"], then the modulation into ptrs["out"]."""
        from .kernels import grids

        ctypes_of = {"u64": np.uint64, "u32": np.uint32, "f32": np.float32}
        g1, g2 = grids(b, c, n, self.compiled["attention_kernel"]["BLOCK_C"])
        for kind, grid in (("attention_kernel", g1), ("modulation_kernel", g2)):
            k = self.compiled[kind]
            values = [np.array([v], dtype=ctypes_of[t]) for t, v in launch_args(kind, ptrs, n, cq, c)]
            pointers = np.array([v.ctypes.data for v in values], dtype=np.uint64)
            cuda_call(self.driver.cuLaunchKernel(
                self.functions[kind], *grid, 32 * k["num_warps"], 1, 1, k["shared"], stream, pointers.ctypes.data, 0))


# ------------------------------------------------------------------------------ the plugin


def _plugin_classes():
    t = trt()

    class AttentionModulationPlugin(t.IPluginV3, t.IPluginV3OneCore, t.IPluginV3OneBuild, t.IPluginV3OneRuntime):
        """harmony::AttentionModulation(h, mask, q, k, v, gamma) -> out, shapes and dtype of h."""

        def __init__(self, compiled: dict | None = None, target_cc: int | None = None):
            t.IPluginV3.__init__(self)
            t.IPluginV3OneCore.__init__(self)
            t.IPluginV3OneBuild.__init__(self)
            t.IPluginV3OneRuntime.__init__(self)
            self.num_outputs = 1
            self.plugin_namespace = OP_DOMAIN
            self.plugin_name = OP_NAME
            self.plugin_version = PLUGIN_VERSION
            self.compiled = compiled  # {"fp16"|"fp32": {kernel: {name, ptx, ...}}}
            self.target_cc = target_cc  # the builder's compute capability (86 for sm_86); None at run time
            self.kernels = None

        def get_capability_interface(self, type):
            return self

        def clone(self):
            return AttentionModulationPlugin(self.compiled, self.target_cc)

        def get_output_data_types(self, input_types):
            return [input_types[0]]

        def get_output_shapes(self, inputs, shape_inputs, expr_builder):
            return [t.DimsExprs(inputs[0])]

        def supports_format_combination(self, pos, in_out, num_inputs):
            desc = in_out[pos].desc
            if desc.format != t.TensorFormat.LINEAR:
                return False
            if pos == 0:
                return desc.type in (t.DataType.HALF, t.DataType.FLOAT)
            return desc.type == in_out[0].desc.type

        def configure_plugin(self, inp, out):
            # Build time: the widths and dtype are known now; compile PTX for the builder's target.
            if self.target_cc is None:
                return
            dtype = "fp16" if inp[0].desc.type == t.DataType.HALF else "fp32"
            c, cq = inp[0].desc.dims[1], inp[2].desc.dims[1]
            from .kernels import compile_ptx

            self.compiled = {dtype: compile_ptx(dtype, cq, c, self.target_cc)}
            log.debug("compiled attention-modulation PTX for sm_%s, %s, C=%d, Cq=%d", self.target_cc, dtype, c, cq)

        def get_workspace_size(self, inp, out):
            d = inp[0].max
            return int(np.prod([d[i] for i in range(len(d))])) * 4  # h_b^a in FP32

        def get_valid_tactics(self):
            return []

        def set_tactic(self, tactic):
            pass

        def on_shape_change(self, inp, out):
            pass

        def attach_to_context(self, context):
            return self.clone()

        def get_fields_to_serialize(self):
            payload = json.dumps({"plugin_version": PLUGIN_VERSION, "kernels": self.compiled or {}})
            return t.PluginFieldCollection([
                t.PluginField("kernels", np.frombuffer(payload.encode(), np.int8), t.PluginFieldType.CHAR)])

        def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
            dims = input_desc[0].dims
            b, c, h, w = (int(dims[i]) for i in range(4))
            cq = int(input_desc[2].dims[1])
            dtype = "fp16" if input_desc[0].type == t.DataType.HALF else "fp32"
            if self.kernels is None:
                if not self.compiled or dtype not in self.compiled:
                    raise RuntimeError("this engine holds no attention-modulation PTX; rebuild it with build_engine.py")
                self.kernels = PtxKernels(self.compiled[dtype])
            names = ("h", "mask", "q", "k", "v", "gamma")
            ptrs = dict(zip(names, (int(p) for p in inputs)), out=int(outputs[0]), hba=int(workspace))
            self.kernels.launch(ptrs, b, c, cq, h * w, int(stream))

    class AttentionModulationCreator(t.IPluginCreatorV3One):
        """Creates the plugin for the ONNX parser (build) and from an engine's fields (runtime)."""

        def __init__(self):
            t.IPluginCreatorV3One.__init__(self)
            self.name = OP_NAME
            self.plugin_namespace = OP_DOMAIN
            self.plugin_version = PLUGIN_VERSION
            self.target_cc = None  # set by register_plugin for a build
            self.field_names = t.PluginFieldCollection([
                t.PluginField("kernels", np.array([], np.int8), t.PluginFieldType.CHAR)])

        def create_plugin(self, name, fc, phase):
            compiled = None
            for f in fc:
                if f.name == "kernels" and len(f.data):
                    stored = json.loads(bytes(np.asarray(f.data, np.int8)).decode())
                    if stored.get("plugin_version") != PLUGIN_VERSION:
                        raise RuntimeError(f"engine built with plugin version {stored.get('plugin_version')}, "
                                           f"this is {PLUGIN_VERSION}: rebuild it with build_engine.py")
                    compiled = stored["kernels"] or None
            return AttentionModulationPlugin(compiled, self.target_cc)

    return AttentionModulationPlugin, AttentionModulationCreator


_REGISTERED = []


def register_plugin(target_cc: int | None = None) -> None:
    """Register the creator with TensorRT's plugin registry (once per process). A builder names its
    `target_cc` (86 for sm_86): the plugins created while parsing then compile their PTX for it; at
    run time the PTX comes from the engine."""
    if not _REGISTERED:
        t = trt()
        _, creator_cls = _plugin_classes()
        creator = creator_cls()
        if not t.get_plugin_registry().register_creator(creator, OP_DOMAIN):
            raise RuntimeError("TensorRT refused to register the harmony::AttentionModulation plugin creator")
        _REGISTERED.append(creator)  # the registry does not own Python objects: keep it alive
    _REGISTERED[0].target_cc = target_cc
