"""`harmonize bench`: every available backend side by side in one run, ratios against PyTorch eager.

Two measurements: the network alone at working resolutions (median latency over repeats, after a
warm-up), and a 12-megapixel JPEG end to end (decode, harmonize, encode). Speed claims in the README
are ratios from one run of this command on one machine.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from ..imageio import read_image, read_mask, write_image
from ..runtime.backends.base import Backend


def median_seconds(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def network_latency(backend: Backend, size: int, batch: int, repeat: int) -> float:
    """Median seconds of one `infer` call on a batch at a working size."""
    rng = np.random.default_rng(0)
    image = rng.random((batch, 3, size, size), dtype=np.float32)
    mask = np.zeros((batch, 1, size, size), np.float32)
    mask[:, :, size // 4: size * 3 // 4, size // 3: size * 2 // 3] = 1
    return median_seconds(lambda: backend.infer(image, mask), repeat)


def photo_like(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth random colours with a grain, as int64 (H, W, 3) before clipping: something JPEG encodes as it
    would a photo."""
    small = (rng.random((30, 40, 3)) * 255).astype(np.uint8)
    rgb = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC)).astype(np.int16)
    return rgb + rng.integers(-12, 12, (height, width, 1))


def ellipse(height: int, width: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """A filled ellipse (H, W) bool, centre and radii in pixels."""
    yy, xx = np.ogrid[0:height, 0:width]
    return (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) <= 1


def make_12mp(folder: Path) -> tuple[Path, Path]:
    """A 4000x3000 photo-like JPEG and its mask, written once for the end-to-end timing."""
    h, w = 3000, 4000
    rgb = np.clip(photo_like(np.random.default_rng(1), w, h), 0, 255).astype(np.uint8)
    mask = ellipse(h, w, 1700, 1800, 900.0, 700.0).astype(np.uint8) * 255
    Image.fromarray(rgb).save(folder / "photo.jpg", quality=92)
    Image.fromarray(mask).save(folder / "mask.png")
    return folder / "photo.jpg", folder / "mask.png"


def make_composites(folder: Path, count: int, width: int = 4000, height: int = 3000) -> tuple[Path, Path]:
    """`count` photo-like JPEG composites (quality 92) with masks whose object's box is about half the
    picture each way, in folder/in and folder/masks."""
    src, masks = folder / "in", folder / "masks"
    src.mkdir(parents=True), masks.mkdir(parents=True)
    mask = ellipse(height, width, height * 0.55, width * 0.5, height * 0.3, width * 0.25)
    Image.fromarray(mask.astype(np.uint8) * 255).save(masks / "template.png")
    for i in range(count):
        rgb = photo_like(np.random.default_rng(i), width, height)
        rgb[mask] = rgb[mask] * np.array([0.7, 0.9, 1.2])  # the pasted object's cast
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(src / f"{i:02d}.jpg", quality=92)
        (masks / f"{i:02d}.png").write_bytes((masks / "template.png").read_bytes())
    (masks / "template.png").unlink()
    return src, masks


MAP = np.array([[0.9, 0.05, 0.0, 0.02], [0.03, 0.95, 0.02, 0.0], [0.0, 0.05, 0.85, 0.04]], np.float32)


def decode_map_encode(src: str, masks: str, out: str) -> None:
    """The floor a batch is measured against: one thread decodes each composite and its mask, applies a
    fixed 3x4 colour map under the mask with numpy, and encodes at quality 95, one after another."""
    out_dir = Path(out)
    out_dir.mkdir(exist_ok=True)
    for composite in sorted(Path(src).glob("*.jpg")):
        rgb = np.asarray(Image.open(composite).convert("RGB"))
        fg = np.asarray(Image.open(Path(masks) / f"{composite.stem}.png").convert("L")) > 127
        x = rgb[fg].astype(np.float32) / 255
        y = np.clip(x @ MAP[:, :3].T + MAP[:, 3], 0, 1)
        result = rgb.copy()
        result[fg] = (y * 255 + 0.5).astype(np.uint8)
        Image.fromarray(result).save(out_dir / composite.name, quality=95)


# The process's own peak, in KiB: VmHWM belongs to its memory since exec, where ru_maxrss would also count
# the parent's memory, which the forked child shares until it execs.
PEAK = ("import resource, sys, re, pathlib\n"
        "status = pathlib.Path('/proc/self/status')\n"
        "hwm = re.search(r'VmHWM:\\s+(\\d+)', status.read_text()) if status.exists() else None\n"
        "print('peak', hwm[1] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,\n"
        "      'VmHWM' if hwm else 'ru_maxrss', file=sys.stderr)")  # some sandboxes (gVisor) have no VmHWM


def batch_throughput(count: int = 10, repeat: int = 3, device: str = "auto") -> dict:
    """`harmonize run --device DEVICE` over `count` 12 MP JPEG composites against the one-thread
    decode-map-encode loop on the CPU, each a whole process, alternating, `repeat` times: median wall seconds,
    peak memory (MiB), images per second, and the ratio of the two walls; for the run also its median seconds
    after the model loaded (`loaded_seconds`), the rate a long batch holds once the process has started."""
    import subprocess
    import sys

    from plugin.rendezvous import isolated

    root = str(Path(__file__).resolve().parents[2])  # the engine package's folder: the current one may hold another
    rows: dict[str, list[tuple[float, float]]] = {"harmonize run": [], "decode-map-encode loop": []}
    loaded: list[float] = []
    peak_from = {}  # VmHWM, or ru_maxrss where the system has none (it may count the parent's memory too)
    with tempfile.TemporaryDirectory() as tmp:
        src, masks = make_composites(Path(tmp), count)
        run_code = f"import sys\nfrom engine.cli import main\nrc = main(sys.argv[1:])\n{PEAK}\nsys.exit(rc)"
        commands = {
            "harmonize run": [*isolated(sys.executable, run_code, root), "run", str(src), "--masks", str(masks),
                              "-o", f"{tmp}/run", "--overwrite", "--device", device],
            "decode-map-encode loop": [*isolated(sys.executable, f"from engine.evaluation.bench import "
                                                 f"decode_map_encode\ndecode_map_encode(*sys.argv[1:])\n{PEAK}", root),
                                       str(src), str(masks), f"{tmp}/loop"],
        }
        for _ in range(repeat):
            for name, cmd in commands.items():
                start = time.perf_counter()
                r = subprocess.run(cmd, capture_output=True, text=True)
                wall = time.perf_counter() - start
                if r.returncode != 0:
                    raise RuntimeError(f"{name} failed: {r.stderr[-2000:]}")
                peak_kib, source = r.stderr.rsplit("peak", 1)[1].split()[:2]
                peak, peak_from[name] = int(peak_kib) / 1024, source
                rows[name].append((wall, peak))
                # each run as it ends, so that a run stopped by a time limit still says what it measured
                took = [line for line in r.stderr.splitlines() if line.startswith(("backend:", "harmonized:"))]
                loaded += [float(line.split(" in ")[1].split()[0]) for line in took if line.startswith("harmonized:")]
                print(f"{name}: {wall:.2f} s, peak {peak:.0f} MiB ({source})", *took, sep="; ", file=sys.stderr,
                      flush=True)
    result = {}
    for name, runs in rows.items():
        wall = statistics.median(w for w, _ in runs)
        result[name] = dict(seconds=wall, peak_mib=statistics.median(p for _, p in runs), peak_from=peak_from[name],
                            images_per_second=count / wall)
    if loaded:
        result["harmonize run"]["loaded_seconds"] = statistics.median(loaded)
    result["ratio"] = result["harmonize run"]["seconds"] / result["decode-map-encode loop"]["seconds"]
    result["count"], result["device"] = count, device
    return result


def throughput_table(result: dict) -> str:
    """Markdown: the two runs and their ratio."""
    lines = [f"| run ({result['count']} 12 MP JPEGs, median of 3; run --device {result['device']}) | wall s | img/s "
             "| peak MiB |", "|---|---|---|---|"]
    for name in ("harmonize run", "decode-map-encode loop"):
        r = result[name]
        by = "" if r.get("peak_from", "VmHWM") == "VmHWM" else f" ({r['peak_from']})"
        lines.append(f"| {name} | {r['seconds']:.2f} | {r['images_per_second']:.2f} | {r['peak_mib']:.0f}{by} |")
    table = "\n".join(lines) + f"\n\nratio (harmonize run / loop): {result['ratio']:.2f}"
    run = result["harmonize run"]
    if "loaded_seconds" in run:  # on a GPU the process's start (torch, CUDA) is seconds of a short batch's wall
        table += (f"\nharmonize run after its model loaded: {run['loaded_seconds']:.2f} s, "
                  f"{result['count'] / run['loaded_seconds']:.2f} img/s")
    return table


def end_to_end(backend: Backend, photo: Path, mask_path: Path, out: Path) -> float:
    """Seconds for decode + harmonize + encode of one picture (median of 3)."""

    def once() -> None:
        pic = read_image(photo)
        mask = read_mask(mask_path, (pic.rgb.shape[1], pic.rgb.shape[0]))
        write_image(out, replace(pic, rgb=backend.harmonize(pic.rgb, mask)))

    return median_seconds(once, repeat=3)


def available_backends(reference: str | Path | None, fp16: bool, log: Callable[[str], None] = print,
                       device: str = "auto") -> dict[str, Backend]:
    """Every registry entry that runs the shipped model here, on each device it serves (or only `device`), by
    row name "<backend> <device>": PyTorch takes the `reference` checkpoint where given, ONNX Runtime also
    its FP16 model with `fp16`; says why any entry is left out."""
    from ..models import shipped
    from ..runtime.backends import load, serving

    backends = {}
    for d in ("cpu", "gpu") if device == "auto" else (device,):
        for name, choice, why in serving(d):
            if choice is None:
                log(f"bench: no {name} on the {d}: {why}")
                continue
            backends[f"{name} {d}"] = load(name, reference if name == "torch" else None, d)
            if fp16 and name == "onnxruntime":
                backends[f"onnxruntime fp16 {d}"] = load(name, shipped("onnx-fp16"), d)
    return backends


def run_bench(backends: dict[str, Backend], sizes: list[int], batch: int, repeat: int,
              log: Callable[[str], None] = print) -> dict:
    """Time each backend; returns {"network": {name: {size: s}}, "end_to_end_12mp": {name: s}}."""
    results: dict = {"network": {}, "end_to_end_12mp": {}, "batch": batch}
    for name, backend in backends.items():
        results["network"][name] = {}
        for size in sizes:
            s = network_latency(backend, size, batch, repeat)
            results["network"][name][size] = s
            log(f"{name:<22} {size:>5}px batch {batch}: {s * 1000:8.1f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        photo, mask = make_12mp(Path(tmp))
        for name, backend in backends.items():
            s = end_to_end(backend, photo, mask, Path(tmp) / "out.jpg")
            results["end_to_end_12mp"][name] = s
            log(f"{name:<22} 12 MP JPEG end to end: {s:.2f} s")
    return results


def table(results: dict, reference: str = "torch cpu") -> str:
    """A markdown table of latencies with speed-ups against the reference backend."""
    names = list(results["network"])
    sizes = list(next(iter(results["network"].values())))
    head = "| backend | " + " | ".join(f"{s}px ms (x)" for s in sizes) + " | 12 MP end to end s (x) |"
    lines = [head, "|---" * (len(sizes) + 2) + "|"]
    for n in names:
        cells = []
        for s in sizes:
            t = results["network"][n][s]
            ref = results["network"].get(reference, {}).get(s)
            cells.append(f"{t * 1000:.1f}" + (f" ({ref / t:.2f}x)" if ref else ""))
        e = results["end_to_end_12mp"][n]
        ref = results["end_to_end_12mp"].get(reference)
        cells.append(f"{e:.2f}" + (f" ({ref / e:.2f}x)" if ref else ""))
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plugin_round_trip(width: int = 4000, height: int = 3000, repeat: int = 3) -> dict:
    """The GIMP plug-in's engine call on a width x height layer over a canvas of the same size, as the
    plug-in makes it: the first call starts `harmonize serve` in the background (loading the model), later
    calls find it warm. What the plug-in waits for besides GIMP's own pixel reads. Returns the layer size,
    the first call's seconds and the median of the warm ones."""
    import os
    import signal
    import sys

    from plugin import client, protocol

    rng = np.random.default_rng(2)
    small = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    canvas = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))
    mask = ellipse(height, width, height * 0.55, width * 0.45, height * 0.3, width * 0.25)
    layer = np.clip(canvas * np.array([0.6, 0.8, 1.2]), 0, 255).astype(np.uint8)
    mask8 = (mask * 255).astype(np.uint8)
    request = protocol.Request(width, height, (0, 0, width, height), canvas.tobytes(), layer.tobytes(), mask8.tobytes())
    with tempfile.TemporaryDirectory() as tmp:
        config = {"address": os.path.join(tmp, "engine.sock"), "python": sys.executable, "idle_minutes": 5}
        try:
            start = time.perf_counter()
            client.harmonize(request, config)
            first = time.perf_counter() - start
            seconds = median_seconds(lambda: client.harmonize(request, config), repeat, warmup=0)
        finally:
            try:
                os.kill(client.ping(config)["pid"], signal.SIGTERM)
            except (client.EngineError, OSError):
                pass
    return {"size": f"{width}x{height}", "first": first, "seconds": seconds}


