"""`harmonize run --ray`: a local Ray with 2 CPUs gives the plain run's outputs byte for byte, reports bad
files without failing, skips what is done, and loses nothing when an actor is killed mid-run; a cluster of
two nodes started with `ray start` loses nothing, and counts right, when its worker node is killed mid-run."""
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import BENCH, ROOT, ellipse_mask, free_port, import_scaleout, needs_bench, textured_image
from PIL import Image

import_scaleout("ray")
pytestmark = pytest.mark.slow

MANIFEST = BENCH / "MANIFEST.csv"


def harmonize(*args, wait=True, env=None):
    cmd = [sys.executable, "-m", "engine.cli", "run", *map(str, args), "-q"]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain")
    r = harmonize(MANIFEST, "-o", out)
    assert r.returncode == 0, r.stderr
    return files(out)


@needs_bench
def test_ray_writes_the_plain_runs_files_and_a_rerun_skips_them(plain, tmp_path):
    r = harmonize(MANIFEST, "-o", tmp_path, "--ray")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "22 ok / 0 skipped / 0 failed" in r.stdout
    assert files(tmp_path) == plain
    r = harmonize(MANIFEST, "-o", tmp_path, "--ray")
    assert r.returncode == 0 and "0 ok / 22 skipped / 0 failed" in r.stdout


def test_ray_reports_a_bad_file_and_does_the_rest(tmp_path):
    src, masks = tmp_path / "in", tmp_path / "masks"
    src.mkdir(), masks.mkdir()
    for i in range(5):
        Image.fromarray(textured_image(48, 64, seed=i)).save(src / f"c{i}.png")
        Image.fromarray((ellipse_mask(48, 64) * 255).astype(np.uint8)).save(masks / f"c{i}.png")
    (src / "c2.png").write_bytes(b"not an image")
    r = harmonize(src, "--masks", masks, "-o", tmp_path / "out", "--ray", "--batch-size", "2")
    assert r.returncode == 1, r.stderr[-3000:]
    assert "4 ok / 0 skipped / 1 failed" in r.stdout
    assert r.stderr.count("c2.png: not a readable image") == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["c0.png", "c1.png", "c3.png", "c4.png"]


def processes() -> dict[int, tuple[int, int]]:
    """Every live process of this machine: pid -> (parent pid, session id), from /proc (a zombie, dead and not
    yet reaped, is not one)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                continue
            found[int(stat.parent.name)] = (int(fields[1]), int(fields[3]))
        except (OSError, IndexError, ValueError):
            pass
    return found


def actor_pids(run: int) -> list[int]:
    """The Ray actors of this run only: `ray::HarmonizeActor` processes descended from its driver (the
    local Ray it starts is its child), never another run's on the same machine."""
    parent, actors = {pid: ppid for pid, (ppid, _) in processes().items()}, []
    for pid in parent:
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::HarmonizeActor"):
                actors.append(pid)
        except OSError:
            pass

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parent.get(pid, 0)
            if pid == run:
                return True
        return False

    return [pid for pid in actors if descends(pid)]


@needs_bench
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the actor processes through /proc")
def test_an_actor_killed_mid_run_loses_and_corrupts_nothing(plain, tmp_path):
    proc = harmonize(MANIFEST, "-o", tmp_path, "--ray", "--batch-size", "1", wait=False)
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        mine = actor_pids(proc.pid) if len(list(tmp_path.glob("*.jpg"))) >= 2 else []
        if mine:
            killed = mine[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=600)
    assert killed is not None, "the run ended before an actor could be killed"
    assert proc.returncode == 0, err[-3000:]
    assert "22 ok / 0 skipped / 0 failed" in out and "an actor died" in err
    assert files(tmp_path) == plain, "an output is missing, extra or differs from the plain run's"


@needs_bench
def test_ray_takes_urls_for_inputs_and_outputs(plain, tmp_path):
    """A file:// URL stands in for s3:// and the like: the jobs cross to the actors as URLs."""
    pytest.importorskip("upath", reason="universal-pathlib (the 'ray' extra) is not installed")
    r = harmonize(MANIFEST.as_uri(), "-o", (tmp_path / "out").as_uri(), "--ray", "--batch-size", "8")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "22 ok / 0 skipped / 0 failed" in r.stdout
    assert files(tmp_path / "out") == plain


# --- A cluster of two nodes, started as a user starts one ---

RAY = Path(sys.executable).with_name("ray")
NODE_PORTS = ("node-manager", "object-manager", "dashboard-agent-listen", "dashboard-agent-grpc", "runtime-env-agent",
              "metrics-export")


