"""The plug-in manages the engine: the first call starts `harmonize serve` in the background, later calls
reuse it, two calls at once start one, a stale socket is replaced, a server that dies mid-call is
reported and replaced by the next call, an idle server exits, and in a Flatpak nothing is started."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, ellipse_mask, textured_image
from fake_gimp import FakeHost

from plugin import client, protocol, rendezvous

sys.path.insert(0, str(ROOT / "plugin"))
import harmonize_layer as plug  # noqa: E402
from gimpfu_shim import UserError  # noqa: E402


def servers_on(address: str) -> list[int]:
    """The pids of `harmonize serve` processes listening on this socket path."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in cmd and address.encode() in cmd:
            pids.append(int(proc.name))
    return pids


def refused(address: str) -> bool:
    """True once nothing listens on the socket (a killed process closes its sockets after it has left
    /proc's process list, when its last thread is gone)."""
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(address)
        except OSError:
            return True
    return False


def wait_until(condition, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def config(tmp_path):
    """An engine config whose address no server listens on yet; every server started there is stopped."""
    cfg = {"address": str(tmp_path / "run" / "engine.sock"), "python": sys.executable, "idle_minutes": 5}
    yield cfg
    for pid in servers_on(cfg["address"]):
        os.kill(pid, signal.SIGKILL)


def harmonize_message(w=64, h=48):
    rgb = textured_image(h, w)
    mask = (ellipse_mask(h, w) * 255).astype(np.uint8)
    return protocol.Request(w, h, (0, 0, w, h), rgb.tobytes(), rgb.tobytes(), mask.tobytes()).encode()


def test_the_first_call_starts_a_server_and_later_calls_reuse_it(config):
    heard = []
    header, payload = client.send(harmonize_message(), config, status=heard.append)
    assert header["ok"] and len(payload) == 64 * 48 * 3
    assert any("starting the engine" in h for h in heard), heard
    pid = client.ping(config)["pid"]
    assert servers_on(config["address"]) == [pid]
    heard.clear()
    client.send(harmonize_message(), config, status=heard.append)
    assert not any("starting" in h for h in heard) and client.ping(config)["pid"] == pid
    assert "serving on" in rendezvous.log_path(config["address"]).read_text()


def test_two_calls_at_once_start_one_server(config, monkeypatch):
    started = []
    start = client._start_server
    monkeypatch.setattr(client, "_start_server", lambda *a: started.append(1) or start(*a))
    replies = []
    calls = [threading.Thread(target=lambda: replies.append(client.send(harmonize_message(), config)[1]))
             for _ in range(2)]
    for t in calls:
        t.start()
    for t in calls:
        t.join()
    assert len(replies) == 2 and replies[0] == replies[1]
    assert started == [1] and len(servers_on(config["address"])) == 1


def test_a_stale_socket_is_replaced(config):
    path = Path(config["address"])
    path.parent.mkdir(parents=True, mode=0o700)  # as the server makes it
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))  # bound, never listened on, closed: what a killed server leaves
    dead.close()
    assert path.exists()
    assert client.send(harmonize_message(), config)[0]["ok"]
    assert len(servers_on(config["address"])) == 1