def ray_throughput(count: int = 120, width: int = 1600, height: int = 1200, actors=(1, 2)) -> list[dict]:
    """Images per second of `harmonize run` over `count` synthetic composites, plain and on a local Ray
    with each number of actors, in one run: end to end (Ray's start included) and after start-up."""
    from ..runtime.backends import load
    from ..runtime.batch import run_batch
    from ..runtime.cluster import RayOptions, run_on_ray
    from ..runtime.plan import folder_jobs

    rng = np.random.default_rng(3)
    mask = ellipse(height, width, height * 0.55, width * 0.45, height * 0.3, width * 0.25)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src, masks = Path(tmp) / "in", Path(tmp) / "masks"
        src.mkdir(), masks.mkdir()
        for i in range(count):
            small = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
            Image.fromarray(small).resize((width, height), Image.BICUBIC).save(src / f"{i:03d}.jpg", quality=92)
            Image.fromarray(mask.astype(np.uint8) * 255).save(masks / f"{i:03d}.png")

        def timed(name: str, run) -> None:
            start = time.perf_counter()
            summary = run(folder_jobs(src, masks, Path(tmp) / name))
            total = time.perf_counter() - start
            rows.append(dict(run=name, images=summary.ok, end_to_end=summary.ok / total,
                             after_start=summary.ok / max(summary.seconds, 1e-9)))

        with load("onnxruntime") as backend:
            timed("plain", lambda jobs: run_batch(backend, jobs, progress=False))
        for n in actors:
            timed(f"ray, {n} actor{'s' if n > 1 else ''}", lambda jobs, n=n: run_on_ray(
                jobs, "onnxruntime", ray=RayOptions(actors=n), progress=False))
    return rows