class TwoNodes:
    """`ray start --head` on 127.0.0.2 (with its Ray Client server) and `ray start --address` on 127.0.0.3:
    two nodes, one CPU and an
    80 MB object store each, every port their own, the head's temp dir its own, token authentication with a
    token of this cluster's (in the environment of nodes and drivers: `env`). Each `ray start --block` leads
    a session of its own, and every process of a node is in it, so that killing a node or stopping the
    cluster touches no other Ray on this machine (`ray stop` would stop them all). Node deaths are noticed
    in about 3 s (health checks every second) instead of Ray's default 15."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.temp = tempfile.mkdtemp(prefix="fmm-ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
        self.env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
                        RAY_USAGE_STATS_ENABLED="0")
        port, client_port = free_port("127.0.0.2"), free_port("127.0.0.2")
        self.address, self.client = f"127.0.0.2:{port}", f"ray://127.0.0.2:{client_port}"  # a node's, Ray Client's
        self.head = self._node("head", "127.0.0.2", "--head", "--port", str(port), "--temp-dir", self.temp,
                               "--include-dashboard", "false", "--dashboard-port", str(free_port("127.0.0.2")),
                               "--ray-client-server-port", str(client_port))
        self.wait_for_nodes(1)
        self.worker = self._node("worker", "127.0.0.3", "--address", self.address)
        self.wait_for_nodes(2)

    def _node(self, name: str, ip: str, *options: str) -> subprocess.Popen:
        ports = [x for opt in NODE_PORTS for x in (f"--{opt}-port", str(free_port(ip)))]
        checks = dict(RAY_health_check_period_ms="1000", RAY_health_check_timeout_ms="1000",
                      RAY_health_check_failure_threshold="3", RAY_health_check_initial_delay_ms="1000")
        cmd = [str(RAY), "start", "--block", "--node-ip-address", ip, "--num-cpus", "1", "--object-store-memory",
               str(80 * 2**20), "--disable-usage-stats", "--include-log-monitor", "false", *ports, *options]
        return subprocess.Popen(cmd, env=dict(self.env, **checks), stdout=(self.log_dir / f"{name}.log").open("w"),
                                stderr=subprocess.STDOUT, start_new_session=True)

    def wait_for_nodes(self, n: int, limit: float = 180) -> None:
        """Until `ray status` counts n live nodes; fails after `limit` seconds, or when a node's command ends."""
        deadline = time.monotonic() + limit
        while True:
            r = subprocess.run([str(RAY), "status", "--address", self.address], env=self.env, capture_output=True,
                               text=True, timeout=60)
            if r.returncode == 0 and r.stdout.split("Pending:")[0].count(" node_") >= n:
                return
            for node in (self.head, getattr(self, "worker", None)):
                if node is not None and node.poll() is not None:
                    raise AssertionError(f"a Ray node exited: {node.args}\n" + self.logs())
            if time.monotonic() > deadline:
                raise AssertionError(f"{n} Ray nodes were not up in {limit:.0f} s\n{r.stdout}{r.stderr}" + self.logs())
            time.sleep(1)

    def logs(self) -> str:
        return "".join(f"\n--- {p.name}\n" + p.read_text()[-2000:] for p in sorted(self.log_dir.glob("*.log")))

    @staticmethod
    def members(node: subprocess.Popen) -> list[int]:
        """The node's processes: those in the session its `ray start` leads."""
        return [pid for pid, (_, sid) in processes().items() if sid == node.pid]

    def kill(self, node: subprocess.Popen) -> int:
        """SIGKILL every process of a node at once, as a machine that is lost; how many there were."""
        pids = self.members(node)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        node.wait(timeout=30)
        return len(pids)

    def stop(self) -> None:
        """The worker, then the head: `ray start`'s own shutdown on SIGTERM (30 s at most), then SIGKILL for
        whatever of their sessions is left; then the temp dir."""
        for node in (self.worker, self.head):
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)
                try:
                    node.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    pass
            for _ in range(50):  # a process may start while its session is being killed: again, until none is left
                pids = self.members(node)
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.2)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    cluster = TwoNodes(tmp_path_factory.mktemp("two_nodes"))
    yield cluster
    cluster.stop()
    assert not cluster.members(cluster.head) and not cluster.members(cluster.worker), "a Ray process is left"


@pytest.fixture(scope="module")
def listed(tmp_path_factory) -> Path:
    """16 composites of 1200x900, their masks, list.csv naming them and a composite that is not there, and
    the plain run's outputs in `plain/`."""
    root = tmp_path_factory.mktemp("listed")
    rows = ["composite,mask"]
    for i in range(16):
        make = root / "in" / f"c{i:02d}.jpg"
        make.parent.mkdir(exist_ok=True)
        Image.fromarray(textured_image(900, 1200, seed=i)).save(make, quality=92)
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray((ellipse_mask(900, 1200) * 255).astype(np.uint8)).save(root / "masks" / f"c{i:02d}.png")
        rows.append(f"in/c{i:02d}.jpg,masks/c{i:02d}.png")
    (root / "list.csv").write_text("\n".join([*rows, "in/gone.jpg,masks/c00.png"]) + "\n")
    r = harmonize(root / "list.csv", "-o", root / "plain")
    assert r.returncode == 1 and "16 ok / 0 skipped / 1 failed" in r.stdout, r.stderr[-3000:]
    return root


