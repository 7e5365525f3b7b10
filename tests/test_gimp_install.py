"""`harmonize gimp install|--check|--uninstall` against a GIMP folder made here."""
import json
import os
import sys

from engine.cli import main
from engine.gimp_install import FILES, candidate_dirs


def test_check_says_what_is_missing_then_install_fixes_it(tmp_path, capsys):
    gimp = tmp_path / "GIMP" / "3.0"
    assert main(["gimp", "--check", "--gimp-dir", str(gimp)]) == 1
    out = capsys.readouterr().out
    assert f"MISSING GIMP 3 folder {gimp} not found" in out
    assert "harmonize_layer.py missing; run: harmonize gimp install --gimp-dir" in out

    assert main(["gimp", "install", "--gimp-dir", str(gimp)]) == 0
    dest = gimp / "plug-ins" / "harmonize_layer"
    assert sorted(p.name for p in dest.iterdir()) == sorted([*FILES, "engine.json"])
    assert os.access(dest / "harmonize_layer.py", os.X_OK)
    assert json.loads((dest / "engine.json").read_text())["python"] == sys.executable
    capsys.readouterr()
    assert main(["gimp", "--check", "--gimp-dir", str(gimp)]) == 0
    out = capsys.readouterr().out
    assert "MISSING" not in out and f"plug-in installed in {dest}" in out and "engine interpreter" in out

    (dest / "client.py").write_text("# an old version\n")
    (dest / "engine.json").write_text(json.dumps({"python": "/nowhere/python"}))
    assert main(["gimp", "--check", "--gimp-dir", str(gimp)]) == 1
    out = capsys.readouterr().out
    assert "client.py is from another version" in out
    assert "engine interpreter /nowhere/python cannot import the engine" in out

    assert main(["gimp", "--uninstall", "--gimp-dir", str(gimp)]) == 0
    assert not dest.exists()


def test_candidate_folders_cover_native_and_flatpak():
    dirs = [str(d) for d in candidate_dirs()]
    assert any(d.endswith(os.path.join("GIMP", "3.0")) for d in dirs)
    if sys.platform.startswith("linux"):
        assert any("org.gimp.GIMP" in d for d in dirs)


def test_install_without_gimp_makes_no_gimp_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    monkeypatch.setenv("APPDATA", str(tmp_path / "AppData"))
    assert main(["gimp", "install"]) == 2
    assert "no GIMP 3 configuration folder found" in capsys.readouterr().err
    assert not any(d.exists() for d in candidate_dirs())
    assert main(["gimp", "--check"]) == 1
    assert "not found: is GIMP 3 installed" in capsys.readouterr().out