def ray_table(rows: list[dict]) -> str:
    """Markdown: images per second and the ratio to the plain run, end to end and after start-up."""
    base = rows[0]
    lines = ["| run | images | img/s end to end (x plain) | img/s after start-up (x plain) |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['images']} "
                     f"| {r['end_to_end']:.2f} ({r['end_to_end'] / base['end_to_end']:.2f}x) "
                     f"| {r['after_start']:.2f} ({r['after_start'] / base['after_start']:.2f}x) |")
    return "\n".join(lines)


# The composites of round 5 (recipes/gpu-round-5.sh, in git history), whose training waited on the loader's workers.
SYNTHESIS_RECIPE = dict(strong=True, mild=0.2, restyle=0.5, closeup=0.5, more=True, same_category=0.5,
                        transfers=("reinhard", "histogram", "idt"))


def synthesis_throughput(data: str | Path, device: str = "cpu", size: int = 256, count: int = 96,
                         batch: int = 16, repeat: int = 3) -> dict:
    """Synthetic composites per second, in one process on one CPU thread (a loader worker's lot), median of
    `repeat`: made a sample at a time (`--render loader`), only drawn (a worker's share with `--render
    device`), and rendered a batch at a time on `device` from drawn plans."""
    import torch

    from ..training.batched import collate, encode, render_batch
    from ..training.synthetic import SyntheticComposites, render

    torch.set_num_threads(1)
    synthetic = SyntheticComposites(data, size, seed=0, **SYNTHESIS_RECIPE)
    plans = [encode(synthetic.draw(i)) for i in range(count)]

    batches = count // batch

    def render_all() -> None:
        for k in range(0, batches * batch, batch):
            render_batch(collate(plans[k:k + batch]), device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    render_all()  # warm-up: CUDA's context, the first kernels
    loader = count / median_seconds(lambda: [render(synthetic.draw(i)) for i in range(count)], repeat, warmup=0)
    drawn = count / median_seconds(lambda: [encode(synthetic.draw(i)) for i in range(count)], repeat, warmup=0)
    rendered = batches * batch / median_seconds(render_all, repeat, warmup=0)
    rates = {"a sample at a time (--render loader)": loader,
             "drawn only (a worker's share with --render device)": drawn,
             f"rendered in batches of {batch} on {device}": rendered}
    return dict(size=size, device=device, samples_per_second=rates, worker_gain=drawn / loader)


def synthesis_table(result: dict) -> str:
    """Markdown: samples per second of each way, and what a loader worker gains with --render device."""
    lines = [f"| synthetic composites at {result['size']} px | samples/s |", "|---|---|"]
    lines += [f"| {name} | {rate:.1f} |" for name, rate in result["samples_per_second"].items()]
    gain = result["worker_gain"]
    return "\n".join(lines) + f"\n\nsamples per loader worker, --render device against loader: {gain:.1f}x"


def train_throughput(data: str | Path, device: str = "cpu", config: str = "medium", batch: int | None = None,
                     steps: int | None = None, size: int | None = None) -> dict:
    """`harmonize train --render resident`'s samples per second, and the share of each step spent waiting for
    its composites (the rest is the network's forward and backward pass), with fp32, bf16 autocast and bf16 with
    channels-last activations, then bf16 in the faster layout with the composites made ahead in a thread
    (`--make-ahead`), in one process on one set of resident pictures."""
    import time

    import torch

    from ..network.model import create_model
    from ..training.config import TrainConfig
    from ..training.resident import MadeAhead, Recipe, ResidentStream, batches_made_at_once, resident_pictures
    from ..training.train import fixed_shapes, make_optimizer, train_step

    cuda = device.startswith("cuda")
    fixed_shapes(device)  # as a run trains
    batch = batch or (128 if cuda else 8)
    steps = steps or (2 * batches_made_at_once(device, batch) if cuda else 3)  # whole makes: their cost, amortized
    recipe = Recipe(**{k: v for k, v in SYNTHESIS_RECIPE.items() if k != "more"}, time_of_day=0.1)  # round 6's
    model = create_model(config, **({"size": size} if size else {}))
    pictures = resident_pictures(data, model.size, device, more=True, extra=True)

    def sync() -> None:  # the training stream only: a make ahead runs on its own
        if cuda:
            torch.cuda.current_stream().synchronize()

    def timed(precision: str, channels_last: bool, ahead: bool) -> dict:
        c = TrainConfig(config=config, device=device, batch_size=batch, precision=precision,
                        channels_last=channels_last)
        if cuda:  # each row's own peak: making ahead holds a make in flight beside the training
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        net = create_model(config, **({"size": size} if size else {})).to(device).train()
        if channels_last:
            net.to(memory_format=torch.channels_last)
        opt = make_optimizer(net, c, None)
        stream = ResidentStream(pictures, recipe, batch, seed=0)
        train_step(net, opt, c, *stream.make()[0])  # warm-up: kernels chosen, memory allocated
        source = MadeAhead(stream) if ahead else stream
        try:
            if ahead:  # its thread under way, as in a run after the first step
                train_step(net, opt, c, *next(source))
            sync()
            making = stepping = 0.0
            for _ in range(steps):
                t0 = time.perf_counter()
                comp, mask, real = next(source)
                sync()
                t1 = time.perf_counter()
                train_step(net, opt, c, comp, mask, real)
                sync()
                making, stepping = making + t1 - t0, stepping + time.perf_counter() - t1
        finally:
            if ahead:
                source.close()
        return dict(samples_per_second=steps * batch / (making + stepping), data_share=making / (making + stepping),
                    channels_last=channels_last, at_once=stream.at_once,
                    peak_gib=torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None)

    rows = {"fp32": timed("fp32", False, False), "bf16": timed("bf16", False, False),
            "bf16, channels-last": timed("bf16", True, False)}
    rows["bf16, made ahead"] = timed("bf16", "--channels-last" in train_flags(rows), True)
    return dict(device=device, config=config, size=model.size, batch=batch, steps=steps,
                made_at_once=rows["bf16"]["at_once"], pictures=pictures.n_photos,
                pictures_mib=pictures.nbytes() / 2**20, rows=rows, flags=train_flags(rows))


def network_alone(row: dict) -> float:
    """A bench --train row's samples per second without the time spent waiting for composites."""
    return row["samples_per_second"] / max(1e-9, 1 - row["data_share"])


def train_flags(rows: dict) -> list[str]:
    """The `harmonize train` options bench --train's rows measured faster on this machine, in bf16."""
    # channels-last by the network's own rate: making composites costs both layouts the same and would only blur
    # the difference; making ahead by the end-to-end rate, against the chosen layout made in the loop
    flags = ["--channels-last"] if network_alone(rows["bf16, channels-last"]) > network_alone(rows["bf16"]) else []
    ahead = rows.get("bf16, made ahead")
    inline = rows["bf16, channels-last" if flags else "bf16"]
    return flags + (["--make-ahead"] if ahead and ahead["samples_per_second"] > inline["samples_per_second"] else [])


def train_table(result: dict) -> str:
    """bench --train's result as a Markdown table."""
    memory = result["rows"]["fp32"].get("peak_gib") is not None  # measured on a GPU only
    lines = [f"`{result['config']}` at {result['size']} px, batches of {result['batch']} on {result['device']} "
             f"(composites made {result['made_at_once']} batches at a time), "
             f"{result['steps']} timed steps each; {result['pictures']} pictures resident "
             f"({result['pictures_mib']:.0f} MiB)\n",
             "| precision | samples/s | share of the step waiting for composites | network alone, samples/s |"
             + " peak device memory |" * memory, "|---|---|---|---|" + "---|" * memory]
    lines += [f"| {name}{' (channels-last)' if 'ahead' in name and r['channels_last'] else ''} | "
              f"{r['samples_per_second']:.1f} | {100 * r['data_share']:.0f} % | {network_alone(r):.1f} |"
              + (f" {r['peak_gib']:.1f} GiB |" if memory else "") for name, r in result["rows"].items()]
    return "\n".join(lines) + f"\n\nfaster here: {' '.join(result['flags']) or 'neither option'}"
