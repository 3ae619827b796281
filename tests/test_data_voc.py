"""VOC-layout datasets: the synthetic shapes round trip, the VOCdevkit splits, custom folders and bad annotations."""
import argparse
import os
import re
import shutil
import warnings
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from data import (
    DEFAULT_ROOTS, VOC_CLASSES, DataError, DatasetNotFoundError, DataWarning, build_dataset, parse_class_list,
)
from data.dataset import DEGENERATE_BOX_DROPPED, IMAGE_EXTENSIONS, read_image
from data.shapes import SHAPES_CLASSES, ensure_shapes_dataset
from data.voc import SWAPPED_BOX_DROPPED, FileFinder, from_devkit_pixels, read_image_list
from data.class_list import MAX_CLASS_NAME_BYTES, checked_recorded_names, class_list_file
from data.voc_eval import evaluate_voc, evaluate_voc_with_curves, write_voc_pr_curves, write_voc_results
from utils.run_data import absolute_data_paths


def voc_xml(width: int, height: int, objects: list[tuple[str, tuple, int]], size: bool = True) -> str:
    size_xml = f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>" if size else ""
    body = "".join(
        f"<object><name>{name}</name><difficult>{difficult}</difficult>"
        f"<bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin>"
        f"<xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object>"
        for name, box, difficult in objects
    )
    return f"<annotation><filename>x.jpg</filename>{size_xml}{body}</annotation>"


