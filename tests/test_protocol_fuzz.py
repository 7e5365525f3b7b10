"""The wire protocol under fuzzing (hypothesis): whatever bytes arrive, the engine answers with a
well-formed reply or refuses with a ProtocolError, in bounded time and memory, and never crashes."""
import struct
import tracemalloc

import pytest

pytest.importorskip("hypothesis", reason="hypothesis (the 'dev' extra) is not installed")
from conftest import BytesStream  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from engine.gimp.server import BackendPool  # noqa: E402
from plugin import protocol  # noqa: E402

# Deterministic in CI; a deadline per example is the "no hang" check.
FUZZ = settings(max_examples=500, deadline=3000, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

ANY = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(), st.text(max_size=6),
                st.lists(st.integers(-3, 40), max_size=5),
                st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@pytest.fixture(scope="module")
def engine():
    return BackendPool("onnxruntime")


@st.composite
def harmonize_messages(draw):
    """Requests near the valid ones: small canvases, rects in and out of bounds, odd field types."""
    W, H = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    x, y = draw(st.integers(-2, W)), draw(st.integers(-2, H))
    w, h = draw(st.integers(0, W + 2)), draw(st.integers(0, H + 2))
    def mostly(good):  # three times in four a plausible value, else anything
        return draw(good if draw(st.sampled_from([True, True, True, False])) else ANY)

    header = {"op": mostly(st.sampled_from(["harmonize"] * 8 + ["ping", "render"])),
              "width": mostly(st.just(W)), "height": mostly(st.just(H)), "rect": mostly(st.just([x, y, w, h])),
              "strength": mostly(st.floats(-0.5, 1.5)),
              "device": mostly(st.sampled_from(["auto", "cpu", "nonsense"]))}
    header = {k: v for k, v in header.items() if draw(st.sampled_from([True] * 9 + [False]))}  # a field missing
    size = max(W * H * 3 + max(w, 0) * max(h, 0) * 4, 0)
    payload = draw(st.binary(min_size=size, max_size=size) | st.binary(max_size=64))
    data = protocol.encode(header, payload)
    if draw(st.sampled_from([False, False, False, True])):  # a quarter of the streams break off
        data = data[:draw(st.integers(0, len(data) - 1))]
    return data


def read(data: bytes):
    return protocol.receive(BytesStream(data))


def check_reply(reply: bytes, header: dict) -> None:
    head, payload = read(reply)
    assert isinstance(head.get("ok"), bool)
    if head["ok"] and header.get("op") == "harmonize":
        assert len(payload) == header["rect"][2] * header["rect"][3] * 3
    if not head["ok"]:
        assert isinstance(head["error"], str) and head["error"]
        # A malformed request is the client's mistake, refused with what is wrong: never an internal failure.
        assert not head["error"].startswith("the engine failed"), head["error"]


@FUZZ
@given(data=harmonize_messages())
def test_structured_messages_always_get_a_reply(engine, data):
    try:
        header, payload = read(data)
    except protocol.ProtocolError:
        return
    check_reply(engine.handle(header, payload), header)


@FUZZ
@given(data=st.binary(max_size=200) | st.builds(
    lambda n, tail: struct.pack(">4sBI", b"FMMH", protocol.VERSION, n) + tail, st.integers(0, 2**32 - 1),
    st.binary(max_size=100)))
def test_arbitrary_bytes_are_refused_without_allocating_what_they_announce(engine, data):
    tracemalloc.start()
    try:
        try:
            header, payload = read(data)
        except protocol.ProtocolError:
            header = None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2e6, f"{peak / 1e6:.1f} MB for a {len(data)}-byte message"
    if header is not None:
        check_reply(engine.handle(header, payload), header)


@st.composite
def big_announcements(draw):
    """A well-formed header announcing up to the largest payload allowed, then only a few bytes of it."""
    size = draw(st.integers(1, protocol.MAX_PAYLOAD))
    header = {"op": "harmonize", "width": draw(st.integers(1, 10_000)), "height": draw(st.integers(1, 10_000)),
              "rect": [0, 0, 1, 1]}
    data = protocol.encode(header)
    head = data[protocol.PREFIX.size:].replace(b'"payload": 0', f'"payload": {size}'.encode())
    body = draw(st.binary(max_size=min(size - 1, 4096)))
    return protocol.PREFIX.pack(protocol.MAGIC, protocol.VERSION, len(head)) + head + body, size


@FUZZ
@given(announced=big_announcements())
def test_a_large_announced_payload_costs_only_what_arrives(announced):
    data, size = announced
    tracemalloc.start()
    try:
        with pytest.raises(protocol.ProtocolError, match=f"connection closed after .* of {size} bytes"):
            read(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < protocol.CHUNK + 2**20, f"{peak / 1e6:.1f} MB held for an announced {size / 1e6:.0f} MB"