def test_a_server_killed_mid_call_is_reported_and_the_next_call_starts_another(config):
    client.send(protocol.encode({"op": "ping"}), config)
    pid = client.ping(config)["pid"]
    message = harmonize_message()
    conn = client.connect(client.address_of(config), config)
    conn.sendall(message[:len(message) // 2])  # the server is reading the request
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: refused(config["address"]))
    with pytest.raises(client.EngineError, match="the engine stopped during the request.*next call starts it again"):
        client._exchange(conn, message[len(message) // 2:], 10)
    assert Path(config["address"]).exists(), "the killed server left its socket file"
    assert client.send(message, config)[0]["ok"]
    assert client.ping(config)["pid"] != pid


def test_the_plugin_reports_a_server_that_dies_mid_call(config, tmp_path, monkeypatch):
    import json

    (tmp_path / "engine.json").write_text(json.dumps(config))
    client.send(protocol.encode({"op": "ping"}), config)
    pid = client.ping(config)["pid"]
    opened = plug.client.open_engine  # the plug-in's own copy of the module, as GIMP imports it

    def open_then_kill(*args):
        conn = opened(*args)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: refused(config["address"]))
        return conn

    monkeypatch.setattr(plug.client, "open_engine", open_then_kill)
    from test_plugin import scene

    image, layer, _, _ = scene("alpha")
    with pytest.raises(UserError, match="Harmonize Layer: the engine stopped during the request"):
        plug.harmonize_layer(FakeHost(str(tmp_path)), image, layer)
    assert len(image.layers) == 2 and image.undo_depth == 0


def test_the_plugin_pulses_and_says_it_is_starting_the_engine(config, tmp_path):
    import json

    (tmp_path / "engine.json").write_text(json.dumps(config))
    from test_plugin import scene

    image, layer, _, _ = scene("alpha")
    host = FakeHost(str(tmp_path))
    new = plug.harmonize_layer(host, image, layer)
    assert host.pulses > 0, "the progress bar stood still during the engine call"
    assert any("starting the engine" in t for t in host.progress_texts), host.progress_texts
    assert host.progress_texts[-1] == "Harmonized on the CPU (onnxruntime)" and new.name == "object (harmonized, CPU)"


def test_an_idle_server_exits_and_removes_its_socket(config):
    config["idle_minutes"] = 0.02  # 1.2 s
    client.send(protocol.encode({"op": "ping"}), config)
    assert servers_on(config["address"])
    wait_until(lambda: not servers_on(config["address"]))
    assert not Path(config["address"]).exists()
    assert "no request for" in rendezvous.log_path(config["address"]).read_text()


def test_a_server_that_cannot_start_is_reported_with_its_log(config):
    config["python"] = sys.executable
    config["idle_minutes"] = -1  # refused by serve's option parser
    with pytest.raises(client.EngineError, match=r"the engine did not start: .*idle-minutes.*\(log: "):
        client.send(protocol.encode({"op": "ping"}), config)


def test_flatpak_is_detected_and_the_message_says_how_to_start_the_engine(config, tmp_path, monkeypatch):
    import json
    import tempfile

    assert not rendezvous.in_flatpak({}, tmp_path / "no-info")
    (tmp_path / ".flatpak-info").write_text("[Application]\nname=org.gimp.GIMP\n")
    assert rendezvous.in_flatpak({}, tmp_path / ".flatpak-info")
    assert rendezvous.in_flatpak({"FLATPAK_ID": "org.gimp.GIMP"}, tmp_path / "no-info")

    home = Path(tempfile.mkdtemp(prefix="h", dir="/tmp"))  # a socket path must fit in 107 bytes
    monkeypatch.setenv("FLATPAK_ID", "org.gimp.GIMP")
    monkeypatch.setenv("HOME", str(home))
    assert rendezvous.default_address() == str(home / ".var/app/org.gimp.GIMP/cache/fmm-harmonize/engine.sock")
    config["address"] = rendezvous.flatpak_socket()
    (tmp_path / "engine.json").write_text(json.dumps(config))
    from test_plugin import scene

    image, layer, _, _ = scene("alpha")
    harmonize = str(Path(sys.executable).with_name("harmonize"))
    with pytest.raises(UserError, match=f"GIMP runs as a Flatpak.*{harmonize} serve --flatpak"):
        plug.harmonize_layer(FakeHost(str(tmp_path)), image, layer)
    assert not servers_on(config["address"]), "a Flatpak plug-in must not start the host's interpreter"

    from engine.gimp.server import BackendPool, make_server  # a server the user started, where both sides see it

    srv = make_server(BackendPool("onnxruntime"), rendezvous.flatpak_socket())
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        new = plug.harmonize_layer(FakeHost(str(tmp_path)), image, layer)
        assert new.name == "object (harmonized, CPU)"
    finally:
        srv.shutdown()
        srv.server_close()
        shutil.rmtree(home)


def plant_engine(folder: Path) -> Path:
    """An `engine` package in `folder` that leaves a marker when anything imports it; the marker's path."""
    marker = folder / "planted-code-ran"
    (folder / "engine").mkdir()
    code = f"open({str(marker)!r}, 'a').write('ran\\n')\n"
    (folder / "engine" / "__init__.py").write_text(code)
    (folder / "engine" / "cli.py").write_text(code)
    return marker


def test_the_engine_never_runs_code_from_the_current_folder(config, tmp_path, monkeypatch):
    """GIMP starts plug-ins in a working folder that others may write to; an `engine/` there ran as the user."""
    cwd = tmp_path / "anyones"
    cwd.mkdir()
    marker = plant_engine(cwd)
    monkeypatch.chdir(cwd)
    assert client.send(harmonize_message(), config)[0]["ok"]
    assert not marker.exists(), "the planted engine ran"
    # harmonize gimp --check runs the engine's interpreter too
    from engine.cli import main

    gimp = tmp_path / "GIMP" / "3.2"
    gimp.mkdir(parents=True)
    assert main(["gimp", "install", "--gimp-dir", str(gimp)]) == 0
    assert main(["gimp", "--check", "--gimp-dir", str(gimp)]) == 0
    assert not marker.exists(), "the planted engine ran on --check"


OLD_ENGINE = """
import os, socket, sys
from plugin import protocol, rendezvous
address, record = sys.argv[2], sys.argv[3] == "pid"
lock = rendezvous.FileLock(rendezvous.server_lock_path(address))
assert lock.acquire()
if record:
    lock.note(str(os.getpid()))
listening = socket.socket(socket.AF_UNIX)
listening.bind(address)
listening.listen()
print("listening", flush=True)
while True:
    conn, _ = listening.accept()
    head = b'{"ok": false, "error": "an old engine"}'
    conn.sendall(protocol.PREFIX.pack(protocol.MAGIC, protocol.VERSION - 1, len(head)) + head)
    conn.close()
"""


def old_engine(config, record: str):
    """An engine of the protocol before this one, serving at the config's address (as `serve`, so that the
    fixture stops it), holding the server lock, and with `record` "pid" writing its pid as servers now do."""
    Path(config["address"]).parent.mkdir(parents=True, mode=0o700)
    proc = subprocess.Popen([sys.executable, "-c", OLD_ENGINE, "serve", config["address"], record], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "listening"
    return proc


def test_an_engine_of_another_version_is_stopped_and_replaced(config):
    """After an upgrade the old engine would refuse every call until it exits idle: the plug-in stops it by
    the pid in its lock file and starts this version's."""
    old = old_engine(config, "pid")
    heard = []
    header, payload = client.send(harmonize_message(), config, status=heard.append)
    assert header["ok"] and len(payload) == 64 * 48 * 3
    assert old.wait(timeout=10) == -signal.SIGTERM
    assert any("another version of it was running" in h for h in heard), heard
    assert servers_on(config["address"]) == [client.ping(config)["pid"]] != [old.pid]


def test_an_engine_of_another_version_without_its_pid_is_named_and_left_running(config):
    old = old_engine(config, "none")
    with pytest.raises(client.EngineError, match=r"another version of fmm-harmonize \(protocol \d+\) is running at "
                                                 r".*exits after 10 idle minutes, or stop it now"):
        client.send(harmonize_message(), config)
    assert old.poll() is None, "an engine whose pid is not known is never guessed at"
