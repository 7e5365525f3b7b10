"""`harmonize import`: a checkpoint in the FMM authors' layout becomes our `paper` network, the same function.

The layout (key names, shapes, dtypes) is a fixture written from their released checkpoint's description
(tests/fixtures/authors-fmm-state-dict.tsv); the values are random. `authors_forward` below computes their
Network's forward straight from that state dict, independently of engine.network.model: conv with bias, BatchNorm,
ReLU blocks, their 2x2-every-8-pixels mask pooling, the FMM bottleneck, the tanh residual.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (the 'train' extra) is not installed")
import torch.nn.functional as F  # noqa: E402
from conftest import ROOT, textured_image  # noqa: E402

from engine.errors import InputError  # noqa: E402
from engine.network.authors import import_authors  # noqa: E402
from engine.network.model import load_checkpoint  # noqa: E402

LAYOUT = Path(__file__).parent / "fixtures" / "authors-fmm-state-dict.tsv"


def authors_state_dict(seed: int = 0) -> dict:
    """Random values in the authors' layout; BatchNorm statistics plausible, both attention gammas on."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for line in LAYOUT.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        if dtype == "int64":
            sd[key] = torch.tensor(1000)
            continue
        dims = [] if shape == "scalar" else [int(d) for d in shape.split("x")]
        t = torch.randn(dims, generator=g)
        if key.endswith(".weight") and len(dims) == 4:
            t *= (2.0 / (dims[1] * dims[2] * dims[3])) ** 0.5
        elif key.endswith("running_var"):
            t = 0.5 + torch.rand(dims, generator=g)
        elif key.endswith("bn.weight"):
            t = 1.0 + 0.2 * t
        elif key.endswith("gamma"):
            t = torch.full(dims, 0.7)
        else:
            t *= 0.2
        sd[key] = t
    return sd


