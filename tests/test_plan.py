"""The plan of `harmonize run` (engine/runtime/plan.py) at its edges, found by the mutation pass: what every
listing yields, and that no refusal is skipped."""
import numpy as np
import pytest
from conftest import ellipse_mask, textured_image
from PIL import Image

from engine.runtime.plan import (
    Job,
    PlanError,
    check_plan,
    check_writable,
    csv_jobs,
    find_mask,
    folder_jobs,
    iharmony4_names,
    remove_stale_parts,
)


def picture(path, size=(24, 32), mask=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = (ellipse_mask(*size) * 255).astype(np.uint8) if mask else textured_image(*size)
    Image.fromarray(a).save(path)
    return path


def test_iharmony4_names_keep_underscores_in_the_id():
    assert iharmony4_names("a_b-c_1_2.jpg") == ("a_b-c_1.png", "a_b-c.jpg")
    with pytest.raises(Exception, match=r"photo.jpg: not an iHarmony4 composite name <id>_<obj>_<k>\.jpg"):
        iharmony4_names("photo.jpg")


def test_a_csv_that_cannot_be_read_says_why(tmp_path):
    (tmp_path / "latin.csv").write_bytes("composite,mask\ncafé.jpg,m.png\n".encode("latin-1"))
    with pytest.raises(Exception, match=r"latin.csv: not UTF-8 text \(invalid continuation byte at byte 18\); "
                       "save it as UTF-8 CSV"):
        csv_jobs(tmp_path / "latin.csv", tmp_path / "out")
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(Exception, match=r"folder.csv: cannot read \(Is a directory\)"):
        csv_jobs(tmp_path / "folder.csv", tmp_path / "out")


@pytest.mark.parametrize("ext", [".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"])
def test_a_mask_of_any_image_type_is_found(tmp_path, ext):
    mask = picture(tmp_path / "masks" / f"x{ext}", mask=True)
    assert find_mask(tmp_path / "x.jpg", tmp_path / "masks") == mask


def test_folder_listing_skips_hidden_files_and_reads_past_an_output_folder_inside(tmp_path):
    src, masks = tmp_path / "in", tmp_path / "masks"
    for name in ("a", "c"):
        picture(src / f"{name}.jpg"), picture(masks / f"{name}.png", mask=True)
    picture(src / ".hidden.jpg")
    picture(src / "b_out" / "old.jpg")  # an earlier run's output, sorted between the inputs
    jobs = folder_jobs(src, masks, src / "b_out")
    assert [j.composite.name for j in jobs] == ["a.jpg", "c.jpg"]
    with pytest.raises(Exception, match=f"{tmp_path / 'nomasks'}: mask folder not found"):
        folder_jobs(src, tmp_path / "nomasks", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="empty: no images found"):
        folder_jobs(tmp_path / "empty", masks, tmp_path / "out")


def test_csv_reads_past_blank_lines_and_takes_sample_dirs_and_urls(tmp_path):
    pytest.importorskip("upath", reason="universal-pathlib (the 'urls' extra) is not installed")
    (tmp_path / "list.csv").write_text("composite,mask,sample_dir\n\na.jpg,a.png,s1\n\n\nb.jpg,b.png,\n"
                                       "memory:///x/c.jpg,memory:///x/c.png,\n")
    jobs = csv_jobs(tmp_path / "list.csv", tmp_path / "out")
    assert [(j.composite, j.mask) for j in jobs[:2]] == [(tmp_path / "s1" / "a.jpg", tmp_path / "s1" / "a.png"),
                                                        (tmp_path / "b.jpg", tmp_path / "b.png")]
    url = jobs[2]  # a URL is read through its filesystem, not taken from the CSV's folder
    assert [(str(p).split(":")[0], p.name) for p in (url.composite, url.mask)] == [("memory", "c.jpg"),
                                                                                   ("memory", "c.png")]


def test_csv_rows_that_cannot_be_jobs_name_their_composite_and_line(tmp_path):
    (tmp_path / "list.csv").write_text("composite,mask,output\na.jpg,a.png,../up.png\nb.jpg,,b.png\n")
    outside, missing = csv_jobs(tmp_path / "list.csv", tmp_path / "out")
    assert outside.composite == tmp_path / "a.jpg" and outside.mask == tmp_path / "a.png"
    assert outside.error.startswith("its output '../up.png' is outside")
    assert str(missing.composite).endswith("list.csv:3") and missing.error == "no mask in this row"
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(Exception, match="empty.csv: needs a header with columns composite,mask"):
        csv_jobs(tmp_path / "empty.csv", tmp_path / "out")


def test_a_failed_row_does_not_end_the_plans_checks(tmp_path):
    """A job that failed already is skipped by the checks, and the checks go on to the jobs after it."""
    a = picture(tmp_path / "a.jpg")
    m = picture(tmp_path / "m.png", mask=True)
    jobs = [Job(tmp_path / "list.csv:2", None, tmp_path / "list.csv:2", "no mask in this row"),
            Job(a, m, m)]
    with pytest.raises(PlanError, match="refusing to write over the mask "):
        check_plan(jobs)
    with pytest.raises(PlanError, match="refusing to write over the composite "):
        check_plan([jobs[0], Job(a, m, a)])


def test_stale_parts_are_removed_in_every_output_folder_and_counted(tmp_path):
    first, second = tmp_path / "missing", tmp_path / "there"
    second.mkdir()
    (second / ".c.jpg.k3x9.part").write_bytes(b"half")
    (second / ".d.jpg.a1b2.part").write_bytes(b"half")
    (second / ".other.jpg.zz.part").write_bytes(b"someone else's")
    jobs = [Job(tmp_path / "a.jpg", None, first / "a.jpg"), Job(tmp_path / "c.jpg", None, second / "c.jpg"),
            Job(tmp_path / "d.jpg", None, second / "d.jpg")]
    assert remove_stale_parts(jobs) == 2
    assert [p.name for p in second.iterdir()] == [".other.jpg.zz.part"]


def test_nested_new_output_folders_are_made(tmp_path):
    job = Job(tmp_path / "a.jpg", None, tmp_path / "new" / "deeper" / "a.jpg")
    check_writable([job])
    assert (tmp_path / "new" / "deeper").is_dir() and not list((tmp_path / "new" / "deeper").iterdir())
