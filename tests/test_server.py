"""`harmonize serve` and the wire protocol: permissions, malformed input, queueing, the one-shot path."""
import json
import socket
import stat
import struct
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import ROOT, ellipse_mask, textured_image

from engine.errors import HarmonizeError
from engine.gimp.server import BackendPool, make_server
from plugin import client, protocol


def until(condition, seconds: float = 30.0) -> None:
    """Poll `condition` until it holds; fail after `seconds`."""
    import time

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
    return rgb, mask, protocol.harmonize_request(w, h, (0, 0, w, h), rgb.tobytes(), rgb.tobytes(), mask.tobytes())


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
    threads = [threading.Thread(target=lambda: results.append(client.request(message, {"address": engine_address})))
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
    assert client.request(protocol.encode({"op": "ping"}), {"address": str(sock)})[0]["ok"]
    assert client.ping({"address": str(sock)})["protocol"] == protocol.VERSION
    proc.terminate()
    assert proc.wait(20) == 0
    assert not sock.exists()
    with pytest.raises(OSError):  # ping never starts an engine of its own
        client.ping({"address": str(sock)})


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
        client.request(message, {"address": engine_address})
    monkeypatch.undo()
    assert client.request(message, {"address": engine_address})[0]["ok"]


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
        client.request(protocol.encode({"op": "ping"}), {"address": str(tmp_path / "s.sock")})
    t.join()
    with pytest.raises(client.EngineError, match="did not answer within 0.3 s"):  # accepted, never answered
        client.request(protocol.encode({"op": "ping"}), {"address": str(tmp_path / "s.sock")}, timeout=0.3)
    listener.close()


def test_stalled_clients_cost_little_memory_time_out_and_are_capped(tmp_path):
    import tracemalloc

    srv = make_server(BackendPool("onnxruntime"), str(tmp_path / "e.sock"), max_connections=5, read_timeout=1.0)
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



# --- TCP (no private socket file): only a client holding the user's key gets in ---

@pytest.fixture(scope="module")
def tcp_engine(tmp_path_factory):
    """A server on 127.0.0.1 with a key, and the config a plug-in holding that key has."""
    from plugin import rendezvous

    folder = tmp_path_factory.mktemp("tcp")
    key_file = rendezvous.write_key(folder / "engine.key")
    pool = BackendPool("onnxruntime")
    mp = pytest.MonkeyPatch()
    mp.setenv("LOCALAPPDATA", str(folder))  # the server's lock file goes here, not in the real home
    srv = make_server(pool, ("127.0.0.1", 0), key=rendezvous.read_key(key_file), read_timeout=2.0)
    mp.undo()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield {"address": ["127.0.0.1", srv.server_address[1]], "key_file": str(key_file)}, pool
    srv.shutdown()
    srv.server_close()


def test_tcp_client_with_the_key_is_served(tcp_engine):
    config, _ = tcp_engine
    rgb, mask, message = request_bytes()
    header, payload = client.request(message, config)
    assert header["ok"] and header["device"] == "cpu" and len(payload) == rgb.size
    assert client.ping(config)["ok"]


def test_tcp_client_without_the_key_gets_an_error_and_nothing_else(tcp_engine, tmp_path, monkeypatch):
    from plugin import rendezvous

    config, pool = tcp_engine
    handled = []
    monkeypatch.setattr(pool, "handle", lambda *a: handled.append(a))
    _, _, message = request_bytes()
    wrong = {**config, "key_file": str(rendezvous.write_key(tmp_path / "other.key"))}
    with pytest.raises(client.EngineError, match="not authorized"):
        client.request(message, wrong)
    with pytest.raises(client.EngineError, match="needs the key in engine.key"):
        client.request(message, {"address": config["address"]})
    port = config["address"][1]
    big = b'{"op": "auth", "payload": 400000000}'
    for first in (message, protocol.encode({"op": "auth", "mac": "0" * 64}),
                  struct.pack(">4sBI", b"FMMH", protocol.VERSION, len(big)) + big):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            challenge, _ = protocol.receive(s)
            assert challenge["op"] == "challenge"
            s.sendall(first)  # a request, a wrong answer, or an answer announcing 400 MB
            reply, payload = protocol.receive(s)
            assert reply["ok"] is False and "not authorized" in reply["error"] and payload == b""
            assert s.recv(1) == b"", "the connection must be closed after a refusal"
    assert handled == [], "a request reached the engine without the key"


def test_a_tcp_server_needs_a_key():
    with pytest.raises(HarmonizeError, match="needs the plug-in's key"):
        make_server(BackendPool("onnxruntime"), ("127.0.0.1", 0))


def test_a_device_the_started_backend_runs_on_is_served_by_it(monkeypatch):
    """On a CPU machine, asking for the CPU must not load the model a second time."""
    import engine.runtime.backends as backends

    pool = BackendPool("onnxruntime")
    monkeypatch.setattr(backends, "load_device", lambda *a: pytest.fail("a second backend was loaded"))
    assert pool.backend("cpu") is pool.backend("auto") is pool.default
