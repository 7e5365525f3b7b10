"""`harmonize serve` and the wire protocol: permissions, malformed input, queueing, the one-shot path."""
import contextlib
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, BytesStream, ellipse_mask, textured_image

from engine.errors import HarmonizeError
from engine.gimp.server import BackendPool, make_server
from plugin import client, protocol


def until(condition, seconds: float = 30.0) -> None:
    """Poll `condition` until it holds; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds:g} s"
        time.sleep(0.02)


def answers(sock) -> bool:
    try:
        return client.ping({"address": str(sock)})["ok"]
    except (OSError, client.EngineError):
        return False


def raw(engine_address, data: bytes):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(engine_address)
        s.sendall(data)
        return protocol.receive(s)


def request_bytes(w=64, h=48):
    rgb = textured_image(h, w)
    mask = (ellipse_mask(h, w) * 255).astype(np.uint8)
    return rgb, mask, protocol.Request(w, h, (0, 0, w, h), rgb.tobytes(), rgb.tobytes(), mask.tobytes()).encode()


def test_socket_is_private(engine_address):
    assert stat.S_IMODE(__import__("os").stat(engine_address).st_mode) == 0o600


def test_refuses_to_start_over_a_live_server(engine_address):
    with pytest.raises(HarmonizeError, match="already running"):
        make_server(BackendPool("onnxruntime"), engine_address)


@pytest.mark.parametrize("data, message", [
    (b"XXXX" + bytes(5), "bad magic"),
    (struct.pack(">4sBI", b"FMMH", 9, 2) + b"{}", "version 9"),
    (struct.pack(">4sBI", b"FMMH", protocol.VERSION, 10**9), "exceeds"),
    (struct.pack(">4sBI", b"FMMH", protocol.VERSION, 5) + b"nope!", "not JSON"),
    (protocol.encode({"op": "harmonize", "width": 4, "height": 4, "rect": [0, 0, 4, 4]}, b"123"), "payload is 3 bytes"),
    (protocol.encode({"op": "harmonize", "width": 4, "height": 4, "rect": [2, 2, 4, 4]}), "not inside"),
    (protocol.encode({"op": "harmonize", "width": 10**6, "height": 10**6, "rect": [0, 0, 1, 1]}), "bad canvas size"),
    (protocol.encode({"op": "explode"}), "unknown op"),
])
def test_malformed_requests_get_errors_and_the_server_keeps_serving(engine_address, data, message):
    header, _ = raw(engine_address, data)
    assert header["ok"] is False and message in header["error"]
    assert raw(engine_address, protocol.encode({"op": "ping"}))[0]["ok"]


def test_oversized_payload_is_refused_before_reading_it(engine_address):
    head = json.dumps({"op": "harmonize", "payload": protocol.MAX_PAYLOAD + 1}).encode()
    header, _ = raw(engine_address, struct.pack(">4sBI", b"FMMH", protocol.VERSION, len(head)) + head)
    assert not header["ok"] and "out of bounds" in header["error"]


def test_concurrent_requests_are_all_answered(engine_address):
    rgb, mask, message = request_bytes()
    results = []
    threads = [threading.Thread(target=lambda: results.append(client.send(message, {"address": engine_address})))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outs = [np.frombuffer(p, np.uint8) for _, p in results]
    assert len(outs) == 4 and all(np.array_equal(o, outs[0]) for o in outs)
    out = outs[0].reshape(rgb.shape)
    assert np.array_equal(out[mask == 0], rgb[mask == 0]) and not np.array_equal(out, rgb)


def test_serve_command_stops_cleanly_and_removes_its_socket(tmp_path):
    sock = tmp_path / "s.sock"
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--socket", str(sock)], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    until(lambda: answers(sock) or proc.poll() is not None, 120)
    assert client.send(protocol.encode({"op": "ping"}), {"address": str(sock)})[0]["ok"]
    assert client.ping({"address": str(sock)})["protocol"] == protocol.VERSION
    proc.terminate()
    assert proc.wait(20) == 0
    assert not sock.exists()
    with pytest.raises(OSError):  # ping never starts an engine of its own
        client.ping({"address": str(sock)})


def test_the_engine_keeps_openblas_to_one_thread(tmp_path, monkeypatch, openblas):
    """OpenBLAS's own threads spin on the cores ONNX Runtime's need: the engine keeps it to one (blas.py)."""
    import engine.gimp.server as server

    get, _ = openblas
    seen = []
    monkeypatch.setattr(server.signal, "signal", lambda *args: None)
    monkeypatch.setattr(server, "run", lambda srv, stop, idle: (seen.append(get()), srv.server_close()))
    server.serve(address=str(tmp_path / "s.sock"))
    assert seen == [1]


# --- Bounded server, an error reply for everything, one error contract to the plug-in ---

def test_socket_path_that_is_a_file_or_folder_is_left_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "dir").mkdir()
    for path in (tmp_path / "notes.txt", tmp_path / "dir"):
        with pytest.raises(HarmonizeError, match="exists and is not a socket"):
            make_server(BackendPool("onnxruntime"), str(path))
    assert (tmp_path / "notes.txt").read_text() == "keep me" and (tmp_path / "dir").is_dir()


@pytest.mark.parametrize("field, value, message", [
    ("device", 5, "device 5 is not one of auto, cpu, gpu"),
    ("device", "warp-drive", "device 'warp-drive' is not one of auto, cpu, gpu"),
    ("strength", "max", "strength 'max'"),
])
def test_every_malformed_field_gets_an_error_reply(engine_address, field, value, message):
    rgb, mask, _ = request_bytes(8, 6)
    header = {"op": "harmonize", "width": 8, "height": 6, "rect": [0, 0, 8, 6], field: value}
    reply, _ = raw(engine_address, protocol.encode(header, rgb.tobytes() * 2 + mask.tobytes()))
    assert reply["ok"] is False and message in reply["error"], reply


def test_a_runtime_failure_is_an_error_reply_and_the_plugin_gets_its_text(engine_address, monkeypatch):
    from engine.runtime.backends.base import Backend

    def crash(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(Backend, "harmonize", crash)
    _, _, message = request_bytes()
    with pytest.raises(client.EngineError, match="RuntimeError: CUDA error: an illegal memory access"):
        client.send(message, {"address": engine_address})
    monkeypatch.undo()
    assert client.send(message, {"address": engine_address})[0]["ok"]


def test_client_turns_a_dropped_or_silent_engine_into_an_engine_error(tmp_path):
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "s.sock"))
    listener.listen(2)

    def drop_after_reading():
        conn, _ = listener.accept()
        conn.recv(10)
        conn.close()

    t = threading.Thread(target=drop_after_reading)
    t.start()
    with pytest.raises(client.EngineError, match="stopped during the request"):
        client.send(protocol.encode({"op": "ping"}), {"address": str(tmp_path / "s.sock")})
    t.join()
    with pytest.raises(client.EngineError, match="did not answer within 0.3 s"):  # accepted, never answered
        client.send(protocol.encode({"op": "ping"}), {"address": str(tmp_path / "s.sock")}, timeout=0.3)
    listener.close()


def test_stalled_clients_cost_little_memory_time_out_and_are_capped(tmp_path):
    import tracemalloc

    srv = make_server(BackendPool("onnxruntime"), str(tmp_path / "e.sock"), max_connections=5, message_timeout=1.0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    head = json.dumps({"op": "harmonize", "payload": protocol.MAX_PAYLOAD}).encode()
    stalled = []
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(5):  # each announces 400 MB and sends one byte of it
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(tmp_path / "e.sock"))
            s.sendall(struct.pack(">4sBI", b"FMMH", protocol.VERSION, len(head)) + head + b"x")
            stalled.append(s)
        until(lambda: srv.open_connections == 5)
        with socket.socket(socket.AF_UNIX) as sixth:  # over the cap: told so at once, before it sends anything
            sixth.connect(str(tmp_path / "e.sock"))
            sixth.settimeout(5)
            reply, _ = protocol.receive(sixth)
            assert not reply["ok"] and "busy" in reply["error"]
        for s in stalled:  # after the read timeout each stalled connection gets an error and is closed
            s.settimeout(5)
            reply, _ = protocol.receive(s)
            assert not reply["ok"] and "timed out" in reply["error"]
            s.close()
        # The peak over the whole life of the five, from their first byte to their timeout: no moment to guess.
        grown = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert grown < 4e6, f"five stalled clients grew the server by {grown / 1e6:.1f} MB at the peak"
    until(lambda: srv.open_connections == 0)
    assert raw(str(tmp_path / "e.sock"), protocol.encode({"op": "ping"}))[0]["ok"]  # slots were freed
    srv.shutdown()
    srv.server_close()



# --- TCP (no private socket file): each side proves it holds the user's key ---

@pytest.fixture(scope="module")
def pool():
    return BackendPool("onnxruntime")


@contextlib.contextmanager
def serving(server):
    """`server` answering on a thread until the block ends."""
    threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def tcp_server(pool, tmp_path, monkeypatch):
    """make(**options): a server on 127.0.0.1 whose key is in a file (read again at every proof), and the
    config of a plug-in holding that key."""
    from plugin import rendezvous

    key_file = rendezvous.write_key(tmp_path / "engine.key")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path))  # the server's lock file goes here, not in the real home
    made = []

    def make(**options):
        srv = make_server(pool, ("127.0.0.1", 0), key_file=key_file, **options)
        made.append(srv)
        threading.Thread(target=srv.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()
        return srv, {"address": ["127.0.0.1", srv.server_address[1]], "key_file": str(key_file)}

    yield make
    for srv in made:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def tcp_engine(tcp_server):
    return tcp_server(message_timeout=2.0)


def test_tcp_client_with_the_key_is_served(tcp_engine):
    _, config = tcp_engine
    rgb, mask, message = request_bytes()
    header, payload = client.send(message, config)
    assert header["ok"] and header["device"] == "cpu" and len(payload) == rgb.size
    assert client.ping(config)["ok"]


def test_tcp_client_without_the_key_gets_an_error_and_nothing_else(tcp_engine, tmp_path, monkeypatch):
    from plugin import rendezvous

    srv, config = tcp_engine
    handled = []
    monkeypatch.setattr(srv.pool, "handle", lambda *a: handled.append(a))
    _, _, message = request_bytes()
    wrong = {**config, "key_file": str(rendezvous.write_key(tmp_path / "other.key"))}
    with pytest.raises(client.EngineError, match="not authorized"):
        client.send(message, wrong)
    with pytest.raises(client.EngineError, match="needs the key in engine.key"):
        client.send(message, {"address": config["address"]})
    port = config["address"][1]
    big = b'{"op": "auth", "payload": 400000000}'
    for first in (message, protocol.encode({"op": "auth", "nonce": "c" * 32, "mac": "0" * 64}),
                  struct.pack(">4sBI", b"FMMH", protocol.VERSION, len(big)) + big):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            challenge, _ = protocol.receive(s)
            assert challenge["op"] == "challenge"
            s.sendall(first)  # a request, a wrong answer, or an answer announcing 400 MB
            reply, payload = protocol.receive(s)
            assert reply["ok"] is False and "not authorized" in reply["error"] and payload == b""
            assert s.recv(1) == b"", "the connection must be closed after a refusal"
    assert handled == [], "a request reached the engine without the key"


def impostor(listener, says: dict, heard: bytearray) -> None:
    """A listener without the key: it challenges, hears the proof, says `says`, and keeps what follows."""
    conn, _ = listener.accept()
    with conn:
        conn.sendall(protocol.encode({"op": "challenge", "nonce": "n" * 32}))
        conn.settimeout(2)
        heard.extend(conn.recv(65536))  # the client's proof
        conn.sendall(protocol.encode(says))
        try:
            while chunk := conn.recv(65536):
                heard.extend(chunk)
        except OSError:
            pass


def test_a_listener_without_the_key_gets_no_picture_and_the_user_is_told(tmp_path):
    """Whoever holds the port once the engine has gone (or, on Windows, binds it beside it) challenges the
    client and says yes: the client must send nothing more, and take no pixels."""
    from plugin import rendezvous

    config = {"key_file": str(rendezvous.write_key(tmp_path / "engine.key"))}
    _, _, message = request_bytes(16, 16)
    for says in ({"ok": True}, {"ok": True, "mac": "0" * 64}):
        listener = socket.create_server(("127.0.0.1", 0))
        config["address"] = ["127.0.0.1", listener.getsockname()[1]]
        heard = bytearray()
        t = threading.Thread(target=impostor, args=(listener, says, heard))
        t.start()
        with pytest.raises(client.EngineError, match=r"something other than this user's engine answers at "
                                                     r"127.0.0.1:\d+ \(it could not prove it holds the key in "
                                                     r"engine.key\); nothing was sent to it"):
            client.send(message, config)
        t.join()
        listener.close()
        auth, _ = protocol.receive(BytesStream(bytes(heard)))
        assert auth["op"] == "auth" and len(heard) < 300, f"the impostor heard {len(heard)} bytes"


def test_a_tcp_server_needs_a_key():
    with pytest.raises(HarmonizeError, match="needs the plug-in's key"):
        make_server(BackendPool("onnxruntime"), ("127.0.0.1", 0))


def test_a_tcp_server_takes_a_new_key_at_once(tcp_engine):
    from plugin import rendezvous

    _, config = tcp_engine
    assert client.ping(config)["ok"]
    rendezvous.write_key(config["key_file"])  # harmonize gimp install --new-key while it runs
    assert client.ping(config)["ok"]


# --- Bounded handshakes and messages ---

def connect_raw(kind, engine_address, tcp_config):
    """A raw connection on a Unix socket, or on TCP with the challenge read (before any proof)."""
    if kind == "unix":
        s = socket.socket(socket.AF_UNIX)
        s.connect(engine_address)
        return s
    s = socket.create_connection(tuple(tcp_config["address"]), timeout=5)
    assert protocol.receive(s)[0]["op"] == "challenge"
    return s


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_a_deeply_nested_header_gets_one_error_reply_and_one_log_line(kind, engine_address, tcp_engine, caplog,
                                                                      capfd):
    """32,000 brackets raised RecursionError that nothing caught: no reply, a traceback per connection."""
    import logging

    deep = b"[" * 32_000
    caplog.set_level(logging.WARNING, logger="engine")
    for _ in range(3):
        caplog.clear()
        with connect_raw(kind, engine_address, tcp_engine[1]) as s:
            s.settimeout(5)
            s.sendall(struct.pack(">4sBI", b"FMMH", protocol.VERSION, len(deep)) + deep)
            reply, _ = protocol.receive(s)
        assert reply["ok"] is False and (kind == "tcp" and "not authorized" in reply["error"] or
                                         "nests deeper than" in reply["error"]), reply
        until(lambda: len(caplog.records) >= 1)
        time.sleep(0.1)
        assert len(caplog.records) == 1 and "nests deeper than" in caplog.records[0].getMessage(), caplog.text
    assert "Traceback" not in capfd.readouterr().err
    assert raw(engine_address, protocol.encode({"op": "ping"}))[0]["ok"] and client.ping(tcp_engine[1])["ok"]


def trickle(s, data: bytes, pause: float, stop: threading.Event) -> None:
    """Send `data` a byte at a time, `pause` seconds apart, until done, refused or told to stop."""
    try:
        for b in data:
            if stop.wait(pause):
                return
            s.sendall(bytes([b]))
    except OSError:
        pass


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_a_message_must_arrive_whole_within_its_deadline(kind, pool, tmp_path, tcp_server):
    """The timeout was per read: a byte every 25 s held a connection for as long as the sender liked."""
    if kind == "unix":
        srv = make_server(pool, str(tmp_path / "e.sock"), message_timeout=1.0)
        threading.Thread(target=srv.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()
        s = connect_raw("unix", str(tmp_path / "e.sock"), None)
    else:
        srv, config = tcp_server(message_timeout=1.0)
        s = client.connect(tuple(config["address"]), config)
    stop = threading.Event()
    message = protocol.encode({"op": "ping", "pad": "x" * 100})
    threading.Thread(target=trickle, args=(s, message, 0.2, stop), daemon=True).start()
    s.settimeout(10)
    start = time.monotonic()
    reply, _ = protocol.receive(s)
    stop.set()
    assert not reply["ok"] and "must arrive whole within 1 s" in reply["error"]
    assert time.monotonic() - start < 3
    s.close()
    if kind == "unix":
        srv.shutdown()
        srv.server_close()


def test_unproved_tcp_connections_take_no_slot_are_cut_off_and_do_not_hold_off_the_idle_exit(tcp_server):
    """Eight connections trickling a byte at a time, without the key, kept the user at "engine is busy"
    and the server from its idle exit."""
    srv, config = tcp_server(max_connections=2, auth_timeout=1.0)
    stop, slow = threading.Event(), []
    auth = protocol.encode({"op": "auth", "nonce": "c" * 32, "mac": "0" * 64})
    for _ in range(8):
        s = socket.create_connection(tuple(config["address"]), timeout=5)
        slow.append(s)
        threading.Thread(target=trickle, args=(s, auth, 0.3, stop), daemon=True).start()
    time.sleep(0.3)
    try:
        assert srv.open_connections == 0 and srv.idle_for() > 0.2, "unproved connections kept the server busy"
        _, _, message = request_bytes()
        assert client.send(message, config)[0]["ok"], "the user must get through"
        for s in slow:  # each is refused once its proof is overdue, and closed
            s.settimeout(5)
            assert protocol.receive(s)[0]["op"] == "challenge"
            reply, _ = protocol.receive(s)
            assert not reply["ok"] and "not authorized" in reply["error"]
    finally:
        stop.set()
        for s in slow:
            s.close()


def test_the_client_hears_why_an_oversized_request_was_refused(engine_address, tcp_engine):
    """The engine refused a request over its limit while it was still being sent: GIMP said "engine
    stopped (Broken pipe)" instead of the reason."""
    head = json.dumps({"op": "harmonize", "payload": protocol.MAX_PAYLOAD + 1}).encode()
    message = struct.pack(">4sBI", b"FMMH", protocol.VERSION, len(head)) + head + bytes(32 << 20)
    for sock in (client.connect(engine_address), client.connect(tuple(tcp_engine[1]["address"]), tcp_engine[1])):
        with pytest.raises(client.EngineError, match=rf"payload size {protocol.MAX_PAYLOAD + 1} is out of bounds "
                                                     rf"\(max {protocol.MAX_PAYLOAD} bytes\)"):
            client._exchange(sock, message, 10)
    with pytest.raises(client.EngineError, match="12000x12000: 144.00 megapixels, where the engine takes at most 100"):
        client.harmonize(protocol.Request(12_000, 12_000, (0, 0, 1, 1), b"", b"", b""), {"address": engine_address})


