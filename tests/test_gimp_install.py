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


def test_a_mistyped_gimp_dir_is_refused_and_nothing_is_made(home, capsys):
    gimp32 = profile(home / NATIVE / "3.2")
    typo = home / NATIVE / "3.2x"
    assert main(["gimp", "install", "--gimp-dir", str(typo)]) == 2
    err = capsys.readouterr().err
    assert f"--gimp-dir {typo} does not exist" in err and f"found on this machine: {gimp32})" in err
    assert "--create" in err and sorted(p.name for p in (home / NATIVE).iterdir()) == ["3.2"]
    assert main(["gimp", "--uninstall", "--gimp-dir", str(typo)]) == 2 and not typo.exists()

    # the folder that holds the profiles is not one: GIMP would not read plug-ins there either
    assert main(["gimp", "install", "--gimp-dir", str(home / NATIVE)]) == 2
    assert f"give one of them, such as --gimp-dir {gimp32}" in capsys.readouterr().err
    assert not (home / NATIVE / "plug-ins").exists()

    assert main(["gimp", "install", "--create", "--gimp-dir", str(typo)]) == 0, "--create makes it on purpose"
    assert (typo / "plug-ins" / "harmonize_layer" / "harmonize_layer.py").exists()
    assert f"created {typo}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        main(["gimp", "install", "--create"])
    assert stop.value.code == 2 and "--create makes the folder --gimp-dir names" in capsys.readouterr().err


def test_harmonize_gimp_alone_prints_its_help_and_installs_nothing(home, capsys):
    gimp32 = profile(home / NATIVE / "3.2")
    assert main(["gimp"]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: harmonize gimp") and "--uninstall" in out and "--create" in out
    assert list(gimp32.iterdir()) == []


@pytest.mark.parametrize("argv", [["check", "--uninstall"], ["install", "--uninstall"], ["uninstall", "--check"],
                                  ["--check", "--uninstall"], ["install", "--check"], ["check", "--address", "/a.sock"],
                                  ["--uninstall", "--address", "/a.sock"], ["install", "--all-profiles", "--gimp-dir"]])
def test_contradictory_options_are_refused_and_change_nothing(home, capsys, argv):
    gimp32 = profile(home / NATIVE / "3.2")
    assert main(["gimp", "install"]) == 0
    dest = gimp32 / "plug-ins" / "harmonize_layer"
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["gimp", *argv, *([str(gimp32)] if argv[-1] == "--gimp-dir" else [])])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: harmonize gimp") and "harmonize gimp: error:" in err
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before


def test_uninstalling_nothing_says_so(home, capsys):
    gimp32 = profile(home / NATIVE / "3.2")
    assert main(["gimp", "--uninstall"]) == 0
    assert capsys.readouterr().out == (f"nothing to remove: the plug-in is not installed (looked in "
                                       f"{gimp32 / 'plug-ins' / 'harmonize_layer'})\n")
    assert main(["gimp", "install"]) == 0
    capsys.readouterr()
    assert main(["gimp", "uninstall"]) == 0
    assert capsys.readouterr().out == f"removed {gimp32 / 'plug-ins' / 'harmonize_layer'}\n"


def test_check_of_a_flatpak_profile_says_to_start_the_server(home, capsys):
    """The Flatpak plug-in cannot start the engine: --check says what the plug-in itself would ask for."""
    gimp32 = profile(home / FLATPAK / "3.2")
    assert main(["gimp", "install"]) == 0
    capsys.readouterr()
    assert main(["gimp", "--check"]) == 0, "the installation is right; the server is the user's to start"
    out = capsys.readouterr().out
    assert "first Harmonize Layer call starts one" not in out
    todo = [line for line in out.splitlines() if line.startswith("todo    ")]
    assert len(todo) == 1 and f"{os.path.dirname(sys.executable)}/harmonize serve --flatpak" in todo[0]
    assert rendezvous.flatpak_socket() in todo[0]

    # named with --gimp-dir, a Flatpak profile is still one: the plug-in meets the engine where both see
    (gimp32 / "plug-ins").rename(home / "old-plug-ins")
    assert main(["gimp", "install", "--gimp-dir", str(gimp32)]) == 0
    config = json.loads((gimp32 / "plug-ins" / "harmonize_layer" / "engine.json").read_text())
    assert config["address"] == rendezvous.flatpak_socket()


