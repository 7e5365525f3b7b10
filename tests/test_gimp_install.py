"""`harmonize gimp install|--check|--uninstall` in fake home folders, per platform and packaging."""
import json
import os
import stat
import sys

import pytest

from engine.cli import main
from engine.gimp.install import FILES, find_profiles, targets
from plugin import rendezvous


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty home folder on Linux, with nothing of the real one's GIMP or engine in reach."""
    monkeypatch.setattr("platform.system", lambda: "Linux")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("FLATPAK_ID", raising=False)
    return tmp_path


def profile(path):
    path.mkdir(parents=True)
    return path


NATIVE, FLATPAK, SNAP = ".config/GIMP", ".var/app/org.gimp.GIMP/config/GIMP", "snap/gimp/current/.config/GIMP"


def test_every_3x_profile_of_every_linux_packaging_is_found_newest_first(home, monkeypatch):
    for where in (f"{NATIVE}/3.0", f"{NATIVE}/3.2", f"{FLATPAK}/3.2", f"{SNAP}/3.4", f"{NATIVE}/2.10",
                  f"{NATIVE}/3.2-backup", f"{FLATPAK}/3.0"):
        profile(home / where)
    (home / NATIVE / "3.6").write_text("a file, not a profile")
    found = find_profiles()
    assert [(p.path, p.version, p.packaging) for p in found] == [
        (home / SNAP / "3.4", (3, 4), "snap"),  # a future 3.x needs no change
        (home / NATIVE / "3.2", (3, 2), "native"), (home / FLATPAK / "3.2", (3, 2), "flatpak"),
        (home / NATIVE / "3.0", (3, 0), "native"), (home / FLATPAK / "3.0", (3, 0), "flatpak")]
    assert [p.path for p in targets(found)] == [home / SNAP / "3.4", home / NATIVE / "3.2", home / FLATPAK / "3.2"]
    assert targets(found, all_profiles=True) == found
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "elsewhere"))
    profile(home / "elsewhere" / "GIMP" / "3.2")
    assert home / "elsewhere" / "GIMP" / "3.2" in [p.path for p in find_profiles()]
    assert home / NATIVE / "3.2" not in [p.path for p in find_profiles()], "XDG_CONFIG_HOME replaces ~/.config"


@pytest.mark.parametrize("system, root", [("Windows", "Roaming/GIMP"), ("Darwin", "Library/Application Support/GIMP")])
def test_windows_and_macos_profiles(home, monkeypatch, system, root):
    monkeypatch.setattr("platform.system", lambda: system)
    monkeypatch.setenv("APPDATA", str(home / "Roaming"))
    profile(home / root / "3.0")
    profile(home / root / "3.2")
    profile(home / NATIVE / "3.4")  # not where this platform's GIMP looks
    assert [(p.path, p.packaging) for p in targets(find_profiles())] == [(home / root / "3.2", system == "Windows"
                                                                          and "windows" or "macos")]


def test_only_a_32_profile_installs_there_and_check_names_it(home, capsys):
    gimp32 = profile(home / NATIVE / "3.2")
    assert main(["gimp", "install"]) == 0
    dest = gimp32 / "plug-ins" / "harmonize_layer"
    assert sorted(p.name for p in dest.iterdir()) == sorted([*FILES, "engine.json", "engine.key"])
    assert os.access(dest / "harmonize_layer.py", os.X_OK)
    config = json.loads((dest / "engine.json").read_text())
    assert config["python"] == sys.executable and config["key_file"] == str(dest / "engine.key")
    assert config["devices"][:2] == ["auto", "cpu"] and config["idle_minutes"] > 0 and "address" not in config
    assert stat.S_IMODE((dest / "engine.key").stat().st_mode) == 0o600
    capsys.readouterr()
    assert main(["gimp", "--check"]) == 0
    out = capsys.readouterr().out
    assert f"GIMP 3 profiles found: GIMP 3.2 (native) at {gimp32}" in out
    assert f"ok      plug-in installed and current in {dest}" in out and "MISSING" not in out
    assert "no engine server running: the first Harmonize Layer call starts one" in out


