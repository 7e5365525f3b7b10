"""`harmonize validate` and `harmonize bench`: verdicts, exit codes and reports."""
import json

import pytest

pytest.importorskip("torch", reason="torch (the 'train' extra) is the reference of validate and bench")
from engine.cli import main  # noqa: E402


def test_validate_passes_fp32_and_fp16(capsys):
    assert main(["validate", "--sizes", "128"]) == 0
    out = capsys.readouterr().out
    assert out.count("PASSED | synthetic") == 3 and "FAILED" not in out
    assert "smallest tolerance that passes all" in out
    assert main(["validate", "--fp16", "--sizes", "128"]) == 0
    assert "fp16" in capsys.readouterr().out


def test_validate_fails_and_says_so_when_outputs_differ(tmp_path, capsys):
    assert main(["validate", "--sizes", "128", "--tolerance", "1e-12", "--json", str(tmp_path / "v.json")]) == 1
    out = capsys.readouterr().out
    assert "FAILED | onnxruntime vs torch" in out
    rows = json.loads((tmp_path / "v.json").read_text())
    assert len(rows) == 3 and all(r["finite"] and not r["passed"] for r in rows)


def test_bench_reports_ratios_against_pytorch(capsys):
    """The table's ratios are PyTorch's time over each backend's, from the same run's measurements."""
    from engine.evaluation.bench import table

    assert main(["bench", "--sizes", "64", "--repeat", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["network"]) >= {"torch cpu", "onnxruntime cpu"}, "each backend and device the registry serves"
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in table(result).splitlines()[2:]}
    for name, cells in rows.items():
        t, ref = result["network"][name]["64"], result["network"]["torch cpu"]["64"]
        assert cells[0] == f"{t * 1000:.1f} ({ref / t:.2f}x)"
        e, eref = result["end_to_end_12mp"][name], result["end_to_end_12mp"]["torch cpu"]
        assert cells[1].rstrip(" |") == f"{e:.2f} ({eref / e:.2f}x)"
    assert rows["torch cpu"][0].endswith("(1.00x)")


def test_bench_throughput_times_the_run_and_the_loop_on_the_same_pictures():
    """`bench --throughput`: both walls, their ratio, and the run's own time after its model loaded (read from
    the line `harmonize run` logs), which the process's start makes shorter than its wall."""
    from engine.evaluation.bench import batch_throughput, throughput_table

    result = batch_throughput(count=1, repeat=1, device="cpu")
    run, loop = result["harmonize run"], result["decode-map-encode loop"]
    assert result["ratio"] == run["seconds"] / loop["seconds"] and run["peak_mib"] > 0 and loop["peak_mib"] > 0
    assert 0 < run["loaded_seconds"] < run["seconds"]
    assert run["peak_from"] == loop["peak_from"] == "VmHWM", "Linux keeps each process's own peak in VmHWM"
    assert f"after its model loaded: {run['loaded_seconds']:.2f} s" in throughput_table(result)
