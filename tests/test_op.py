"""The attention-modulation op's PyTorch reference against a per-position numpy computation."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (the 'train' extra) is not installed")
from engine.network.op import attention_modulation  # noqa: E402


def numpy_reference(h, m, q, k, v, g):
    """The paper's steps (c)-(e) written out position by position, in float64."""
    b, c, hh, ww = h.shape
    n = hh * ww
    out = np.empty_like(h, dtype=np.float64)
    for s in range(b):
        Q, K, V = q[s].reshape(-1, n), k[s].reshape(-1, n), v[s].reshape(c, n)
        hba = np.zeros((c, n))
        for i in range(n):
            e = Q[:, i] @ K
            a = np.exp(e - e.max())
            a /= a.sum()
            hba[:, i] = V @ a
        hf = (m[s] * h[s]).reshape(c, n)
        sd = lambda x: np.sqrt(x.var(axis=1, ddof=1) + 1e-5)[:, None]  # noqa: E731
        out[s] = (h[s].reshape(c, n) + g * hf * sd(hba) / sd(hf)).reshape(c, hh, ww)
    return out


def inputs(b=2, c=8, cq=2, hh=5, ww=6, seed=0, mask="random"):
    rng = np.random.default_rng(seed)
    t = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    m = {"random": (rng.random((b, 1, hh, ww)) > 0.5), "empty": np.zeros((b, 1, hh, ww)),
         "full": np.ones((b, 1, hh, ww))}[mask].astype(np.float32)
    return t(b, c, hh, ww), m, t(b, cq, hh, ww), t(b, cq, hh, ww), t(b, c, hh, ww), np.array([0.8], np.float32)


@pytest.mark.parametrize("mask", ["random", "empty", "full"])
def test_reference_matches_per_position_computation(mask):
    args = inputs(mask=mask)
    got = attention_modulation(*(torch.from_numpy(a) for a in args)).numpy()
    want = numpy_reference(*args[:5], float(args[5][0]))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"mask={mask}")


def test_zero_gamma_is_identity_and_background_is_untouched():
    h, m, q, k, v, _ = (torch.from_numpy(a) for a in inputs())
    assert torch.equal(attention_modulation(h, m, q, k, v, torch.zeros(1)), h)
    out = attention_modulation(h, m, q, k, v, torch.ones(1))
    assert torch.equal(out * (1 - m), h * (1 - m)), "the op changed background features"
    assert not torch.allclose(out, h)


def test_float16_inputs_computed_in_float32():
    args = [torch.from_numpy(a) for a in inputs()]
    ref = attention_modulation(*args)
    half = attention_modulation(*(a.half() for a in args))
    assert half.dtype == torch.float16
    assert (half.float() - ref).abs().max() < 1e-2


def test_under_bf16_autocast_as_in_training_still_computed_in_float32():
    """Training runs under bfloat16 autocast, which would cast the op's products down to 8 bits of mantissa:
    the attention's energies (tens) would lose their units."""
    args = inputs(cq=16, seed=3)
    args = (*args[:2], args[2] * 2, args[3] * 2, *args[4:])  # energies of tens, as a trained bottleneck's
    want = numpy_reference(*args[:5], float(args[5][0]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = attention_modulation(*(torch.from_numpy(a) for a in args))
    np.testing.assert_allclose(got.float().numpy(), want, rtol=1e-4, atol=1e-4)