def test_only_a_flatpak_profile_installs_there_with_a_socket_both_sides_see(home, capsys):
    gimp32 = profile(home / FLATPAK / "3.2")
    assert main(["gimp", "install"]) == 0
    out = capsys.readouterr().out
    assert "GIMP 3.2 (flatpak)" in out and "serve --flatpak" in out
    config = json.loads((gimp32 / "plug-ins" / "harmonize_layer" / "engine.json").read_text())
    assert config["address"] == rendezvous.flatpak_socket() == str(
        home / ".var/app/org.gimp.GIMP/cache/fmm-harmonize/engine.sock")
    assert main(["gimp", "--check"]) == 0
    assert "GIMP 3.2 (flatpak)" in capsys.readouterr().out


def test_an_upgraded_home_installs_into_32_and_calls_a_copy_in_30_stale(home, capsys):
    gimp30, gimp32 = profile(home / NATIVE / "3.0"), profile(home / NATIVE / "3.2")
    assert main(["gimp", "install", "--gimp-dir", str(gimp30)]) == 0  # what the previous version did
    assert main(["gimp", "install"]) == 0
    assert (gimp32 / "plug-ins" / "harmonize_layer" / "harmonize_layer.py").exists()
    capsys.readouterr()
    assert main(["gimp", "--check"]) == 0, "a copy left in an older profile is reported, not a failure"
    out = capsys.readouterr().out
    assert f"GIMP 3.2 (native) at {gimp32}, GIMP 3.0 (native) at {gimp30}" in out
    old = gimp30 / "plug-ins" / "harmonize_layer"
    assert f"stale   {old}: an older profile; GIMP 3.2 (native) reads its own" in out

    (gimp32 / "plug-ins" / "harmonize_layer" / "client.py").write_text("# an old version\n")
    assert main(["gimp", "--check"]) == 1
    assert "STALE   plug-in in" in (out := capsys.readouterr().out) and "client.py is from another version" in out

    assert main(["gimp", "install", "--all-profiles"]) == 0
    capsys.readouterr()
    assert main(["gimp", "--check", "--all-profiles"]) == 0
    out = capsys.readouterr().out
    assert out.count("ok      plug-in installed and current") == 2 and "stale" not in out
    assert main(["gimp", "--uninstall"]) == 0
    assert not (gimp30 / "plug-ins" / "harmonize_layer").exists()
    assert not (gimp32 / "plug-ins" / "harmonize_layer").exists()


def test_check_says_what_is_missing_in_a_given_folder(tmp_path, capsys):
    gimp = tmp_path / "GIMP" / "3.2"
    assert main(["gimp", "--check", "--gimp-dir", str(gimp)]) == 1
    assert f"MISSING GIMP 3 profile {gimp} not found" in capsys.readouterr().out
    gimp.mkdir(parents=True)
    assert main(["gimp", "--check", "--gimp-dir", str(gimp)]) == 1
    assert "plug-in not installed in" in capsys.readouterr().out
    assert main(["gimp", "install", "--gimp-dir", str(gimp)]) == 0
    dest = gimp / "plug-ins" / "harmonize_layer"
    (dest / "engine.json").write_text(json.dumps({"python": "/nowhere/python"}))
    capsys.readouterr()
    assert main(["gimp", "--check", "--gimp-dir", str(gimp)]) == 1
    assert "engine interpreter /nowhere/python cannot import the engine" in capsys.readouterr().out


def test_install_without_gimp_makes_no_gimp_folder(home, capsys):
    assert main(["gimp", "install"]) == 2
    assert "no GIMP 3 profile found" in capsys.readouterr().err
    assert not (home / ".config").exists() and not (home / ".var").exists()
    assert main(["gimp", "--check"]) == 1
    assert "GIMP 3 profiles found: none" in capsys.readouterr().out


def test_a_tcp_server_finds_the_key_of_the_newest_installed_plugin(home):
    from engine.gimp.install import installed_key

    assert installed_key() is None
    profile(home / NATIVE / "3.0"), profile(home / NATIVE / "3.2")
    assert main(["gimp", "install", "--all-profiles"]) == 0
    assert installed_key() == str(home / NATIVE / "3.2" / "plug-ins" / "harmonize_layer" / "engine.key")
