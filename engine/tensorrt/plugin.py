"""The TensorRT plugin for harmony::AttentionModulation, as NVIDIA's Python plugin samples write one: the
plugin and its creator are classes of this module, over the TensorRT library loaded when it is imported.

A Python IPluginV3 (OneCore/OneBuild/OneRuntime) with an IPluginCreatorV3One, registered under the
ONNX node's name and namespace, so TensorRT's ONNX parser takes it for every `harmony` node. At build
time it compiles the Triton kernels to PTX for the target compute capability (kernels.py) and serializes
that PTX into the engine with the plugin version; at run time `enqueue` loads the PTX once through
cuda.bindings and launches both kernels on TensorRT's stream (launch.py), so running an engine never
imports Triton. Works with `tensorrt` and `tensorrt_rtx` (library.py).
"""
from __future__ import annotations

import json
import logging

import numpy as np

from ..network.op import OP_DOMAIN, OP_NAME
from .launch import PtxKernels
from .library import PLUGIN_VERSION, load_tensorrt

log = logging.getLogger("engine")
trt = load_tensorrt()


class AttentionModulationPlugin(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild, trt.IPluginV3OneRuntime):
    """harmony::AttentionModulation(h, mask, q, k, v, gamma) -> out, shapes and dtype of h."""

    def __init__(self, compiled: dict | None = None, target_cc: int | None = None):
        trt.IPluginV3.__init__(self)
        trt.IPluginV3OneCore.__init__(self)
        trt.IPluginV3OneBuild.__init__(self)
        trt.IPluginV3OneRuntime.__init__(self)
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
        return [trt.DimsExprs(inputs[0])]

    def supports_format_combination(self, pos, in_out, num_inputs):
        desc = in_out[pos].desc
        if desc.format != trt.TensorFormat.LINEAR:
            return False
        if pos == 0:
            return desc.type in (trt.DataType.HALF, trt.DataType.FLOAT)
        return desc.type == in_out[0].desc.type

    def configure_plugin(self, inp, out):
        # Build time: the widths and dtype are known now; compile PTX for the builder's target.
        if self.target_cc is None:
            return
        dtype = "fp16" if inp[0].desc.type == trt.DataType.HALF else "fp32"
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
        return trt.PluginFieldCollection([
            trt.PluginField("kernels", np.frombuffer(payload.encode(), np.int8), trt.PluginFieldType.CHAR)])

    def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
        dims = input_desc[0].dims
        b, c, h, w = (int(dims[i]) for i in range(4))
        cq = int(input_desc[2].dims[1])
        dtype = "fp16" if input_desc[0].type == trt.DataType.HALF else "fp32"
        if self.kernels is None:
            if not self.compiled or dtype not in self.compiled:
                raise RuntimeError("this engine holds no attention-modulation PTX; rebuild it with build_engine.py")
            self.kernels = PtxKernels(self.compiled[dtype])
        names = ("h", "mask", "q", "k", "v", "gamma")
        ptrs = dict(zip(names, (int(p) for p in inputs), strict=True), out=int(outputs[0]), hba=int(workspace))
        self.kernels.launch(ptrs, b, c, cq, h * w, int(stream))

class AttentionModulationCreator(trt.IPluginCreatorV3One):
    """Creates the plugin for the ONNX parser (build) and from an engine's fields (runtime)."""

    def __init__(self):
        trt.IPluginCreatorV3One.__init__(self)
        self.name = OP_NAME
        self.plugin_namespace = OP_DOMAIN
        self.plugin_version = PLUGIN_VERSION
        self.target_cc = None  # set by register_plugin for a build
        self.field_names = trt.PluginFieldCollection([
            trt.PluginField("kernels", np.array([], np.int8), trt.PluginFieldType.CHAR)])

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


_REGISTERED = []


def register_plugin(target_cc: int | None = None) -> None:
    """Register the creator with TensorRT's plugin registry (once per process). A builder names its
    `target_cc` (86 for sm_86): the plugins created while parsing then compile their PTX for it; at
    run time the PTX comes from the engine."""
    if not _REGISTERED:
        creator = AttentionModulationCreator()
        if not trt.get_plugin_registry().register_creator(creator, OP_DOMAIN):
            raise RuntimeError("TensorRT refused to register the harmony::AttentionModulation plugin creator")
        _REGISTERED.append(creator)  # the registry does not own Python objects: keep it alive
    _REGISTERED[0].target_cc = target_cc
