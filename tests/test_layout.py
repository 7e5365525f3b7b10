"""The package's seams hold: what runs pictures (engine/runtime, `harmonize run`) needs numpy, Pillow and
ONNX Runtime only, nothing below engine/commands/ imports the command layer, and the GIMP side
(plugin/) is standard library only."""
import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import ROOT, ellipse_mask, textured_image
from PIL import Image

HEAVY = ("torch", "triton", "tensorrt", "tensorrt_rtx", "onnx", "ray")
OURS_NOT_RUNTIME = ("engine.network", "engine.training", "engine.evaluation", "engine.tensorrt.plugin",
                    "engine.tensorrt.kernels", "engine.tensorrt.build", "engine.gimp")


def imported_by(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    probe = code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    return set(json.loads(r.stdout.splitlines()[-1]))


def offenders(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or m.startswith(OURS_NOT_RUNTIME))


def test_the_runtime_imports_nothing_heavy_and_nothing_of_the_other_parts():
    assert offenders(imported_by("import engine.runtime, engine.runtime.backends, engine.runtime.batch, "
                                 "engine.runtime.plan, engine.runtime.cluster, engine.runtime.fullres, "
                                 "engine.imageio")) == []


def test_harmonize_run_loads_only_the_runtime(tmp_path):
    Image.fromarray(textured_image(48, 64)).save(tmp_path / "c.jpg")
    Image.fromarray((ellipse_mask(48, 64) * 255).astype(np.uint8)).save(tmp_path / "m.png")
    code = (f"from engine.cli import main\nassert main(['run', r'{tmp_path / 'c.jpg'}', '--mask', "
            f"r'{tmp_path / 'm.png'}', '-q']) == 0")
    modules = imported_by(code)
    assert "onnxruntime" in modules and "engine.runtime.backends.onnxruntime_backend" in modules
    assert offenders(modules) == []


def _imports(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names.add(module)
            names |= {f"{module}.{a.name}" for a in node.names}
    return names


def test_only_the_command_layer_imports_the_command_layer():
    for path in (ROOT / "engine").rglob("*.py"):
        if path.parent.name == "commands" or path.name == "cli.py":
            continue
        bad = {m for m in _imports(path) if m.startswith(("engine.commands", "engine.cli"))}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


from engine.runtime.backends import REGISTRY  # noqa: E402

OPTIONAL_BACKENDS = {f"{spec.module}.py" for spec in REGISTRY.values() if spec.extra}  # what an extra installs


def test_runtime_files_import_no_other_part_of_the_engine():
    for path in (ROOT / "engine" / "runtime").rglob("*.py"):
        if path.name in OPTIONAL_BACKENDS:
            continue  # loaded by name only when asked for
        bad = {m for m in _imports(path) if m.startswith(("engine.network", "engine.training", "engine.evaluation",
                                                           "engine.gimp", "engine.commands"))}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_gimp_side_is_standard_library_only():
    allowed = set(sys.stdlib_module_names) | {"gi", "plugin", "client", "protocol", "rendezvous", "gimpfu_shim"}
    for path in (ROOT / "plugin").glob("*.py"):
        bad = {m for m in _imports(path) if m.split(".")[0] not in allowed and m.split(".")[0]}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_runtime_knows_nothing_of_gimp():
    """GIMP's ideas (which devices the dialog offers, a layer over a canvas, the wire protocol) live in
    engine/gimp/; the words for devices are the runtime's, which the plug-in shares."""
    for path in (ROOT / "engine" / "runtime").rglob("*.py"):
        bad = {m for m in _imports(path) if m.startswith(("engine.gimp", "plugin"))}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
        tree = ast.parse(path.read_text())
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)} | {
            t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        gimp = defined & {"devices", "load_device", "harmonize_over"}
        assert not gimp, f"{path.relative_to(ROOT)} defines {sorted(gimp)}, which belong in engine/gimp/"


def test_the_plugin_and_the_runtime_name_devices_alike():
    from engine.runtime.backends import DEVICES
    from plugin.protocol import DEVICES as PLUGIN_DEVICES

    assert PLUGIN_DEVICES == DEVICES


def test_the_network_imports_nothing_of_the_runtime():
    """The shipped model's names live below both (engine/models.py): no arrow runs back up."""
    for path in (ROOT / "engine" / "network").rglob("*.py"):
        bad = {m for m in _imports(path) if m.startswith("engine.runtime")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
