"""`--device auto|cpu|gpu` and the one backend registry (engine/runtime/backends): what `auto` takes, what a
device without a runtime refuses, and that a new backend is one module and one entry, seen by `load`, `run`,
`doctor`, `bench` and the plug-in's devices alike. No GPU is needed: the machine's GPU runtimes are hidden,
and a stand-in GPU backend is registered where a test needs one."""
import configparser
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, ellipse_mask, textured_image
from PIL import Image

import engine.runtime.backends as backends
from engine.cli import main
from engine.errors import InputError
from engine.models import FILES, shipped
from engine.runtime.backends import REGISTRY, BackendSpec, choose, load, serving
from engine.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine as one without any GPU runtime, whatever it has."""
    import onnxruntime

    import engine.tensorrt.library as library

    monkeypatch.setattr(library, "available", lambda: False)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(backends, "nvidia_driver", lambda: False)


class StandInGpuBackend(OnnxRuntimeBackend):
    """A 'GPU' backend for the tests: ONNX Runtime on the CPU that says it runs on the GPU."""

    name = "standin"

    def __init__(self, model, marker: str):
        super().__init__(model)
        self.device, self.marker = "gpu", marker


@pytest.fixture
def standin_gpu(monkeypatch, no_gpu):
    """A new backend, added as the registry says: one module, one entry."""
    module = types.ModuleType("engine.runtime.backends.standin_backend")
    module.StandInGpuBackend = StandInGpuBackend
    monkeypatch.setitem(sys.modules, module.__name__, module)
    spec = BackendSpec("standin_backend", "StandInGpuBackend", "a stand-in GPU", "", ("onnxruntime",), (".onnx",),
                       ("gpu",), "onnx", lambda device, model: ({"marker": "probed"}, "the stand-in GPU"))
    monkeypatch.setitem(REGISTRY, "standin", spec)
    return spec


def composites(folder: Path, n: int = 2) -> tuple[Path, Path]:
    (folder / "in").mkdir(parents=True), (folder / "masks").mkdir()
    for i in range(n):
        Image.fromarray(textured_image(40, 56, seed=i)).save(folder / "in" / f"{i}.png")
        Image.fromarray((ellipse_mask(40, 56) * 255).astype(np.uint8)).save(folder / "masks" / f"{i}.png")
    return folder / "in", folder / "masks"


def test_device_gpu_without_one_is_refused_before_anything_is_written(tmp_path, capsys, no_gpu):
    src, masks = composites(tmp_path)
    assert main(["run", str(src), "--masks", str(masks), "-o", str(tmp_path / "out"), "--device", "gpu"]) == 2
    err = capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    for looked in ("tensorrt on the GPU: no tensorrt", "onnxruntime on the GPU: ONNX Runtime has no GPU provider",
                   "torch on the GPU: no NVIDIA driver", "pip install onnxruntime-gpu", "build_engine.py"):
        assert looked in err, err
    with pytest.raises(InputError, match="cannot run the shipped model"):
        load("auto", device="gpu")


def test_device_cpu_runs_anywhere_and_agrees_with_auto(tmp_path, caplog, no_gpu):
    src, masks = composites(tmp_path)
    assert main(["run", str(src), "--masks", str(masks), "-o", str(tmp_path / "cpu"), "--device", "cpu"]) == 0
    assert "backend: onnxruntime (cpu: ONNX Runtime on the CPU)" in caplog.text
    assert main(["run", str(src), "--masks", str(masks), "-o", str(tmp_path / "auto"), "-q"]) == 0
    for name in ("0.png", "1.png"):
        cpu, auto = (np.asarray(Image.open(tmp_path / d / name)) for d in ("cpu", "auto"))
        assert np.array_equal(cpu, auto)
        assert not np.array_equal(cpu, np.asarray(Image.open(src / name))), "the object was recoloured"


def test_auto_walks_the_registry_gpu_first(standin_gpu):
    assert (choose().backend, choose().device, choose().options) == ("standin", "gpu", {"marker": "probed"})
    assert (choose(device="cpu").backend, choose(device="cpu").options) == (
        "onnxruntime", {"providers": ["CPUExecutionProvider"]})
    assert (choose("x.pt").backend, choose("x.pt").device) == ("torch", "cpu"), "no GPU runs a .pt here"
    assert choose("x.ONNX").backend == "standin", "suffixes match in any case"
    with pytest.raises(InputError, match="nothing here runs x.engine on the CPU"):
        choose("x.engine", device="cpu")
    with pytest.raises(InputError, match="torch on the GPU: no NVIDIA driver"):
        choose(backend="torch", device="gpu")
    with pytest.raises(InputError, match="nothing here runs x.onnx with torch"):
        choose("x.onnx", backend="torch")
    with pytest.raises(InputError, match="unknown device 'tpu'; choose from auto, cpu, gpu"):
        choose(device="tpu")


def test_a_new_backend_is_one_module_and_one_entry(tmp_path, capsys, caplog, standin_gpu):
    """Registered, it serves `load`, `run --device gpu` and `--backend NAME`, the plug-in's devices, doctor and
    bench, with no other change."""
    from engine.evaluation.bench import available_backends
    from engine.gimp.devices import devices, load_device

    with load() as backend:
        assert isinstance(backend, StandInGpuBackend) and backend.marker == "probed"
    with load_device("gpu") as backend:
        assert backend.name == "standin"
    assert devices() == ("auto", "cpu", "gpu")
    src, masks = composites(tmp_path)
    assert main(["run", str(src), "--masks", str(masks), "-o", str(tmp_path / "gpu"), "--device", "gpu"]) == 0
    assert "backend: standin (gpu: the stand-in GPU)" in caplog.text
    assert main(["run", str(src), "--masks", str(masks), "-o", str(tmp_path / "named"), "--backend", "standin",
                 "-q"]) == 0
    assert main(["run", str(src), "--masks", str(masks), "-o", str(tmp_path / "cpu"), "--device", "cpu", "-q"]) == 0
    for name in ("0.png", "1.png"):
        assert np.array_equal(*(np.asarray(Image.open(tmp_path / d / name)) for d in ("gpu", "cpu")))
        assert (tmp_path / "named" / name).exists()
    capsys.readouterr()
    assert main(["doctor"]) == 0
    rows = {line[:30].strip(): line[30:].strip() for line in capsys.readouterr().out.splitlines()}
    assert rows["--device gpu takes"].startswith("standin (the stand-in GPU); not tensorrt: no tensorrt")
    assert rows["--device auto takes"] == "standin on the GPU"
    benched = available_backends(None, fp16=False, log=lambda line: None, device="gpu")
    assert list(benched) == ["standin gpu"]


def test_without_a_gpu_the_plugin_is_offered_auto_and_cpu_and_doctor_says_why(capsys, no_gpu):
    from engine.gimp.devices import devices, load_device

    assert devices() == ("auto", "cpu")
    with pytest.raises(InputError, match=r"cannot run the shipped model \(fmm-medium\) on the GPU: tensorrt on"):
        load_device("gpu")
    assert main(["doctor"]) == 0
    rows = {line[:30].strip(): line[30:].strip() for line in capsys.readouterr().out.splitlines()}
    assert rows["--device gpu takes"] == (
        "nothing; not tensorrt: no tensorrt or tensorrt_rtx installed; onnxruntime: ONNX Runtime has no GPU provider "
        "(pip install onnxruntime-gpu, or onnxruntime-trt-rtx); torch: no NVIDIA driver (libcuda) on this machine")
    assert rows["--device cpu takes"] == "onnxruntime (ONNX Runtime on the CPU)"
    assert rows["--device auto takes"] == "onnxruntime on the CPU"


@pytest.mark.parametrize("available, taken", [
    (["NvTensorRtRtxExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
     "NvTensorRtRtxExecutionProvider"),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "CUDAExecutionProvider"),
])
def test_onnxruntime_takes_its_best_gpu_provider(monkeypatch, no_gpu, available, taken):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: available)
    choice = choose()
    assert (choice.backend, choice.device) == ("onnxruntime", "gpu")
    assert choice.options["providers"] == [taken, "CPUExecutionProvider"]


def test_tensorrt_is_taken_only_with_an_engine_built_for_this_gpu(monkeypatch, tmp_path, no_gpu):
    import engine.tensorrt.device as device
    import engine.tensorrt.library as library
    import engine.tensorrt.lookup as lookup

    monkeypatch.setattr(library, "available", lambda: True)
    monkeypatch.setattr(device, "compute_capability", lambda: None)
    assert serving("gpu", backend="tensorrt") == [("tensorrt", None, "no GPU found by cuda.bindings")]
    assert serving("gpu", "x.engine", backend="tensorrt") == [("tensorrt", None, "no GPU found by cuda.bindings")]
    monkeypatch.setattr(device, "compute_capability", lambda: 90)
    assert serving("gpu", "x.engine", backend="tensorrt")[0][1].options == {}, "a named engine is loaded as it is"
    engine = tmp_path / "fmm-medium-fp16-sm90.engine"
    monkeypatch.setattr(lookup, "default_engine_path", lambda model: engine)
    (_, choice, why), = serving("gpu", backend="tensorrt")
    assert choice is None and "python build_engine.py writes" in why and str(engine) in why
    engine.write_bytes(b"")
    (_, choice, why), = serving("gpu", backend="tensorrt")
    assert choice.options == {"model": engine, "onnx": shipped("onnx-fp16")} and choose().backend == "tensorrt"


def test_every_registry_entry_says_what_it_needs_and_runs():
    extras = configparser.ConfigParser()
    extras.read(ROOT / "setup.cfg")
    for name, spec in REGISTRY.items():
        source = ROOT / "engine" / "runtime" / "backends" / f"{spec.module}.py"
        assert f"class {spec.cls}(Backend)" in source.read_text(), name
        assert spec.extra == "" or spec.extra in extras["options.extras_require"], f"{name}: no extra {spec.extra}"
        assert spec.suffixes and all(s.startswith(".") and s == s.lower() for s in spec.suffixes), name
        assert set(spec.devices) <= {"cpu", "gpu"} and spec.devices, name
        assert spec.shipped in FILES and shipped(spec.shipped).exists(), name


def test_an_entry_whose_needs_are_missing_runs_nowhere_and_says_how_to_install_them(monkeypatch):
    monkeypatch.setattr(backends, "installed", lambda module: module != "torch")
    assert serving("cpu", "x.pt") == [("torch", None, "torch is not installed (pip install '.[train]' (in the "
                                                      "fmm-harmonize folder))")]
    monkeypatch.setattr(backends, "installed", lambda module: module != "onnxruntime")
    assert serving("cpu", "x.onnx") == [("onnxruntime", None, "onnxruntime is not installed (pip install onnxruntime)")]