def test_snap_gimp_is_said_to_be_unsupported_and_gets_nothing(home, capsys):
    snap32 = profile(home / SNAP / "3.2")
    assert main(["gimp", "install"]) == 2
    assert "the Snap GIMP is not supported yet" in capsys.readouterr().err
    assert list(snap32.iterdir()) == []
    assert main(["gimp", "--check"]) == 1
    out = capsys.readouterr().out
    assert f"skipped GIMP 3.2 (snap) at {snap32}: the Snap GIMP is not supported yet" in out

    gimp32 = profile(home / NATIVE / "3.2")  # beside a native GIMP: that one gets it, the Snap is named
    assert main(["gimp", "install"]) == 0
    out = capsys.readouterr().out
    assert f"skipped GIMP 3.2 (snap) at {snap32}" in out and f"GIMP 3.2 (native) in {gimp32}" in out
    assert list(snap32.iterdir()) == [] and (gimp32 / "plug-ins" / "harmonize_layer").is_dir()
    assert main(["gimp", "--check"]) == 0
    assert "skipped GIMP 3.2 (snap)" in capsys.readouterr().out


def test_one_key_per_engine_port_kept_across_reinstalls_unless_a_new_one_is_asked_for(home, capsys):
    """Reinstalling wrote a new key while a running engine kept the old one, and with --all-profiles each
    profile got a key of its own for the one port."""
    gimp30, gimp32 = profile(home / NATIVE / "3.0"), profile(home / NATIVE / "3.2")

    def keys():
        return [(p / "plug-ins" / "harmonize_layer" / "engine.key").read_text() for p in (gimp30, gimp32)]

    assert main(["gimp", "install", "--all-profiles"]) == 0
    first = keys()
    assert first[0] == first[1] and len(first[0].strip()) == 64
    assert main(["gimp", "install"]) == 0 and main(["gimp", "install", "--gimp-dir", str(gimp30)]) == 0
    assert keys() == first, "a reinstall must keep the key a running engine knows"
    assert main(["gimp", "install", "--new-key"]) == 0  # into 3.2 only: 3.0's plug-in gets the new key too
    assert "a new key" in capsys.readouterr().out
    second = keys()
    assert second[0] == second[1] != first[0]
    assert all(stat.S_IMODE((p / "plug-ins" / "harmonize_layer" / "engine.key").stat().st_mode) == 0o600
               for p in (gimp30, gimp32))


def test_check_says_why_an_unsafe_socket_folder_would_fail_the_plugin(home, capsys):
    """A socket folder others may write to is no "no engine server running": the plug-in would refuse it."""
    profile(home / NATIVE / "3.2")
    assert main(["gimp", "install"]) == 0
    folder = home / "run" / "fmm-harmonize"
    folder.mkdir(parents=True)
    folder.chmod(0o777)
    capsys.readouterr()
    assert main(["gimp", "--check"]) == 1
    out = capsys.readouterr().out
    assert f"UNSAFE  the plug-in would not use the engine at {folder / 'engine.sock'}: " in out, out
    assert str(folder) in out.split("UNSAFE", 1)[1] and "no engine server running" not in out


def test_check_calls_an_engine_of_another_version_stale(home, capsys):
    from test_autostart import old_engine

    profile(home / NATIVE / "3.2")
    assert main(["gimp", "install"]) == 0
    old = old_engine({"address": str(home / "run" / "fmm-harmonize" / "engine.sock")}, "pid")
    try:
        capsys.readouterr()
        assert main(["gimp", "--check"]) == 0, "a note: the next call replaces it"
        out = capsys.readouterr().out
        assert f"stale   at {old.args[4]}, the engine " in out and "another version of fmm-harmonize" in out, out
        assert "the next Harmonize Layer call replaces it" in out
    finally:
        old.kill()
        old.wait()
