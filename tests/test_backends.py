"""The backend contract (engine/backends/base.py): `infer` checks both sides, `close` releases once."""
import numpy as np
import pytest

from engine.errors import HarmonizeError, InputError
from engine.runtime.backends import load
from engine.runtime.backends.base import Backend


class Recording(Backend):
    """A backend that returns what it is told to and counts its releases."""

    name, size, head = "recording", 16, "affine"

    def __init__(self, answer):
        self.answer, self.released = answer, 0

    def infer_impl(self, image, mask):
        return self.answer(image)

    def close_impl(self):
        self.released += 1


def inputs(b=2, s=16):
    return np.zeros((b, 3, s, s), np.float32), np.zeros((b, 1, s, s), np.float32)


def test_infer_refuses_malformed_inputs_before_the_runtime_sees_them():
    backend = Recording(lambda image: pytest.fail("the runtime was called"))
    image, mask = inputs()
    with pytest.raises(InputError, match=r"image must be float32 \(B, 3, H, W\), got float64"):
        backend.infer(image.astype(np.float64), mask)
    with pytest.raises(InputError, match=r"mask must be float32 \(B, 1, H, W\), got float32 \(2, 3, 16, 16\)"):
        backend.infer(image, image)
    with pytest.raises(InputError, match="does not match image"):
        backend.infer(image, mask[:1])


def test_infer_refuses_an_answer_of_the_wrong_shape_or_type():
    image, mask = inputs()
    assert Recording(lambda x: np.zeros((len(x), 12), np.float32)).infer(image, mask).shape == (2, 12)
    with pytest.raises(HarmonizeError, match=r"returned float32 \(2, 3\), expected float32 \(2, 12\)"):
        Recording(lambda x: np.zeros((len(x), 3), np.float32)).infer(image, mask)
    with pytest.raises(HarmonizeError, match=r"returned float16 \(2, 12\)"):
        Recording(lambda x: np.zeros((len(x), 12), np.float16)).infer(image, mask)


def test_close_releases_once_and_a_closed_backend_says_so():
    backend = Recording(lambda x: np.zeros((len(x), 12), np.float32))
    with backend:
        pass
    backend.close()
    assert backend.released == 1
    with pytest.raises(HarmonizeError, match="the recording backend is closed"):
        backend.infer(*inputs())


def test_real_backends_keep_the_contract():
    """The shipped model on ONNX Runtime answers per sample what the PyTorch reference answers for that
    sample alone, and closes twice without error."""
    pytest.importorskip("torch", reason="torch (the 'train' extra) is not installed")
    image, mask = inputs(b=2, s=64)
    mask[:, :, 16:40, 16:40] = 1
    mask[1, :, 8:20, 30:60] = 1  # two different samples: a batch that mixed them up would show
    backend, reference = load("onnxruntime"), load("torch")
    got = backend.infer(image, mask)
    assert got.dtype == np.float32 and got.shape == (2, 12)
    for i in range(2):
        want = reference.infer(image[i:i + 1], mask[i:i + 1])[0]
        assert np.abs(got[i] - want).max() < 1e-4
    assert np.abs(got[0] - got[1]).max() > 1e-3, "the two samples should get different colour maps"
    backend.close()
    backend.close()


def test_unknown_backend_names_the_registry():
    with pytest.raises(InputError, match="unknown backend 'cudnn'; choose from auto, onnxruntime, tensorrt, torch"):
        load("cudnn")