def authors_forward(sd: dict, image, mask):
    """Their Network.forward, from their state dict alone."""
    def block(x, name, stride=1, up=False):
        if up:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        x = F.conv2d(x, sd[f"{name}.conv2d.weight"], sd[f"{name}.conv2d.bias"], stride, 1)
        x = F.batch_norm(x, sd[f"{name}.bn.running_mean"], sd[f"{name}.bn.running_var"], sd[f"{name}.bn.weight"],
                         sd[f"{name}.bn.bias"], False, 0.0, 1e-5)
        return F.relu(x)

    def proj(x, name):
        return F.conv2d(x, sd[f"{name}.weight"], sd[f"{name}.bias"])

    def attend(q, k, v):  # v softmax(q^T k)^T over key positions
        b, c, h, w = v.shape
        a = torch.softmax(q.flatten(2).transpose(1, 2) @ k.flatten(2), -1)
        return (v.flatten(2) @ a.transpose(1, 2)).reshape(b, c, h, w)

    def std(x):
        return (x.flatten(2).var(2) + 1e-5).sqrt()[..., None, None]

    x = block(torch.cat([image - 0.4462414, mask], 1), "Down1", 2)
    c1 = block(x, "Down2")
    c2 = block(block(c1, "Down3", 2), "Down4")
    c3 = block(block(block(block(c2, "Down5", 2), "Down6"), "Down7"), "Down8")
    x = block(c3, "Down9")
    sa = "FB_FMM.SA"
    x = x + sd[f"{sa}.gamma"] * attend(proj(x, f"{sa}.query_conv"), proj(x, f"{sa}.key_conv"),
                                       proj(x, f"{sa}.value_conv"))
    m = torch.round(F.avg_pool2d(mask, 2, stride=mask.shape[-1] // x.shape[-1]))
    f, b = m * x, (1 - m) * x
    bg = attend(proj(f, "FB_FMM.query_conv"), proj(b, "FB_FMM.key_conv"), proj(b, "FB_FMM.value_conv"))
    x = x + sd["FB_FMM.gamma"] * f * std(bg) / std(f)
    x = block(torch.cat([x, c3], 1), "Up1", up=True)
    x = block(torch.cat([x, c2], 1), "Up2", up=True)
    x = block(torch.cat([x, c1], 1), "Up3", up=True)
    return (image + torch.tanh(F.conv2d(x, sd["output.weight"], sd["output.bias"], padding=1))).clamp(0, 1)


def off_grid_mask(n: int = 256) -> torch.Tensor:
    """An ellipse whose edges fall inside the 8-pixel cells, where the two mask poolings differ."""
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    return ((((yy - 0.51 * n) / (0.24 * n)) ** 2 + ((xx - 0.46 * n) / (0.18 * n)) ** 2) <= 1).float()[None, None]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    d = tmp_path_factory.mktemp("authors")
    sd = authors_state_dict()
    torch.save({"epoch": 60, "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}}, d / "plain.pth")
    torch.save({"epoch": 60, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, d / "dataparallel.pth")
    return d, sd, import_authors(d / "plain.pth", d / "plain.pt"), import_authors(d / "dataparallel.pth", d / "dp.pt")


def test_imported_network_computes_the_authors_forward(imported):
    d, sd, plain, dp = imported
    a, b = torch.load(plain, weights_only=True), torch.load(dp, weights_only=True)
    assert a["config"]["mask_pool"] == "authors" and a["step"] == 60
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), "module. prefix changed the import"
    model = load_checkpoint(plain)
    image = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    mask = off_grid_mask().repeat(2, 1, 1, 1)
    with torch.no_grad():
        want, got = authors_forward(sd, image, mask), model(image, mask)
        model.fmm.mask_pool = "average"  # the pooling this project used before: measurably another network
        other = model(image, mask)
    assert (got - want).abs().max() < 1e-4, float((got - want).abs().max())
    assert (other - want).abs().max() > 10 * (got - want).abs().max()


def test_imported_model_exports_and_runs_in_onnxruntime(imported, tmp_path):
    pytest.importorskip("onnx", reason="onnx (the 'export' extra) is not installed")
    from engine.network.export import export_onnx
    from engine.runtime.backends import load

    d, sd, plain, _ = imported
    onnx_path = export_onnx(plain, d / "paper.onnx")
    image, mask = np.random.default_rng(2).random((1, 3, 256, 256), np.float32), off_grid_mask().numpy()
    want = authors_forward(sd, torch.from_numpy(image), torch.from_numpy(mask)).numpy()
    got = load("onnxruntime", onnx_path).infer(image, mask)
    assert np.abs(got - want).max() < 1e-4, float(np.abs(got - want).max())
    # And the whole run at full resolution through the CLI, the background returned as it was.
    from PIL import Image

    from engine.cli import main

    rgb = textured_image(300, 420)
    m = (off_grid_mask(300)[0, 0].numpy()[:, :300].repeat(2, 1)[:, :420] * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(m).save(tmp_path / "m.png")
    assert main(["run", str(tmp_path / "c.png"), "--mask", str(tmp_path / "m.png"), "--model", str(onnx_path),
                 "-o", str(tmp_path / "out.png"), "-q"]) == 0
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == rgb.shape and np.array_equal(out[m == 0], rgb[m == 0])


def test_wrong_or_truncated_checkpoints_are_refused_and_nothing_is_written(imported, tmp_path):
    d, sd, _, _ = imported
    cases = {
        "missing.pth": ({k: v for k, v in sd.items() if k != "Up2.bn.running_var"},
                        "missing key for dec2.1.running_var"),
        "extra.pth": ({**sd, "Down10.conv2d.weight": torch.zeros(1)}, "unexpected key Down10.conv2d.weight"),
        "shape.pth": ({**sd, "output.weight": torch.zeros(3, 32, 3, 3)},
                      "out.weight: shape (3, 32, 3, 3) where the paper network has (3, 16, 3, 3)"),
    }
    for name, (state, message) in cases.items():
        torch.save({"epoch": 1, "state_dict": state}, tmp_path / name)
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            import_authors(tmp_path / name, tmp_path / "out.pt")
    data = (d / "plain.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated.pth: not a readable PyTorch checkpoint"):
        import_authors(tmp_path / "truncated.pth", tmp_path / "out.pt")
    torch.save({"epoch": 1, "state_dict": "nope"}, tmp_path / "odd.pth")
    with pytest.raises(InputError, match="expected the authors'"):
        import_authors(tmp_path / "odd.pth", tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()
    r = subprocess.run([sys.executable, "-m", "engine.cli", "import", str(tmp_path / "truncated.pth"), "-o",
                        str(tmp_path / "out.pt")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "not a readable PyTorch checkpoint" in r.stderr