# --- The folder of the socket, its lock and its log ---

def unsafe_folders(tmp_path):
    """Folders someone else could change, each with what the refusal says."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)  # nobody's (the tests run as root here; elsewhere this one is skipped)
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(mine)
    return [(shared, "open to other users"), (theirs, "belongs to user id 65534"), (link, "is a link")]


@pytest.mark.skipif(os.name == "nt" or os.getuid() != 0, reason="chown to another user needs root")
def test_a_socket_folder_that_is_not_the_users_own_is_refused_by_server_and_client(tmp_path, pool):
    for folder, why in unsafe_folders(tmp_path):
        address = str(folder / "engine.sock")
        with pytest.raises(HarmonizeError, match=why):
            make_server(pool, address)
        with pytest.raises(client.EngineError, match=why):
            client.send(protocol.encode({"op": "ping"}), {"address": address, "python": sys.executable})
        assert not list(folder.iterdir()), f"something was made in {folder}"


def test_the_log_and_locks_are_never_written_through_a_link(tmp_path, pool):
    from plugin import rendezvous

    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    precious = tmp_path / "precious.txt"
    precious.write_text("the user's own file")
    address = str(folder / "engine.sock")
    (folder / "engine.sock.log").symlink_to(precious)
    with pytest.raises(client.EngineError, match="engine.sock.log is a link"):
        client.send(protocol.encode({"op": "ping"}), {"address": address, "python": sys.executable})
    (folder / "engine.sock.lock").symlink_to(precious)
    with pytest.raises(HarmonizeError, match="engine.sock.lock is a link"):
        make_server(pool, address)
    assert precious.read_text() == "the user's own file"
    assert rendezvous.private_folder(tmp_path / "new") and stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700


# --- Stopping: no new connection, but everything accepted is answered ---

def test_a_connection_waiting_when_the_server_stops_is_answered(pool, tmp_path):
    from engine.gimp.server import run

    address = str(tmp_path / "e.sock")
    srv = make_server(pool, address)
    stop = threading.Event()
    stop.set()  # told to stop before it ever accepted
    waiting = [socket.socket(socket.AF_UNIX) for _ in range(3)]
    for s in waiting:
        s.connect(address)
        s.sendall(protocol.encode({"op": "ping"}))
    run(srv, stop)
    for s in waiting:
        s.settimeout(5)
        assert protocol.receive(s)[0]["ok"], "a connection made before the stop was dropped"
        s.close()
    assert not Path(address).exists()


@pytest.mark.parametrize("how", ["SIGTERM", "idle"])
def test_a_request_in_flight_is_finished_when_the_server_stops(tmp_path, how):
    """SIGTERM dropped a request in flight; the idle exit reset a connection that came as it stopped."""
    sock = tmp_path / "s.sock"
    idle = ["--idle-minutes", "0.01"] if how == "idle" else []
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--socket", str(sock), *idle], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    try:
        until(lambda: answers(sock) or proc.poll() is not None, 120)
        rgb, mask, message = request_bytes()
        conn = client.connect(str(sock))
        conn.sendall(message[:len(message) // 2])
        if how == "SIGTERM":
            time.sleep(0.2)
            proc.terminate()
        else:
            time.sleep(1.0)  # past its idle time: an open connection holds it off
        time.sleep(0.5)
        assert proc.poll() is None, "it exited with a request in flight"
        header, payload = client._exchange(conn, message[len(message) // 2:], 30)
        assert header["ok"] and len(payload) == rgb.size
        assert proc.wait(20) == 0
        assert not sock.exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_device_the_started_backend_runs_on_is_served_by_it(monkeypatch):
    """On a CPU machine, asking for the CPU must not load the model a second time."""
    import engine.gimp.devices as devices

    pool = BackendPool("onnxruntime")
    monkeypatch.setattr(devices, "load_device", lambda *a: pytest.fail("a second backend was loaded"))
    assert pool.backend("cpu") is pool.backend("auto") is pool.default
