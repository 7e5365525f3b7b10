"""The network: the paper configuration pinned, identity at initialisation, configurations as data."""
import pytest

torch = pytest.importorskip("torch", reason="torch (the 'train' extra) is not installed")
from engine.network.model import CONFIGS, FMMNet, create_model  # noqa: E402


def test_paper_configuration_size():
    model = create_model("paper")
    n = sum(p.numel() for p in model.parameters())
    assert 11.5e6 < n < 11.7e6, f"paper configuration has {n} parameters, expected about 11.6 M"
    assert model.head == "image" and model.size == 256


def test_paper_bottleneck_is_identity_at_initialisation():
    torch.manual_seed(0)
    model = create_model("paper").eval()
    h = torch.randn(2, 256, 32, 32)
    mask = (torch.rand(2, 1, 256, 256) > 0.5).float()
    with torch.no_grad():
        assert torch.equal(model.fmm(h, mask), h)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_configurations_run_and_affine_head_starts_as_identity(name):
    model = create_model(name, size=64).eval()
    image = torch.rand(2, 3, 64, 64)
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, :, 16:40, 8:30] = 1
    with torch.no_grad():
        out = model(image, mask)
        harmonized = model.harmonize(image, mask)
    if model.head == "affine" and model.prior == 0:
        assert out.shape == (2, 12)
        assert torch.allclose(harmonized, image, atol=1e-6)
    elif model.head == "affine":
        assert torch.allclose(out, statistics_prior_reference(image, mask, model.prior), atol=1e-5)
    else:
        assert out.shape == image.shape and out.min() >= 0 and out.max() <= 1


def statistics_prior_reference(image, mask, prior):
    """Each sample's foreground RGB mean and std moved `prior` of the way to the background's, as a 3x4 map."""
    maps = []
    for x, m in zip(image.double(), mask.double(), strict=True):
        fg, bg = x[:, m[0] > 0], x[:, m[0] == 0]
        mf, mb = fg.mean(1), bg.mean(1)
        sf = ((fg - mf[:, None]) ** 2).mean(1).add(1e-4).sqrt()
        sb = ((bg - mb[:, None]) ** 2).mean(1).add(1e-4).sqrt()
        gain = 1 + prior * ((sb / sf).clamp(torch.e ** -1, torch.e) - 1)
        bias = mf + prior * (mb - mf) - gain * mf
        maps.append(torch.cat([torch.diag(gain), bias[:, None]], 1).reshape(12))
    return torch.stack(maps).float()


def test_every_parameter_gets_a_gradient(tiny_checkpoint):
    from engine.network.model import load_checkpoint

    model = load_checkpoint(tiny_checkpoint).train()
    image, mask = torch.rand(2, 3, 64, 64), torch.zeros(2, 1, 64, 64)
    mask[:, :, 8:40, 8:40] = 1
    model.harmonize(image, mask).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="unknown configuration"):
        create_model("huge")
    with pytest.raises(ValueError, match="multiple of 8"):
        FMMNet(size=100)
    with pytest.raises(ValueError, match="head"):
        FMMNet(head="mystery")
    with pytest.raises(ValueError, match="unknown configuration keys"):
        create_model("tiny", depth=3)


def test_the_colour_map_is_applied_in_float32_under_bf16_autocast():
    """The network's head under bf16 autocast (training) still maps colours as the shipped float32 pipeline
    does (the head's parameters come in bf16 there; the picture rounded to bf16 would move by half a level)."""
    from engine.network.model import apply_affine_torch

    g = torch.Generator().manual_seed(0)
    image, mask = torch.rand(2, 3, 16, 16, generator=g), (torch.rand(2, 1, 16, 16, generator=g) > 0.5).float()
    params = (torch.eye(3, 4).repeat(2, 1, 1).reshape(2, 12) * 1.0037 + 0.001).bfloat16()
    want = apply_affine_torch(image, mask, params.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = apply_affine_torch(image, mask, params)
    assert got.dtype == torch.float32 and (got - want).abs().max() < 1e-6
