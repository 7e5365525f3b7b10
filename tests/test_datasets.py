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
