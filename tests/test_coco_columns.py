"""The whole-list checks of data/coco_columns.py agree with the per-entry checks of data/coco.py, which word the
problems: a list passes them exactly when the per-entry code finds nothing in it."""
import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest

from data import build_dataset
from data.coco import (
    REQUIRED_KEYS, ImageFiles, annotation_problems, entry_problems, image_entry_problem, shared_file_problems,
)
from data.coco_columns import (
    annotations_are_well_formed, distinct_plain_names, entries_are_well_formed, plain_images,
)
from tests.test_data_coco import TRICKY_ANNOTATIONS, TRICKY_IMAGES, coco_json, write_coco

os_scandir = os.scandir

pytestmark = pytest.mark.filterwarnings("ignore::data.errors.DataWarning")

NAN, INF = float("nan"), float("inf")
LABEL_OF = {5: 0, 1: 1, 90: 2}


def tricky_json() -> dict:
    return copy.deepcopy(coco_json(TRICKY_ANNOTATIONS, TRICKY_IMAGES))


def test_a_clean_json_is_built_without_the_per_entry_checks(tmp_path, monkeypatch):
    images = [dict(info, height=int(info["height"])) for info in TRICKY_IMAGES]  # cv2 writes the images
    path = write_coco(tmp_path, "train2017", coco_json(TRICKY_ANNOTATIONS, images))
    path.write_text(json.dumps(tricky_json()))

    def per_entry(*args):
        raise AssertionError("a per-entry check ran on a clean json")

    for name in ("entry_problems", "annotation_problems", "image_entry_problem", "shared_file_problems"):
        monkeypatch.setattr(f"data.coco.{name}", per_entry)
    assert build_dataset("coco", "train", 32, data_root=str(tmp_path)).image_ids == [42, 5]


def test_file_names_in_sub_folders_are_found_by_listing_each_sub_folder_once(tmp_path, monkeypatch):
    """Names such as "train/a.jpg" (custom datasets) are found in one listing per sub-folder the json names, not by
    a ``stat`` per image: neither the per-entry checks nor a file-type check runs, and the paths are the same."""
    images = [dict(info, height=int(info["height"])) for info in TRICKY_IMAGES]
    for info, sub in zip(images, ["train", "train", "train/deep", "other"]):
        info["file_name"] = f"{sub}/{info['file_name']}"
    for sub in ("train/deep", "other"):
        (tmp_path / "train2017" / sub).mkdir(parents=True)
    path = write_coco(tmp_path, "train2017", coco_json(TRICKY_ANNOTATIONS, images))
    data = tricky_json()
    data["images"] = [dict(info, file_name=new["file_name"]) for info, new in zip(data["images"], images)]
    path.write_text(json.dumps(data))
    (tmp_path / "train2017" / "unnamed").mkdir()
    listed = []
    monkeypatch.setattr("data.coco_columns.os.scandir", lambda folder: listed.append(str(folder)) or os_scandir(folder))

    def per_entry(*args):
        raise AssertionError("a per-entry check ran on a clean json")

    for name in ("entry_problems", "annotation_problems", "image_entry_problem", "shared_file_problems",
                 "file_type_problem"):
        monkeypatch.setattr(f"data.coco.{name}", per_entry)
    dataset = build_dataset("coco", "train", 32, data_root=str(tmp_path))
    assert dataset.image_ids == [42, 5]
    folder = tmp_path / "train2017"
    assert sorted(listed) == sorted(str(folder / sub).rstrip("/.") for sub in (".", "train", "train/deep", "other"))
    paths = [str(folder / "train" / name) for name in ("b.jpg", "a.jpg")]
    assert [str(p) for p in dataset.annotations.image_paths] == paths


