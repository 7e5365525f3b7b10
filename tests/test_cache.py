"""Engines live in the user's cache folder, named by what they fit: where that folder is on each system, how
an engine's name follows its ONNX bytes, GPU and TensorRT, and that a folder others could write into is
refused. CPU only, no TensorRT needed (what would need it is monkeypatched)."""
import importlib.machinery
import os
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from engine.cache import cache_dir, private_cache
from engine.errors import HarmonizeError
from engine.models import shipped
from engine.tensorrt import library, lookup

RTX = ("tensorrt_rtx", "1.7.1.116")


@pytest.fixture
def env(monkeypatch, tmp_path):
    """No cache variable from the caller's environment, a POSIX system, and HOME in tmp_path/home."""
    for name in ("FMM_CACHE_DIR", "XDG_CACHE_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


@pytest.fixture
def trt(env, tmp_path):
    """A machine with TensorRT for RTX 1.7.1.116 (as its metadata would say) and an sm_86 GPU, and the cache
    folder in tmp_path/cache."""
    env.setenv("FMM_CACHE_DIR", str(tmp_path / "cache"))
    env.setattr(lookup, "installed", lambda: RTX)
    env.setattr(lookup, "available", lambda: True)
    env.setattr(lookup, "compute_capability", lambda: 86)
    return env


def test_cache_dir_on_posix(env, tmp_path):
    assert cache_dir() == tmp_path / "home" / ".cache" / "fmm-harmonize"
    env.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec: a relative path is ignored
    assert cache_dir() == tmp_path / "home" / ".cache" / "fmm-harmonize"
    env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "fmm-harmonize"
    env.setenv("FMM_CACHE_DIR", str(tmp_path / "volume"))  # over everything
    assert cache_dir() == tmp_path / "volume"


def test_cache_dir_on_windows(env, tmp_path):
    env.setattr(sys, "platform", "win32")
    env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # not read on Windows
    assert cache_dir() == tmp_path / "home" / "AppData" / "Local" / "fmm-harmonize" / "cache"
    env.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert cache_dir() == tmp_path / "local" / "fmm-harmonize" / "cache"
    env.setenv("FMM_CACHE_DIR", str(tmp_path / "volume"))
    assert cache_dir() == tmp_path / "volume"


def test_cache_dir_is_not_made_by_asking(env, tmp_path):
    cache_dir()
    assert not (tmp_path / "home").exists()


def test_private_cache_is_made_for_this_user_alone(trt, tmp_path):
    folder = private_cache("engines")
    assert folder == tmp_path / "cache" / "engines" == lookup.engines_dir()
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700 == folder.stat().st_mode & 0o777


def test_a_group_writable_cache_folder_is_refused_naming_it(trt, tmp_path):
    (tmp_path / "cache").mkdir(mode=0o700)
    os.chmod(tmp_path / "cache", 0o770)
    with pytest.raises(HarmonizeError, match=f"refusing the cache folder {tmp_path / 'cache'}: .*open to other"):
        private_cache("engines")
    assert not (tmp_path / "cache" / "engines").exists()
    os.chmod(tmp_path / "cache", 0o700)
    engines = private_cache("engines")
    os.chmod(engines, 0o757)  # others may write into the engines' own folder
    with pytest.raises(HarmonizeError, match=f"refusing the cache folder {engines}: .*chmod 700 {engines}"):
        private_cache("engines")


def test_a_cache_folder_of_another_user_is_refused(trt, tmp_path):
    folder = private_cache()
    trt.setattr(os, "getuid", lambda: folder.stat().st_uid + 1)
    with pytest.raises(HarmonizeError, match=f"refusing the cache folder {folder}: .*belongs to user id"):
        private_cache("engines")


def test_an_engine_in_an_open_cache_folder_is_not_loaded(trt, tmp_path):
    """check_engine refuses it before TensorRT is imported, let alone the engine deserialized."""
    engine = lookup.engine_path(shipped("onnx-fp16"), 86)
    private_cache("engines")
    engine.write_bytes(b"code")
    lookup.sidecar_path(engine).write_text("{}")
    os.chmod(engine.parent, 0o777)
    with pytest.raises(HarmonizeError, match=f"refusing the cache folder {engine.parent}"):
        lookup.check_engine(engine)


def write_replacing(path: Path, data: bytes) -> None:
    """Write as export does: a new file renamed over the old one."""
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def test_engine_name_follows_the_onnx_bytes_the_gpu_and_the_tensorrt(trt, tmp_path):
    onnx = tmp_path / "model-fp16.onnx"
    write_replacing(onnx, b"weights one")
    first = lookup.engine_path(onnx, 86)
    assert first.parent == tmp_path / "cache" / "engines"
    assert first.name.startswith("model-fp16-") and first.name.endswith("-sm86-tensorrt_rtx-1.7.1.116.engine")
    assert lookup.engine_path(onnx, 86) == first  # the same bytes, the same engine
    write_replacing(onnx, b"weights two")  # new weights of the same size
    assert lookup.engine_path(onnx, 86) != first
    write_replacing(onnx, b"weights one")
    assert lookup.engine_path(onnx, 86) == first
    assert lookup.engine_path(onnx, 89).name == first.name.replace("-sm86-", "-sm89-")
    trt.setattr(lookup, "installed", lambda: ("tensorrt_rtx", "1.8.0.1"))
    assert lookup.engine_path(onnx, 86).name == first.name.replace("1.7.1.116", "1.8.0.1")
    trt.setattr(lookup, "installed", lambda: ("tensorrt", "10.13.3.9"))
    assert lookup.engine_path(onnx, 86).name.endswith("-sm86-tensorrt-10.13.3.9.engine")
    assert lookup.timing_cache_path(86) == tmp_path / "cache" / "engines" / "timing-tensorrt-10.13.3.9-sm86.cache"


def test_the_shipped_models_engine_is_in_the_cache_never_in_the_package(trt, tmp_path):
    before = sorted(p for p in (ROOT / "engine").rglob("*") if "__pycache__" not in p.parts)
    engine = lookup.default_engine_path("fmm-medium")
    assert engine == lookup.engine_path(shipped("onnx-fp16"), 86)
    assert engine.parent == tmp_path / "cache" / "engines" and engine.name.startswith("fmm-medium-fp16-")
    assert Path(lookup.__file__).resolve().parents[1] not in engine.parents
    private_cache("engines")  # what the builder does before it writes there
    assert sorted(p for p in (ROOT / "engine").rglob("*") if "__pycache__" not in p.parts) == before
    trt.setattr(lookup, "compute_capability", lambda: None)
    assert lookup.default_engine_path("fmm-medium") is None  # no GPU
    trt.setattr(lookup, "available", lambda: False)
    assert lookup.default_engine_path("fmm-medium") is None  # no TensorRT


def test_tensorrt_version_is_read_from_metadata_without_importing_it(monkeypatch):
    found = {"tensorrt_rtx"}
    monkeypatch.setattr(library.importlib.util, "find_spec",
                        lambda name: importlib.machinery.ModuleSpec(name, None) if name in found else None)
    versions = {"tensorrt-rtx": "1.7.1.116", "tensorrt-cu12": "10.13.3.9"}

    def version(dist):
        if dist not in versions:
            raise library.importlib.metadata.PackageNotFoundError(dist)
        return versions[dist]

    monkeypatch.setattr(library.importlib.metadata, "version", version)
    monkeypatch.setattr(library.importlib, "import_module", lambda name: pytest.fail(f"imported {name}"))
    library._version.cache_clear()
    try:
        assert library.installed() == ("tensorrt_rtx", "1.7.1.116")
        found.add("tensorrt")  # load_tensorrt takes tensorrt first; its wheel here is tensorrt-cu12
        assert library.installed() == ("tensorrt", "10.13.3.9")
        found.clear()
        assert library.installed() is None
    finally:
        library._version.cache_clear()


class StandInEngine:
    """What the runtime cache calls of an ICudaEngine, and of TensorRT-RTX's runtime config and cache, which
    only an RTX GPU can make (deserializing an engine needs a CUDA driver): the config's cache holds bytes,
    and running the engine compiles `kernels` into it, as TensorRT-RTX does on a first run."""

    def __init__(self, kernels: bytes = b"kernels for sm_86"):
        self.kernels, self.loaded, self.contexts = kernels, [], []

    def create_runtime_config(self):
        engine = self

        class Cache:
            blob = b""

            def deserialize(self, blob):
                engine.loaded.append(blob)
                self.blob = blob
                return True

            def serialize(self):
                return memoryview(self.blob)

        class Config:
            def create_runtime_cache(self):
                return Cache()

            def set_runtime_cache(self, cache):
                self.cache = cache

        return Config()

    def create_execution_context(self, config=None):
        self.contexts.append(config)
        return "context"

    def run(self, runtime_cache):
        runtime_cache.cache.blob = runtime_cache.cache.blob or self.kernels


def test_tensorrt_rtx_kernels_are_kept_in_the_private_cache_and_loaded_at_the_next_start(trt, tmp_path, caplog):
    """TensorRT-RTX compiles its kernels when an engine first runs: the runtime cache is written then into the
    engines folder (0700), keyed by the engine's bytes and the library, loaded at the next start, and not
    written again unchanged; in a folder others could write into it is neither read nor written, and the
    engine runs without it."""
    from engine.tensorrt.runtime_cache import RuntimeCache, runtime_cache_path

    path = runtime_cache_path(b"engine bytes")
    assert path.parent == tmp_path / "cache" / "engines" and "tensorrt_rtx-1.7.1.116" in path.name
    assert runtime_cache_path(b"other engine") != path
    first = StandInEngine()
    kept = RuntimeCache(first, path)
    assert kept.context == "context" and first.contexts[0] is not None and not first.loaded
    assert not kept.save() and not path.exists(), "nothing compiled yet, nothing written"
    first.run(kept)
    assert kept.save() and path.read_bytes() == b"kernels for sm_86"
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    assert not kept.save(), "written again unchanged"
    second = StandInEngine()
    again = RuntimeCache(second, path)
    assert second.loaded == [b"kernels for sm_86"]
    second.run(again)
    assert not again.save()
    os.chmod(path.parent, 0o777)  # others could now write kernels into it: they are not loaded, nor written
    third = StandInEngine(kernels=b"other kernels")
    refused = RuntimeCache(third, path)
    assert third.loaded == [] and refused.context == "context"
    third.run(refused)
    assert not refused.save() and path.read_bytes() == b"kernels for sm_86"
    assert "refusing the cache folder" in caplog.text and "compiled anew" in caplog.text


def test_a_runtime_cache_that_cannot_be_written_costs_a_warning_not_a_picture(trt, tmp_path, caplog):
    """The cache saves seconds: a read-only cache volume is said once in the log, and the engine runs on."""
    from engine.tensorrt.runtime_cache import RuntimeCache, runtime_cache_path

    engine = StandInEngine()
    kept = RuntimeCache(engine, runtime_cache_path(b"engine bytes"))
    (tmp_path / "cache").mkdir(mode=0o700)
    (tmp_path / "cache" / "engines").write_text("not a folder")  # where the folder should be: any write fails
    engine.run(kept)
    assert not kept.save() and not kept.save()
    assert caplog.text.count("could not be kept") == 1


def test_standard_tensorrt_has_no_runtime_cache(trt, tmp_path):
    from engine.tensorrt.runtime_cache import RuntimeCache, runtime_cache_path

    class Standard:  # TensorRT 10's engine: a context, and a runtime config without a runtime cache
        contexts = []

        def create_runtime_config(self):
            return object()

        def create_execution_context(self, config=None):
            self.contexts.append(config)
            return "context"

    engine = Standard()
    kept = RuntimeCache(engine, runtime_cache_path(b"engine bytes"))
    assert engine.contexts == [None] and kept.context == "context" and not kept.save()
    assert not (tmp_path / "cache").exists()


def test_a_tensorrt_backend_that_fails_to_start_gives_its_gpu_context_back(trt, tmp_path, monkeypatch):
    """An engine TensorRT cannot load, or a stream the driver refuses, after the GPU's primary context was
    retained: the context is released (a GIMP engine that falls back to the CPU keeps none held)."""
    import types

    from engine.runtime.backends import tensorrt_backend as backend
    from engine.tensorrt import device

    driver = types.SimpleNamespace(CUresult=types.SimpleNamespace(CUDA_SUCCESS=0),
                                   cuGetErrorName=lambda err: (0, b"CUDA_ERROR_OUT_OF_MEMORY"),
                                   cuStreamCreate=lambda flags: (2, None))
    cuda = types.ModuleType("cuda")
    cuda.bindings = types.ModuleType("cuda.bindings")
    cuda.bindings.driver = driver
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", cuda.bindings)
    held = []
    monkeypatch.setattr(device, "retain_primary_context", lambda: held.append("context") or "context")
    monkeypatch.setattr(device, "release_primary_context", lambda: held.pop())
    engines = [None, StandInEngine()]

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return engines.pop(0)

    t = types.SimpleNamespace(Logger=lambda level: None, Runtime=Runtime)
    t.Logger.WARNING = 2
    monkeypatch.setattr(backend, "load_tensorrt", lambda: t)
    monkeypatch.setattr(backend, "check_engine", lambda path, onnx: {"profile": {"opt": [1, 256]}})
    monkeypatch.setattr(backend, "register_plugin", lambda: None)
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"engine bytes")
    with pytest.raises(HarmonizeError, match="TensorRT could not load it"):
        backend.TensorRTBackend(engine)
    assert held == []
    with pytest.raises(RuntimeError, match="CUDA_ERROR_OUT_OF_MEMORY"):
        backend.TensorRTBackend(engine)
    assert held == []
