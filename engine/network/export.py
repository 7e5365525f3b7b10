"""`harmonize export`: a checkpoint to ONNX, FP32 or FP16, dynamic batch, height and width.

Each attention-modulation op becomes one `harmony::AttentionModulation` node carrying the
`plugin_namespace` attribute, with an ONNX function of the same domain and name attached as its body:
ONNX Runtime inlines the function, TensorRT's parser picks the registered plugin instead. The body
computes in float32 whatever the model's precision (softmax and statistics need the range).
"""
from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import onnx
import torch
from onnx import TensorProto, helper

from ..atomic import atomic_path
from .model import load_checkpoint
from .op import EPS, OP_DOMAIN, OP_NAME

OPSET = 18


def op_function() -> onnx.FunctionProto:
    """The ONNX body of harmony::AttentionModulation(h, mask, q, k, v, gamma) -> out."""
    n = helper.make_node
    f32 = TensorProto.FLOAT

    def const(name, value, dtype=f32):
        return n("Constant", [], [name], value=helper.make_tensor(name, dtype, [len(value)], value))

    def std(x: str) -> list[onnx.NodeProto]:
        # sqrt(unbiased variance over positions + eps), shape (B, C, 1)
        return [
            n("ReduceMean", [x, "axis2"], [f"{x}_mean"], keepdims=1),
            n("Sub", [x, f"{x}_mean"], [f"{x}_d"]),
            n("Mul", [f"{x}_d", f"{x}_d"], [f"{x}_d2"]),
            n("ReduceSum", [f"{x}_d2", "axis2"], [f"{x}_ss"], keepdims=1),
            n("Div", [f"{x}_ss", "n_minus_1"], [f"{x}_var"]),
            n("Add", [f"{x}_var", "eps"], [f"{x}_vare"]),
            n("Sqrt", [f"{x}_vare"], [f"{x}_std"]),
        ]

    nodes = [
        const("flat", [0, 0, -1], TensorProto.INT64),
        const("axis2", [2], TensorProto.INT64),
        const("eps", [EPS]),
        const("one", [1.0]),
        *[n("Cast", [i], [f"{i}32"], to=f32) for i in ("h", "mask", "q", "k", "v", "gamma")],
        n("Shape", ["h"], ["h_shape"]),
        n("Reshape", ["q32", "flat"], ["q3"]),
        n("Transpose", ["q3"], ["qT"], perm=[0, 2, 1]),
        n("Reshape", ["k32", "flat"], ["k3"]),
        n("MatMul", ["qT", "k3"], ["energy"]),
        n("Softmax", ["energy"], ["attn"], axis=-1),
        n("Transpose", ["attn"], ["attnT"], perm=[0, 2, 1]),
        n("Reshape", ["v32", "flat"], ["v3"]),
        n("MatMul", ["v3", "attnT"], ["hba"]),
        n("Mul", ["mask32", "h32"], ["hf4"]),
        n("Reshape", ["hf4", "flat"], ["hf"]),
        n("Shape", ["hf"], ["hf_shape"], start=2, end=3),
        n("Cast", ["hf_shape"], ["n_positions"], to=f32),
        n("Sub", ["n_positions", "one"], ["n_minus_1"]),
        *std("hba"),
        *std("hf"),
        n("Mul", ["hf", "hba_std"], ["scaled"]),
        n("Div", ["scaled", "hf_std"], ["fmm3"]),
        n("Reshape", ["fmm3", "h_shape"], ["fmm"]),
        n("Mul", ["gamma32", "fmm"], ["gfmm"]),
        n("Add", ["h32", "gfmm"], ["out32"]),
        n("CastLike", ["out32", "h"], ["out"]),
    ]
    return helper.make_function(
        OP_DOMAIN, OP_NAME, ["h", "mask", "q", "k", "v", "gamma"], ["out"], nodes,
        [helper.make_opsetid("", OPSET)], attributes=["plugin_namespace"],
    )


def export_onnx(checkpoint: str | Path, out: str | Path, fp16: bool = False) -> Path:
    """Export a checkpoint to `out` (written atomically); returns the path."""
    model = load_checkpoint(checkpoint)
    model.fmm.export_op = True
    size = model.size  # the trace size; height and width stay dynamic
    dtype = torch.float16 if fp16 else torch.float32
    model = model.to(dtype)
    image = torch.rand(1, 3, size, size, dtype=dtype)
    mask = torch.zeros(1, 1, size, size, dtype=dtype)
    mask[..., size // 4: size // 2, size // 4: size // 2] = 1
    output = "affine" if model.head == "affine" else "harmonized"
    buf = io.BytesIO()
    dims = {0: "batch", 2: "height", 3: "width"}
    # NOTE: the TorchScript exporter, because it turns an autograd.Function's `symbolic` into exactly
    # one custom-domain node; it warns that it is deprecated.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (image, mask), buf, input_names=["image", "mask"], output_names=[output],
            opset_version=OPSET, dynamo=False,
            dynamic_axes={"image": dims, "mask": dims, output: dims if model.head == "image" else {0: "batch"}},
        )
    proto = onnx.load_from_string(buf.getvalue())
    proto.functions.append(op_function())
    digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
    meta = dict(head=model.head, size=str(model.size), lab_mix=str(model.lab_mix),
                precision="fp16" if fp16 else "fp32",
                checkpoint_sha256=digest, producer="fmm-harmonize")
    for key, value in meta.items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(out) as tmp:
        tmp.write_bytes(proto.SerializeToString())
    return Path(out)


def harmony_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The graph's attention-modulation nodes."""
    return [nd for nd in model.graph.node if nd.domain == OP_DOMAIN and nd.op_type == OP_NAME]


def export_shipped(checkpoint: str | Path | None = None) -> list[Path]:
    """Regenerate the package's weights and ONNX files (FP32, FP16); `checkpoint` replaces the weights."""
    from ..models import shipped

    weights = shipped("pt")
    if checkpoint is not None:  # keep what inference needs and where it came from: no optimizer state
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
        # a missing key fails here, before the shipped file is touched
        kept = {k: ckpt[k] for k in ("config", "model", "step", "seed")}
        if "averaged" in ckpt:  # only `harmonize average` writes it
            kept["averaged"] = ckpt["averaged"]
        with atomic_path(weights) as tmp:
            torch.save(kept, tmp)
    onnx_files = [export_onnx(weights, shipped("onnx-fp16" if fp16 else "onnx"), fp16=fp16)
                  for fp16 in (False, True)]
    return [weights, *onnx_files]