@pytest.mark.parametrize("list_name, position, key, value", [
    ("images", 0, "id", True), ("images", 1, "id", 5.0), ("images", 2, "id", "17"), ("images", 3, "id", 2**63),
    ("images", 3, "id", -(2**63) - 1), ("images", 3, "id", None), ("images", 1, "id", 42),
    ("annotations", 0, "id", False), ("annotations", 2, "image_id", 5.5), ("annotations", 3, "category_id", [1]),
    ("annotations", 4, "id", 3), ("annotations", 5, "bbox", None), ("categories", 0, "name", ""),
    ("categories", 1, "name", " \t"), ("categories", 2, "name", 7), ("categories", 2, "id", 5),
    ("images", 3, "id", -(2**63)), ("annotations", 1, "id", 2**63 - 1), ("annotations", 0, "bbox", "any"),
])  # fmt: skip
def test_entries_pass_the_whole_list_check_exactly_when_the_per_entry_check_finds_nothing(
    list_name, position, key, value
):
    dataset = tricky_json()
    assert entries_are_well_formed(dataset, REQUIRED_KEYS) and entry_problems(dataset) == []
    dataset[list_name][position][key] = value
    assert entries_are_well_formed(dataset, REQUIRED_KEYS) == (entry_problems(dataset) == [])


@pytest.mark.parametrize("list_name, change", [
    ("images", lambda entries: entries.append([1])), ("annotations", lambda entries: entries.append(None)),
    ("annotations", lambda entries: entries[2].pop("bbox")), ("categories", lambda entries: entries[0].pop("name")),
    ("images", lambda entries: entries.clear()), ("annotations", lambda entries: entries.clear()),
])  # fmt: skip
def test_entries_that_are_no_objects_or_lack_a_key_fail_the_whole_list_check(list_name, change):
    dataset = tricky_json()
    change(dataset[list_name])
    assert entries_are_well_formed(dataset, REQUIRED_KEYS) == (entry_problems(dataset) == [])


@pytest.mark.parametrize("key, value", [
    ("category_id", 2), ("category_id", 1), ("image_id", 6), ("image_id", 17),
    ("bbox", [1, 2, 3]), ("bbox", [1, 2, 3, 4, 5]), ("bbox", "1 2 3 4"), ("bbox", [1, 2, 3, "4"]),
    ("bbox", [1, 2, True, 4]), ("bbox", [1, NAN, 3, 4]), ("bbox", [1, 2, INF, 4]), ("bbox", [1, 2, 3, 10**400]),
    ("bbox", [1, 2, 3, 2**31 - 1]), ("bbox", [1, 2, 3, 2**31]), ("bbox", [-(2**31) + 1.0, 2, 3, 4]),
    ("bbox", [-2147483648.0, 2, 3, 4]), ("bbox", [[1, 2, 3, 4]]), ("bbox", {"x": 1}), ("bbox", [1, None, 3, 4]),
    ("area", None), ("area", "big"), ("area", NAN), ("area", -INF), ("area", True), ("area", 10**400), ("area", -3),
    ("area", [1]), ("iscrowd", None), ("iscrowd", 2), ("iscrowd", 0.5), ("iscrowd", 1.0), ("iscrowd", -0.0),
    ("iscrowd", False), ("iscrowd", "0"), ("iscrowd", NAN), ("iscrowd", [0]), ("iscrowd", {}),
])  # fmt: skip
def test_annotations_pass_the_whole_list_check_exactly_when_the_per_entry_check_finds_nothing(key, value):
    dataset = tricky_json()
    images = {info["id"]: info for info in dataset["images"]}
    annotations = dataset["annotations"]
    assert annotations_are_well_formed(annotations, LABEL_OF, images)
    annotations[6][key] = value
    clean = all(annotation_problems(annotation, LABEL_OF, images) == [] for annotation in annotations)
    assert annotations_are_well_formed(annotations, LABEL_OF, images) == clean


