"""`harmonize run` against a real S3-compatible endpoint: moto's server on localhost, with IAM checks on,
reached through s3fs with AWS_ENDPOINT_URL and access keys in the environment, as a user configures it.
Outputs are the local run's bytes; wrong credentials stop the run before any work, naming the bucket; a
missing key is one failed line; an upload cut off half-way leaves no object, whole or partial, and no open
multipart upload, and the rerun writes it and skips the rest."""
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, ellipse_mask, free_port, import_scaleout, textured_image
from PIL import Image

boto3 = import_scaleout("boto3")
import_scaleout("moto.server")
import_scaleout("s3fs")
import_scaleout("upath")
pytestmark = pytest.mark.slow

# Name, size and type of each composite; `big` is over the 5 MiB block size the cut test gives s3fs, so a
# writer that streamed parts would start a multipart upload for it.
PICTURES = {"a": ((240, 320), ".jpg"), "b": ((200, 300), ".png"), "c": ((240, 320), ".jpg"),
            "big": ((1200, 1600), ".bmp")}
POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


class Endpoint:
    """A moto server on 127.0.0.1 that checks credentials: its first three requests (unchecked) make an IAM
    user allowed s3:* and its access key; every request after that must be signed with that key."""

    def __init__(self, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:  # a bare connection, no request: the three unchecked ones are the user's
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert self.proc.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, "moto's server did not start in 60 s"
                time.sleep(0.1)
        iam = boto3.client("iam", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id="setup",
                           aws_secret_access_key="setup")
        iam.create_user(UserName="harmonize")
        iam.put_user_policy(UserName="harmonize", PolicyName="s3", PolicyDocument=json.dumps(POLICY))
        key = iam.create_access_key(UserName="harmonize")["AccessKey"]
        self.key, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
        self.s3 = boto3.client("s3", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id=self.key,
                               aws_secret_access_key=self.secret)

    def env(self, url: str | None = None, key: str | None = None, secret: str | None = None, **more) -> dict:
        """The environment a user sets to reach this store: its endpoint and an access key (no profile,
        no config file, no instance metadata)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_"))}
        env.update(AWS_ENDPOINT_URL=url or self.url, AWS_ACCESS_KEY_ID=key or self.key,
                   AWS_SECRET_ACCESS_KEY=secret or self.secret, AWS_DEFAULT_REGION="us-east-1",
                   AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
                   AWS_EC2_METADATA_DISABLED="true", **more)
        return env

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        return sorted(o["Key"] for o in self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))

    def get(self, bucket: str, key: str) -> bytes:
        return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class CuttingProxy:
    """A TCP proxy in front of the endpoint that passes every request through, except that it sends only
    the first half of the body of a PUT whose request line holds `cut`, then drops both connections: an
    upload cut off mid-way. `times` such cuts at most; `cuts` counts them."""

    def __init__(self, upstream: int, cut: str, times: int = 1_000_000):
        self.upstream, self.cut, self.left, self.cuts = upstream, cut, times, 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._requests, args=(client, up), daemon=True).start()
            threading.Thread(target=self._answers, args=(up, client), daemon=True).start()

    @staticmethod
    def _close(*socks: socket.socket) -> None:
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _answers(self, up: socket.socket, client: socket.socket) -> None:
        try:
            while data := up.recv(65536):
                client.sendall(data)
        except OSError:
            pass
        self._close(up, client)

    def _requests(self, client: socket.socket, up: socket.socket) -> None:
        """Forward request after request (headers, then Content-Length bytes of body), cutting as told."""
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = client.recv(65536)
                    if not data:
                        raise ConnectionAbortedError
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                fields = dict(line.split(":", 1) for line in lines[1:])
                length = int(next((v for k, v in fields.items() if k.strip().lower() == "content-length"), 0))
                cut = lines[0].startswith("PUT ") and self.cut in lines[0] and self.left > 0
                up.sendall(head + b"\r\n\r\n")
                todo = length // 2 if cut else length
                while todo:
                    if not buf:
                        buf = client.recv(65536)
                        if not buf:
                            raise ConnectionAbortedError
                    up.sendall(buf[:todo])
                    todo, buf = todo - len(buf[:todo]), buf[todo:]
                if cut:
                    self.left -= 1
                    self.cuts += 1
                    raise ConnectionAbortedError
        except OSError:
            pass
        self._close(client, up)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    store = Endpoint(tmp_path_factory.mktemp("moto") / "moto.log")
    yield store
    store.stop()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    """Composites, masks and list.csv in a folder, and the local run's outputs in its `local/`."""
    root = tmp_path_factory.mktemp("pictures")
    (root / "in").mkdir()
    (root / "masks").mkdir()
    rows = ["composite,mask"]
    for i, (name, ((h, w), ext)) in enumerate(PICTURES.items()):
        Image.fromarray(textured_image(h, w, seed=i)).save(root / "in" / f"{name}{ext}")
        Image.fromarray((ellipse_mask(h, w) * 255).astype(np.uint8)).save(root / "masks" / f"{name}.png")
        rows.append(f"in/{name}{ext},masks/{name}.png")
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    r = harmonize(root / "list.csv", "-o", root / "local", env=dict(os.environ))
    assert r.returncode == 0, r.stderr[-3000:]
    return root


def harmonize(*args, env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "engine.cli", "run", *map(str, args), "-q"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def upload(endpoint: Endpoint, pictures: Path, listing: str | None = None) -> str:
    """A new bucket holding the composites, masks and list.csv (or `listing` in its place): its name."""
    bucket = f"pics-{uuid.uuid4().hex[:12]}"
    endpoint.s3.create_bucket(Bucket=bucket)
    for p in sorted(pictures.glob("[im]*/*")):
        endpoint.s3.put_object(Bucket=bucket, Key=p.relative_to(pictures).as_posix(), Body=p.read_bytes())
    body = listing if listing is not None else (pictures / "list.csv").read_text()
    endpoint.s3.put_object(Bucket=bucket, Key="list.csv", Body=body.encode())
    return bucket


def outputs(endpoint: Endpoint, bucket: str) -> dict[str, bytes]:
    return {k.removeprefix("out/"): endpoint.get(bucket, k) for k in endpoint.keys(bucket, "out/")}


def local(pictures: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((pictures / "local").iterdir())}


def test_s3_endpoint_outputs_are_the_local_runs_bytes_and_a_rerun_skips_them(endpoint, pictures):
    bucket = upload(endpoint, pictures)
    r = harmonize(f"s3://{bucket}/list.csv", "-o", f"s3://{bucket}/out/", env=endpoint.env())
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{len(PICTURES)} ok / 0 skipped / 0 failed" in r.stdout
    assert outputs(endpoint, bucket) == local(pictures), "an output differs from the local run's, or is extra"
    endpoint.s3.delete_object(Bucket=bucket, Key="out/a.jpg")
    r = harmonize(f"s3://{bucket}/list.csv", "-o", f"s3://{bucket}/out/", env=endpoint.env())
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"1 ok / {len(PICTURES) - 1} skipped / 0 failed" in r.stdout
    assert outputs(endpoint, bucket) == local(pictures)


@pytest.mark.parametrize("wrong", ["key", "secret"])
def test_s3_endpoint_wrong_credentials_stop_the_run_before_any_work(endpoint, pictures, wrong):
    bucket = upload(endpoint, pictures)
    env = endpoint.env(**{wrong: "AKIAWRONGWRONGWRONG0"})
    r = harmonize(f"s3://{bucket}/list.csv", "-o", f"s3://{bucket}/out/", env=env)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert f"the store refused access to s3://{bucket}" in r.stderr and "AWS_ACCESS_KEY_ID" in r.stderr
    assert endpoint.keys(bucket, "out/") == []


def test_s3_endpoint_a_mistyped_output_bucket_is_refused_before_any_work_and_not_made(endpoint, pictures):
    """The inputs can be read, but -o names a bucket that does not exist: refused once, up front, not once
    per picture, and not made (a bucket is never created by a run)."""
    bucket = upload(endpoint, pictures)
    r = harmonize(f"s3://{bucket}/list.csv", "-o", f"s3://{bucket}-typo/out/", env=endpoint.env())
    assert r.returncode == 2, r.stderr[-3000:]
    assert f"s3://{bucket}-typo/out: cannot write outputs there" in r.stderr and "Traceback" not in r.stderr
    assert f"{bucket}-typo" not in [b["Name"] for b in endpoint.s3.list_buckets()["Buckets"]]


def test_s3_endpoint_a_missing_key_is_one_failed_line(endpoint, pictures):
    listing = (pictures / "list.csv").read_text() + "in/gone.jpg,masks/a.png\n"
    bucket = upload(endpoint, pictures, listing)
    r = harmonize(f"s3://{bucket}/list.csv", "-o", f"s3://{bucket}/out/", env=endpoint.env())
    assert r.returncode == 1, r.stderr[-3000:]
    assert f"{len(PICTURES)} ok / 0 skipped / 1 failed" in r.stdout
    failed = [line for line in r.stderr.splitlines() if line.startswith("FAILED")]
    assert failed == [f"FAILED s3://{bucket}/in/gone.jpg: no such file"], r.stderr[-3000:]
    assert outputs(endpoint, bucket) == local(pictures)


def test_s3_endpoint_a_cut_upload_leaves_nothing_and_the_rerun_writes_it(endpoint, pictures):
    """Every PUT of out/big.bmp is cut half-way (the client's retries too): that one output fails, by name,
    with no object under its name and no multipart upload left open; the rest are written. The rerun, on a
    sound connection, writes it, byte for byte the local run's, and skips the rest."""
    bucket = upload(endpoint, pictures)
    proxy = CuttingProxy(endpoint.port, cut=f"/{bucket}/out/big.bmp")
    try:  # s3fs's blocks at 5 MiB, its smallest: big.bmp (5.5 MiB) is past one; one try in botocore (s3fs
        # still tries five times): 30 cut uploads with both retrying take a minute
        env = endpoint.env(url=proxy.url, FSSPEC_S3_DEFAULT_BLOCK_SIZE=str(5 * 2**20), AWS_MAX_ATTEMPTS="1")
        r = harmonize(f"s3://{bucket}/list.csv", "-o", f"s3://{bucket}/out/", env=env)
    finally:
        proxy.close()
    assert proxy.cuts >= 1, "no upload was cut"
    assert r.returncode == 1, r.stderr[-3000:]
    assert f"{len(PICTURES) - 1} ok / 0 skipped / 1 failed" in r.stdout
    failed = [line for line in r.stderr.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and failed[0].startswith(f"FAILED s3://{bucket}/out/big.bmp: "), r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    expected = local(pictures)
    assert outputs(endpoint, bucket) == {k: v for k, v in expected.items() if k != "big.bmp"}
    assert endpoint.s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    r = harmonize(f"s3://{bucket}/list.csv", "-o", f"s3://{bucket}/out/", env=endpoint.env())
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"1 ok / {len(PICTURES) - 1} skipped / 0 failed" in r.stdout
    assert outputs(endpoint, bucket) == expected


def test_s3_endpoint_an_upload_cut_once_is_sent_again_whole(endpoint, pictures):
    """One cut: the client's retry sends it again, and the object is whole."""
    bucket = upload(endpoint, pictures)
    proxy = CuttingProxy(endpoint.port, cut=f"/{bucket}/out/big.bmp", times=1)
    try:
        r = harmonize(f"s3://{bucket}/list.csv", "-o", f"s3://{bucket}/out/", env=endpoint.env(url=proxy.url))
    finally:
        proxy.close()
    assert proxy.cuts == 1
    assert r.returncode == 0, r.stderr[-3000:]
    assert outputs(endpoint, bucket) == local(pictures)
