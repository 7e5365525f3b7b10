"""Data readers on a fixture in the exact iHarmony4 layout, and on the bench folder's MANIFEST.csv."""
import pytest
from conftest import BENCH, needs_bench

from engine.errors import InputError
from engine.runtime.plan import iharmony4_names
from engine.training.datasets import load_triple, read_iharmony4, read_manifest, read_triples


def test_iharmony4_reader(iharmony4_root):
    train = read_iharmony4(iharmony4_root, "train")
    test = read_iharmony4(iharmony4_root, "test")
    assert [t.name for t in test] == ["a0002_1_3", "f0002_1_3"]
    assert len(train) == 4 and {t.subset for t in train} == {"HAdobe5k", "HFlickr"}
    comp, mask, real = load_triple(test[0])
    assert comp.shape == real.shape == (24, 32, 3) and mask.shape == (24, 32)
    assert test[0].mask.name == "a0002_1.png" and test[0].real.name == "a0002.jpg"
    assert read_triples(iharmony4_root)[0] == test[0]


def test_iharmony4_errors(tmp_path):
    with pytest.raises(InputError, match="no test list"):
        read_iharmony4(tmp_path)
    with pytest.raises(InputError, match="not an iHarmony4 composite name"):
        iharmony4_names("photo.jpg")
    assert iharmony4_names("d17664-20120114-145839_1_4.jpg") == ("d17664-20120114-145839_1.png",
                                                               "d17664-20120114-145839.jpg")


@needs_bench
def test_manifest_reader_finds_all_bench_triples():
    triples = read_manifest(BENCH)
    assert len(triples) == 22
    assert all(t.composite.exists() and t.mask.exists() and t.real.exists() for t in triples)


def test_manifest_triples_whose_composites_share_a_name_are_named_by_their_folder(tmp_path):
    """Held-out folders each hold composite.png: their triples must not share one name, or every score keyed by
    it (harmonize eval's tables, choose's pairs) would be the last triple's."""
    import csv

    from engine.evaluation.evaluate import evaluate

    rows = []
    for k, level in enumerate((40, 120, 200)):
        folder = tmp_path / f"s{k}"
        folder.mkdir()
        from PIL import Image
        Image.new("RGB", (8, 8), (level,) * 3).save(folder / "composite.png")
        Image.new("RGB", (8, 8), (level + 10,) * 3).save(folder / "real.png")
        Image.new("L", (8, 8), 255).save(folder / "mask.png")
        rows.append(dict(sample_dir=f"s{k}", subset="heldout", composite="composite.png", mask="mask.png",
                         real="real.png"))
    with open(tmp_path / "MANIFEST.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    triples = read_manifest(tmp_path)
    assert [t.name for t in triples] == ["s0/composite", "s1/composite", "s2/composite"]
    scores = evaluate(triples, {"composite": lambda rgb, mask: rgb}, progress=False)["composite"]
    assert len(scores.rows) == 3
    bench = read_manifest(BENCH) if (BENCH / "MANIFEST.csv").exists() else []
    assert all("/" not in t.name for t in bench)  # unique stems keep their names, as PEERS.csv has them
