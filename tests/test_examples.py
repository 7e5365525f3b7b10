"""The README's first command on the shipped examples: every example harmonized, only under its mask,
and closer to the untouched photo than the composite was. Needs nothing outside the repository."""
import re
import shlex

import numpy as np
from conftest import ROOT
from PIL import Image, ImageFilter

from engine.cli import main

EXAMPLES = ROOT / "examples"


def readme_run_command() -> list[str]:
    """The arguments of the `harmonize run` in the README's first command."""
    text = (ROOT / "README.md").read_text()
    first = re.search(r"^    python3 -m venv \.venv && \. \.venv/bin/activate && pip install \. && harmonize (run .+)$",
                      text, re.M)
    assert first, "the README's first command is not 'python3 -m venv .venv && ... && harmonize run ...'"
    return shlex.split(first.group(1))


def test_readme_first_command_harmonizes_every_example(tmp_path, monkeypatch, capsys):
    args = readme_run_command()
    out = tmp_path / "harmonized"
    args[args.index("-o") + 1] = str(out)
    monkeypatch.chdir(ROOT)
    assert main([*args, "-q"]) == 0
    names = sorted(p.name for p in (EXAMPLES / "composites").iterdir())
    assert len(names) >= 3 and f"{len(names)} ok / 0 skipped / 0 failed" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == names
    for name in names:
        comp = np.asarray(Image.open(EXAMPLES / "composites" / name).convert("RGB"), np.float32)
        real = np.asarray(Image.open(EXAMPLES / "originals" / name).convert("RGB"), np.float32)
        result = np.asarray(Image.open(out / name).convert("RGB"), np.float32)
        mask_img = Image.open(EXAMPLES / "masks" / f"{name.rsplit('.', 1)[0]}.png").convert("L")
        mask = np.asarray(mask_img) > 127
        # Outside the mask, grown by JPEG's 16-pixel chroma blocks, only re-encoding noise.
        near = np.asarray(mask_img.filter(ImageFilter.MaxFilter(33))) > 127
        assert np.abs(result - comp)[~near].mean() < 1.0, f"{name}: the background changed"
        err_result, err_comp = (np.abs(x - real)[mask].mean() for x in (result, comp))
        assert np.abs(result - comp)[mask].mean() > 3.0, f"{name}: the object was barely touched"
        assert err_result < err_comp, f"{name}: error to the photo {err_result:.1f}, composite {err_comp:.1f}"
