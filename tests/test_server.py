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
from engine.server import Engine, make_server
from engine.errors import HarmonizeError
from plugin import client, protocol


@pytest.fixture(scope="module")
def address(tmp_path_factory):
    sock = tmp_path_factory.mktemp("srv") / "engine.sock"
    srv = make_server(Engine("onnxruntime"), str(sock))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield str(sock)
    srv.shutdown()
    srv.server_close()


def raw(address, data: bytes):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(address)
        s.sendall(data)
        return protocol.receive(s)


def request_bytes(w=64, h=48):
    rgb = textured_image(h, w)
    mask = (ellipse_mask(h, w) * 255).astype(np.uint8)
    return rgb, mask, protocol.harmonize_request(w, h, (0, 0, w, h), rgb.tobytes(), rgb.tobytes(), mask.tobytes())


def test_socket_is_private(address):
    assert stat.S_IMODE(__import__("os").stat(address).st_mode) == 0o600


def test_refuses_to_start_over_a_live_server(address):
    with pytest.raises(HarmonizeError, match="already listening"):
        make_server(Engine("onnxruntime"), address)


@pytest.mark.parametrize("data, message", [
    (b"XXXX" + bytes(5), "bad magic"),
    (struct.pack(">4sBI", b"FMMH", 9, 2) + b"{}", "version 9"),
    (struct.pack(">4sBI", b"FMMH", 1, 10**9), "exceeds"),
    (struct.pack(">4sBI", b"FMMH", 1, 5) + b"nope!", "not JSON"),
    (protocol.encode({"op": "harmonize", "width": 4, "height": 4, "rect": [0, 0, 4, 4]}, b"123"), "payload is 3 bytes"),
    (protocol.encode({"op": "harmonize", "width": 4, "height": 4, "rect": [2, 2, 4, 4]}), "not inside"),
    (protocol.encode({"op": "harmonize", "width": 10**6, "height": 10**6, "rect": [0, 0, 1, 1]}), "bad canvas size"),
    (protocol.encode({"op": "explode"}), "unknown op"),
])
def test_malformed_requests_get_errors_and_the_server_keeps_serving(address, data, message):
    header, _ = raw(address, data)
    assert header["ok"] is False and message in header["error"]
    assert raw(address, protocol.encode({"op": "ping"}))[0]["ok"]


def test_oversized_payload_is_refused_before_reading_it(address):
    head = json.dumps({"op": "harmonize", "payload": protocol.MAX_PAYLOAD + 1}).encode()
    header, _ = raw(address, struct.pack(">4sBI", b"FMMH", 1, len(head)) + head)
    assert not header["ok"] and "out of bounds" in header["error"]


def test_concurrent_requests_are_all_answered(address):
    rgb, mask, message = request_bytes()
    results = []
    threads = [threading.Thread(target=lambda: results.append(client.request(message, {"address": address})))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outs = [np.frombuffer(p, np.uint8) for _, p in results]
    assert len(outs) == 4 and all(np.array_equal(o, outs[0]) for o in outs)
    out = outs[0].reshape(rgb.shape)
    assert np.array_equal(out[mask == 0], rgb[mask == 0]) and not np.array_equal(out, rgb)


def test_stdio_one_shot_answers_like_the_server(address):
    rgb, mask, message = request_bytes()
    r = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--stdio", "--backend", "onnxruntime"],
                       input=message, capture_output=True, cwd=ROOT)
    header, payload = protocol.receive(protocol.FileStream(__import__("io").BytesIO(r.stdout)))
    assert header["ok"], header
    assert payload == client.request(message, {"address": address})[1]
    r = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--stdio"], input=b"garbage!!", capture_output=True, cwd=ROOT)
    header, _ = protocol.receive(protocol.FileStream(__import__("io").BytesIO(r.stdout)))
    assert not header["ok"] and "bad magic" in header["error"]


def test_serve_command_stops_cleanly_and_removes_its_socket(tmp_path):
    sock = tmp_path / "s.sock"
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--socket", str(sock)], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    for _ in range(200):
        if sock.exists():
            break
        __import__("time").sleep(0.05)
    assert client.request(protocol.encode({"op": "ping"}), {"address": str(sock)})[0]["ok"]
    assert client.ping(str(sock))["protocol"] == protocol.VERSION
    proc.terminate()
    assert proc.wait(20) == 0
    assert not sock.exists()
    with pytest.raises(OSError):  # ping never starts an engine of its own
        client.ping(str(sock))
