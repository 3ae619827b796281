"""utils.files: a refused write names its file; a replaced file is the old one or the new one, whole."""
import errno
import os

import numpy as np
import pytest

from utils import files
from utils.files import append_text, json_safe, naming_file, replace_text, write_text

needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (always full)")


@needs_dev_full
@pytest.mark.parametrize("write", [write_text, append_text])
def test_a_write_refused_by_a_full_disk_names_the_file(write, tmp_path):
    path = tmp_path / "results.txt"
    path.symlink_to("/dev/full")
    with pytest.raises(OSError) as raised:
        write(path, "x" * 100_000)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path)
    assert str(raised.value) == f"[Errno {errno.ENOSPC}] No space left on device: '{path}'"


def test_an_error_that_names_its_file_already_is_left_as_it_is(tmp_path):
    with pytest.raises(OSError) as raised, naming_file(tmp_path / "other"):
        open(tmp_path / "missing" / "file.txt")
    assert raised.value.filename == str(tmp_path / "missing" / "file.txt")


def test_write_and_append_keep_utf8_text_and_line_endings(tmp_path):
    path = tmp_path / "a.csv"
    write_text(path, "image,é\r\n")
    append_text(path, "2007_000027,ü\r\n")
    assert path.read_bytes() == "image,é\r\n2007_000027,ü\r\n".encode()


def test_a_refused_replace_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "train.csv"
    path.write_text("old\n")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full_disk)
    with pytest.raises(OSError) as raised:
        replace_text(path, "new\n")
    assert raised.value.filename == str(path)
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["train.csv"]
    monkeypatch.undo()
    replace_text(path, "new\n")
    assert path.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["train.csv"]


def test_a_refused_rename_names_the_file_not_the_temporary_one(tmp_path):
    path = tmp_path / "train.csv"
    path.mkdir()  # a folder in the way: the rename onto it is refused
    with pytest.raises(OSError) as raised:
        replace_text(path, "new\n")
    assert raised.value.filename == str(path) and raised.value.errno == errno.EISDIR
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.csv"]


def test_json_safe_makes_nan_and_inf_null_at_any_depth():
    value = {"mAP": float("nan"), 3: [1.5, float("inf"), (float("-inf"), "x")], "ok": {"n": 2, "f": 0.25}}
    assert json_safe(value) == {"mAP": None, "3": [1.5, None, [None, "x"]], "ok": {"n": 2, "f": 0.25}}


def test_arrays_are_written_as_an_npz_that_loads_without_pickle_and_object_arrays_are_refused(tmp_path):
    path = tmp_path / "curves.npz"
    files.write_arrays(path, {"recall": np.array([0.5, 1.0]), "labels": np.array(["all", "small"])})
    with np.load(path, allow_pickle=False) as saved:
        assert saved["recall"].tolist() == [0.5, 1.0] and saved["labels"].tolist() == ["all", "small"]
    with pytest.raises(TypeError, match=r"other\.npz: names would need pickle to load"):
        files.write_arrays(tmp_path / "other.npz", {"names": np.array(["a", None], dtype=object)})
    assert not (tmp_path / "other.npz").exists()
