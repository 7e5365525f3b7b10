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


def test_candidate_folders_are_native_then_flatpak_and_the_first_that_exists_is_used(tmp_path, monkeypatch):
    from engine.gimp_install import find_gimp_dir

    monkeypatch.setattr("platform.system", lambda: "Linux")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    native, flatpak = tmp_path / "cfg" / "GIMP" / "3.0", tmp_path / ".var/app/org.gimp.GIMP/config/GIMP/3.0"
    assert candidate_dirs() == [native, flatpak]
    assert find_gimp_dir() == native, "with neither present, the usual folder"
    flatpak.mkdir(parents=True)
    assert find_gimp_dir() == flatpak, "only the Flatpak's exists"
    native.mkdir(parents=True)
    assert find_gimp_dir() == native, "both exist: the native one first"
    assert find_gimp_dir(tmp_path / "mine") == tmp_path / "mine"
    monkeypatch.setattr("platform.system", lambda: "Windows")
    monkeypatch.setenv("APPDATA", str(tmp_path / "Roaming"))
    assert candidate_dirs() == [tmp_path / "Roaming" / "GIMP" / "3.0"]


def test_install_without_gimp_makes_no_gimp_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    monkeypatch.setenv("APPDATA", str(tmp_path / "AppData"))
    assert main(["gimp", "install"]) == 2
    assert "no GIMP 3 configuration folder found" in capsys.readouterr().err
    assert not any(d.exists() for d in candidate_dirs())
    assert main(["gimp", "--check"]) == 1
    assert "not found: is GIMP 3 installed" in capsys.readouterr().out