@pytest.mark.parametrize("key, value, plain", [
    ("height", 40, True), ("height", 40.0, True), ("height", 1, True), ("height", 2**31 - 1, True),
    ("height", 0, False), ("height", -40, False), ("height", 40.5, False), ("height", 0.5, False),
    ("height", True, False), ("height", "40", False), ("height", None, False), ("height", NAN, False),
    ("height", INF, False), ("height", 2**31, False), ("height", 10**400, False), ("width", [40], False),
    ("width", 1e10, False), ("file_name", "x.jpg", False), ("file_name", "sub/e.jpg", True),
    ("file_name", "sub/deep/f.jpg", True), ("file_name", "sub/x.jpg", False), ("file_name", "sub/deep", False),
    ("file_name", "sub/link.jpg", False), ("file_name", "linked/e.jpg", False), ("file_name", "sub//e.jpg", False),
    ("file_name", "sub/./e.jpg", False), ("file_name", "sub/../a.jpg", False), ("file_name", "./sub/e.jpg", False),
    ("file_name", "/sub/e.jpg", False), ("file_name", "Sub/e.jpg", False), ("file_name", "sub/", False),
    ("file_name", "a.jpg/e.jpg", False), ("file_name", "sub\\e.jpg", False),
    ("file_name", "link.jpg", False), ("file_name", "folder", False), ("file_name", " ", False),
    ("file_name", 5, False), ("file_name", ["a.jpg"], False), ("file_name", None, False), ("file_name", "", False),
    ("file_name", "a\x00.jpg", False), ("file_name", "\ud800.jpg", False), ("file_name", "./b.jpg", False),
])  # fmt: skip
def test_an_image_entry_is_plain_only_when_the_per_entry_check_finds_nothing(tmp_path, key, value, plain):
    """A plain entry (a whole-number size and a file listed in the image folder) has no problem; the others are
    left to the per-entry check: problems, and files found otherwise (a link, a symlinked folder, another letter
    case, a name with ``..`` or ``//``). Files of a sub-folder the json names are listed too."""
    folder = tmp_path / "images"
    (folder / "sub" / "deep").mkdir(parents=True)
    (folder / "folder").mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "sub/e.jpg", "sub/deep/f.jpg", " "):
        (folder / name).write_bytes(b"\xff\xd8")
    os.symlink(folder / "a.jpg", folder / "link.jpg")
    os.symlink(folder / "sub" / "e.jpg", folder / "sub" / "link.jpg")
    os.symlink(folder / "sub", folder / "linked")
    images = tricky_json()["images"]
    files = ImageFiles(folder)
    assert plain_images(images, files.regular_files([value])).tolist() == [True] * 4
    images[3][key] = value
    flags = plain_images(images, files.regular_files())
    assert flags.tolist() == [True] * 3 + [plain]
    assert not plain or image_entry_problem(images[3], files, tmp_path / "x.json") is None
    assert distinct_plain_names(images, flags) == plain


def test_a_file_name_listed_twice_is_left_to_the_shared_files_check(tmp_path):
    images = tricky_json()["images"]
    folder = tmp_path / "images"
    folder.mkdir()
    for info in images:
        (folder / info["file_name"]).write_bytes(b"")
    images[2]["file_name"] = "a.jpg"
    files = ImageFiles(folder)
    flags = plain_images(images, files.regular_files())
    assert flags.all() and not distinct_plain_names(images, flags)
    assert len(shared_file_problems(images, files, tmp_path / "x.json", training=False)) == 1
    assert ImageFiles(tmp_path / "missing").regular_files() == set()
    assert np.array_equal(plain_images([], set()), np.zeros(0, bool))


@pytest.mark.parametrize("folder", ["images", ".", "images/", "./images/sub/.."])
def test_image_paths_joined_as_text_are_the_paths_as_path_objects_print_them(tmp_path, monkeypatch, folder):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images" / "sub").mkdir(parents=True)
    for name in ("a.jpg", "B.JPG", "sub/c.jpg", " x.jpg"):
        (tmp_path / "images" / name).write_bytes(b"")
    files, plain = ImageFiles(Path(folder)), ImageFiles(Path(folder))
    names = ["a.jpg", "b.jpg", "sub/c.jpg", "sub//c.jpg", "missing.jpg", " x.jpg"]
    if folder == ".":
        (tmp_path / "top.jpg").write_bytes(b"")
        names = [f"images/{name}" for name in names] + ["images", "top.jpg"]
    files.regular_files(names)  # listed: a name of the folder or of a sub-folder named is then joined as text
    assert {"a.jpg", "sub/c.jpg"} <= {name.removeprefix("images/") for name in files.regular_files()}
    assert [files.path_text(name) for name in names] == [str(plain.path(name)) for name in names]
