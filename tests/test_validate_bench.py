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
    assert main(["bench", "--sizes", "64", "--repeat", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["network"]) >= {"torch", "onnxruntime fp32"}
    assert result["network"]["onnxruntime fp32"]["64"] > 0 and result["end_to_end_12mp"]["torch"] > 0
