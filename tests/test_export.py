"""ONNX export: one harmony node per op with its function body, agreement with PyTorch, shipped files fresh."""
import hashlib

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (the 'export' extra) is not installed")
onnx = pytest.importorskip("onnx", reason="onnx (the 'export' extra) is not installed")
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from test_op import inputs  # noqa: E402

from engine.models import shipped  # noqa: E402
from engine.network.export import OPSET, export_onnx, harmony_nodes, op_function  # noqa: E402
from engine.network.op import OP_DOMAIN, OP_NAME, attention_modulation  # noqa: E402
from engine.runtime.backends import load  # noqa: E402


def net_inputs(b: int, s: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.random((b, 3, s, s), dtype=np.float32)
    mask = np.zeros((b, 1, s, s), np.float32)
    mask[:, :, s // 4: s // 2 + 3, s // 5: s - 9] = 1
    return image, mask


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    return export_onnx(tiny_checkpoint, d / "fp32.onnx"), export_onnx(tiny_checkpoint, d / "fp16.onnx", fp16=True)


def test_graph_holds_the_custom_node_with_its_function(exported):
    for path in exported:
        model = onnx.load(path)
        nodes = harmony_nodes(model)
        assert len(nodes) == 1
        attrs = {a.name: helper.get_attribute_value(a) for a in nodes[0].attribute}
        assert attrs == {"plugin_namespace": b"harmony"}
        assert [(f.domain, f.name) for f in model.functions] == [(OP_DOMAIN, OP_NAME)]
        onnx.checker.check_model(model, full_check=True)
        dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
        assert dims == ["batch", "", "height", "width"]


@pytest.mark.parametrize("mask_kind", ["random", "empty", "full"])
def test_function_body_matches_the_reference(mask_kind, tmp_path):
    """The harmony node alone, run by ONNX Runtime through its function body."""
    args = inputs(b=2, c=16, cq=4, hh=7, ww=9, mask=mask_kind, seed=4)
    names = ["h", "mask", "q", "k", "v", "gamma"]
    for dtype, onnx_type, tol in ((np.float32, TensorProto.FLOAT, 1e-5), (np.float16, TensorProto.FLOAT16, 2e-2)):
        node = helper.make_node(OP_NAME, names, ["out"], domain=OP_DOMAIN, plugin_namespace="harmony")
        graph = helper.make_graph(
            [node], "op",
            [helper.make_tensor_value_info(n, onnx_type, a.shape) for n, a in zip(names, args, strict=True)],
            [helper.make_tensor_value_info("out", onnx_type, args[0].shape)])
        model = helper.make_model(graph,
                                  opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(OP_DOMAIN, 1)],
                                  functions=[op_function()])
        onnx.checker.check_model(model, full_check=True)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        got = sess.run(None, {n: a.astype(dtype) for n, a in zip(names, args, strict=True)})[0].astype(np.float32)
        want = attention_modulation(*(torch.from_numpy(a) for a in args)).numpy()
        err = np.abs(got - want).max()
        assert err < tol, f"{dtype.__name__}, mask {mask_kind}: max abs diff {err:.2e} > {tol}"


@pytest.mark.parametrize("size", [64, 128])
def test_onnxruntime_agrees_with_pytorch(exported, tiny_checkpoint, size):
    image, mask = net_inputs(2, size)
    ref = load("torch", tiny_checkpoint).infer(image, mask)
    fp32 = load("onnxruntime", exported[0]).infer(image, mask)
    fp16 = load("onnxruntime", exported[1]).infer(image, mask)
    assert np.abs(fp32 - ref).max() < 1e-4
    # FP16: 3x4 colour maps whose entries err by < 5e-3 move a 0..1 colour by < 2e-2 (5/255).
    assert np.abs(fp16 - ref).max() < 5e-3


def test_shipped_onnx_files_are_fresh_exports_of_the_shipped_weights(tmp_path):
    weights = shipped("pt")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    image, mask = net_inputs(1, 128, seed=2)
    ref = load("torch", weights).infer(image, mask)
    for fp16 in (False, True):
        shipped_onnx = shipped("onnx-fp16" if fp16 else "onnx")
        meta = {p.key: p.value for p in onnx.load(shipped_onnx).metadata_props}
        assert meta["checkpoint_sha256"] == digest, f"{shipped_onnx.name} is stale: run harmonize export --shipped"
        assert meta["precision"] == ("fp16" if fp16 else "fp32")
        fresh = export_onnx(weights, tmp_path / f"fresh{fp16}.onnx", fp16=fp16)
        fresh_meta = {p.key: p.value for p in onnx.load(fresh).metadata_props}
        assert meta == fresh_meta, f"{shipped_onnx.name}: its metadata, which every backend reads, is not fresh"
        # The same graph; the exporter folds BatchNorm into the convolutions with whatever float kernels
        # this CPU has, so folded weights may differ from the shipped ones in their last bit, no more.
        g_shipped, g_fresh = onnx.load(shipped_onnx).graph, onnx.load(fresh).graph
        ops = [n.op_type for n in g_shipped.node]
        assert ops == [n.op_type for n in g_fresh.node], f"{shipped_onnx.name}: another graph"
        w_shipped = {i.name: onnx.numpy_helper.to_array(i) for i in g_shipped.initializer}
        w_fresh = {i.name: onnx.numpy_helper.to_array(i) for i in g_fresh.initializer}
        assert w_shipped.keys() == w_fresh.keys()
        for name, w in w_shipped.items():
            np.testing.assert_allclose(w_fresh[name], w, rtol=1e-5, atol=1e-7 if not fp16 else 1e-3, err_msg=name)
        a, b = (load("onnxruntime", m).infer(image, mask) for m in (shipped_onnx, fresh))
        assert np.abs(a - b).max() < (1e-3 if fp16 else 1e-6), f"{shipped_onnx.name} differs from a fresh export"
        assert np.abs(a - ref).max() < (5e-3 if fp16 else 1e-4)


def test_lab_mix_goes_through_export_into_every_backend(tiny_checkpoint, tmp_path):
    """The ensemble weight lives in the model file: a backend that lost it would serve another model."""
    from engine.training.train import average_checkpoints

    mixed = average_checkpoints([tiny_checkpoint, tiny_checkpoint], tmp_path / "mixed.pt", lab_mix=0.3)
    onnx_path = export_onnx(mixed, tmp_path / "mixed.onnx")
    meta = {p.key: p.value for p in onnx.load(onnx_path).metadata_props}
    assert float(meta["lab_mix"]) == 0.3
    image = (np.random.default_rng(3).random((40, 56, 3)) * 255).astype(np.uint8)
    mask = np.zeros((40, 56), np.float32)
    mask[10:30, 12:40] = 1
    outs = {}
    for name, model in (("torch", mixed), ("onnxruntime", onnx_path)):
        with load(name, model) as backend:
            assert backend.lab_mix == 0.3, name
            outs[name] = backend.harmonize(image, mask)
    with load("onnxruntime", export_onnx(tiny_checkpoint, tmp_path / "plain.onnx")) as plain:
        assert plain.lab_mix == 0.0 and not np.array_equal(plain.harmonize(image, mask), outs["onnxruntime"])
    assert np.abs(outs["torch"].astype(int) - outs["onnxruntime"]).max() <= 1