def write_voc_folder(root: Path, samples: dict, lists: dict[str, list[str]], size: tuple[int, int] = (48, 64)) -> Path:
    """VOC layout under ``root``. ``samples``: id -> list of (name, (x1, y1, x2, y2), difficult) or a raw XML string.
    Images are ``size`` (H, W) JPEGs whose pixels depend on the id."""
    for part in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / part).mkdir(parents=True, exist_ok=True)
    for number, (image_id, objects) in enumerate(samples.items()):
        image = np.full((*size, 3), 10 * number % 256, np.uint8)
        cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), image)
        xml = objects if isinstance(objects, str) else voc_xml(size[1], size[0], objects)
        (root / "Annotations" / f"{image_id}.xml").write_text(xml)
    for name, ids in lists.items():
        (root / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    return ensure_shapes_dataset(tmp_path_factory.mktemp("shapes") / "shapes", seed=0, num_trainval=12, num_test=4)


@pytest.mark.parametrize("split, list_name", [("train", "trainval"), ("test", "test")])
def test_shapes_round_trip_matches_the_xml(shapes_root, split, list_name):
    dataset = build_dataset("voc", split, 64, data_root=str(shapes_root), classes=list(SHAPES_CLASSES), augment=False)
    ids = (shapes_root / "ImageSets/Main" / f"{list_name}.txt").read_text().split()
    assert dataset.image_ids == ids and dataset.class_names == list(SHAPES_CLASSES) and dataset.kind == "voc"
    ground_truth = dataset.ground_truth()
    for index, image_id in enumerate(ids):
        root = ET.parse(shapes_root / "Annotations" / f"{image_id}.xml").getroot()
        objects = root.findall("object")
        boxes = [[float(o.find("bndbox").findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")] for o in objects]
        labels = [SHAPES_CLASSES.index(o.findtext("name")) for o in objects]
        difficult = [o.findtext("difficult") == "1" for o in objects]
        height, width = cv2.imread(str(shapes_root / "JPEGImages" / f"{image_id}.jpg")).shape[:2]
        assert dataset.image_size(index) == (height, width)
        np.testing.assert_array_equal(ground_truth[index]["boxes"], np.array(boxes).reshape(-1, 4))
        np.testing.assert_array_equal(ground_truth[index]["labels"], labels)
        np.testing.assert_array_equal(ground_truth[index]["difficult"], difficult)
        image, target, item_index = dataset[index]
        assert image.shape == (3, 64, 64) and item_index == index
        continuous = np.array(boxes).reshape(-1, 4) - [1, 1, 0, 0]  # XML 1-based inclusive -> 0-based continuous
        expected = continuous / [width, height, width, height]
        np.testing.assert_allclose(target[:, :4].numpy(), expected, rtol=1e-6)
        np.testing.assert_array_equal(target[:, 4].numpy(), labels)


def test_shapes_has_an_empty_image_with_a_0x5_target(shapes_root):
    dataset = build_dataset("voc", "train", 64, data_root=str(shapes_root), classes=list(SHAPES_CLASSES))
    empty = [i for i, gt in enumerate(dataset.ground_truth()) if len(gt["labels"]) == 0]
    assert empty, "the shapes generator promises at least one empty image per split"
    _, target, _ = dataset[empty[0]]
    assert target.shape == (0, 5) and target.dtype.is_floating_point


def test_build_dataset_passes_the_expand_probability_to_the_training_transform(shapes_root):
    def transform(**options):
        return build_dataset("voc", "train", 64, data_root=str(shapes_root), classes=list(SHAPES_CLASSES),
                             **options).transform
    assert transform().expand_probability == 0.6  # the paper's
    assert transform(expand_probability=0.0).expand_probability == 0.0


def test_voc_devkit_train_is_2007_plus_2012_trainval_and_test_is_2007_test(tmp_path):
    people = [("Person", (2, 3, 30, 40), 0), ("dog", (10, 10, 20, 20), 1)]
    write_voc_folder(tmp_path / "VOC2007", {"000001": people, "000002": [("tvmonitor", (1, 1, 64, 48), 0)]},
                     {"trainval": ["000001"], "test": ["000002"]})
    write_voc_folder(tmp_path / "VOC2012", {"2008_000001": [("aeroplane", (5, 5, 9, 9), 0)]},
                     {"trainval": ["2008_000001"]})
    train = build_dataset("VOC", "train", 64, data_root=str(tmp_path))
    assert (train.image_ids == ["000001", "2008_000001"] and train.class_names == list(VOC_CLASSES)
            and train.num_classes == 20)
    first = train.ground_truth()[0]
    np.testing.assert_array_equal(first["labels"], [14, 11])  # person, dog (names are lowercased)
    np.testing.assert_array_equal(first["difficult"], [False, True])
    _, target, _ = train[0]
    assert target.shape == (2, 5)  # difficult objects are training targets
    test = build_dataset("voc", "test", 64, data_root=str(tmp_path))
    assert test.image_ids == ["000002"] and test.ground_truth()[0]["labels"].tolist() == [19]


def test_missing_voc2012_names_its_download_script(tmp_path):
    write_voc_folder(tmp_path / "VOC2007", {"1": [], "2": []}, {"trainval": ["1"], "test": ["2"]})
    with pytest.raises(DatasetNotFoundError,
                       match=r"VOC2012 not found: download it with `bash data/scripts/VOC2012\.sh DIR` \(it writes "
                             r"DIR/VOCdevkit, the --data_root to pass then\)"):
        build_dataset("voc", "train", 64, data_root=str(tmp_path))
    assert len(build_dataset("voc", "test", 64, data_root=str(tmp_path))) == 1


@pytest.mark.parametrize("nested", [True, False])
def test_a_vocdevkit_one_level_off_names_the_folder_to_pass(tmp_path, nested):
    """The trainval tar extracted inside VOCdevkit/ (VOCdevkit/VOCdevkit/VOC2007), or --data_root the folder above
    VOCdevkit: the years are one level deeper, which the error says instead of asking for a download."""
    root = tmp_path / "VOCdevkit" if nested else tmp_path
    for year in ("VOC2007", "VOC2012"):
        write_voc_folder(root / "VOCdevkit" / year, {"1": [], "2": []}, {"trainval": ["1"], "test": ["2"]})
    for split in ("train", "test"):
        with pytest.raises(DatasetNotFoundError) as error:
            build_dataset("voc", split, 64, data_root=str(root))
        assert str(error.value).startswith(f"{root}/VOC2007 not found: ")
        assert str(error.value).endswith(
            f"; {root}/VOCdevkit/VOC2007 is there, one level deeper: pass --data_root {root}/VOCdevkit")


def test_missing_voc2012_of_a_given_vocdevkit_names_the_script_target_and_voc2007_alone(tmp_path):
    """A --data_root /data/VOCdevkit holding VOC2007 alone: the script downloads there when given /data, and VOC2007
    alone is a VOC-layout folder that trains on its own trainval."""
    root = tmp_path / "my data" / "VOCdevkit"
    write_voc_folder(root / "VOC2007", {"1": [], "2": []}, {"trainval": ["1"], "test": ["2"]})
    with pytest.raises(DatasetNotFoundError) as error:
        build_dataset("voc", "train", 64, data_root=str(root))
    assert str(error.value) == (
        f"{root}/VOC2012 not found: download it with `bash data/scripts/VOC2012.sh '{root.parent}'` (or pass "
        f"--data_root a VOCdevkit or VOC-layout folder); to train on VOC2007 alone: --data_root {root}/VOC2007")
    assert len(build_dataset("voc", "train", 64, data_root=str(root / "VOC2007"))) == 1


@pytest.mark.parametrize("on_disk, given", [
    ("donne\u0301es/VOC", "donn\u00e9es/VOC"),  # copied from macOS (decomposed accents), typed composed
    ("Data/voc", "data/VOC"),
])
def test_a_missing_data_root_names_the_folder_spelt_otherwise(tmp_path, on_disk, given):
    """A --data_root whose folder is there under its name in another Unicode form or letter case: the error said only
    'not found' beside a folder that `ls` shows with the same name."""
    write_voc_folder(tmp_path / on_disk, {"a": [], "b": []}, {"trainval": ["a"], "test": ["b"]})
    with pytest.raises(DatasetNotFoundError) as error:
        build_dataset("custom", "train", 64, data_root=str(tmp_path / given), classes=["cat"])
    assert str(error.value) == (
        f"--data_root {tmp_path / given} not found (a VOC-layout or COCO-layout folder); {tmp_path / on_disk} is "
        "there, its name spelt otherwise (another letter case, or accents in another Unicode form, as macOS writes "
        f"them, which print alike): pass --data_root {tmp_path / on_disk} as it is spelt there (the shell's tab "
        "completion writes it so), or rename the folder")


def test_the_download_command_works_from_the_folder_main_py_runs_in(tmp_path, monkeypatch):
    """python /path/to/repo/main.py run from another folder: the error gave `bash data/scripts/VOC2012.sh ...`, a
    script that is not there from that folder; it gives the script's absolute path there (data/scripts/... from the
    repository)."""
    root = tmp_path / "my data" / "VOCdevkit"
    write_voc_folder(root / "VOC2007", {"1": [], "2": []}, {"trainval": ["1"], "test": ["2"]})
    monkeypatch.chdir(tmp_path)
    script = Path(__file__).resolve().parents[1] / "data" / "scripts" / "VOC2012.sh"
    with pytest.raises(DatasetNotFoundError) as error:
        build_dataset("voc", "train", 64, data_root=str(root))
    assert str(error.value).startswith(f"{root}/VOC2012 not found: download it with `bash {script} '{root.parent}'` ")


def test_missing_voc2007_test_list_names_the_test_tar_and_the_script_target(tmp_path):
    """VOCtest_06-Nov-2007.tar not extracted (or extracted elsewhere): the test split names the one script to re-run,
    with the folder that holds this VOCdevkit, not VOC2012.sh, which has no test set."""
    root = tmp_path / "VOCdevkit"
    for year in ("VOC2007", "VOC2012"):
        write_voc_folder(root / year, {"1": [], "2": []}, {"trainval": ["1"]})
    assert len(build_dataset("voc", "train", 64, data_root=str(root))) == 2
    with pytest.raises(DatasetNotFoundError) as error:
        build_dataset("voc", "test", 64, data_root=str(root))
    assert str(error.value) == (
        f"{root}/VOC2007/ImageSets/Main/test.txt not found: re-run `bash data/scripts/VOC2007.sh {tmp_path}` "
        f"(VOC2007's test set is VOCtest_06-Nov-2007.tar, extracted into {tmp_path})")


@pytest.mark.parametrize("dataset, linked", [
    ("voc", "VOCdevkit"), ("voc", "VOCdevkit/VOC2012"), ("voc", "VOCdevkit/VOC2007/JPEGImages"),
    ("coco", "coco2017"), ("coco", "coco2017/train2017"), ("coco", "coco2017/annotations/instances_train2017.json"),
    ("custom", "coco2017"),
])
def test_a_dataset_folder_linked_to_a_missing_target_is_named_a_broken_link(tmp_path, dataset, linked):
    """datasets/ folders symbolically linked to a drive that is not mounted: the error names the link and its target
    instead of asking for a download of what is there once the drive is."""
    for year in ("VOC2007", "VOC2012"):
        write_voc_folder(tmp_path / "VOCdevkit" / year, {"1": [], "2": []}, {"trainval": ["1"], "test": ["2"]})
    (tmp_path / "coco2017" / "annotations").mkdir(parents=True)
    (tmp_path / "coco2017" / "train2017").mkdir()
    (tmp_path / "coco2017" / "annotations" / "instances_train2017.json").write_text(
        '{"images": [], "annotations": [], "categories": [{"id": 1, "name": "cat"}]}')
    link = tmp_path / linked
    (shutil.rmtree if link.is_dir() else Path.unlink)(link)
    link.symlink_to(tmp_path / "unmounted" / link.name)
    root = tmp_path / linked.split("/")[0]
    with pytest.raises(DatasetNotFoundError) as error:
        build_dataset(dataset, "train", 64, data_root=str(root))
    assert str(error.value) == (
        f"{link} is a broken symbolic link (to {tmp_path}/unmounted/{link.name}, which does not exist): mount or "
        "fetch its target, or replace the link with the data itself")


def test_a_dataset_folder_linked_in_a_loop_is_named_a_loop(tmp_path):
    """Two links to each other (a link made in the wrong folder, relative): the error said the first's target 'does not
    exist', when it does, as a link back to the first."""
    (tmp_path / "VOCdevkit").symlink_to("data")
    (tmp_path / "data").symlink_to("VOCdevkit")
    with pytest.raises(DatasetNotFoundError) as error:
        build_dataset("voc", "train", 64, data_root=str(tmp_path / "VOCdevkit"))
    assert str(error.value) == (
        f"{tmp_path}/VOCdevkit is a symbolic link in a loop (to {tmp_path}/data, a link that leads back to it, so no "
        "folder is ever reached): point it at the data folder itself")


def test_voc2007_test_tar_extracted_inside_vocdevkit_names_where_it_went(tmp_path):
    """VOCtest_06-Nov-2007.tar extracted into VOCdevkit/ (it holds VOCdevkit/VOC2007/...): the test list is at
    VOCdevkit/VOCdevkit/VOC2007, which the test split's error names, with the move that fixes it."""
    root = tmp_path / "VOCdevkit"
    for year in ("VOC2007", "VOC2012"):
        write_voc_folder(root / year, {"1": []}, {"trainval": ["1"]})
    write_voc_folder(root / "VOCdevkit" / "VOC2007", {"2": []}, {"test": ["2"]})
    with pytest.raises(DatasetNotFoundError) as error:
        build_dataset("voc", "test", 64, data_root=str(root))
    assert str(error.value).endswith(
        f"; {root}/VOCdevkit/VOC2007/ImageSets/Main/test.txt is there: the test tar was extracted into {root}, a level "
        f"too deep: merge {root}/VOCdevkit/VOC2007 into {root}/VOC2007")


def rarely_trained_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "rarely trained on" in str(w.message)]


def test_a_notable_share_of_boxes_below_the_minimum_side_is_warned_once_at_loading(tmp_path):
    """Boxes whose width or height is at most 1 % of their image's are dropped from every augmented sample that no
    crop enlarges past it (facts §5 step 6, kept): 3 px in a 300 px high image (y 10..13) is trained on rarely, which
    nothing said. 1 such box of 20 (5 %) is warned at loading, naming the share and an example; 1 of 21 (4.8 %) and
    the test split (no augmentation) are not."""
    big = [("cat", (20, 20, 200, 150), 0)] * 4
    samples = {"a": [("cat", (11, 11, 60, 13), 0), *big[:3]], "b": big, "c": big, "d": big, "e": big, "t": big}
    root = write_voc_folder(tmp_path, samples, {"trainval": ["a", "b", "c", "d", "e"], "test": ["t"]},
                            size=(300, 400))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
        build_dataset("custom", "test", 64, data_root=str(root), classes=["cat"])
    assert len(dataset.annotations.boxes) == 20
    assert rarely_trained_warnings(caught) == [
        f"1 of the 20 training boxes (5.0 %) have a width or height of at most 1 % of their image's (e.g. "
        f"{root / 'Annotations/a.xml'}): the augmentation drops such a box from every sample in which a random crop "
        "does not enlarge it past that (the paper's minimum-side rule, kept as the authors wrote it), so these "
        "objects are rarely trained on and seldom detected; to learn them, cut the images into tiles in which they "
        "are larger"]
    (root / "Annotations/b.xml").write_text(voc_xml(400, 300, big + [("cat", (20, 20, 200, 150), 0)]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
    assert rarely_trained_warnings(caught) == []


def calls_recorded(monkeypatch, module, names: tuple[str, ...]) -> list[str]:
    """The list that the functions ``names`` of ``module``, wrapped for the test, append their name to when called."""
    called = []
    for name in names:
        def recorded(*args, function=getattr(module, name), name=name):
            called.append(name)
            return function(*args)

        monkeypatch.setattr(module, name, recorded)
    return called


def test_the_vocdevkit_download_hints_are_built_only_for_an_error(tmp_path, monkeypatch):
    """The hints (which list the folders to name a test tar extracted a level too deep) were built for every VOCdevkit
    split read, also one without a problem: now when an error prints them, with the same text."""
    import data

    built = calls_recorded(monkeypatch, data, ("_voc_download_hint", "_voc_missing_files_hint"))
    root = tmp_path / "VOCdevkit"
    for year in ("VOC2007", "VOC2012"):
        write_voc_folder(root / year, {"1": [], "2": []}, {"trainval": ["1"], "test": ["2"]})
    assert len(build_dataset("voc", "train", 64, data_root=str(root))) == 2
    assert len(build_dataset("voc", "test", 64, data_root=str(root))) == 1 and built == []
    (root / "VOC2007" / "ImageSets" / "Main" / "test.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"test\.txt not found: re-run `bash data/scripts/VOC2007\.sh "):
        build_dataset("voc", "test", 64, data_root=str(root))
    assert built == ["_voc_download_hint"]
    (root / "VOC2012" / "JPEGImages" / "1.jpg").unlink()
    with pytest.raises(DataError, match=r"\nfiles are missing from .*: if the extraction of a VOC tar was interrupted"):
        build_dataset("voc", "train", 64, data_root=str(root))
    assert built == ["_voc_download_hint", "_voc_missing_files_hint"]


def test_a_vocdevkit_extracted_in_part_says_how_to_extract_it_again(tmp_path):
    """A VOC tar's extraction interrupted: the images missing under --dataset voc come with the way out."""
    root = tmp_path / "VOCdevkit"
    for year in ("VOC2007", "VOC2012"):
        write_voc_folder(root / year, {"1": [], "2": []}, {"trainval": ["1"], "test": ["2"]})
    (root / "VOC2012" / "JPEGImages" / "1.jpg").unlink()
    with pytest.raises(DataError) as error:
        build_dataset("voc", "train", 64, data_root=str(root))
    assert str(error.value).splitlines()[-1] == (
        f"files are missing from {root}: if the extraction of a VOC tar was interrupted, re-run `bash "
        f"data/scripts/VOC2007.sh {tmp_path}` and `bash data/scripts/VOC2012.sh {tmp_path}` to extract it again (after "
        f"a finished one, delete {root}/VOC2007 or VOC2012 first)")


def test_dataset_custom_on_a_vocdevkit_says_to_use_dataset_voc(tmp_path):
    """--dataset custom --data_root VOCdevkit: the official layout is --dataset voc's (VOC2007+2012 trainval, VOC2007
    test), which the error says before offering one year's folder."""
    for year in ("VOC2007", "VOC2012"):
        write_voc_folder(tmp_path / year, {"1": [], "2": []}, {"trainval": ["1"], "test": ["2"]})
    with pytest.raises(DatasetNotFoundError) as error:
        build_dataset("custom", "train", 64, data_root=str(tmp_path), classes=["dog"])
    assert str(error.value).endswith(
        f"; it is a VOCdevkit (VOC2007/): read it with --dataset voc --data_root {tmp_path} (VOC2007+2012 trainval, "
        f"VOC2007 test), or one year with --dataset custom --data_root {tmp_path}/VOC2007")


@pytest.mark.parametrize("folders", [[""], ["train/", "valid/"]])
def test_xml_files_beside_their_images_say_how_to_make_the_voc_layout(tmp_path, folders):
    """LabelImg saves each image's XML beside it, and some labelling tools export VOC XML so in train/ and valid/
    folders: the error said only which layouts it reads; it now names the XML files and how to arrange them."""
    write_voc_folder(tmp_path / "voc", {"a": [("cat", (2, 2, 20, 20), 0)], "b": []}, {})
    for folder in folders:
        (tmp_path / "data" / folder).mkdir(parents=True, exist_ok=True)
        for path in [*(tmp_path / "voc/JPEGImages").iterdir(), *(tmp_path / "voc/Annotations").iterdir()]:
            shutil.copy(path, tmp_path / "data" / folder / path.name)
    with pytest.raises(DatasetNotFoundError) as error:
        build_dataset("custom", "train", 64, data_root=str(tmp_path / "data"), classes="cat")
    xmls = ", ".join(f"{folder}{name}.xml" for folder in folders for name in "ab")
    assert str(error.value).endswith(
        f"; {tmp_path / 'data'} holds VOC XML files beside their images ({xmls}): the VOC layout reads "
        "Annotations/<id>.xml and JPEGImages/<id>.jpg of one folder, with each split's ids (file names without "
        "extension) listed in ImageSets/Main/trainval.txt and test.txt: move the files there and write the lists")


def test_dataset_voc_on_a_coco_layout_folder_says_to_use_dataset_custom(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train.json").write_text("{}")
    with pytest.raises(DatasetNotFoundError) as error:
        build_dataset("voc", "train", 64, data_root=str(tmp_path))
    assert str(error.value).endswith(
        f"(or pass --data_root a VOCdevkit or VOC-layout folder); {tmp_path} is a COCO-layout folder "
        f"(annotations/instances_*.json): read it with --dataset custom"
    )


def test_custom_voc_folder_needs_classes_and_reads_a_class_file(tmp_path):
    root = write_voc_folder(tmp_path / "mine", {"a": [("cat", (1, 1, 10, 10), 0)], "b": [("Dog", (2, 2, 8, 9), 0)]},
                            {"train": ["a"], "val": ["b"]})
    with pytest.raises(DataError, match="give its class names with --classes"):
        build_dataset("custom", "train", 64, data_root=str(root))
    (tmp_path / "classes.txt").write_text("dog\ncat\n\n")
    classes = parse_class_list(str(tmp_path / "classes.txt"))
    train = build_dataset("custom", "train", 64, data_root=str(root), classes=classes)
    test = build_dataset("voc", "test", 64, data_root=str(root), classes="dog,cat")  # val.txt as there is no test.txt
    assert train.ground_truth()[0]["labels"].tolist() == [1] and test.ground_truth()[0]["labels"].tolist() == [0]


def test_folder_tested_on_val_trains_on_train_not_trainval(tmp_path):
    """VOC2012's layout: trainval = train + val and no test.txt. Testing on val must not train on val's images."""
    samples = {"a": [("cat", (1, 1, 10, 10), 0)], "b": [("cat", (2, 2, 9, 9), 0)], "c": []}
    lists = {"trainval": ["a", "b", "c"], "train": ["a", "c"], "val": ["b"]}
    for root, classes in ((write_voc_folder(tmp_path / "mine", samples, lists), ["cat"]),
                          (write_voc_folder(tmp_path / "VOC2012", samples, lists), None)):
        train = build_dataset("custom" if classes else "voc", "train", 64, data_root=str(root), classes=classes)
        test = build_dataset("custom" if classes else "voc", "test", 64, data_root=str(root), classes=classes)
        assert train.image_ids == ["a", "c"] and test.image_ids == ["b"]
        assert train.notes == [
            f"{root / 'ImageSets/Main'}: there is no test.txt, so val.txt is the test split and training reads "
            "train.txt instead of trainval.txt (which also holds the val images)"
        ]
        assert test.notes == []


def test_a_missing_list_names_a_list_written_in_another_letter_case(tmp_path):
    root = write_voc_folder(tmp_path, {"a": [], "b": []}, {"TrainVal": ["a"], "Test": ["b"]})
    lists = root / "ImageSets" / "Main"
    for split, found, expected in (("train", "TrainVal.txt", "trainval.txt"), ("test", "Test.txt", "test.txt")):
        with pytest.raises(DatasetNotFoundError) as error:
            build_dataset("custom", split, 64, data_root=str(root), classes=["cat"])
        assert str(error.value).endswith(
            f"not found: list the {split} image ids there, one per line ({lists} holds {found}: list names are "
            f"read in lower case, rename it {expected})"
        )


@pytest.mark.parametrize("folder", ["ImageSets/main", "imagesets/Main", "ImageSets/MAIN"])
def test_a_missing_list_names_a_list_folder_written_in_another_letter_case(tmp_path, folder):
    """Lists in ImageSets/main (a set copied from Windows or macOS, where letter case does not matter): the error asked
    to list the ids in ImageSets/Main/trainval.txt, without a word about the folder holding them."""
    root = write_voc_folder(tmp_path, {"a": [], "b": []}, {"trainval": ["a"], "test": ["b"]})
    (root / "ImageSets/Main").rename(root / "ImageSets/moved")
    (root / folder).parent.mkdir(exist_ok=True)
    (root / "ImageSets/moved").rename(root / folder)
    if folder.startswith("imagesets"):
        (root / "ImageSets").rmdir()
    with pytest.raises(DatasetNotFoundError) as error:
        build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
    assert str(error.value).endswith(
        f"not found: list the train image ids there, one per line ({root / folder} holds trainval.txt: folder names "
        "are read in their letter case, rename it ImageSets/Main)")


def test_folder_with_test_txt_keeps_trainval(tmp_path):
    samples = {"a": [], "b": [], "c": []}
    root = write_voc_folder(tmp_path, samples, {"trainval": ["a", "b"], "train": ["a"], "val": ["b"], "test": ["c"]})
    train = build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
    assert train.image_ids == ["a", "b"] and train.notes == []


@pytest.mark.parametrize(
    "lists, train_list, test_list",
    [
        ({"trainval": ["a", "b", "c"], "val": ["b", "c"]}, "trainval", "val"),  # no train.txt to fall back to
        ({"trainval": ["a", "b"], "test": ["b", "c"]}, "trainval", "test"),
        ({"train": ["a", "b"], "val": ["b"]}, "train", "val"),
    ],
)
def test_train_and_test_lists_sharing_an_image_are_an_error_naming_both_lists(tmp_path, lists, train_list, test_list):
    root = write_voc_folder(tmp_path, {"a": [], "b": [], "c": []}, lists)
    folder = root / "ImageSets" / "Main"
    shared = sorted(set(lists[train_list]) & set(lists[test_list]))
    expected = (f"{folder / train_list}.txt and {folder / test_list}.txt share {len(shared)} image id(s) "
                f"({', '.join(shared)}), so the model would be tested on images it trained on: remove them from "
                f"{train_list}.txt")
    for split in ("train", "test"):
        with pytest.raises(DataError) as error:
            build_dataset("custom", split, 64, data_root=str(root), classes=["cat"])
        assert str(error.value).startswith(expected)


def test_voc_devkit_sharing_an_image_between_2007_trainval_and_test_is_an_error(tmp_path):
    write_voc_folder(tmp_path / "VOC2007", {"1": [], "2": []}, {"trainval": ["1", "2"], "test": ["2"]})
    write_voc_folder(tmp_path / "VOC2012", {"2": []}, {"trainval": ["2"]})  # another folder: another image
    with pytest.raises(DataError, match=r"VOC2007/ImageSets/Main/trainval\.txt and .*VOC2007/ImageSets/Main/test\.txt "
                                        r"share 1 image id\(s\) \(2\)"):
        build_dataset("voc", "train", 64, data_root=str(tmp_path))


def test_image_extensions_match_in_any_letter_case(tmp_path):
    root = write_voc_folder(tmp_path, {"a": [("cat", (1, 1, 10, 10), 0)], "b": [], "c": []},
                            {"trainval": ["a", "b", "c"]})
    images = root / "JPEGImages"
    (images / "a.jpg").rename(images / "a.JPG")  # the XML's <filename> (x.jpg) does not name it
    cv2.imwrite(str(images / "b.Png"), np.zeros((48, 64, 3), np.uint8))
    (images / "b.jpg").unlink()
    (images / "c.jpg").unlink()
    with pytest.raises(DataError, match="1 problem") as error:
        build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
    assert f"{images / 'c'}.jpg: image file not found (listed in {root / 'ImageSets/Main/trainval.txt'}); " \
           f"tried c.jpg, x.jpg, c.jpeg, c.png, c.bmp, c.tif, c.tiff, c.webp, c.ppm, c.pgm, c.pbm in {images}, " \
           "in any letter case" in str(error.value)
    cv2.imwrite(str(images / "c.jpeg"), np.zeros((48, 64, 3), np.uint8))
    dataset = build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
    assert [dataset.image_path(i).name for i in range(3)] == ["a.JPG", "b.Png", "c.jpeg"]
    assert dataset[0][0].shape == (3, 64, 64)



def test_images_of_every_type_the_demo_reads_are_found_by_id_without_a_filename(tmp_path):
    """The demo reads .tif/.tiff/.webp/.ppm/... images, but a VOC-layout image id was looked up as .jpg, .jpeg,
    .png and .bmp only: a set converted to WebP or TIFF whose XMLs have no <filename> stopped with "image file not
    found". Every type of IMAGE_EXTENSIONS is tried, in any letter case, and its size read from the header."""
    ids = [extension[1:] for extension in IMAGE_EXTENSIONS]
    root = write_voc_folder(tmp_path, {image_id: voc_xml(64, 48, [("cat", (1, 1, 10, 10), 0)], size=False)
                                       .replace("<filename>x.jpg</filename>", "") for image_id in ids},
                            {"trainval": ids})
    images = root / "JPEGImages"
    for image_id, extension in zip(ids, IMAGE_EXTENSIONS):
        image = cv2.imread(str(images / f"{image_id}.jpg"))
        (images / f"{image_id}.jpg").unlink()
        name = f"{image_id}{extension.upper() if extension == '.webp' else extension}"
        assert cv2.imwrite(str(images / name), image[:, :, 0] if extension in (".pgm", ".pbm") else image)
    dataset = build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"], augment=False)
    assert [dataset.image_path(i).name for i in range(len(ids))] == ["jpg.jpg", "jpeg.jpeg", "png.png", "bmp.bmp",
                                                                   "tif.tif", "tiff.tiff", "webp.WEBP", "ppm.ppm",
                                                                   "pgm.pgm", "pbm.pbm"]
    for index in range(len(ids)):
        image, target, _ = dataset[index]
        assert image.shape == (3, 64, 64)
        np.testing.assert_allclose(target[:, :4], [[0, 0, 10 / 64, 10 / 48]])


def test_an_image_of_an_extension_not_tried_is_named_with_the_filename_to_write(tmp_path):
    """Images converted to a type not tried by id (Sun raster .ras, which OpenCV reads) beside XMLs naming a .jpg: the
    images are there, in an extension the loader does not try; the error names the file found and the <filename>
    that reads it (which works)."""
    root = write_voc_folder(tmp_path, {"a": [("cat", (1, 1, 10, 10), 0)]}, {"trainval": ["a"]})
    images = root / "JPEGImages"
    cv2.imwrite(str(images / "a.RAS"), cv2.imread(str(images / "a.jpg")))
    (images / "a.jpg").unlink()
    with pytest.raises(DataError, match="1 problem") as error:
        build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
    xml = root / "Annotations" / "a.xml"
    tried = ", ".join(["a.jpg", "x.jpg"] + [f"a{extension}" for extension in IMAGE_EXTENSIONS[1:]])
    assert f"tried {tried} in {images}, in any letter case; {images} holds a.RAS: write <filename>a.RAS</filename> " \
           f"in {xml}" in str(error.value)
    xml.write_text(xml.read_text().replace("<filename>x.jpg</filename>", "<filename>a.RAS</filename>"))
    dataset = build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
    assert dataset.image_path(0).name == "a.RAS" and dataset[0][0].shape == (3, 64, 64)


def test_the_other_extensions_of_missing_images_are_found_without_a_scan_of_the_folder_per_image(tmp_path,
                                                                                                 monkeypatch):
    """A folder of images all converted to a format not tried (VOC's 17k JPEGs as .avif, COCO's 118k): each missing
    image's message names its file, found in an index of the folder's listing by stem built once, not in a scan of
    the whole listing per image (quadratic: 30 s for VOC2007 test, hours for COCO train2017)."""
    names = ["a.TIF", "A.webp", "a", "a.b.png", ".a", "b.jpg", "\u00e9.png"] + [f"{i:03d}.webp" for i in range(200)]
    for name in names:
        (tmp_path / name).touch()
    (tmp_path / "a.dir").mkdir()
    finder = FileFinder(tmp_path)
    assert finder.same_stem("a") == ["A.webp", "a.TIF"] and finder.same_stem("a.b") == ["a.b.png"]
    assert finder.same_stem("e\u0301") == ["\u00e9.png"]  # the other Unicode normal form of the name
    assert finder.same_stem("x") == [] and finder.same_stem(".a") == []
    splits = []
    monkeypatch.setattr(os.path, "splitext", lambda path, split=os.path.splitext: splits.append(path) or split(path))
    assert [finder.same_stem(f"{i:03d}") for i in range(200)] == [[f"{i:03d}.webp"] for i in range(200)]
    assert len(splits) <= 2 * len(names)  # not 200 x 207


@pytest.mark.parametrize("filename", ["/home/me/data/JPEGImages/photo.jpg", "JPEGImages/photo.jpg",
                                      "C:\\data\\photo.jpg"])
def test_a_filename_with_folders_says_that_it_is_read_in_jpegimages(tmp_path, filename):
    """Some tools write the image's path in <filename>: it is read in JPEGImages, which holds the file under its base
    name; the error says what to write there, as the COCO loader does for a file_name with folders."""
    root = write_voc_folder(tmp_path, {"a": [("cat", (1, 1, 10, 10), 0)]}, {"trainval": ["a"]})
    images, xml = root / "JPEGImages", root / "Annotations" / "a.xml"
    (images / "a.jpg").rename(images / "photo.jpg")
    xml.write_text(xml.read_text().replace("<filename>x.jpg</filename>", f"<filename>{filename}</filename>"))
    with pytest.raises(DataError, match="1 problem") as error:
        build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
    assert f"in {images}, in any letter case; <filename> is read in {images}, which holds photo.jpg: write " \
           f"<filename>photo.jpg</filename> in {xml}" in str(error.value)

def test_an_image_name_in_another_unicode_normal_form_is_found(tmp_path):
    """An image copied from a macOS file system keeps a name with a combining accent (NFD) where the list and the XML
    have the composed é (NFC): the names print alike, and the image is found as one in another letter case is."""
    root = write_voc_folder(tmp_path, {"caf\u00e9": [("cat", (1, 1, 10, 10), 0)]}, {"trainval": ["caf\u00e9"]})
    images = root / "JPEGImages"
    (images / "caf\u00e9.jpg").rename(images / "CAFE\u0301.jpg")
    dataset = build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
    assert dataset.image_path(0) == images / "CAFE\u0301.jpg"


def test_an_annotation_name_in_another_letter_case_or_unicode_normal_form_is_found(tmp_path):
    """The list's id finds its XML as it finds its image: ``A.XML`` for ``a``, and ``cafe\u0301.xml`` (NFD, as a macOS
    file system keeps it) for the list's composed ``caf\u00e9``; the dataset names the file it read."""
    root = write_voc_folder(tmp_path, {"a": [("cat", (1, 1, 10, 10), 0)], "caf\u00e9": [("dog", (2, 2, 9, 9), 0)]},
                            {"trainval": ["a", "caf\u00e9"]})
    annotations = root / "Annotations"
    (annotations / "a.xml").rename(annotations / "A.XML")
    (annotations / "caf\u00e9.xml").rename(annotations / "cafe\u0301.xml")
    dataset = build_dataset("custom", "train", 64, data_root=str(root), classes=["cat", "dog"])
    assert [dataset.annotation_source(i) for i in range(2)] == [str(annotations / "A.XML"),
                                                                 str(annotations / "cafe\u0301.xml")]
    assert dataset.annotations.labels.tolist() == [0, 1]


def test_a_symlink_loop_among_the_images_is_skipped_and_a_listed_one_named_with_the_reason(tmp_path):
    root = write_voc_folder(tmp_path, {"a": [("cat", (1, 1, 10, 10), 0)], "b": [("cat", (1, 1, 10, 10), 0)]},
                            {"trainval": ["a", "b"]})
    images = root / "JPEGImages"
    (images / "a.jpg").rename(images / "a.JPG")  # found through the folder's listing, which meets the loop
    os.symlink("loop.jpg", images / "loop.jpg")
    dataset = build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
    assert [dataset.image_path(i).name for i in range(2)] == ["a.JPG", "b.jpg"]
    (images / "b.jpg").unlink()
    os.symlink("b.jpg", images / "b.jpg")
    with pytest.raises(DataError, match="1 problem") as error:
        build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
    assert str(error.value).endswith(f"{images / 'b'}.jpg: image file not found (listed in "
                                     f"{root / 'ImageSets/Main/trainval.txt'}); tried b.jpg, x.jpg, b.jpeg, b.png, "
                                     f"b.bmp, b.tif, b.tiff, b.webp, b.ppm, b.pgm, b.pbm in {images}, in any letter "
                                     "case; b.jpg cannot be read (Too many levels of symbolic links)")


def test_broken_symbolic_links_are_named_as_such_with_their_target(tmp_path):
    """A dataset under git-annex or DVC whose files were not fetched holds links to missing files: `ls` shows them, so
    "not found" alone would puzzle; the problem says the link is broken and where it points."""
    root = write_voc_folder(tmp_path, {"a": [("cat", (1, 1, 10, 10), 0)], "b": [("cat", (1, 1, 10, 10), 0)]},
                            {"trainval": ["a", "b"]})
    (root / "JPEGImages" / "a.jpg").unlink()
    os.symlink("../.git/annex/objects/a.jpg", root / "JPEGImages" / "a.jpg")
    (root / "Annotations" / "b.xml").unlink()
    os.symlink(tmp_path / "missing" / "b.xml", root / "Annotations" / "b.xml")
    with pytest.raises(DataError, match="2 problem") as error:
        build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
    assert (f"in any letter case; a.jpg is a broken symbolic link (to {root / '.git/annex/objects/a.jpg'}, which "
            "does not exist): fetch or copy its target, or replace the link with the file itself") in str(error.value)
    assert (f"{root / 'Annotations/b.xml'}: annotation file is a broken symbolic link (to "
            f"{tmp_path / 'missing/b.xml'}, which does not exist)") in str(error.value)
    with pytest.raises(DataError, match=r"a\.jpg: image file is a broken symbolic link \(to "):
        read_image(root / "JPEGImages" / "a.jpg")


def test_an_image_list_that_is_a_broken_link_is_named_as_such_not_skipped(tmp_path):
    """Under git-annex the lists are links too: trainval.txt was reported "not found" (which `ls` contradicts), or,
    with train.txt fetched, silently replaced by that smaller list."""
    root = write_voc_folder(tmp_path, {"a": [], "b": [], "c": []}, {"train": ["a"], "val": ["b"], "test": ["c"]})
    lists = root / "ImageSets" / "Main"
    os.symlink("../../.git/annex/objects/trainval.txt", lists / "trainval.txt")
    broken = (f"{lists / 'trainval.txt'}: image list file is a broken symbolic link (to "
              f"{root / '.git/annex/objects/trainval.txt'}, which does not exist): fetch or copy its target, or "
              "replace the link with the file itself")
    for split in ("train", "test"):  # the test split's lists decide which list the train split reads
        with pytest.raises(DatasetNotFoundError) as error:
            build_dataset("custom", split, 64, data_root=str(root), classes=["cat"])
        assert str(error.value) == broken
    (lists / "trainval.txt").unlink()
    (lists / "trainval.txt").mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"trainval\.txt: image list file is a folder, not a regular file"):
        read_image_list(lists / "trainval.txt", "re-run data/scripts/VOC2007.sh")  # a VOCdevkit's fixed lists


def test_a_folder_named_as_the_image_is_named_as_a_folder(tmp_path):
    root = write_voc_folder(tmp_path, {"a": [("cat", (1, 1, 10, 10), 0)]}, {"trainval": ["a"]})
    (root / "JPEGImages" / "a.jpg").unlink()
    (root / "JPEGImages" / "a.jpg").mkdir()
    with pytest.raises(DataError, match="1 problem") as error:
        build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
    assert "in any letter case; a.jpg is a folder, not a regular file: replace it with the file itself" \
        in str(error.value)


def test_default_roots_are_the_repository_datasets_folder_whatever_the_current_folder(tmp_path, monkeypatch):
    repository = Path(__file__).resolve().parents[1]
    assert DEFAULT_ROOTS == {"voc": repository / "datasets/VOCdevkit", "coco": repository / "datasets/coco2017",
                             "shapes": repository / "datasets/shapes"}
    # a decoy in the current folder's datasets/ is not read
    write_voc_folder(tmp_path / "datasets/VOCdevkit/VOC2007", {"1": []}, {"trainval": ["1"], "test": []})
    monkeypatch.chdir(tmp_path)
    if (repository / "datasets/VOCdevkit").exists():
        pytest.skip("the repository's datasets/VOCdevkit exists: the not-found message cannot be observed")
    with pytest.raises(DatasetNotFoundError, match=f"^{repository / 'datasets/VOCdevkit/VOC2007'} not found"):
        build_dataset("voc", "train", 64)


def test_unknown_class_is_an_error_naming_file_and_class(tmp_path):
    root = write_voc_folder(tmp_path, {"a": [("cat", (1, 1, 10, 10), 0), ("zebra", (2, 2, 9, 9), 0),
                                             ("zebra", (3, 3, 9, 9), 0)]}, {"trainval": ["a"]})
    with pytest.raises(DataError, match=r"a\.xml: unknown class 'zebra' \(2 objects\).*pass --skip_unknown_classes") \
            as error:
        build_dataset("voc", "train", 64, data_root=str(root), classes=["cat"])
    assert str(error.value).count("unknown class") == 1  # once per file and class
    with pytest.warns(DataWarning, match="object of an unknown class skipped: 2"):
        dataset = build_dataset("voc", "train", 64, data_root=str(root), classes=["cat"], skip_unknown_classes=True)
    assert dataset.ground_truth()[0]["labels"].tolist() == [0]


def test_unknown_class_is_named_as_the_xml_writes_it(tmp_path):
    """Names are compared in lower case; the message quotes the XML's spelling (what a user searches the file for)."""
    root = write_voc_folder(tmp_path, {"a": [("Cat", (1, 1, 10, 10), 0), ("Zebra", (2, 2, 9, 9), 0),
                                             ("ZEBRA", (3, 3, 9, 9), 0)]}, {"trainval": ["a"]})
    with pytest.raises(DataError, match=r"a\.xml: unknown class 'Zebra' \(2 objects\), compared as 'zebra' "
                                        r"\(classes: cat\)"):
        build_dataset("voc", "train", 64, data_root=str(root), classes=["cat"])



def test_an_unknown_class_among_many_classes_names_the_closest_not_every_class(tmp_path):
    """With 1,000 classes each unknown-class line listed all of them (11,000 characters a line, up to 10 lines):
    past 20 classes the line gives their count and the closest names instead."""
    classes = ["cat", "dog", *(f"class {i}" for i in range(998))]
    root = write_voc_folder(tmp_path, {"a": [("doggo", (1, 1, 10, 10), 0)], "b": [("zebra", (1, 1, 10, 10), 0)]},
                            {"trainval": ["a", "b"]})
    with pytest.raises(DataError) as error:
        build_dataset("voc", "train", 64, data_root=str(root), classes=classes)
    lines = str(error.value).splitlines()
    assert f"{root / 'Annotations/a.xml'}: unknown class 'doggo' (not among the 1000 classes; the closest: 'dog'); " \
           "add it to --classes" in lines[1]
    assert f"{root / 'Annotations/b.xml'}: unknown class 'zebra' (not among the 1000 classes: cat, dog, class 0, " \
           "class 1, ...); add it to --classes" in lines[2]
    assert max(map(len, lines)) < 300
    with pytest.raises(DataError, match=r"unknown class 'zebra' \(classes: " + ", ".join(classes[:19]) + r", doggo\)"):
        build_dataset("voc", "train", 64, data_root=str(root), classes=[*classes[:19], "doggo"])


@pytest.mark.parametrize("written, shown", [("'cat','dog'", "\"'cat'\""), ('["cat","dog"]', "'[\"cat\"'"),
                                            ("['cat', 'dog']", "\"['cat'\""), ("- cat\n- dog\n", "'- cat'")])
def test_class_names_given_in_quotes_or_as_a_list_say_so_where_cat_was_unknown_among_cat_and_dog(tmp_path, written,
                                                                                                    shown):
    """A Python, JSON or YAML list pasted into --classes (or a class file) made the names keep their quotes, so
    every object was "unknown class 'cat' (classes: 'cat', 'dog')": cat seemed listed. The error says how the name was
    written and to give the names bare."""
    root = write_voc_folder(tmp_path / "data", {"a": [("cat", (1, 1, 10, 10), 0)]}, {"trainval": ["a"]})
    if "\n" in written:
        (tmp_path / "classes.txt").write_text(written)
        written = str(tmp_path / "classes.txt")
    with pytest.raises(DataError) as error:
        build_dataset("voc", "train", 64, data_root=str(root), classes=parse_class_list(written))
    assert (f"unknown class 'cat' (classes: {', '.join(parse_class_list(written))}); --classes writes it {shown}: give "
            "the names bare, without quotes, brackets or list marks (cat,dog); add it to --classes") in str(error.value)


def test_the_closest_class_names_are_looked_for_once_per_unknown_name_not_once_per_file(tmp_path, monkeypatch):
    """Looking for the closest of 1,000 names, and for the hints, takes about 8 ms: a set of 10,000 files holding
    one misspelt class took 80 s to report it. They are looked for once per unknown name."""
    import difflib

    calls = []
    close_matches = difflib.get_close_matches
    monkeypatch.setattr(difflib, "get_close_matches", lambda *args, **kwargs: calls.append(args[0]) or
                        close_matches(*args, **kwargs))
    samples = {f"a{i}": [("dogo", (1, 1, 10, 10), 0)] for i in range(5)}
    root = write_voc_folder(tmp_path, samples, {"trainval": list(samples)})
    classes = ["cat", "dog", *(f"kind {i}" for i in range(40))]
    with pytest.raises(DataError, match="5 problem") as error:
        build_dataset("voc", "train", 64, data_root=str(root), classes=classes)
    assert calls == ["dogo"]
    # each file still gets the hint looked for once, not only the first
    assert str(error.value).splitlines()[1:] == [
        f"  - {root / 'Annotations' / name}.xml: unknown class 'dogo' (not among the 42 classes; the closest: 'dog'); "
        "add it to --classes, or pass --skip_unknown_classes to leave such objects out (counted in one warning)"
        for name in samples]


def test_class_names_written_on_one_line_of_a_class_file_are_one_class_and_the_error_says_so(tmp_path):
    """"cat dog" on one line is one class name (a name may hold a space: COCO's "traffic light"), so every cat and
    dog is unknown; the message says which class holds them and how to list them, and following it loads the set."""
    root = write_voc_folder(tmp_path, {"a": [("cat", (1, 1, 10, 10), 0), ("dog", (2, 2, 9, 9), 0)]},
                            {"trainval": ["a"]})
    class_file = tmp_path / "classes.txt"
    class_file.write_text("cat dog\n")
    with pytest.raises(DataError) as error:
        build_dataset("voc", "train", 64, data_root=str(root), classes=parse_class_list(str(class_file)))
    assert f"{root / 'Annotations/a.xml'}: unknown class 'cat' (classes: cat dog); 'cat dog' is one class name: " \
           "give one name per line of a class file (or cat,dog on the command line); add it to --classes" \
           in str(error.value)
    class_file.write_text("cat\ndog\n")
    dataset = build_dataset("voc", "train", 64, data_root=str(root), classes=parse_class_list(str(class_file)))
    assert dataset.ground_truth()[0]["labels"].tolist() == [0, 1]

def test_malformed_xml_names_file_and_line(tmp_path):
    root = write_voc_folder(tmp_path, {"a": "<annotation>\n<object><name>cat</name>\n</annotation>"},
                            {"trainval": ["a"]})
    with pytest.raises(DataError, match=r"a\.xml:3:\d+: malformed XML"):
        build_dataset("voc", "train", 64, data_root=str(root), classes=["cat"])



@pytest.mark.parametrize("content", ["", "\n\n"])
def test_an_empty_xml_says_it_is_empty_and_what_an_image_without_objects_needs(tmp_path, content):
    root = write_voc_folder(tmp_path, {"a": content}, {"trainval": ["a"]})
    with pytest.raises(DataError) as error:
        build_dataset("voc", "train", 64, data_root=str(root), classes=["cat"])
    assert f"{root / 'Annotations/a.xml'}: the file is empty, not XML (an interrupted copy or export?): write it " \
           "again (an image without objects needs <annotation> too, with its <size> and no <object>) (listed in " \
           f"{root / 'ImageSets/Main/trainval.txt'})" in str(error.value)

def test_non_numeric_box_names_the_file(tmp_path):
    root = write_voc_folder(tmp_path, {"a": [("cat", ("one", 1, 10, 10), 0)]}, {"trainval": ["a"]})
    with pytest.raises(DataError, match=r"a\.xml: object 1 <bndbox> has no numeric <xmin> \(found 'one'\)"):
        build_dataset("voc", "train", 64, data_root=str(root), classes=["cat"])


def test_list_naming_missing_files_reports_each(tmp_path):
    root = write_voc_folder(tmp_path, {"a": [("cat", (1, 1, 10, 10), 0)], "b": []}, {"trainval": ["a", "b", "ghost"]})
    (root / "JPEGImages" / "b.jpg").unlink()
    with pytest.raises(DataError, match="2 problem") as error:
        build_dataset("voc", "train", 64, data_root=str(root), classes=["cat"])
    assert "ghost.xml: annotation file not found" in str(error.value)
    assert f"{root / 'JPEGImages' / 'b'}.jpg: image file not found" in str(error.value)


def test_an_image_without_its_xml_says_that_an_image_without_objects_needs_one_too(tmp_path):
    """Annotation tools (LabelImg) save no XML for an image without boxes; the list still names the image."""
    root = write_voc_folder(tmp_path, {"a": [("cat", (1, 1, 10, 10), 0)], "b": []}, {"trainval": ["a", "b"]})
    (root / "Annotations" / "b.xml").unlink()
    with pytest.raises(DataError, match="1 problem") as error:
        build_dataset("voc", "train", 64, data_root=str(root), classes=["cat"])
    assert str(error.value).endswith(
        f"{root / 'Annotations/b.xml'}: annotation file not found (listed in {root / 'ImageSets/Main/trainval.txt'}); "
        f"its image {root / 'JPEGImages/b.jpg'} is there: an image without objects needs an XML too, with its <size> "
        "and no <object> (or leave the id out of the list)"
    )


def test_an_image_id_written_with_its_extension_gets_a_hint(tmp_path):
    """Also the XML's extension: `ls Annotations > trainval.txt` writes 000002.xml."""
    root = write_voc_folder(tmp_path, {"000001": [("cat", (1, 1, 10, 10), 0)], "000002": [("cat", (1, 1, 9, 9), 0)]},
                            {"trainval": ["000001.JPG", "000002.xml", "a.b"]})
    with pytest.raises(DataError, match="3 problem") as error:
        build_dataset("voc", "train", 64, data_root=str(root), classes=["cat"])
    listed = f"(listed in {root / 'ImageSets/Main/trainval.txt'})"
    assert (f"{root / 'Annotations/000001.JPG.xml'}: annotation file not found (image ids are file names without "
            f"extension: write 000001) {listed}\n") in str(error.value)
    assert (f"{root / 'Annotations/000002.xml.xml'}: annotation file not found (image ids are file names without "
            f"extension: write 000002) {listed}\n") in str(error.value)
    assert str(error.value).endswith(f"{root / 'Annotations/a.b.xml'}: annotation file not found {listed}")


def test_an_image_id_with_windows_backslashes_says_to_write_slashes(tmp_path):
    """A list written on Windows (os.path.join) with ids in sub-folders, `sub\\000001`: the error said only that
    Annotations/sub\\000001.xml was not found, beside Annotations/sub/000001.xml."""
    root = tmp_path
    (root / "Annotations/sub").mkdir(parents=True)
    (root / "JPEGImages/sub").mkdir(parents=True)
    write_voc_folder(root, {"sub/000001": [("cat", (1, 1, 10, 10), 0)], "a\\2": [("cat", (1, 1, 10, 10), 0)]},
                     {"trainval": ["sub\\000001", "a\\2", "sub\\none"]})
    list_file = root / "ImageSets/Main/trainval.txt"
    with pytest.raises(DataError, match="2 problem") as error:
        build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
    assert (f"{root}/Annotations/sub\\000001.xml: annotation file not found (folders in an image id are separated by "
            f"/, not \\ as in a Windows path: write sub/000001) (listed in {list_file})") in str(error.value)
    assert str(error.value).endswith(f"{root}/Annotations/sub\\none.xml: annotation file not found (listed in "
                                     f"{list_file})")  # no such file either way: no hint


def test_an_image_id_with_an_invisible_character_names_it(tmp_path):
    """Lists joined with `cat` keep each file's UTF-8 byte-order mark at the start of a line, and ids pasted from a
    web page can hold a zero-width space: the error printed `Annotations/b.xml: annotation file not found` (the
    character invisible) of a b.xml that is there."""
    samples = {name: [("cat", (1, 1, 10, 10), 0)] for name in ("a", "b", "c", "d")}
    root = write_voc_folder(tmp_path, samples, {"trainval": ["a"]})
    list_file = root / "ImageSets/Main/trainval.txt"
    list_file.write_bytes(b"\xef\xbb\xbfa\n\xef\xbb\xbfb\nc\xe2\x80\x8b\nd\x1a\n")  # BOM, BOM, zero-width space, ^Z
    with pytest.raises(DataError, match="3 problem") as error:
        build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
    for image_id, code in (("b", "U+FEFF"), ("c", "U+200B"), ("d", "U+001A")):
        written = next(line for line in list_file.read_text("utf-8-sig").splitlines() if image_id in line)
        assert (f"{root / 'Annotations' / written}.xml: annotation file not found (the image id {written!r} holds the "
                f"invisible character(s) {code}, as a byte-order mark where lists were joined, or a zero-width "
                f"space: remove them from the list) (listed in {list_file})") in str(error.value)


def test_an_image_id_with_a_zero_width_non_joiner_is_not_called_invisible(tmp_path):
    """The hint read any format character (Unicode Cf) as invisible, where class and category names use
    utils.names.unprintable_characters: a Persian id written with its zero-width non-joiner (U+200C), whose XML is
    missing, was told to remove the character from the list, which would make it another word."""
    persian = "می\u200cخواهم"
    root = write_voc_folder(tmp_path, {"a": [("cat", (1, 1, 10, 10), 0)]}, {"trainval": ["a", persian]})
    list_file = root / "ImageSets/Main/trainval.txt"
    with pytest.raises(DataError, match="1 problem") as error:
        build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
    assert str(error.value).endswith(f"{root / 'Annotations' / persian}.xml: annotation file not found (listed in "
                                     f"{list_file})")


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_a_list_of_no_image_id_is_an_error_naming_the_list(tmp_path, content):
    root = write_voc_folder(tmp_path, {"a": [("cat", (1, 1, 10, 10), 0)]}, {"trainval": [], "test": ["a"]})
    list_file = root / "ImageSets/Main/trainval.txt"
    list_file.write_text(content)
    with pytest.raises(DataError, match="1 problem") as error:
        build_dataset("voc", "train", 64, data_root=str(root), classes=["cat"])
    assert str(error.value).endswith(f"{list_file} lists no image id: add the ids of the split's images, one per line")
    assert build_dataset("voc", "test", 64, data_root=str(root), classes=["cat"]).image_ids == ["a"]


def test_degenerate_and_outside_boxes_are_fixed_with_a_counted_warning(tmp_path):
    objects = [("cat", (6, 10, 5, 20), 0), ("cat", (50, -4, 80, 30), 0), ("cat", (3, 3, 9, 9), 0)]  # 0 px, outside
    root = write_voc_folder(tmp_path, {"a": objects}, {"trainval": ["a"]}, size=(48, 64))
    with pytest.warns(DataWarning, match=r"box clipped to the image: 1 \(e\.g\. .*a\.xml\); "
                                         r"degenerate box dropped \(x2 <= x1 or y2 <= y1, in pixels or once "
                                         r"normalised\): 1"):
        dataset = build_dataset("voc", "train", 64, data_root=str(root), classes=["cat"])
    # XML (50, -4, 80, 30) -> continuous (49, -5, 80, 30) -> clipped (49, 0, 64, 30) for training
    np.testing.assert_array_equal(dataset.annotation(0)[0], [[49, 0, 64, 30], [2, 2, 9, 9]])
    assert dataset.fixups == {"box clipped to the image": 1, DEGENERATE_BOX_DROPPED: 1}
    # the evaluation scores the XML as written, as the devkit does: all three boxes, unchanged
    np.testing.assert_array_equal(dataset.ground_truth()[0]["boxes"], [[6, 10, 5, 20], [50, -4, 80, 30], [3, 3, 9, 9]])
    assert dataset.objects_to_score() == 3


def test_a_box_whose_coordinates_look_swapped_is_dropped_with_a_warning_naming_the_xml_and_the_object(tmp_path):
    """XML xmin 40 > xmax 20 (object 2) and ymin 30 > ymax 10 (object 4): in order they are boxes of the image, so the
    warning says they look swapped, with the XML file, the object's place and class and the values. A box of zero
    width in the devkit's 1-based pixels (xmin 6, xmax 5) and one that lies outside the image once swapped (xmin 200 >
    xmax 100, width 64) stay degenerate boxes: swapping them gives no box to train on."""
    objects = [("cat", (3, 3, 9, 9), 0), ("Dog", (40, 10, 20, 30), 0), ("cat", (6, 5, 5, 20), 0),
               ("cat", (5, 30, 20, 10), 0), ("dog", (200, 5, 100, 20), 0)]
    root = write_voc_folder(tmp_path, {"a": objects}, {"trainval": ["a"]}, size=(48, 64))
    xml = root / "Annotations/a.xml"
    with pytest.warns(DataWarning) as caught:
        dataset = build_dataset("voc", "train", 64, data_root=str(root), classes=["cat", "dog"])
    assert [str(w.message) for w in caught] == [
        f"VOC dataset {root / 'ImageSets/Main/trainval.txt'}: annotations fixed on reading: {SWAPPED_BOX_DROPPED}: 2 "
        f"(e.g. {xml} object 2 'Dog' (xmin 40 > xmax 20), {xml} object 4 'cat' (ymin 30 > ymax 10)); "
        f"box clipped to the image: 1 (e.g. {xml}); {DEGENERATE_BOX_DROPPED}: 2 (e.g. {xml})"]
    assert dataset.fixups == {SWAPPED_BOX_DROPPED: 2, "box clipped to the image": 1, DEGENERATE_BOX_DROPPED: 2}
    np.testing.assert_array_equal(dataset.annotation(0)[0], [[2, 2, 9, 9]])  # the one box in order is kept
    assert len(dataset.ground_truth()[0]["boxes"]) == 5  # the evaluation still scores the XML as written


def test_a_training_image_left_without_a_box_by_the_drops_is_named_as_trained_on_as_background(tmp_path):
    """a.xml's one box lies right of the 64 px wide image and c.xml's has xmin > xmax: both images trained on as
    images without objects (the cat they show learnt as background), and the warning counted the dropped boxes
    alone, without saying so or how to fix it. The test split's warning does not say it: it trains on nothing."""
    samples = {"a": [("cat", (70, 10, 90, 20), 0)], "b": [("cat", (5, 5, 30, 30), 0), ("cat", (30, 10, 10, 20), 0)],
               "c": [("cat", (30, 10, 10, 20), 0)], "t": [("cat", (70, 10, 90, 20), 0)]}
    root = write_voc_folder(tmp_path, samples, {"trainval": ["a", "b", "c"], "test": ["t"]})
    kind = ("image left without a box by these drops, trained on as background (no object): fix its boxes in the "
            "XML, or leave its id out of the list (an image without <object> is the way to train on a negative)")
    with pytest.warns(DataWarning) as caught:
        train = build_dataset("custom", "train", 64, data_root=str(root), classes="cat")
    assert str(caught[0].message).endswith(
        f"; {kind}: 2 (e.g. {root / 'Annotations/a.xml'}, {root / 'Annotations/c.xml'})")
    assert train.fixups[kind] == 2 and [len(train.annotation(i)[0]) for i in range(3)] == [0, 1, 0]
    with pytest.warns(DataWarning) as caught:
        test = build_dataset("custom", "test", 64, data_root=str(root), classes="cat")
    assert "background" not in str(caught[0].message) and kind not in test.fixups


def test_the_swapped_box_warning_quotes_the_xml_values_exactly(tmp_path):
    """``:g`` rounded xmin 40.123456789 to 40.1235, a value the XML does not hold."""
    root = write_voc_folder(tmp_path, {"a": [("cat", (40.123456789, 10, 20.5, 30), 0)]}, {"trainval": ["a"]})
    with pytest.warns(DataWarning, match=r"object 1 'cat' \(xmin 40\.123456789 > xmax 20\.5\)"):
        build_dataset("voc", "train", 64, data_root=str(root), classes=["cat"])


def test_the_evaluation_scores_the_xml_boxes_as_written_as_the_devkit_does(tmp_path):
    """A box past the image edge and a degenerate one: training clips and drops them, the devkit scores the XML. A
    detection equal to the first box is a true positive at every threshold (clipped, its IoU at 0.95 would be 0.5);
    the degenerate box stays a positive that no detection can find: recall 1/2, 11-point AP 6/11 everywhere."""
    objects = [("cat", (10, 10, 5, 20), 0), ("cat", (50, -4, 80, 30), 0)]
    root = write_voc_folder(tmp_path, {"a": objects}, {"test": ["a"], "train": []}, size=(48, 64))
    with pytest.warns(DataWarning, match="box clipped to the image: 1"):
        dataset = build_dataset("custom", "test", 64, data_root=str(root), classes="cat")
    detection = {"boxes": from_devkit_pixels(np.array([[50, -4, 80, 30]])), "scores": np.array([0.9]),
                 "labels": np.array([0])}
    metrics = evaluate_voc([detection], dataset.ground_truth(), dataset.class_names)
    assert metrics["AP50"] == metrics["AP75"] == pytest.approx(6 / 11, abs=1e-15)
    assert metrics["mAP"] == pytest.approx(6 / 11, abs=1e-15)  # the mean of ten equal APs


def test_boxes_normalised_to_0_1_are_an_error_and_whole_coordinates_up_to_1_are_not(tmp_path):
    samples = {
        "normalised": [("cat", (1, 1, 1, 1), 0), ("cat", (0.325, 0.1, 0.6, 0.9), 0)],
        "top_left_pixel": [("cat", (0, 0, 1, 1), 0)],
        "pixels": [("cat", (0.5, 0.5, 20, 20), 0)],
    }
    root = write_voc_folder(tmp_path, samples, {"trainval": list(samples)})
    with pytest.raises(DataError, match="1 problem") as error:
        build_dataset("voc", "train", 64, data_root=str(root), classes=["cat"])
    assert str(error.value).endswith(
        f"{root / 'Annotations/normalised.xml'}: every box coordinate is <= 1 (e.g. xmin 0.325): VOC XML takes pixel "
        "coordinates (1-based), not coordinates normalised to [0, 1]; multiply them by the image's width and height"
    )
    (root / "ImageSets/Main/trainval.txt").write_text("top_left_pixel\npixels\n")
    with pytest.warns(DataWarning, match=r"box clipped to the image: 2"):  # 0 is left of the 1-based first pixel
        dataset = build_dataset("voc", "train", 64, data_root=str(root), classes=["cat"])
    np.testing.assert_array_equal(dataset.annotation(0)[0], [[0, 0, 1, 1]])  # the top-left pixel


def test_xml_without_size_reads_the_image_header(tmp_path):
    xml = voc_xml(0, 0, [("cat", (1, 1, 10, 10), 0)], size=False)
    root = write_voc_folder(tmp_path, {"a": xml}, {"trainval": ["a"]}, size=(30, 70))
    assert build_dataset("voc", "train", 64, data_root=str(root), classes=["cat"]).image_size(0) == (30, 70)


def test_xml_without_size_whose_image_header_cannot_be_read_says_why_it_is_read_and_the_fix(tmp_path):
    """The error was PIL's "cannot read the image header (cannot identify image file ...)", also for an empty file,
    without saying why the header was read (the dataset is built before --check_data decodes anything) or the fix."""
    xml = voc_xml(0, 0, [("cat", (1, 1, 10, 10), 0)], size=False)
    root = write_voc_folder(tmp_path, {"empty": xml, "junk": xml}, {"trainval": ["empty", "junk"]})
    (root / "JPEGImages/empty.jpg").write_bytes(b"")
    (root / "JPEGImages/junk.jpg").write_bytes(b"<html>404</html>")
    with pytest.raises(DataError, match="2 problem") as error:
        build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
    size_read = "; re-download or re-encode the file (its size is read from the image, as {} has no <size>)"
    assert (f"{root / 'JPEGImages/empty.jpg'}: image file is empty"
            + size_read.format(root / "Annotations/empty.xml")) in str(error.value)
    assert re.search(rf"{root / 'JPEGImages/junk.jpg'}: cannot read the image header \(cannot identify image file "
                     rf".*\){re.escape(size_read.format(root / 'Annotations/junk.xml'))}", str(error.value))


def test_a_size_written_as_a_float_is_read_and_a_fractional_or_negative_one_is_an_error(tmp_path):
    """LabelImg and CVAT write whole numbers, some tools "128.0": both are read. A fraction (truncated before) or a
    negative side (the image header read before) is a size no image has: an error naming the XML and the tag."""
    xml = voc_xml(64, 48, [("cat", (1, 1, 10, 10), 0)])
    samples = {"float": xml.replace("<width>64</width>", "<width>64.0</width>").replace("48<", "48.0<"),
               "zero": xml.replace("<width>64</width>", "<width>0</width>"),
               "fraction": xml.replace("<width>64</width>", "<width>63.6</width>"),
               "negative": xml.replace("<height>48</height>", "<height>-48</height>")}
    root = write_voc_folder(tmp_path, samples, {"trainval": list(samples)}, size=(48, 64))
    with pytest.raises(DataError, match="2 problem") as error:
        build_dataset("custom", "train", 64, data_root=str(root), classes="cat")
    listed = f"(listed in {root / 'ImageSets/Main/trainval.txt'})"
    assert (f"{root / 'Annotations/fraction.xml'}: <size> has <width>63.6</width>, not a whole number of pixels: write "
            f"the image's width in pixels, or 0 to read it from the image {listed}") in str(error.value)
    assert (f"{root / 'Annotations/negative.xml'}: <size> has <height>-48</height>, a negative size: write the "
            f"image's height in pixels, or 0 to read it from the image {listed}") in str(error.value)
    (root / "ImageSets/Main/trainval.txt").write_text("float\nzero\n")
    dataset = build_dataset("custom", "train", 64, data_root=str(root), classes="cat")
    assert [dataset.image_size(i) for i in range(2)] == [(48, 64), (48, 64)]  # "zero": from the image header


def test_a_size_that_disagrees_with_the_image_names_the_xml_file_and_the_image(tmp_path):
    """The XML says 500x375 for a 375x500 image: its first load (training, evaluation, --check_data) stops with an
    error naming both files (the image alone left the user to find which XML to fix, in which folder)."""
    samples = {"a": voc_xml(64, 48, [("cat", (1, 1, 10, 10), 0)]), "b": voc_xml(48, 64, [("cat", (1, 1, 10, 10), 0)])}
    root = write_voc_folder(tmp_path, samples, {"trainval": ["a", "b"]}, size=(48, 64))
    dataset = build_dataset("custom", "train", 64, data_root=str(root), classes="cat", augment=False)
    assert dataset.load_image(0).shape == (48, 64, 3)
    with pytest.raises(DataError) as error:
        dataset[1]
    assert str(error.value) == (f"{root / 'JPEGImages/b.jpg'}: image is 64x48 (WxH) but its annotation says 48x64 "
                                f"({root / 'Annotations/b.xml'}); fix the annotation's size")


@pytest.mark.parametrize("stored, annotated, scale", [((24, 32), (48, 64), "0.5"), ((480, 640), (375, 500), "1.28"),
                                                    ((188, 250), (375, 500), "0.5")])
def test_an_image_resized_after_it_was_annotated_is_told_to_scale_its_boxes_not_to_fix_the_size(tmp_path, stored,
                                                                                                  annotated, scale):
    """Images shrunk to save space (or to 640 px) after annotation: both sides scaled alike. "fix the annotation's
    size" made the boxes, in the annotated size's pixels, land on the wrong objects (clipped with a mere count); the
    error says the image looks resized and that its boxes need the same scale."""
    (height, width), (annotated_h, annotated_w) = stored, annotated
    root = write_voc_folder(tmp_path, {"a": voc_xml(annotated_w, annotated_h, [("cat", (1, 1, 10, 10), 0)])},
                            {"trainval": ["a"]}, size=stored)
    dataset = build_dataset("custom", "train", 64, data_root=str(root), classes="cat", augment=False)
    with pytest.raises(DataError) as error:
        dataset.load_image(0)
    assert str(error.value) == (
        f"{root / 'JPEGImages/a.jpg'}: image is {width}x{height} (WxH) but its annotation says "
        f"{annotated_w}x{annotated_h} ({root / 'Annotations/a.xml'}): it looks resized by {scale} after it was "
        "annotated, and its boxes are in the annotated size's pixels: use the image at its annotated size, or scale "
        f"the annotation's size and every box of the image by {scale}"
    )


def test_a_class_list_file_under_the_home_folder_given_as_tilde_is_read(tmp_path, monkeypatch):
    """`--classes=~/classes.txt` or `--classes "~/classes.txt"`, where the shell leaves `~`: the file was looked for in
    a folder named `~` of the current folder (class list file not found), where the path flags take the home folder;
    a name without a slash stays a name."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    assert parse_class_list("~/classes.txt") == ["cat", "dog"]
    assert parse_class_list("~cat,dog") == ["~cat", "dog"]


def test_a_class_list_file_given_as_tilde_is_recorded_as_that_file(tmp_path, monkeypatch):
    """The file `--classes=~/classes.txt` reads is the one a checkpoint's config and a summary.json record (by its
    absolute path) and a VOC object of another class is told to join: `class_list_file` looked for a folder `~` here,
    so the summary recorded `~/classes.txt`, which --eval_results then read as a class name holding a slash."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "classes.txt").write_text("cat\ndog\n")
    assert class_list_file("~/classes.txt") == tmp_path / "home" / "classes.txt"
    assert class_list_file("~cat,dog") is None
    args = argparse.Namespace(data_root=None, classes="~/classes.txt")
    assert absolute_data_paths(args) == {"classes": str(tmp_path / "home" / "classes.txt")}


def test_parse_class_list(tmp_path):
    assert parse_class_list("cat, dog,bird") == ["cat", "dog", "bird"]
    (tmp_path / "classes.txt").write_text("# my classes\ncat\n\n  dog  \n#bird\n")
    assert parse_class_list(str(tmp_path / "classes.txt")) == ["cat", "dog"]
    with pytest.raises(DataError, match=rf"--classes {tmp_path} is a folder; give the class names"):
        parse_class_list(str(tmp_path))
    with pytest.raises(DataError, match="duplicate class names"):
        parse_class_list("cat,Cat")
    with pytest.raises(DataError, match=r"missing_classes\.txt: class list file not found \(a name ending in \.txt is "
                                        r"read as a file; looked for in /"):  # where, not a slash it does not hold
        parse_class_list("missing_classes.txt")
    with pytest.raises(DataError, match=r"obj\.name: class list file not found \(a class name cannot hold a slash\)"):
        parse_class_list(str(tmp_path / "obj.name"))  # a mistyped path, whatever its suffix
    many = [f"class_number_{i}" for i in range(40)]  # longer than a file name may be: a list, not a path
    assert parse_class_list(",".join(many)) == many
    for name in ("cat/x", "cat\\x"):
        with pytest.raises(DataError, match=r"--classes .*: class name .* contains a slash, but each class names a "
                                            r"VOC results file \(comp4_det_test_<class>\.txt\)"):
            parse_class_list(f"{name},dog")


def test_a_class_name_too_long_to_name_its_results_file_is_refused_before_training(tmp_path):
    """A VOC layout names a results file after each class, and a file name holds at most 255 bytes: a class name of
    130 'é' (260 bytes in UTF-8) trained to the end, then its evaluation stopped with 'File name too long' and was
    told to free space. The name is refused up front, naming its length and the longest that fits; the longest
    accepted name writes its results files (the atomic write's temporary file included)."""
    longest = "a" * MAX_CLASS_NAME_BYTES
    assert parse_class_list(f"{longest},dog") == [longest, "dog"]
    detections = [{"boxes": np.array([[1.0, 2.0, 30.0, 40.0]]), "scores": np.array([0.5]), "labels": np.array([0])}]
    assert len(write_voc_results(detections, ["a"], [longest], tmp_path)) == 1
    truth = [{"boxes": np.array([[1.0, 2.0, 30.0, 40.0]]), "labels": np.array([0]), "difficult": np.array([False])}]
    assert len(write_voc_pr_curves(evaluate_voc_with_curves(detections, truth, [longest])[1], tmp_path)) == 1
    (tmp_path / "classes.txt").write_text("cat\n" + "é" * 130 + "\n", encoding="utf-8")
    with pytest.raises(DataError) as error:
        parse_class_list(str(tmp_path / "classes.txt"))
    assert str(error.value) == (
        f"{tmp_path / 'classes.txt'}:2: class name {'é' * 130!r} is 260 bytes long in UTF-8, but each class names a "
        f"VOC results file (comp4_det_test_<class>.txt) and a file name holds at most 255 bytes: shorten it to at "
        f"most {MAX_CLASS_NAME_BYTES} bytes (here {MAX_CLASS_NAME_BYTES // 2} characters) in the class list and in "
        "the XML files")
    with pytest.raises(DataError, match=rf"^--classes {'b' * 225},dog: class name '{'b' * 225}' is 225 bytes long"):
        parse_class_list(f"{'b' * 225},dog")
    with pytest.raises(DataError, match=rf"^w\.pth: class name '{'b' * 225}' is 225 bytes long in UTF-8"):
        checked_recorded_names(["b" * 225, "dog"], "w.pth")



def test_a_softmax_background_class_in_the_class_list_is_refused_naming_the_flag_or_line(tmp_path):
    """The authors' VOC_CLASSES (and torchvision's, Detectron's, labelme's ``_background_``) start with a background
    entry, label 0 of a softmax classifier; here the classifier is sigmoid with no background column, so a list
    ported with it made a 21st class that no object has (one more output per anchor, an AP of nan). ``background``
    alone may be a class of a user's own data: it stays a class."""
    with pytest.raises(DataError) as error:
        parse_class_list("__background__,aeroplane,bicycle")
    assert str(error.value) == (
        "--classes __background__,aeroplane,bicycle: '__background__' is the background class of a softmax "
        "classifier (the authors' VOC_CLASSES start with it), but this detector's classifier is sigmoid, with no "
        "background column: it would be a class of its own that no object has; remove it (labels 0..C-1 then "
        "follow the other names, as the authors' 1..C did)")
    class_file = tmp_path / "classes.txt"
    class_file.write_text("# labelme's labels.txt\n_background_\ncat\ndog\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(class_file))}:2: '_background_' is the background class "
                                        r"of a softmax classifier .*; remove it \(labels 0\.\.C-1"):
        parse_class_list(str(class_file))
    for name in ("__BACKGROUND__", "__bg__"):
        with pytest.raises(DataError, match=rf"^--classes cat,{name}: '{name}' is the background class"):
            parse_class_list(f"cat,{name}")
    assert parse_class_list("background,bg,cat") == ["background", "bg", "cat"]  # a user's own classes


def test_a_class_file_repeating_a_name_names_the_lines(tmp_path):
    """Blank lines and spaces around names are ignored; a name repeated (in any letter case, as the XML's names are
    compared) is an error naming the file and the lines to merge, and the comma list's error says the same."""
    class_file = tmp_path / "classes.txt"
    class_file.write_text("cat  \n\n dog\nCat\t\nbird\ndog\n\n")
    with pytest.raises(DataError) as error:
        parse_class_list(str(class_file))
    assert str(error.value) == (f"{class_file}: duplicate class names 'cat' (lines 1, 4), 'dog' (lines 3, 6); "
                                "list each class once (letter case is ignored)")
    with pytest.raises(DataError) as error:
        parse_class_list("cat,dog,Cat")
    assert str(error.value) == "--classes cat,dog,Cat: duplicate class names 'cat'; list each class once (letter " \
                               "case is ignored)"

def test_a_single_class_named_as_a_folder_of_the_current_directory_is_the_class(tmp_path, monkeypatch):
    """``--classes cat`` run beside a folder ``cat/`` (images sorted by class) was refused as "a folder"; so was
    ``--trained_model`` of a one-class checkpoint there, which passes the checkpoint's class as ``--classes``. A
    bare name is never read as a folder; a path to one still is an error."""
    (tmp_path / "cat").mkdir()
    monkeypatch.chdir(tmp_path)
    assert parse_class_list("cat") == ["cat"]
    with pytest.raises(DataError, match=r"--classes \./cat is a folder; give the class names"):
        parse_class_list("./cat")


def test_a_class_file_line_holding_a_comma_is_an_error_naming_the_file_and_line(tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("# pets\ncat,dog\n")
    with pytest.raises(DataError) as error:
        parse_class_list(str(classes))
    assert str(error.value) == (f"{classes}:2: 'cat,dog' holds a comma; the file takes one class name per line, and "
                                "a class name cannot hold a comma (a class of the XML files named so, 'hot, dog', "
                                "needs another name there and here)")


def test_a_comment_after_a_class_name_is_an_error_naming_the_file_and_line(tmp_path):
    """Only whole lines starting with # are comments: "dog  # the pets" would be a class of that name, which no
    object has, so every dog would be an unknown class."""
    classes = tmp_path / "classes.txt"
    classes.write_text("# pets\ncat\ndog  # and puppies\n")
    with pytest.raises(DataError) as error:
        parse_class_list(str(classes))
    assert str(error.value) == (f"{classes}:3: 'dog  # and puppies' holds a comment after the name; a comment takes "
                                "a line of its own, starting with #")
    assert parse_class_list("c#,f#") == ["c#", "f#"]  # a # inside a name is a name

def test_class_names_that_repeat_once_normalised_are_one_error_saying_so(tmp_path):
    root = write_voc_folder(tmp_path, {"a": [("cat", (1, 1, 10, 10), 0)]}, {"trainval": ["a"]})
    with pytest.raises(DataError, match=r"the class names \['cat', 'Cat \(group\)'\] repeat a name once compared "
                                        r"as the XML's names are \(case ignored, '\(group\)' removed\)"):
        build_dataset("custom", "train", 64, data_root=str(root), classes=["cat", "Cat (group)"])


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        build_dataset("imagenet", "train", 64)
    with pytest.raises(ValueError, match="unknown split 'val'"):
        build_dataset("voc", "val", 64)


@pytest.mark.parametrize("split, list_name", [("train", "trainval"), ("test", "test")])
def test_an_id_listed_twice_is_an_error_naming_the_list_and_lines(tmp_path, split, list_name):
    samples = {"a": [("cat", (1, 1, 10, 10), 0)], "b": [], "c": []}
    root = write_voc_folder(tmp_path, samples, {"trainval": ["a"], "test": ["b"]})
    (root / "ImageSets/Main" / f"{list_name}.txt").write_text("c\nb\n\nb\nc\n" if split == "test" else "c\na\na\n")
    expected = r"'b' is listed on lines 2, 4; remove the repeats" if split == "test" else r"'a' is listed on lines 2, 3"
    with pytest.raises(DataError, match=rf"{list_name}\.txt: image id {expected}"):
        build_dataset("custom", split, 64, data_root=str(root), classes=["cat"])


def test_byte_order_marks_are_ignored_in_list_and_class_files(tmp_path):
    root = write_voc_folder(tmp_path / "voc", {"a": [("cat", (1, 1, 10, 10), 0)]}, {"trainval": ["a"]})
    (root / "ImageSets/Main/trainval.txt").write_bytes(b"\xef\xbb\xbfa\n")
    classes = tmp_path / "classes.txt"
    classes.write_bytes(b"\xef\xbb\xbfcat\r\ndog\r\n")
    dataset = build_dataset("custom", "train", 64, data_root=str(root), classes=str(classes))
    assert dataset.image_ids == ["a"] and dataset.class_names == ["cat", "dog"]


def test_list_and_class_files_that_are_not_utf8_are_errors_naming_the_file(tmp_path):
    root = write_voc_folder(tmp_path / "voc", {"a": []}, {"trainval": ["a"]})
    (root / "ImageSets/Main/trainval.txt").write_bytes("café\n".encode("latin-1"))
    classes = tmp_path / "classes.txt"
    classes.write_bytes("chaté\n".encode("latin-1"))
    with pytest.raises(DataError, match=rf"^{classes}: not UTF-8 text \(byte 0xe9 .*save the file as UTF-8"):
        parse_class_list(str(classes))
    with pytest.raises(DataError, match=r"trainval\.txt: not UTF-8 text .*save the file as UTF-8"):
        build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])


def test_xml_encodings_declared_are_read_and_undeclared_ones_name_the_file(tmp_path):
    latin1 = '<?xml version="1.0" encoding="ISO-8859-1"?>' + voc_xml(64, 48, [("chaté", (1, 1, 10, 10), 0)])
    root = write_voc_folder(tmp_path, {"a": "", "b": "", "c": ""}, {"trainval": ["a"], "test": ["b", "c"]})
    (root / "Annotations/a.xml").write_bytes(latin1.encode("latin-1"))
    assert (build_dataset("custom", "train", 64, data_root=str(root), classes=["chaté"]).ground_truth()[0]["labels"]
            == [0])
    (root / "Annotations/b.xml").write_bytes(voc_xml(64, 48, [("chaté", (1, 1, 10, 10), 0)]).encode("latin-1"))
    (root / "Annotations/c.xml").write_text('<?xml version="1.0" encoding="klingon"?><annotation/>')
    with pytest.raises(DataError) as error:
        build_dataset("custom", "test", 64, data_root=str(root), classes=["chaté"])
    assert re.search(r"b\.xml:1:\d+: malformed XML .*the file is not UTF-8", str(error.value))
    assert re.search(r"c\.xml: unknown encoding: klingon in the XML declaration", str(error.value))



def test_xml_in_a_declared_multi_byte_encoding_is_read_and_a_wrong_declaration_names_the_file(tmp_path):
    # expat decodes UTF-8, UTF-16 and one-byte encodings only: ET.parse of a GBK file raised a bare ValueError
    # ("multi-byte encodings are not supported"), which main.py printed without the file's name
    declared = '<?xml version="1.0" encoding="{}"?>' + voc_xml(64, 48, [("猫", (2, 3, 10, 12), 0)])
    root = write_voc_folder(tmp_path, {"a": "", "b": "", "c": ""}, {"trainval": ["a", "b"], "test": ["c"]})
    (root / "Annotations/a.xml").write_bytes(declared.format("GBK").encode("gbk"))
    (root / "Annotations/b.xml").write_bytes(declared.format("Shift_JIS").encode("shift_jis"))
    dataset = build_dataset("custom", "train", 64, data_root=str(root), classes=["猫"])
    for truth in dataset.ground_truth():
        assert truth["labels"].tolist() == [0] and truth["boxes"].tolist() == [[2, 3, 10, 12]]
    (root / "Annotations/c.xml").write_bytes(declared.format("Big5").encode("utf-8"))  # declared wrongly
    with pytest.raises(DataError, match=r"c\.xml: not Big5 text as its XML declaration says \(byte 0x\w\w at offset "
                                        r"\d+\); save the file as UTF-8 \(listed in .*test\.txt\)"):
        build_dataset("custom", "test", 64, data_root=str(root), classes=["猫"])

@pytest.mark.parametrize("text, difficult",
                         [("1", True), (" TRUE ", True), ("false", False), ("0", False), ("", False)])
def test_difficult_accepts_0_1_true_false(tmp_path, text, difficult):
    xml = voc_xml(64, 48, [("cat", (1, 1, 10, 10), 0)]).replace("<difficult>0</difficult>",
                                                                f"<difficult>{text}</difficult>")
    root = write_voc_folder(tmp_path, {"a": xml}, {"trainval": ["a"]})
    dataset = build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
    assert dataset.ground_truth()[0]["difficult"].tolist() == [difficult]


def test_bad_difficult_other_root_and_non_finite_boxes_are_errors_naming_file_and_object(tmp_path):
    samples = {
        "a": voc_xml(64, 48, [("cat", (1, 1, 10, 10), 0)]).replace("<difficult>0", "<difficult>maybe"),
        "b": "<foo/>",
        "c": [("cat", (1, 1, 10, 10), 0), ("cat", (1, 1, "inf", 10), 0)],
        "d": [("cat", (1, "nan", 10, 10), 0)],
    }
    root = write_voc_folder(tmp_path, samples, {"trainval": list(samples)})
    with pytest.raises(DataError, match="4 problem") as error:
        build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
    message = str(error.value)
    assert "a.xml: object 1 has <difficult>maybe</difficult>; use 0 or 1" in message
    assert "b.xml: the root element is <foo>, not <annotation>" in message
    assert "c.xml: object 2 <bndbox> has a non-finite <xmax> ('inf')" in message
    assert "d.xml: object 1 <bndbox> has a non-finite <ymin> ('nan')" in message


def test_list_lines_are_an_id_or_an_id_and_a_class_flag(tmp_path):
    root = write_voc_folder(tmp_path, {"a": [], "b": [], "my img": []}, {})
    (root / "ImageSets/Main/trainval.txt").write_text("a  1\nb -1\nmy img\n")
    with pytest.raises(DataError, match=r"trainval\.txt:3: expected .* got 'my img'; image ids cannot contain spaces"):
        build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
    (root / "ImageSets/Main/trainval.txt").write_text(" # my training images\na  1\nb -1\n")
    with pytest.raises(DataError, match=r"trainval\.txt:1: expected .* got ' # my training images'; it looks like a "
                                        r"comment, which an image list cannot hold: remove the line"):
        build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
    (root / "ImageSets/Main/trainval.txt").write_text("a  1\nb -1\n")
    assert build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"]).image_ids == ["a", "b"]


def test_an_id_with_a_space_that_reads_as_an_id_and_a_class_flag_says_ids_cannot_hold_spaces(tmp_path):
    """Files "photo 0.jpg", "photo 1.jpg" listed as they are read as id "photo" with the flags 0 and 1 of a
    class-specific list: the error said that id 'photo' was listed twice. An annotation named after the whole line
    shows that it is one id with a space."""
    root = write_voc_folder(tmp_path, {"photo 0": [], "photo 1": [], "a": []}, {})
    (root / "ImageSets/Main/trainval.txt").write_text("photo 0\nphoto 1\na 1\n")
    with pytest.raises(DataError, match="2 problem") as error:
        build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
    for number, line in ((1, "photo 0"), (2, "photo 1")):
        assert (f"trainval.txt:{number}: expected '<image id>' or '<image id> <-1|0|1>', got {line!r}; image ids "
                "cannot contain spaces: rename the files") in str(error.value)
    assert "listed on lines" not in str(error.value)


def test_fingerprint_follows_the_annotations_not_the_folder(tmp_path):
    """The resume check's training-set fingerprint: the same annotations in another folder give the same value; a
    difficult flag, a 1-pixel box change or a label change each give another."""
    objects = [("cat", (2, 3, 30, 40), 0), ("dog", (10, 10, 20, 20), 0)]
    variants = {
        "same": objects,
        "difficult": [objects[0], ("dog", (10, 10, 20, 20), 1)],
        "box": [("cat", (2, 3, 31, 40), 0), objects[1]],
        "label": [("dog", (2, 3, 30, 40), 0), objects[1]],
    }
    prints = {}
    for name, variant in {"original": objects, **variants}.items():
        root = write_voc_folder(tmp_path / name, {"a": variant}, {"trainval": ["a"]})
        prints[name] = build_dataset("custom", "train", 64, data_root=str(root), classes="cat,dog").fingerprint()
    assert all(re.fullmatch(r"[0-9a-f]{16}", value) for value in prints.values())
    assert prints["same"] == prints["original"]
    assert len({prints[name] for name in ("original", "difficult", "box", "label")}) == 4


def test_boxes_of_zero_width_or_height_are_dropped_and_one_pixel_boxes_kept(tmp_path):
    # XML xmax = xmin - 1 -> continuous (xmin - 1, xmax) of width 0; xmin == xmax is one pixel wide (width 1)
    objects = [("cat", (6, 5, 5, 20), 0), ("cat", (5, 9, 20, 8), 0), ("cat", (7, 7, 7, 7), 0)]
    root = write_voc_folder(tmp_path, {"a": objects}, {"trainval": ["a"]}, size=(48, 64))
    with pytest.warns(DataWarning, match=rf"{re.escape(DEGENERATE_BOX_DROPPED)}: 2"):
        dataset = build_dataset("voc", "train", 64, data_root=str(root), classes=["cat"])
    boxes, labels, _ = dataset.annotation(0)
    np.testing.assert_array_equal(boxes, [[6, 6, 7, 7]])
    assert labels.tolist() == [0]


def test_the_test_split_warning_says_that_the_evaluation_scores_the_boxes_as_written(tmp_path):
    """The same XML as a test split and as a train split: only the test split's warning says that its box fix-ups
    change the loader's targets, not the score (the devkit reads the XML)."""
    objects = [("cat", (6, 5, 5, 20), 0), ("cat", (5, 9, 70, 30), 0)]  # a degenerate box, a box beyond x 64
    root = write_voc_folder(tmp_path, {"a": objects, "b": [("cat", (5, 5, 20, 20), 0)]},
                            {"test": ["a"], "train": ["b"]}, size=(48, 64))
    clause = ("The evaluation scores the test split's boxes as the annotations write them (these fix-ups change only "
              "the loader's targets): a box without extent can never be matched and lowers the AP; fix the "
              "annotations")
    with pytest.warns(DataWarning) as caught:
        build_dataset("custom", "test", 64, data_root=str(root), classes="cat")
    assert [str(w.message) for w in caught] == [
        f"VOC dataset {root / 'ImageSets/Main/test.txt'}: annotations fixed on reading: box clipped to the image: 1 "
        f"(e.g. {root / 'Annotations/a.xml'}); {DEGENERATE_BOX_DROPPED}: 1 (e.g. {root / 'Annotations/a.xml'}). "
        f"{clause}"]
    (root / "ImageSets/Main/train.txt").write_text("a\n")
    (root / "ImageSets/Main/test.txt").write_text("b\n")
    with pytest.warns(DataWarning) as caught:
        build_dataset("custom", "train", 64, data_root=str(root), classes="cat")
    assert len(caught) == 1
    assert "annotations fixed on reading: box clipped to the image: 1" in str(caught[0].message)
    assert "evaluation" not in str(caught[0].message)


def test_a_box_of_zero_width_once_normalised_is_dropped_as_degenerate(tmp_path):
    """XML x 13.219999313354492..12.220000267028809 is 1e-6 px wide in the continuous frame, 0 wide once divided by a
    96 px width in float32 (the training target): a target without width trains nothing, so it is dropped."""
    objects = [("cat", (13.219999313354492, 10, 12.220000267028809, 60), 0), ("cat", (20, 10, 50, 60), 0)]
    root = write_voc_folder(tmp_path, {"a": objects}, {"test": ["a"], "train": []}, size=(80, 96))
    with pytest.warns(DataWarning, match=rf"{re.escape(DEGENERATE_BOX_DROPPED)}: 1 \(e\.g\. .*a\.xml\)"):
        dataset = build_dataset("custom", "test", 64, data_root=str(root), classes="cat")
    assert dataset.fixups == {DEGENERATE_BOX_DROPPED: 1}
    np.testing.assert_array_equal(dataset.annotation(0)[0], [[19, 9, 50, 60]])
    target = dataset[0][1].numpy()
    assert (target[:, 2] > target[:, 0]).all() and (target[:, 3] > target[:, 1]).all()


def test_voc_devkit_years_may_reuse_an_image_id(tmp_path):
    """The train/test overlap check compares lists of one folder: VOC2012 trainval may name an image 000002 like a
    VOC2007 test image, and they are different images."""
    write_voc_folder(tmp_path / "VOC2007",
                     {"000001": [("cat", (2, 3, 30, 40), 0)], "000002": [("dog", (1, 1, 9, 9), 0)]},
                     {"trainval": ["000001"], "test": ["000002"]})
    write_voc_folder(tmp_path / "VOC2012", {"000002": [("bird", (5, 5, 9, 9), 0)]}, {"trainval": ["000002"]})
    train = build_dataset("voc", "train", 64, data_root=str(tmp_path))
    assert train.image_ids == ["000001", "000002"]
    assert [gt["labels"].tolist() for gt in train.ground_truth()] == [[7], [2]]  # cat, bird


def test_voc_classes_are_the_authors_twenty_in_their_order():
    """Facts §5: labels 0..19 here are the authors' 1..20 (their 0 was '__background__'), in this order."""
    assert VOC_CLASSES == (
        "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
        "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
    )


def test_group_suffix_and_letter_case_of_class_names_are_dropped(tmp_path):
    objects = [("Dog(group)", (10, 10, 20, 20), 0), ("PERSON (group)", (2, 3, 30, 40), 0)]
    write_voc_folder(tmp_path / "VOC2007", {"000001": objects}, {"trainval": ["000001"], "test": []})
    write_voc_folder(tmp_path / "VOC2012", {"2008_000001": [("aeroplane", (5, 5, 9, 9), 0)]},
                     {"trainval": ["2008_000001"]})
    train = build_dataset("voc", "train", 64, data_root=str(tmp_path))
    assert train.ground_truth()[0]["labels"].tolist() == [11, 14]  # dog, person


def test_class_names_match_whatever_their_unicode_normal_form(tmp_path):
    """"café" is one composed character é in text typed on most systems (NFC) and e + a combining accent in names
    that went through a macOS file system (NFD): both print alike, so a mismatch would say "unknown class 'café'
    (classes: café)". Names are compared, reported and saved in the composed form."""
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    root = write_voc_folder(tmp_path, {"a": [(decomposed, (1, 1, 10, 10), 0), ("dog", (2, 2, 9, 9), 0)]},
                            {"trainval": ["a"]})
    (tmp_path / "classes.txt").write_text(f"{decomposed}\ndog\n", encoding="utf-8")
    with pytest.warns(DataWarning, match="object of an unknown class skipped: 1 \\(e.g. 'dog' x1\\)"):
        dataset = build_dataset("custom", "train", 64, data_root=str(root), classes=composed, skip_unknown_classes=True)
    assert dataset.ground_truth()[0]["labels"].tolist() == [0]
    assert dataset.class_names == [composed]
    for classes in (f"{decomposed},dog", str(tmp_path / "classes.txt")):
        dataset = build_dataset("custom", "train", 64, data_root=str(root), classes=classes)
        assert dataset.ground_truth()[0]["labels"].tolist() == [0, 1]
        assert dataset.class_names[0] == composed
    with pytest.raises(DataError, match="duplicate class names"):
        parse_class_list(f"{composed},{decomposed}")
    with pytest.raises(DataError) as error:  # no "compared as" a name that prints the same
        build_dataset("custom", "train", 64, data_root=str(root), classes="dog")
    assert f"{root / 'Annotations/a.xml'}: unknown class {decomposed!r} (classes: dog)" in str(error.value)


def test_the_test_split_is_not_augmented(tmp_path):
    """The test split's target is the annotation normalised by the image size, whatever the seed: XML (2, 3, 30, 40)
    in a 64 x 48 image is (1, 2, 30, 40) in the continuous frame."""
    root = write_voc_folder(tmp_path, {"a": [("cat", (2, 3, 30, 40), 0)]}, {"test": ["a"], "train": []}, size=(48, 64))
    for seed in (0, 1, 2):
        dataset = build_dataset("custom", "test", 64, data_root=str(root), classes="cat", seed=seed)
        image, target, _ = dataset[0]
        assert image.shape == (3, 64, 64)
        np.testing.assert_allclose(target.numpy(), [[1 / 64, 2 / 48, 30 / 64, 40 / 48, 0]], rtol=1e-6)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
def test_an_annotation_that_is_a_named_pipe_is_an_error_not_a_hang(tmp_path):
    """Reading a FIFO waits for a writer forever; it is refused from its file type without opening it."""
    root = write_voc_folder(tmp_path, {"a": [("cat", (1, 1, 10, 10), 0)], "b": []}, {"trainval": ["a", "b"]})
    xml = root / "Annotations/a.xml"
    xml.unlink()
    os.mkfifo(xml)
    (root / "Annotations/b.xml").unlink()
    (root / "Annotations/b.xml").mkdir()
    with pytest.raises(DataError, match="2 problem") as error:
        build_dataset("custom", "train", 64, data_root=str(root), classes="cat")
    message = str(error.value)
    assert (f"{xml}: annotation file is a named pipe (FIFO), not a regular file: replace it with the file itself "
            f"(listed in {root / 'ImageSets/Main/trainval.txt'})") in message
    assert f"{root / 'Annotations/b.xml'}: annotation file is a folder, not a regular file" in message


@pytest.mark.parametrize("width", ["1e30", "40000"])
def test_a_size_over_the_decoders_pixel_limit_is_an_error_naming_the_xml(tmp_path, width):
    xml = voc_xml(64, 48, [("cat", (1, 1, 10, 10), 0)]).replace("<width>64</width>", f"<width>{width}</width>")
    root = write_voc_folder(tmp_path, {"a": xml.replace("<height>48</height>", "<height>40000</height>")},
                            {"trainval": ["a"]})
    with pytest.raises(DataError) as error:
        build_dataset("custom", "train", 64, data_root=str(root), classes="cat")
    assert (f"{root / 'Annotations/a.xml'}: <size> is {float(width):g}x40000 (WxH), over the decoder's pixel limit "
            "(1,073,741,824 pixels): fix the <width> and <height> (or resize the image)") in str(error.value)


def test_huge_coordinates_are_clipped_like_other_boxes_outside_the_image(tmp_path):
    """1e300 overflows float32 (a raw numpy RuntimeWarning before): it is clipped to the image in float64."""
    objects = [("cat", (10, 10, 1e300, 30), 0), ("cat", (-1e300, 5, 20, 30), 0)]
    root = write_voc_folder(tmp_path, {"a": objects}, {"trainval": ["a"]}, size=(48, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.warns(DataWarning, match=r"box clipped to the image: 2 \(e\.g\. .*a\.xml\)"):
            dataset = build_dataset("custom", "train", 64, data_root=str(root), classes="cat")
    np.testing.assert_array_equal(dataset.annotation(0)[0], [[9, 9, 64, 30], [0, 4, 20, 30]])


def write_png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` pixels (with no pixel data behind it)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))


def test_an_image_header_over_pils_pixel_limit_is_an_error_naming_the_image(tmp_path):
    """Without <size> the header is read with PIL, whose DecompressionBombError (a traceback before) becomes one
    line; between PIL's warning and error limits its DecompressionBombWarning is not shown (only the header is read)."""
    xml = voc_xml(0, 0, [("cat", (1, 1, 10, 10), 0)], size=False)
    root = write_voc_folder(tmp_path, {"a": xml, "b": xml}, {"trainval": ["a", "b"]})
    for image_id, side in (("a", 20_000), ("b", 10_000)):
        (root / f"JPEGImages/{image_id}.jpg").unlink()
        write_png_header(root / f"JPEGImages/{image_id}.png", side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match="1 problem") as error:
            build_dataset("custom", "train", 64, data_root=str(root), classes="cat")
    assert (f"{root / 'JPEGImages/a.png'}: the image is over the decoder's pixel limit (400,000,000 pixels; the limit "
            "is 178,956,970 pixels); resize the image (and scale its boxes to match)") in str(error.value)
    (root / "ImageSets/Main/trainval.txt").write_text("b\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # augment=False: its 9 px box is rarely trained on, which training warns
        dataset = build_dataset("custom", "train", 64, data_root=str(root), classes="cat", augment=False)
    assert dataset.image_size(0) == (10_000, 10_000)


@pytest.mark.parametrize(
    "content, where, detail",
    [
        ("a\nb\n".encode("utf-16-le"), ":1", "a NUL byte, as in UTF-16 text or binary data"),
        (b"a\nb\x00\n", ":2", "a NUL byte, as in UTF-16 text or binary data"),
        ("a\nb\n".encode("utf-16"), "", "byte 0xff at offset 0, a UTF-16 byte-order mark"),
    ],
    ids=["utf16le-without-bom", "nul", "utf16-with-bom"],
)
def test_an_image_list_in_utf16_or_with_a_nul_byte_is_an_error_naming_the_list(tmp_path, content, where, detail):
    root = write_voc_folder(tmp_path, {"a": [], "b": []}, {"test": ["a"]})
    list_file = root / "ImageSets/Main/trainval.txt"
    list_file.write_bytes(content)
    for split in ("train", "test"):  # the test split's overlap check reads the train list too
        with pytest.raises(DataError) as error:
            build_dataset("custom", split, 64, data_root=str(root), classes="cat")
        assert str(error.value) == f"{list_file}{where}: not UTF-8 text ({detail}); save the file as UTF-8"


@pytest.mark.parametrize(
    "content, where, found",
    [
        ("cat\ndog\n".encode("utf-16-le"), ":1", "a NUL byte"),
        (b"cat\nd\x1bog\n", ":2: class name 'd\\x1bog'", "the control character(s) U+001B"),
    ],
)
def test_a_class_file_with_nul_or_control_characters_is_an_error_naming_the_file(tmp_path, content, where, found):
    classes = tmp_path / "classes.txt"
    classes.write_bytes(content)
    with pytest.raises(DataError, match=rf"^{re.escape(f'{classes}{where}')}.*{re.escape(found)}"):
        parse_class_list(str(classes))
    with pytest.raises(DataError, match=r"^--classes 'cat,d\\x07og': class name 'd\\x07og' contains the control "
                                        r"character\(s\) U\+0007; give plain names"):
        parse_class_list("cat,d\x07og")


def test_a_class_name_with_an_invisible_character_is_an_error_naming_the_line(tmp_path):
    """Class files joined with `cat` keep each one's byte-order mark: '\\ufeffdog' matched no XML's dog, and the error
    read "unknown class 'dog' (classes: cat, dog)", the mark invisible. ZWNJ / ZWJ, which write some languages'
    words, stay allowed."""
    classes = tmp_path / "classes.txt"
    classes.write_bytes("cat\n\ufeffdog\nمی\u200cخواهم\n".encode("utf-8-sig"))
    with pytest.raises(DataError) as error:
        parse_class_list(str(classes))
    assert str(error.value) == (f"{classes}:2: class name '\\ufeffdog' contains the invisible character(s) U+FEFF (a "
                                "byte-order mark where files were joined, a zero-width space): remove them")
    with pytest.raises(DataError, match=r"^--classes 'cat,dog\\u200b': class name 'dog\\u200b' contains the "
                                        r"invisible character\(s\) U\+200B"):
        parse_class_list("cat,dog\u200b")
    classes.write_text("cat\nمی\u200cخواهم\n")
    assert parse_class_list(str(classes)) == ["cat", "می\u200cخواهم"]


@pytest.mark.parametrize("how", ["relative", "absolute", "symlink"])
def test_a_train_annotation_using_a_test_image_through_its_filename_is_an_error(tmp_path, how):
    """a.jpg is missing, so a.xml's <filename> names its image: the test image b.jpg (by name, by absolute path, or a
    link to it in another folder). The id lists do not overlap, the image files do."""
    root = write_voc_folder(tmp_path / "voc", {"a": [("cat", (1, 1, 10, 10), 0)], "b": [("cat", (1, 1, 10, 10), 0)]},
                            {"trainval": ["a"], "test": ["b"]})
    (root / "JPEGImages/a.jpg").unlink()
    test_image = root / "JPEGImages/b.jpg"
    filename = {"relative": "b.jpg", "absolute": str(test_image), "symlink": str(tmp_path / "other/copy.jpg")}[how]
    if how == "symlink":
        (tmp_path / "other").mkdir()
        (tmp_path / "other/copy.jpg").symlink_to(test_image)
    xml = root / "Annotations/a.xml"
    xml.write_text(xml.read_text().replace("<filename>x.jpg</filename>", f"<filename>{filename}</filename>"))
    lists = root / "ImageSets/Main"
    for split in ("train", "test"):
        with pytest.raises(DataError) as error:
            build_dataset("custom", split, 64, data_root=str(root), classes="cat")
        assert str(error.value) == (
            f"{xml} (listed in {lists / 'trainval.txt'}) and {root / 'Annotations/b.xml'} (listed in "
            f"{lists / 'test.txt'}) use the same image {root / 'JPEGImages' / filename}, so the model would be tested "
            "on an image it trained on: give each annotation its own image (JPEGImages/<id>.jpg, or a <filename> "
            "naming it) or remove one of them from its list"
        )
    (root / "JPEGImages/a.jpg").write_bytes(test_image.read_bytes())  # its own image (a copy): <filename> unused
    assert build_dataset("custom", "train", 64, data_root=str(root), classes="cat").image_ids == ["a"]


@pytest.mark.parametrize("across_folders", [False, True])
def test_two_annotations_of_a_split_using_one_image_file_are_an_error(tmp_path, across_folders):
    """1.jpg is missing, so 1.xml's <filename> names its image: 2.jpg, which 2.xml of the same split uses (in the
    same folder, or in VOC2012 while 1.xml is in VOC2007)."""
    samples = {"1": [("cat", (1, 1, 10, 10), 0)], "3": []}
    write_voc_folder(tmp_path / "VOC2007", samples, {"trainval": ["1"], "test": ["3"]})
    write_voc_folder(tmp_path / "VOC2012", {"4": []}, {"trainval": ["4"]})
    other = tmp_path / ("VOC2012" if across_folders else "VOC2007")
    write_voc_folder(other, {"2": [("dog", (2, 2, 9, 9), 0)]}, {})
    with open(other / "ImageSets/Main/trainval.txt", "a") as trainval:
        trainval.write("2\n")
    (tmp_path / "VOC2007/JPEGImages/1.jpg").unlink()
    xml = tmp_path / "VOC2007/Annotations/1.xml"
    xml.write_text(xml.read_text().replace("x.jpg", f"{other / 'JPEGImages/2.jpg'}"))
    with pytest.raises(DataError, match="1 problem") as error:
        build_dataset("voc", "train", 64, data_root=str(tmp_path))
    assert str(error.value).endswith(
        f"{xml} (listed in {tmp_path / 'VOC2007/ImageSets/Main/trainval.txt'}) and {other / 'Annotations/2.xml'} "
        f"(listed in {other / 'ImageSets/Main/trainval.txt'}) use the same image {other / 'JPEGImages/2.jpg'}, so it "
        "would be trained with the boxes of one annotation at a time: give each annotation its own image, or fix the "
        "<filename>"
    )
    (tmp_path / "VOC2007/JPEGImages/1.jpg").write_bytes((other / "JPEGImages/2.jpg").read_bytes())  # its own copy
    assert len(build_dataset("voc", "train", 64, data_root=str(tmp_path))) == 3
    # or its own link to one stored copy of the same pixels (git-annex, DVC): its own image path, accepted as well
    (tmp_path / "VOC2007/JPEGImages/1.jpg").unlink()
    (tmp_path / "VOC2007/JPEGImages/1.jpg").symlink_to(other / "JPEGImages/2.jpg")
    assert len(build_dataset("voc", "train", 64, data_root=str(tmp_path))) == 3


def test_two_annotations_of_a_test_split_using_one_image_file_say_what_the_scoring_would_do(tmp_path):
    """The test split is never trained on: its error said "it would be trained with the boxes of one annotation"."""
    write_voc_folder(tmp_path / "VOC2007", {"1": [("cat", (1, 1, 10, 10), 0)], "2": [("dog", (2, 2, 9, 9), 0)]},
                     {"trainval": ["3"], "test": ["1", "2"]})
    write_voc_folder(tmp_path / "VOC2007", {"3": [("cat", (1, 1, 10, 10), 0)]}, {})
    (tmp_path / "VOC2007/JPEGImages/1.jpg").unlink()
    xml = tmp_path / "VOC2007/Annotations/1.xml"
    xml.write_text(xml.read_text().replace("x.jpg", "2.jpg"))
    with pytest.raises(DataError, match="1 problem") as error:
        build_dataset("voc", "test", 64, data_root=str(tmp_path))
    assert str(error.value).endswith(
        f"use the same image {tmp_path / 'VOC2007/JPEGImages/2.jpg'}, so its detections would be scored against the "
        "boxes of one annotation at a time (the objects of each missed under the other, and their detections false "
        "positives there): give each annotation its own image, or fix the <filename>"
    )