def test_two_node_more_actors_than_the_cluster_holds_go_on_with_those_that_start(two_nodes, listed, tmp_path):
    """Three actors of one CPU on a cluster of two CPUs: Ray would wait for the third for ever; the run goes on
    with two, says so, and writes the plain run's files."""
    out = tmp_path / "out"
    r = harmonize(listed / "list.csv", "-o", out, "--ray", two_nodes.address, "--actors", "3", env=two_nodes.env)
    assert r.returncode == 1 and "16 ok / 0 skipped / 1 failed" in r.stdout, r.stderr[-3000:]
    assert "ray: 2 of 3 actors started (the cluster has 2 CPUs, each actor takes 1); going on with 2" in r.stderr
    assert files(out) == files(listed / "plain")


@needs_bench
def test_two_node_a_driver_outside_the_cluster_joins_through_ray_client(two_nodes, listed, tmp_path):
    """`--ray ray://HEAD:PORT`, as from a laptop: the actors run on the cluster's nodes and write the plain run's
    files; a wrong token is refused before any work, as on a node."""
    out = tmp_path / "out"
    for _ in range(2):  # NOTE: under CI's load the head's Ray Client server once failed to start its per-driver server
        r = harmonize(listed / "list.csv", "-o", out, "--ray", two_nodes.client, "--actors", "2", env=two_nodes.env)
        if "Starting Ray client server failed" not in r.stderr:
            break
    else:
        pytest.skip("the head's Ray Client server failed twice to start a server for this driver (Ray's own "
                    "start-up, on a loaded machine)")
    assert r.returncode == 1 and "16 ok / 0 skipped / 1 failed" in r.stdout, r.stderr[-3000:]
    assert files(out) == files(listed / "plain")
    bad = harmonize(listed / "list.csv", "-o", tmp_path / "bad", "--ray", two_nodes.client,
                    env=dict(two_nodes.env, RAY_AUTH_TOKEN="0" * 64))
    assert bad.returncode == 2, bad.stderr[-3000:]
    assert f"cannot join the Ray cluster at {two_nodes.client}" in bad.stderr
    assert "Ray Client port" in bad.stderr and "Traceback" not in bad.stderr and "UserWarning" not in bad.stderr
    assert not list((tmp_path / "bad").glob("c*"))


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds each node's processes through /proc")
def test_two_node_cluster_loses_nothing_when_its_worker_node_is_killed_mid_run(two_nodes, listed, tmp_path):
    """The run joins with --ray ADDRESS, one actor on each node. Once three outputs are written the worker
    node is killed whole (raylet, agents, its actor): its batch runs again on the head's actor, every output
    is there once and is the plain run's, no temporary file is left, and the summary counts the skip and
    the failure the list holds."""
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(listed / "plain" / "c15.jpg", out / "c15.jpg")  # done already: skipped
    run = harmonize(listed / "list.csv", "-o", out, "--ray", two_nodes.address, "--actors", "2", "--batch-size", "1",
                    wait=False, env=two_nodes.env)
    killed, deadline = 0, time.monotonic() + 300
    try:
        while not killed and run.poll() is None and time.monotonic() < deadline:
            if len([p for p in out.glob("c*.jpg") if p.name != "c15.jpg"]) >= 3:
                killed = two_nodes.kill(two_nodes.worker)
            time.sleep(0.05)
        stdout, stderr = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    assert killed, "the run ended before the worker node could be killed\n" + stderr[-3000:]
    assert run.returncode == 1, stderr[-3000:]
    assert "15 ok / 1 skipped / 1 failed" in stdout, stdout + stderr[-3000:]
    assert "an actor died" in stderr, "no batch was lost with the node: nothing was tested\n" + stderr[-3000:]
    assert [line for line in stderr.splitlines() if line.startswith("FAILED")] == \
        [f"FAILED {listed / 'in' / 'gone.jpg'}: no such file"]
    assert files(out) == files(listed / "plain"), "an output is missing, extra, partial or differs from the plain run's"


def test_two_node_a_driver_without_the_clusters_token_is_refused_before_any_work(two_nodes, listed, tmp_path):
    env = dict(two_nodes.env, RAY_AUTH_TOKEN="0" * 64)
    r = harmonize(listed / "list.csv", "-o", tmp_path / "out", "--ray", two_nodes.address, env=env)
    assert r.returncode == 2, r.stderr[-3000:]
    assert f"cannot join the Ray cluster at {two_nodes.address}" in r.stderr and "RAY_AUTH_TOKEN" in r.stderr
    assert "Traceback" not in r.stderr and not list((tmp_path / "out").glob("c*"))


def test_ray_client_without_its_packages_is_a_clear_error_not_a_traceback():
    """Ray without `ray[client]` raises ValueError for a ray:// address; it is said as every other failure to join."""
    from engine.errors import HarmonizeError
    from engine.runtime.cluster import _join

    class Minimal:
        @staticmethod
        def init(address, logging_level):
            raise ValueError("Ray Client requires pip package `ray[client]`.")

    with pytest.raises(HarmonizeError, match=r"cannot join the Ray cluster at ray://head:10001 \(Ray Client requires "
                       r"pip package `ray\[client\]`.\): check the address \(the head's Ray Client port"):
        _join(Minimal, "ray://head:10001")
