"""COCO-format datasets on a tiny json written by the tests."""
import gc
import json
import os
import pickle
import shlex
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from data import DEFAULT_ROOTS, COCODetection, DataError, DatasetNotFoundError, DataWarning, build_dataset
from data.coco import clean_coco_boxes, find_coco_annotation, read_json_file, read_json_member
from data.transforms import TestTransform
from tests.test_data_voc import calls_recorded

pytestmark = pytest.mark.filterwarnings("ignore::data.errors.DataWarning")  # asserted where they matter

CATEGORIES = [{"id": 5, "name": "bus"}, {"id": 1, "name": "person"}, {"id": 90, "name": "toothbrush"}]


def coco_json(annotations: list[dict], images: list[dict] | None = None) -> dict:
    images = images or [
        {"id": 7, "file_name": "000000000007.jpg", "height": 40, "width": 60},
        {"id": 3, "file_name": "000000000003.jpg", "height": 50, "width": 50},
        {"id": 9, "file_name": "000000000009.jpg", "height": 30, "width": 30},
    ]
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}


GOOD_ANNOTATIONS = [
    {"id": 1, "image_id": 7, "category_id": 1, "bbox": [-2.0, 4.0, 30.0, 20.0], "area": 600.0, "iscrowd": 0},
    {"id": 2, "image_id": 7, "category_id": 90, "bbox": [40.0, 10.0, 5.0, 5.0], "area": 25.0, "iscrowd": 0},
    {"id": 3, "image_id": 3, "category_id": 5, "bbox": [10.5, 10.0, 20.0, 30.0], "area": 600.0, "iscrowd": 1},
]


def write_coco(root: Path, name: str, data: dict, image_folder: str | None = None) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    folder = root / (image_folder or name)
    folder.mkdir(parents=True, exist_ok=True)
    for image in data["images"]:
        cv2.imwrite(str(folder / image["file_name"]), np.full((image["height"], image["width"], 3), 50, np.uint8))
    path = root / "annotations" / f"instances_{name}.json"
    path.write_text(json.dumps(data))
    return path


def test_labels_follow_get_cat_ids_and_boxes_are_cleaned_in_the_continuous_frame(tmp_path):
    path = write_coco(tmp_path, "train2017", coco_json(GOOD_ANNOTATIONS))
    with pytest.warns(DataWarning, match="box clipped to the image: 1"):
        dataset = COCODetection(path, tmp_path / "train2017", TestTransform(32))
    assert dataset.class_names == ["bus", "person", "toothbrush"] and dataset.category_ids == [5, 1, 90]
    assert dataset.image_ids == [7, 3, 9] and dataset.image_size(0) == (40, 60) and dataset.kind == "coco"
    # person [-2, 4, 30, 20]: x1 = clip(-2) = 0, x2 = -2 + 30 = 28, y2 = 4 + 20 = 24; the 5 px toothbrush is dropped
    boxes, labels, difficult = dataset.annotation(0)
    np.testing.assert_array_equal(boxes, [[0, 4, 28, 24]])
    assert labels.tolist() == [1] and difficult.tolist() == [False]
    boxes, labels, _ = dataset.annotation(1)  # the crowd bus is kept, as the authors do
    np.testing.assert_array_equal(boxes, [[10.5, 10, 30.5, 40]])
    assert labels.tolist() == [0]
    assert dataset.small_boxes_dropped == 1
    # as a training split, the small box is counted in the warning (for evaluation pycocotools still scores it)
    with pytest.warns(DataWarning, match=r"box with a side <= 7 px left out of training \(the authors' rule\): 1 "
                                         r"\(e\.g\. annotation id \d+"):
        COCODetection(path, tmp_path / "train2017", TestTransform(32), require_boxes=True)
    _, target, _ = dataset[0]
    np.testing.assert_allclose(target.numpy(), [[0, 4 / 40, 28 / 60, 24 / 40, 1]], rtol=1e-6)
    _, target, _ = dataset[2]
    assert target.shape == (0, 5)
    assert dataset.coco.getAnnIds(imgIds=[7]) == [1, 2]  # the evaluator's ground truth is untouched


def test_objects_to_score_per_image_counts_what_cocos_metric_scores(tmp_path):
    """Per image, in the split's order, the annotations pycocotools scores: not iscrowd, small boxes included."""
    path = write_coco(tmp_path, "val2017", coco_json(GOOD_ANNOTATIONS))
    with pytest.warns(DataWarning):
        dataset = COCODetection(path, tmp_path / "val2017", TestTransform(32))
    assert dataset.image_ids == [7, 3, 9]
    assert dataset.objects_to_score_per_image().tolist() == [2, 0, 0]  # image 3's one box is a crowd


def test_coco2017_train_drops_empty_images_and_test_keeps_all(tmp_path):
    """train2017 leaves out image 9, which no annotation names (the authors' train set; 1,021 images of the real
    one), and counts it in the warning, as README says: the run's image count otherwise differs from the json's
    without a word."""
    write_coco(tmp_path, "train2017", coco_json(GOOD_ANNOTATIONS))
    write_coco(tmp_path, "val2017", coco_json(GOOD_ANNOTATIONS))
    with pytest.warns(DataWarning, match=r"image without annotations left out of training \(the authors' COCO train "
                                         r"set\): 1 \(e\.g\. image id 9\)"):
        train = build_dataset("coco", "train", 32, data_root=str(tmp_path))
    test = build_dataset("coco", "test", 32, data_root=str(tmp_path))
    assert train.image_ids == [7, 3] and test.image_ids == [7, 3, 9]


@pytest.mark.parametrize("name, train_json, test_json", [("coco", "train2017", "val2017"), ("custom", "train", "val")])
def test_a_training_split_keeps_arrays_only_not_the_json_index(tmp_path, name, train_json, test_json):
    """The json's pycocotools index (one dict per annotation: 1.7 GB for COCO train2017) is read by the evaluation
    only: a training split built by build_dataset drops it, so DataLoader workers neither copy it (fork) nor unpickle
    it (spawn); the boxes, sizes and the messages' source are those of the split built with its index."""
    train_file = write_coco(tmp_path, train_json, coco_json(GOOD_ANNOTATIONS))
    write_coco(tmp_path, test_json, coco_json(GOOD_ANNOTATIONS), image_folder=None if name == "coco" else "images")
    train = build_dataset(name, "train", 32, data_root=str(tmp_path))
    test = build_dataset(name, "test", 32, data_root=str(tmp_path))
    kept = COCODetection(train_file, tmp_path / train_json, TestTransform(32), drop_empty=name == "coco",
                         require_boxes=True)
    assert train.coco is None and test.coco is not None and kept.coco is not None
    assert b"iscrowd" not in pickle.dumps(train) and b"iscrowd" in pickle.dumps(test)  # no annotation dict left
    assert train.image_ids == kept.image_ids and train.fingerprint() == kept.fingerprint()
    assert train.annotation_source(1) == kept.annotation_source(1) == f"image id 3 in {train_file}"
    assert (train.small_boxes_dropped, train.crowd_objects) == (kept.small_boxes_dropped, kept.crowd_objects) == (1, 1)
    with pytest.raises(ValueError, match=r"training split .* drops the json's index .*: build it with COCODetection"):
        train.objects_to_score_per_class()


@pytest.mark.parametrize("name, train_json, test_json", [("coco", "train2017", "val2017"), ("custom", "train", "val")])
def test_a_training_split_does_not_build_the_annotation_index_it_drops(tmp_path, monkeypatch, name, train_json,
                                                                       test_json):
    """pycocotools' index of the annotations (1-2 s for COCO train2017) is the evaluation's: a training split built
    by build_dataset, which drops it, does not build it; a test split and COCODetection by default do."""
    write_coco(tmp_path, train_json, coco_json(GOOD_ANNOTATIONS))
    test_file = write_coco(tmp_path, test_json, coco_json(GOOD_ANNOTATIONS),
                           image_folder=None if name == "coco" else "images")
    indexed = []
    monkeypatch.setattr(COCO, "createIndex", lambda coco: indexed.append(coco.dataset["annotations"]))
    train = build_dataset(name, "train", 32, data_root=str(tmp_path))
    assert indexed == [] and train.image_ids == ([7, 3] if name == "coco" else [7, 3, 9])
    assert train.annotations.labels.tolist() == [1, 0]
    monkeypatch.undo()
    test = build_dataset(name, "test", 32, data_root=str(tmp_path))
    assert test.coco.getAnnIds(imgIds=[7]) == [1, 2] and test.objects_to_score_per_class().tolist() == [0, 1, 1]
    kept = COCODetection(test_file, test_file.parent.parent / ("val2017" if name == "coco" else "images"),
                         TestTransform(32), require_boxes=True)
    assert kept.coco.getAnnIds(imgIds=[3]) == [3]


def test_crowd_boxes_can_be_left_out(tmp_path):
    path = write_coco(tmp_path, "x", coco_json(GOOD_ANNOTATIONS))
    dataset = COCODetection(path, tmp_path / "x", TestTransform(32), include_crowd=False)
    assert len(dataset.annotation(1)[0]) == 0


def test_missing_coco_names_the_download_script(tmp_path, monkeypatch):
    """The default folder (datasets/coco2017) is where the script downloads by default: the command takes no DIR."""
    monkeypatch.setitem(DEFAULT_ROOTS, "coco", tmp_path / "coco2017")
    expected = r"instances_train2017\.json not found: download it with `bash data/scripts/COCO2017\.sh`, or"
    with pytest.raises(DatasetNotFoundError, match=expected):
        build_dataset("coco", "train", 32)


def test_custom_coco_folder_with_train_and_val_files(tmp_path):
    write_coco(tmp_path, "train", coco_json(GOOD_ANNOTATIONS))
    write_coco(tmp_path, "val_small", coco_json(GOOD_ANNOTATIONS[:1]), image_folder="images")
    train = build_dataset("custom", "train", 32, data_root=str(tmp_path))
    test = build_dataset("custom", "test", 32, data_root=str(tmp_path))
    assert len(train) == 3 and len(test) == 3 and test.image_path(0) == tmp_path / "images" / "000000000007.jpg"
    with pytest.raises(DataError, match="differ from the categories .*: leave out --classes$"):
        build_dataset("custom", "train", 32, data_root=str(tmp_path), classes=["person", "bus", "toothbrush"])



def test_a_custom_training_image_whose_every_box_is_dropped_is_left_out_not_trained_as_background(tmp_path):
    """Custom COCO layout: image 9's only object is 5 px, which training leaves out (the authors' rule); kept as an
    image without objects, its object would be trained on as background. It is left out, as `coco`'s train split
    leaves such images out, and counted in the warning; image 3, annotated with no object, stays (a negative)."""
    small = {"id": 4, "image_id": 9, "category_id": 1, "bbox": [2.0, 2.0, 5.0, 5.0], "area": 25.0, "iscrowd": 0}
    write_coco(tmp_path, "train", coco_json([GOOD_ANNOTATIONS[0], small]), image_folder="images")
    write_coco(tmp_path, "val", coco_json([]) | {"images": [{"id": 11, "file_name": "11.jpg", "height": 20,
                                                             "width": 20}]}, image_folder="images")
    with pytest.warns(DataWarning, match=r"image whose every box was dropped, left out of training: 1 \(e\.g\. "
                                         r"image id 9\)"):
        train = build_dataset("custom", "train", 32, data_root=str(tmp_path))
    assert train.image_ids == [7, 3] and len(train) == 2
    assert [len(train.annotation(i)[0]) for i in range(2)] == [1, 0]


def test_several_train_jsons_say_how_to_choose_one_and_the_advice_works(tmp_path):
    """A backup beside the train json makes the choice ambiguous. Naming the one to use instances_train.json settles
    it, but its images are then read in train/ (or images/), not train2017/: the message says so, and following it
    loads the set."""
    path = write_coco(tmp_path, "train2017", coco_json(GOOD_ANNOTATIONS))
    (tmp_path / "annotations" / "instances_train2017_old.json").write_text(path.read_text())
    write_coco(tmp_path, "val", coco_json(GOOD_ANNOTATIONS[:1]))
    with pytest.raises(DataError) as error:
        build_dataset("custom", "train", 32, data_root=str(tmp_path))
    assert str(error.value) == (
        f"{tmp_path / 'annotations'}: several train annotation files ['instances_train2017.json', "
        f"'instances_train2017_old.json']; keep one (move the others out of that folder), or name the one to read "
        f"instances_train.json and its image folder {tmp_path / 'train'} (or {tmp_path / 'images'})")
    path.rename(tmp_path / "annotations" / "instances_train.json")
    (tmp_path / "train2017").rename(tmp_path / "train")
    assert len(build_dataset("custom", "train", 32, data_root=str(tmp_path))) == 3

# an object of image 9, for a test json of images 9 (and 3) beside a training json of images 7 and 3
IMAGE_9_OBJECT = {"id": 1, "image_id": 9, "category_id": 1, "bbox": [2.0, 2.0, 20.0, 20.0], "area": 400.0, "iscrowd": 0}


def test_custom_coco_splits_sharing_an_image_are_an_error(tmp_path):
    both = coco_json(GOOD_ANNOTATIONS)
    write_coco(tmp_path, "train", both | {"images": both["images"][:2]}, image_folder="images")
    val = both | {"images": both["images"][2:], "annotations": [IMAGE_9_OBJECT]}
    write_coco(tmp_path, "val", val, image_folder="images")
    assert len(build_dataset("custom", "train", 32, data_root=str(tmp_path))) == 2  # images 7, 3 / 9: disjoint
    write_coco(tmp_path, "val", val | {"images": both["images"][1:]}, image_folder="images")
    for split in ("train", "test"):
        with pytest.raises(DataError, match=r"instances_train\.json and .*instances_val\.json share 1 image\(s\) of "
                                            r".*images \(000000000003\.jpg\), so the model would be tested on images"):
            build_dataset("custom", split, 32, data_root=str(tmp_path))


def test_a_test_splits_check_of_shared_images_reads_the_training_jsons_images_alone(tmp_path):
    """The test split's check read the whole training json (COCO train2017: 15 s, 2.4 GB) for its images: it now
    parses the members up to "images" only. A training json whose annotations after its images are not even JSON
    shows it, and the shared image is still found, also in a json listing its annotations before its images."""
    both = coco_json(GOOD_ANNOTATIONS)
    train_file = write_coco(tmp_path, "train", both | {"images": both["images"][:2]}, image_folder="images")
    write_coco(tmp_path, "val", both | {"images": both["images"][1:], "annotations": [IMAGE_9_OBJECT]},
               image_folder="images")
    images = json.dumps(both["images"][:2])
    train_file.write_text('\ufeff {"info": {"images": []}, "images" :\n' + images + ', "annotations": [{"id": 1,,}]}')
    with pytest.raises(DataError, match=r"instances_train\.json:2:\d+: invalid JSON"):
        read_json_file(train_file)
    assert read_json_member(train_file, "images") == both["images"][:2]
    with pytest.raises(DataError, match=r"instances_train\.json and .*instances_val\.json share 1 image\(s\) of "
                                        r".*images \(000000000003\.jpg\)"):
        build_dataset("custom", "test", 32, data_root=str(tmp_path))
    train_file.write_text(json.dumps({"annotations": GOOD_ANNOTATIONS, "categories": CATEGORIES,
                                      "images": both["images"][:2]}))
    with pytest.raises(DataError, match=r"share 1 image\(s\) of .*images \(000000000003\.jpg\)"):
        build_dataset("custom", "test", 32, data_root=str(tmp_path))


@pytest.mark.parametrize("text, value", [
    ('{"annotations": [], "images": [{"id": 1}]}', [{"id": 1}]), ('{"annotations": []}', None), ("{ }", None),
    ("[1, 2]", None), ('{"images": [1], "images": [2]}', [1]),
])
def test_read_json_member_gives_the_member_of_a_well_formed_object(text, value, tmp_path):
    path = tmp_path / "a.json"
    path.write_text(text)
    assert read_json_member(path, "images") == value


@pytest.mark.parametrize("text", ['{"info": {,}, "images": []}', '{"info" 1, "images": []}', "", '{"info": 1 "x"}'])
def test_read_json_member_reports_a_syntax_error_before_the_member_as_read_json_file(text, tmp_path):
    path = tmp_path / "a.json"
    path.write_text(text)
    with pytest.raises(DataError) as expected:
        read_json_file(path)
    with pytest.raises(DataError) as error:
        read_json_member(path, "images")
    assert str(error.value) == str(expected.value)


def test_custom_folder_of_neither_layout_says_both(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="neither a VOC-layout folder .* nor a COCO-layout folder"):
        build_dataset("custom", "train", 32, data_root=str(tmp_path))


def test_custom_folder_of_neither_layout_names_the_jsons_each_split_reads(tmp_path):
    """The names find_coco_annotation looks for (instances_trainval.json was once named for the train split)."""
    with pytest.raises(DatasetNotFoundError, match=r"\(annotations/instances_train\*\.json \+ an image folder\)"):
        build_dataset("custom", "train", 32, data_root=str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=r"annotations/instances_test\*\.json or instances_val\*\.json"):
        build_dataset("custom", "test", 32, data_root=str(tmp_path))


def test_custom_folder_of_neither_layout_says_what_comes_close(tmp_path):
    """The common slips of a hand-made folder: jsons under other names, JPEGImages/ under another name, --data_root
    one level too high or too low."""
    coco = tmp_path / "coco"
    write_coco(coco, "train", coco_json(GOOD_ANNOTATIONS)).rename(coco / "annotations" / "train.json")
    with pytest.raises(DatasetNotFoundError, match=r"coco/annotations holds train\.json: name the train json "
                                                   r"instances_train\*\.json \(letter case included\)$"):
        build_dataset("custom", "train", 32, data_root=str(coco))
    voc = tmp_path / "voc"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "images").mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"it has Annotations/ but no JPEGImages/"):
        build_dataset("custom", "train", 32, data_root=str(voc))
    (voc / "images").rename(voc / "JPEGImages")
    with pytest.raises(DatasetNotFoundError, match=r"its sub-folder voc/ is one: pass --data_root .*voc$"):
        build_dataset("custom", "train", 32, data_root=str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=r"it is a folder of the dataset .*voc: pass --data_root .*voc$"):
        build_dataset("custom", "train", 32, data_root=str(voc / "JPEGImages"))


def test_a_coco_folder_named_in_another_letter_case_says_what_to_rename(tmp_path):
    """A COCO layout made on macOS or Windows, whose file systems ignore letter case, read on Linux: its
    Annotations/ holding the jsons was called half a VOC layout, and an Instances_Train.JSON was left unnamed."""
    coco = tmp_path / "coco"
    write_coco(coco, "train", coco_json(GOOD_ANNOTATIONS))
    write_coco(coco, "val", coco_json(GOOD_ANNOTATIONS[:1]))
    (coco / "annotations").rename(coco / "Annotations")
    with pytest.raises(DatasetNotFoundError, match=r"coco/Annotations holds instances_train\.json, instances_val\.json:"
                                                   r" a COCO layout's jsons are read in annotations/, letter case "
                                                   r"included: rename Annotations/ to annotations/$"):
        build_dataset("custom", "train", 32, data_root=str(coco))
    (coco / "Annotations").rename(coco / "annotations")
    (coco / "annotations" / "instances_train.json").rename(coco / "annotations" / "Instances_Train.JSON")
    expected = (r"coco/annotations holds Instances_Train\.JSON, instances_val\.json: name the train json "
                r"instances_train\*\.json \(letter case included\)$")
    with pytest.raises(DatasetNotFoundError, match=expected):
        build_dataset("custom", "train", 32, data_root=str(coco))



def test_a_folder_of_split_folders_each_holding_its_json_says_where_to_move_them(tmp_path):
    """The layout some labelling tools export (train/_annotations.coco.json beside its images, valid/, test/): the
    error said only what layout it expects; it now names the jsons and where to move them."""
    for split in ("train", "valid"):
        write_coco(tmp_path, split, coco_json(GOOD_ANNOTATIONS)).rename(tmp_path / split / "_annotations.coco.json")
    (tmp_path / "annotations").rmdir()
    expected = (f"; {tmp_path} has jsons in its image folders (train/_annotations.coco.json, "
                "valid/_annotations.coco.json): a COCO layout reads annotations/instances_<folder>.json with its "
                "images in <folder>/: move each json there, e.g. train/_annotations.coco.json to "
                "annotations/instances_train.json")
    for split in ("train", "test"):
        with pytest.raises(DatasetNotFoundError) as error:
            build_dataset("custom", split, 32, data_root=str(tmp_path))
        assert str(error.value).endswith(expected)
    (tmp_path / "annotations").mkdir()
    for split in ("train", "valid"):
        (tmp_path / split / "_annotations.coco.json").rename(tmp_path / "annotations" / f"instances_{split}.json")
    assert len(build_dataset("custom", "test", 32, data_root=str(tmp_path))) == 3  # instances_valid.json, valid/

def test_custom_data_root_that_does_not_exist_says_so(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"--data_root .*missing not found"):
        build_dataset("custom", "train", 32, data_root=str(tmp_path / "missing"))


@pytest.mark.parametrize("name", ["custom", "voc", "coco", "shapes"])
@pytest.mark.parametrize("kind", ["regular file", "device"])
def test_a_data_root_that_is_a_file_says_so(tmp_path, name, kind):
    path = tmp_path / "data.zip" if kind == "regular file" else Path(os.devnull)
    if kind == "regular file":
        path.write_bytes(b"PK")
    with pytest.raises(DataError) as error:
        build_dataset(name, "train", 32, data_root=str(path), classes="cat")
    assert str(error.value) == (f"--data_root {path} is a file, not a dataset folder: pass the folder that holds the "
                                "dataset (its Annotations/ or annotations/ and its images)")


def test_bad_category_and_image_ids_are_listed_with_the_file(tmp_path):
    bad = GOOD_ANNOTATIONS + [
        {"id": 11, "image_id": 3, "category_id": 2, "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0},
        {"id": 12, "image_id": 404, "category_id": 1, "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0},
        {"id": 13, "image_id": 3, "category_id": 1, "bbox": [1, 1, 10], "area": 100, "iscrowd": 0},
    ]
    path = write_coco(tmp_path, "x", coco_json(bad))
    with pytest.raises(DataError, match="3 problem") as error:
        COCODetection(path, tmp_path / "x", TestTransform(32))
    message = str(error.value)
    assert (f"{path}: annotation id 11 (image id 3): category_id 2 is not in the categories [5, 1, 90]; add category "
            "2 to 'categories' or remove the annotation (--skip_unknown_classes leaves out the objects of listed "
            "categories, not of an id the json does not list)\n"
            in message)
    assert "annotation id 12 (image id 404): image_id is not in the images list" in message
    assert "annotation id 13 (image id 3): bbox [1, 1, 10] is not 4 finite numbers" in message


def test_missing_image_file_and_invalid_json(tmp_path):
    path = write_coco(tmp_path, "x", coco_json(GOOD_ANNOTATIONS))
    (tmp_path / "x" / "000000000003.jpg").unlink()
    with pytest.raises(DataError, match=r"000000000003\.jpg: image file not found \(image id 3"):
        COCODetection(path, tmp_path / "x", TestTransform(32))
    path.write_text('{"images": [],\n "annotations": [,]}')
    with pytest.raises(DataError, match=r"instances_x\.json:2:18: invalid JSON"):
        COCODetection(path, tmp_path / "x", TestTransform(32))



def test_images_in_images_beside_a_split_folder_say_which_folder_is_read(tmp_path):
    """A custom COCO layout reads a json's images in the folder named after it when there is one, else in images/:
    with the images in images/ and a folder train/ beside it (empty, or of other files), each image was 'not found' in
    train/ without a word about images/."""
    write_coco(tmp_path, "train", coco_json(GOOD_ANNOTATIONS), image_folder="images")
    write_coco(tmp_path, "val", coco_json(GOOD_ANNOTATIONS), image_folder="val")
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="3 problem") as error:
        build_dataset("custom", "train", 32, data_root=str(tmp_path))
    assert (f"{tmp_path / 'train' / '000000000007.jpg'}: image file not found (image id 7 in "
            f"{tmp_path / 'annotations' / 'instances_train.json'}); {tmp_path / 'images'} holds it, but the json's "
            f"images are read in {tmp_path / 'train'}, which is used when it exists: move the images there, or rename "
            f"or remove {tmp_path / 'train'}") in str(error.value)
    (tmp_path / "train").rmdir()
    assert len(build_dataset("custom", "train", 32, data_root=str(tmp_path))) == 3

def test_file_name_with_a_folder_the_image_folder_already_is_says_what_to_write(tmp_path):
    """Some exporters write file_name relative to the dataset (x/000000000007.jpg) or as an absolute path elsewhere;
    the loader reads it inside the image folder, which holds the file under its base name."""
    data = coco_json(GOOD_ANNOTATIONS)
    path = write_coco(tmp_path, "x", data)
    data["images"][0]["file_name"] = "x/000000000007.jpg"
    data["images"][1]["file_name"] = "/elsewhere/000000000003.jpg"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as error:
        COCODetection(path, tmp_path / "x", TestTransform(32))
    assert 'x/000000000007.jpg: image file not found (image id 7 in ' in str(error.value)
    assert f'; file_name is read in {tmp_path / "x"}, which holds 000000000007.jpg: write "file_name": ' \
           '"000000000007.jpg"' in str(error.value)
    assert 'which holds 000000000003.jpg: write "file_name": "000000000003.jpg"' in str(error.value)



def test_a_file_name_whose_image_has_another_extension_says_what_to_write(tmp_path):
    """The images were converted to PNG after the json was written: its file_name names a .jpg no longer there."""
    data = coco_json(GOOD_ANNOTATIONS)
    path = write_coco(tmp_path, "x", data)
    folder = tmp_path / "x"
    cv2.imwrite(str(folder / "000000000007.png"), cv2.imread(str(folder / "000000000007.jpg")))
    (folder / "000000000007.jpg").unlink()
    with pytest.raises(DataError) as error:
        COCODetection(path, folder, TestTransform(32))
    assert f"{folder / '000000000007.jpg'}: image file not found (image id 7 in {path}); {folder} holds " \
           '000000000007.png: write "file_name": "000000000007.png"' in str(error.value)

def test_a_file_name_in_another_unicode_normal_form_reads_the_file(tmp_path):
    """Images unpacked from a macOS archive keep names with a combining accent (NFD, "cafe\u0301.jpg") where a json
    written elsewhere has the composed é (NFC): both print alike, so "image file not found" would name a file that
    `ls` shows."""
    data = coco_json(GOOD_ANNOTATIONS)
    path = write_coco(tmp_path, "x", data)
    folder = tmp_path / "x"
    (folder / "000000000007.jpg").rename(folder / "cafe\u0301.jpg")
    data["images"][0]["file_name"] = "caf\u00e9.jpg"
    path.write_text(json.dumps(data))
    dataset = COCODetection(path, folder, TestTransform(32))
    assert dataset.image_path(0) == folder / "cafe\u0301.jpg" and dataset.load_image(0).shape == (40, 60, 3)


def test_a_file_name_in_another_letter_case_reads_the_file_as_voc_layout_data_does(tmp_path):
    """A json written on Windows or macOS, whose file systems ignore letter case, may say IMG3.JPG for Img3.jpg: the
    file is found (the exact name first), as VOC-layout images are; two entries naming one file in two letter cases
    use one file."""
    data = coco_json(GOOD_ANNOTATIONS)
    path = write_coco(tmp_path, "x", data)
    folder = tmp_path / "x"
    (folder / "000000000007.jpg").rename(folder / "000000000007.JPG")
    (folder / "sub").mkdir()
    (folder / "000000000003.jpg").rename(folder / "sub" / "Img3.jpg")
    data["images"][1]["file_name"] = "sub/IMG3.JPG"
    path.write_text(json.dumps(data))
    dataset = COCODetection(path, folder, TestTransform(32))
    assert [dataset.image_path(i) for i in range(3)] == [
        folder / "000000000007.JPG", folder / "sub" / "Img3.jpg", folder / "000000000009.jpg"]
    assert dataset.load_image(1).shape == (50, 50, 3)
    data["images"][2].update(file_name="000000000007.JPG", height=40, width=60)
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="1 problem") as error:
        COCODetection(path, folder, TestTransform(32))
    assert f"image ids 7 and 9 both use the image file {folder / '000000000007.JPG'}" in str(error.value)


def test_a_size_that_disagrees_with_the_image_names_the_json_and_the_image_id(tmp_path):
    """height/width swapped in the json: the image's first load names the image file, the json and the image id (the
    image alone left the user to find the entry to fix)."""
    data = coco_json(GOOD_ANNOTATIONS)
    path = write_coco(tmp_path, "x", data)
    data["images"][0].update(height=60, width=40)
    path.write_text(json.dumps(data))
    dataset = COCODetection(path, tmp_path / "x", TestTransform(32))
    assert dataset.load_image(1).shape == (50, 50, 3)
    with pytest.raises(DataError) as error:
        dataset[0]
    assert str(error.value) == (f"{tmp_path / 'x' / '000000000007.jpg'}: image is 60x40 (WxH) but its annotation says "
                                f"40x60 (image id 7 in {path}); fix the annotation's size")


@pytest.mark.parametrize("name, written, unusable", [
    ("000000000009.jpg\x00", "'000000000009.jpg\\x00'", "holds a NUL character"),
    ("\ud800.jpg", "'\\ud800.jpg'", "holds '\\ud800', half of a UTF-16 surrogate pair and not a character"),
])
def test_a_file_name_no_file_can_have_is_a_problem_naming_the_entry(tmp_path, name, written, unusable):
    """JSON may escape a NUL (\\u0000) or a lone surrogate (\\ud800) into a file_name, which no file system accepts:
    it was a ValueError traceback ('embedded null byte', 'surrogates not allowed') from the image lookup."""
    data = coco_json(GOOD_ANNOTATIONS)
    path = write_coco(tmp_path, "x", data)
    data["images"][2]["file_name"] = name
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="1 problem") as error:
        COCODetection(path, tmp_path / "x", TestTransform(32))
    assert str(error.value).endswith(f"{path}: image id 9 has file_name {written}, which {unusable}: write the image "
                                     "file's name")



def test_boxes_written_as_corners_get_a_warning_saying_what_coco_bbox_holds(tmp_path):
    """A converter that writes [x1, y1, x2, y2] where COCO's bbox is [x, y, width, height]: boxes away from the
    top-left corner overflow their image and are clipped, each a fix-up of its own. Every one of them fits its image
    read as corners, which the warning says (a legitimate box clipped by a pixel or two, id 1 of GOOD_ANNOTATIONS
    starting at x = -2, does not)."""
    corners = [[20, 10, 55, 35], [5, 5, 15, 12], [10, 20, 40, 45], [8, 8, 28, 26]]  # images 60x40, 60x40, 50x50, 30x30
    annotations = [{"id": i + 1, "image_id": image_id, "category_id": 1, "bbox": box, "area": 100.0, "iscrowd": 0}
                   for i, (image_id, box) in enumerate(zip([7, 7, 3, 9], corners))]
    path = write_coco(tmp_path, "train", coco_json(annotations))
    with pytest.warns(DataWarning) as warned:
        COCODetection(path, tmp_path / "train", TestTransform(32))
    assert f"{path}: 3 of the 4 boxes extend past their image, and each fits it read as [x1, y1, x2, y2]: COCO's " \
           "bbox is [x, y, width, height]; if the json holds corners, write width = x2 - x1 and height = y2 - y1" \
           in [str(warning.message) for warning in warned]
    path.write_text(json.dumps(coco_json(GOOD_ANNOTATIONS)))
    with pytest.warns(DataWarning) as warned:
        COCODetection(path, tmp_path / "train", TestTransform(32))
    assert not [warning for warning in warned if "[x1, y1, x2, y2]" in str(warning.message)]

def test_zero_width_box_is_a_counted_warning(tmp_path):
    annotations = GOOD_ANNOTATIONS[1:] + [{"id": 20, "image_id": 9, "category_id": 1, "bbox": [3, 3, 0, 9], "area": 0,
                                           "iscrowd": 0}]
    path = write_coco(tmp_path, "x", coco_json(annotations))
    with pytest.warns(DataWarning, match=r"degenerate box dropped \(w <= 0 or h <= 0\): 1.*annotation id 20"):
        dataset = COCODetection(path, tmp_path / "x", TestTransform(32))
    assert len(dataset.annotation(2)[0]) == 0


def test_image_without_size_is_reported_with_the_size_to_write(tmp_path):
    images = [{"id": 1, "file_name": "a.jpg", "height": 20, "width": 20},
              {"id": 2, "file_name": "b.jpg", "height": 20, "width": 30},
              {"id": 3, "file_name": "c.jpg", "height": 20, "width": 20}]
    path = write_coco(tmp_path, "x", coco_json([], images))
    data = json.loads(path.read_text())
    data["images"][0]["height"] = 20.5
    del data["images"][1]["width"]
    data["images"][2]["width"] = None
    path.write_text(json.dumps(data))
    (tmp_path / "x" / "c.jpg").unlink()
    with pytest.raises(DataError, match="3 problem") as error:
        COCODetection(path, tmp_path / "x", TestTransform(32))
    # what is missing or wrong, which file the entry is, and what to write: the file's size when it can be read
    assert (f"{path}: image id 1 ('a.jpg') has height 20.5, not a whole number of pixels > 0: write the image's "
            'size in pixels, its file is 20x20 (WxH): "height": 20, "width": 20') in str(error.value)
    assert (f"{path}: image id 2 ('b.jpg') has no width: write the image's size in pixels, its file is 30x20 (WxH): "
            '"height": 20, "width": 30') in str(error.value)
    assert (f"{path}: image id 3 ('c.jpg') has width None, not a whole number of pixels > 0: write the image's size "
            'in pixels, e.g. "height": 480, "width": 640') in str(error.value)


@pytest.mark.parametrize(
    "list_name, position, change, problem",
    [
        ("annotations", 1, lambda e: e.pop("id"), "has no 'id' (needs id, image_id, category_id, bbox)"),
        ("annotations", 0, lambda e: e.pop("image_id"), "has no 'image_id'"),
        ("annotations", 2, lambda e: e.pop("category_id"), "has no 'category_id'"),
        ("annotations", 2, lambda e: e.pop("bbox"), "has no 'bbox'"),
        ("annotations", 1, lambda e: (e.pop("bbox"), e.update(segmentation=[[40, 10, 45, 10, 45, 15]])),
         "has no 'bbox' (needs id, image_id, category_id, bbox); it has a 'segmentation': add the box around it as "
         "\"bbox\": [x, y, w, h] in pixels (pycocotools.mask.toBbox computes it from a segmentation)"),
        ("annotations", 0, lambda e: e.update(image_id=[7]), "'image_id' is [7], not an integer id"),
        ("images", 1, lambda e: e.pop("id"), "has no 'id' (needs id)"),
        ("images", 2, lambda e: e.update(id="9"), "'id' is '9', not an integer id"),
        ("categories", 0, lambda e: e.pop("id"), "has no 'id' (needs id, name)"),
        ("categories", 2, lambda e: e.pop("name"), "has no 'name'"),
        ("categories", 1, lambda e: e.update(name=""), "'name' is '', not a class name"),
    ],
)
def test_missing_keys_name_the_file_list_position_and_key(tmp_path, list_name, position, change, problem):
    data = json.loads(json.dumps(coco_json(GOOD_ANNOTATIONS)))  # a deep copy
    change(data[list_name][position])
    path = write_coco(tmp_path, "x", data)
    with pytest.raises(DataError, match="1 problem") as error:
        COCODetection(path, tmp_path / "x", TestTransform(32))
    assert f"{path}: {list_name}[{position}] {problem}" in str(error.value)


def test_entries_that_are_not_objects_and_repeated_ids_are_listed(tmp_path):
    data = coco_json(["person", *GOOD_ANNOTATIONS, [1, 7, 1], GOOD_ANNOTATIONS[0]])
    data["images"].append({"id": 3, "file_name": "000000000003.jpg", "height": 50, "width": 50})
    data["categories"] = CATEGORIES + [{"id": 1, "name": "rider"}]
    path = write_coco(tmp_path, "x", data)
    with pytest.raises(DataError, match="5 problem") as error:
        COCODetection(path, tmp_path / "x", TestTransform(32))
    message = str(error.value)
    assert f"{path}: annotations[0] is str 'person', not an object {{...}}" in message
    assert f"{path}: annotations[4] is list [1, 7, 1], not an object" in message
    assert (f"{path}: annotations[5] repeats id 1 of annotations[1]; give every entry of 'annotations' its own id"
            in message)
    assert f"{path}: images[3] repeats id 3 of images[1]; give every entry of 'images' its own id" in message
    assert (f"{path}: categories[3] repeats id 1 of categories[1]; give every entry of 'categories' its own id"
            in message)


def authors_keep(x: float, w: float, width: float) -> bool:
    """Facts §5 for one axis: x1 = max(0, x), x2 = min(W - 1, x1 + max(0, w - 1)), kept when x2 - x1 > 6."""
    x1 = max(0.0, x)
    return min(width - 1, x1 + max(0.0, w - 1)) - x1 > 6


@pytest.mark.parametrize("side, kept", [(6.5, False), (7.0, False), (7.01, True), (8.0, True)])
def test_small_box_rule_is_the_authors_at_the_boundary(tmp_path, side, kept):
    xywh = np.array([[10, 10, side, 20], [10, 10, 20, side], [100 - side, 5, side, 20]])  # the last ends at the border
    _, keep = clean_coco_boxes(xywh, np.full(3, 100.0), np.full(3, 50.0), np.full(3, 100.0))
    assert keep.tolist() == [kept] * 3
    assert [authors_keep(10, side, 100), authors_keep(100 - side, side, 100)] == [kept] * 2
    annotations = [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [10.0, 10.0, side, side], "area": 50.0,
                    "iscrowd": 0}]
    path = write_coco(tmp_path, "x", coco_json(annotations))
    dataset = COCODetection(path, tmp_path / "x", TestTransform(32))
    assert len(dataset.annotation(0)[0]) == int(kept) and dataset.small_boxes_dropped == int(not kept)


def test_small_box_rule_agrees_with_the_authors_for_boxes_inside_the_image():
    rng = np.random.default_rng(0)
    x, w = rng.uniform(0, 60, 2000), rng.choice(np.concatenate([rng.uniform(0, 16, 1500), np.arange(0, 16, 0.5)]), 2000)
    y, h = np.full(2000, 5.0), np.full(2000, 30.0)
    _, keep = clean_coco_boxes(np.stack([x, y, w, h], 1), np.full(2000, 1.0), np.full(2000, 50.0), np.full(2000, 80.0))
    assert keep.tolist() == [authors_keep(a, b, 80) for a, b in zip(x, w)]


def test_missing_or_null_area_and_iscrowd_are_filled_in_the_ground_truth_and_counted(tmp_path):
    annotations = json.loads(json.dumps(GOOD_ANNOTATIONS))  # a deep copy
    del annotations[0]["area"], annotations[0]["iscrowd"], annotations[2]["iscrowd"]
    annotations[1]["area"] = None
    path = write_coco(tmp_path, "x", coco_json(annotations))
    expected = (r"annotations fixed on reading: missing area set to the box's w \* h: 2 "
                r"\(e\.g\. annotation id 1, annotation id 2\); "
                r"missing iscrowd set to 0: 2 \(e\.g\. annotation id 1, annotation id 3\)")
    with pytest.warns(DataWarning, match=expected):
        dataset = COCODetection(path, tmp_path / "x", TestTransform(32))
    assert [(a["area"], a["iscrowd"]) for a in dataset.coco.loadAnns([1, 2, 3])] == [(600.0, 0), (25.0, 0), (600.0, 0)]
    assert dataset.fixups["missing area set to the box's w * h"] == 2 and len(dataset.annotation(0)[0]) == 1



def test_a_box_entirely_outside_its_image_is_counted_as_such(tmp_path):
    """A box lying wholly outside its image (boxes of another image size, say) was counted as clipped and then as
    'a side <= 7 px left out of training (the authors' rule)', though it is 20 px wide: it is counted apart, in both
    splits (a test split's is scored as written, and can never be matched)."""
    annotations = json.loads(json.dumps(GOOD_ANNOTATIONS))
    annotations.append({"id": 4, "image_id": 9, "category_id": 1, "bbox": [35.0, 2.0, 20.0, 20.0], "area": 400.0,
                        "iscrowd": 0})  # image 9 is 30x30
    path = write_coco(tmp_path, "x", coco_json(annotations))
    for drop_empty in (True, False):
        with pytest.warns(DataWarning) as caught:
            dataset = COCODetection(path, tmp_path / "x", TestTransform(32), drop_empty=drop_empty)
        message = str(caught[0].message)
        assert "box outside its image dropped: 1 (e.g. annotation id 4)" in message
        assert "box clipped to the image: 1 (e.g. annotation id 1)" in message  # x = -2: clipped, kept
        assert (dataset.small_boxes_dropped, dataset.fixups["box clipped to the image"]) == (1, 1)  # 5 px id 2

def test_zero_area_drops_the_box_as_a_counted_fix_up(tmp_path):
    annotations = json.loads(json.dumps(GOOD_ANNOTATIONS))
    annotations[2]["area"] = 0
    path = write_coco(tmp_path, "x", coco_json(annotations))
    with pytest.warns(DataWarning, match=r"box dropped for its area <= 0: 1 \(e\.g\. annotation id 3\)"):
        dataset = COCODetection(path, tmp_path / "x", TestTransform(32))
    assert len(dataset.annotation(1)[0]) == 0 and dataset.small_boxes_dropped == 1  # the 5 px toothbrush only


@pytest.mark.parametrize(
    "key, value, problem",
    [
        ("area", "big", "area 'big' is not a finite number; give the object's area in pixels or leave it out"),
        ("area", float("nan"), "area nan is not a finite number"),
        ("iscrowd", "yes", "iscrowd 'yes' is not 0 or 1"),
    ],
)
def test_non_numeric_area_or_iscrowd_names_the_file_and_annotation(tmp_path, key, value, problem):
    annotations = json.loads(json.dumps(GOOD_ANNOTATIONS))
    annotations[1][key] = value
    path = write_coco(tmp_path, "x", coco_json(annotations))
    with pytest.raises(DataError, match="1 problem") as error:
        COCODetection(path, tmp_path / "x", TestTransform(32))
    assert f"{path}: annotation id 2 (image id 7): {problem}" in str(error.value)


def test_category_names_match_whatever_their_unicode_normal_form(tmp_path):
    """A json whose category is "café" with a combining accent (NFD) and one or --classes with the composed é
    (NFC) name one class, as VOC object names do; two categories so named are one name twice."""
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    train_data, test_data = coco_json(GOOD_ANNOTATIONS), coco_json(GOOD_ANNOTATIONS)
    train_data["categories"] = [{**category} for category in CATEGORIES]
    test_data["categories"] = [{**category} for category in CATEGORIES]
    train_data["categories"][0]["name"] = decomposed
    test_data["categories"][0]["name"] = composed
    write_coco(tmp_path, "train", train_data)
    write_coco(tmp_path, "test", test_data, image_folder="test")
    classes = [composed] + [c["name"] for c in test_data["categories"][1:]]
    train = build_dataset("custom", "train", 32, data_root=str(tmp_path), classes=classes)
    test = build_dataset("custom", "test", 32, data_root=str(tmp_path))
    assert train.class_names[0] == test.class_names[0] == composed
    train_data["categories"][1]["name"] = composed
    write_coco(tmp_path, "train", train_data)
    with pytest.raises(DataError, match="have the same name"):
        build_dataset("custom", "train", 32, data_root=str(tmp_path))


def test_categories_sharing_a_name_are_an_error(tmp_path):
    data = coco_json(GOOD_ANNOTATIONS)
    data["categories"] = [{"id": 5, "name": "bus"}, {"id": 1, "name": "person"}, {"id": 90, "name": "Bus "}]
    path = write_coco(tmp_path, "x", data)
    with pytest.raises(DataError, match="1 problem") as error:
        COCODetection(path, tmp_path / "x", TestTransform(32))
    assert (f"{path}: categories id 5 'bus' and id 90 'Bus ' have the same name (compared case-insensitively)"
            in str(error.value))


def test_category_names_with_control_or_invisible_characters_are_an_error(tmp_path):
    """A newline in a name broke every printed per-class table; a byte-order mark or zero-width space made a class that
    --classes, typed as it prints, could not name."""
    data = coco_json(GOOD_ANNOTATIONS)
    data["categories"] = [{"id": 5, "name": "bus\nstop"}, {"id": 1, "name": "\ufeffperson"}, CATEGORIES[2]]
    path = write_coco(tmp_path, "x", data)
    with pytest.raises(DataError, match="2 problem") as error:
        COCODetection(path, tmp_path / "x", TestTransform(32))
    assert (f"{path}: category id 5 'bus\\nstop' contains the control or invisible character(s) U+000A; give "
            "plain names" in str(error.value))
    assert "category id 1 '\\ufeffperson' contains the control or invisible character(s) U+FEFF" in str(error.value)


def test_category_names_lose_surrounding_spaces_as_voc_object_names_do(tmp_path):
    # one json written with "person " (a trailing space) and the other without: the same class in both splits,
    # named without the space in reports, the checkpoint and the demo's drawings
    train_data, test_data = coco_json(GOOD_ANNOTATIONS), coco_json(GOOD_ANNOTATIONS)
    train_data["categories"] = [
        {"id": 5, "name": " bus"}, {"id": 1, "name": "person "}, {"id": 90, "name": "toothbrush"}
    ]
    write_coco(tmp_path, "train", train_data)
    write_coco(tmp_path, "test", test_data, image_folder="test")
    train = build_dataset("custom", "train", 32, data_root=str(tmp_path))
    test = build_dataset("custom", "test", 32, data_root=str(tmp_path))
    assert train.class_names == test.class_names == ["bus", "person", "toothbrush"]
    assert train.category_ids == [5, 1, 90]


def test_json_without_categories_is_an_error(tmp_path):
    path = write_coco(tmp_path, "x", coco_json([]) | {"categories": []})
    with pytest.raises(DataError, match=f"{path}: has no categories"):
        COCODetection(path, tmp_path / "x", TestTransform(32))


def test_train_split_without_any_box_is_an_error_and_the_test_split_is_not(tmp_path):
    small = [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [1, 1, 5, 20], "area": 100, "iscrowd": 0}]
    write_coco(tmp_path, "train2017", coco_json(small))
    write_coco(tmp_path, "val2017", coco_json(small))
    expected = r"instances_train2017\.json: no image has a box to train on: all 1 annotation\(s\) have a side <= 7 px"
    with pytest.raises(DataError, match=expected):
        build_dataset("coco", "train", 32, data_root=str(tmp_path))
    assert len(build_dataset("coco", "test", 32, data_root=str(tmp_path))) == 3  # val2017 keeps images without boxes
    path = tmp_path / "annotations" / "instances_val2017.json"
    with pytest.raises(DataError, match=r"instances_val2017\.json: no image has a box to train on: all 1 annotation"):
        COCODetection(path, tmp_path / "val2017", TestTransform(32), require_boxes=True)
    custom = tmp_path / "custom"
    write_coco(custom, "train", coco_json(small))
    write_coco(custom, "val", coco_json(small))
    with pytest.raises(DataError, match=r"instances_train\.json: no image has a box to train on"):
        build_dataset("custom", "train", 32, data_root=str(custom))
    assert len(build_dataset("custom", "test", 32, data_root=str(custom))) == 3


def test_a_training_split_of_objects_all_too_small_for_the_coco_rule_says_so_not_to_annotate_it(tmp_path):
    """A set of small objects (32 px images, 6 px objects) in the COCO layout: every box has a side <= 7 px, which
    the COCO layout leaves out of training. The error said "annotate the training images", which are annotated; it
    now names the rule and the layout that keeps such boxes."""
    small = [{"id": i, "image_id": image, "category_id": 1, "bbox": [1, 1, 6, 6], "area": 36, "iscrowd": 0}
             for i, image in enumerate((7, 3, 9), 1)]
    write_coco(tmp_path, "train", coco_json(small))
    write_coco(tmp_path, "val", coco_json(small))
    with pytest.raises(DataError) as error:
        build_dataset("custom", "train", 32, data_root=str(tmp_path))
    assert str(error.value) == (
        f"{tmp_path / 'annotations' / 'instances_train.json'}: no image has a box to train on: all 3 annotation(s) "
        "have a side <= 7 px, which COCO-layout training leaves out (the authors' rule for COCO); a VOC-layout copy "
        "of the set (Annotations/<id>.xml, README 'Datasets') trains on boxes of any size"
    )
    write_coco(tmp_path, "train", coco_json([dict(small[0], bbox=[1, 1, 0, 6], area=0), *small[1:]]))
    with pytest.raises(DataError, match=r"\(3 annotation\(s\), none left after dropping boxes with w, h or area <= 0 "
                                        r"or a side <= 7 px\); 2 of them only for a side <= 7 px, which COCO-layout "
                                        "training leaves out"):
        build_dataset("custom", "train", 32, data_root=str(tmp_path))
    write_coco(tmp_path, "train", coco_json([dict(small[0], bbox=[1, 1, 0, 6], area=0)]))
    with pytest.raises(DataError, match=r"\(1 annotation\(s\), none left .*7 px\); annotate the training images$"):
        build_dataset("custom", "train", 32, data_root=str(tmp_path))


def test_the_test_split_prefers_a_test_json_over_a_val_json(tmp_path):
    """Custom COCO layout: the test split reads instances_test*.json when there is one, else instances_val*.json
    (the train split never reads either)."""
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    for name in ("instances_val2017.json", "instances_test-dev.json", "instances_train2017.json"):
        (annotations / name).write_text("{}")
    assert find_coco_annotation(tmp_path, "test") == annotations / "instances_test-dev.json"
    assert find_coco_annotation(tmp_path, "train") == annotations / "instances_train2017.json"
    (annotations / "instances_test-dev.json").unlink()
    assert find_coco_annotation(tmp_path, "test") == annotations / "instances_val2017.json"
    (annotations / "instances_val.json").write_text("{}")  # the exact name wins over the single prefixed one
    assert find_coco_annotation(tmp_path, "test") == annotations / "instances_val.json"


def test_a_missing_coco_2017_folder_names_the_file_and_both_ways_out(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        build_dataset("coco", "train", 64, data_root=str(tmp_path))
    assert str(error.value) == (
        f"{tmp_path}/annotations/instances_train2017.json not found: download it with `bash data/scripts/COCO2017.sh "
        f"DIR` (it writes DIR/coco2017, the --data_root to pass then), or pass --data_root a COCO 2017 folder "
        "(annotations/instances_train2017.json, train2017/, val2017/); for your own COCO-format data use --dataset "
        "custom")


def test_coco_2014_files_under_dataset_coco_say_to_read_them_with_dataset_custom(tmp_path):
    """instances_train2014.json / val2014 (the 2014 release) where --dataset coco reads the 2017 names."""
    write_coco(tmp_path, "train2014", coco_json(GOOD_ANNOTATIONS))
    write_coco(tmp_path, "val2014", coco_json(GOOD_ANNOTATIONS))
    with pytest.raises(DatasetNotFoundError) as error:
        build_dataset("coco", "train", 64, data_root=str(tmp_path))
    assert str(error.value).endswith(
        f"; {tmp_path}/annotations holds instances_train2014.json, instances_val2014.json: --dataset coco reads COCO "
        f"2017's files; read this set with --dataset custom --data_root {tmp_path}")
    assert len(build_dataset("custom", "test", 64, data_root=str(tmp_path))) == 3


def test_coco_folder_one_level_off_names_the_folder_to_pass(tmp_path):
    """--data_root the folder above coco2017/ (or a zip extracted into coco2017/coco2017/), or its annotations/."""
    write_coco(tmp_path / "coco2017", "train2017", coco_json(GOOD_ANNOTATIONS))
    with pytest.raises(DatasetNotFoundError) as error:
        build_dataset("coco", "train", 64, data_root=str(tmp_path))
    assert str(error.value).endswith(
        f"; {tmp_path}/coco2017/annotations/instances_train2017.json is there, one level deeper: pass --data_root "
        f"{tmp_path}/coco2017")
    with pytest.raises(DatasetNotFoundError) as error:  # one level too low: --data_root coco2017/annotations
        build_dataset("coco", "train", 64, data_root=str(tmp_path / "coco2017" / "annotations"))
    assert str(error.value).endswith(
        f"; {tmp_path}/coco2017/annotations holds instances_train2017.json: pass --data_root {tmp_path}/coco2017")
    with pytest.raises(DatasetNotFoundError) as error:  # the script downloads into the folder above coco2017/
        build_dataset("coco", "test", 64, data_root=str(tmp_path / "coco2017"))
    assert f"not found: download it with `bash data/scripts/COCO2017.sh {tmp_path}`, or" in str(error.value)


@pytest.mark.parametrize("where", [".", "..", "../downloads"])
def test_coco_archives_not_extracted_are_named_with_the_unzip_command(tmp_path, where):
    """annotations_trainval2017.zip / val2017.zip downloaded by hand (or kept by the script) but never unzipped."""
    root = tmp_path / "coco 2017"
    write_coco(root, "train2017", coco_json(GOOD_ANNOTATIONS))
    (root / "annotations" / "instances_train2017.json").unlink()
    archives = (root / where).resolve()
    archives.mkdir(parents=True, exist_ok=True)
    for name in ("annotations_trainval2017.zip", "val2017.zip"):
        (archives / name).write_bytes(b"PK")
    with pytest.raises(DatasetNotFoundError) as error:
        build_dataset("coco", "train", 64, data_root=str(root))
    zip_file = shlex.quote(f"{archives}/annotations_trainval2017.zip")
    assert str(error.value).endswith(
        f"; {archives}/annotations_trainval2017.zip is not extracted: `unzip -q {zip_file} -d '{root}'`")
    write_coco(root, "val2017", coco_json(GOOD_ANNOTATIONS))
    (root / "val2017").rename(root / "val2017_")
    with pytest.raises(DatasetNotFoundError) as error:
        build_dataset("coco", "test", 64, data_root=str(root))
    assert str(error.value).startswith(f"{root}/val2017 not found: ")
    zip_file = shlex.quote(f"{archives}/val2017.zip")
    assert str(error.value).endswith(f"; {archives}/val2017.zip is not extracted: `unzip -q {zip_file} -d '{root}'`")


def test_the_coco_2017_download_hints_are_built_only_for_an_error(tmp_path, monkeypatch):
    """The hints (which look for 2014 jsons, a folder one level off and unextracted zips) were built for every
    --dataset coco split read, also one without a problem: now when an error prints them, with the same text."""
    import data

    built = calls_recorded(monkeypatch, data, ("_coco_download_hint", "_coco_missing_files_hint"))
    root = tmp_path / "coco2017"
    write_coco(root, "train2017", coco_json(GOOD_ANNOTATIONS))
    assert len(build_dataset("coco", "train", 32, data_root=str(root))) == 2 and built == []
    with pytest.raises(DatasetNotFoundError, match=r"instances_val2017\.json not found: download it with `bash "
                                                   r"data/scripts/COCO2017\.sh "):
        build_dataset("coco", "test", 32, data_root=str(root))
    assert built == ["_coco_download_hint"]
    (root / "train2017" / "000000000003.jpg").unlink()
    with pytest.raises(DataError, match=r"\nfiles are missing from .*train2017: if the extraction of train2017\.zip"):
        build_dataset("coco", "train", 32, data_root=str(root))
    assert built == ["_coco_download_hint", "_coco_missing_files_hint"]


def test_coco_train2017_extracted_in_part_says_how_to_extract_it_again(tmp_path):
    """train2017.zip's extraction interrupted: the images missing under --dataset coco come with the way out."""
    root = tmp_path / "coco2017"
    write_coco(root, "train2017", coco_json(GOOD_ANNOTATIONS))
    (root / "train2017" / "000000000003.jpg").unlink()
    with pytest.raises(DataError) as error:
        build_dataset("coco", "train", 64, data_root=str(root))
    assert str(error.value).splitlines()[-1] == (
        f"files are missing from {root}/train2017: if the extraction of train2017.zip was interrupted, re-run `bash "
        f"data/scripts/COCO2017.sh {tmp_path}` to extract it again (after a finished one, delete {root}/train2017 "
        "first)")


def test_only_the_test_splits_box_warning_says_that_pycocotools_scores_the_boxes_as_written(tmp_path):
    """Annotation 1 starts 2 px left of the image: clipped for the loader. pycocotools scores the json as written, so
    the test split's warning says so; a train split's does not (its targets are what training uses)."""
    path = write_coco(tmp_path, "x", coco_json(GOOD_ANNOTATIONS))
    with pytest.warns(DataWarning) as caught:
        COCODetection(path, tmp_path / "x", TestTransform(32))
    assert [str(w.message) for w in caught] == [
        f"COCO dataset {path}: annotations fixed on reading: box clipped to the image: 1 (e.g. annotation id 1). "
        "The evaluation scores the test split's boxes as the annotations write them (these fix-ups change only the "
        "loader's targets): a box without extent can never be matched and lowers the AP; fix the annotations"]
    with pytest.warns(DataWarning) as caught:
        COCODetection(path, tmp_path / "x", TestTransform(32), require_boxes=True)
    assert all("evaluation" not in str(w.message) for w in caught) and "box clipped to the image: 1" in str(
        caught[0].message)


TRICKY_IMAGES = [
    {"id": 42, "file_name": "b.jpg", "height": 60, "width": 80},
    {"id": 5, "file_name": "a.jpg", "height": 40.0, "width": 50},  # a float size, a whole number
    {"id": 17, "file_name": "c.jpg", "height": 30, "width": 30},  # no annotation
    {"id": 8, "file_name": "d.jpg", "height": 50, "width": 50},  # only boxes that are dropped
]
TRICKY_ANNOTATIONS = [
    {"id": 11, "image_id": 42, "category_id": 90, "bbox": [10, 5, 30.5, 20], "area": 500.0, "iscrowd": 0},
    {"id": 3, "image_id": 42, "category_id": 1, "bbox": [-4.0, 50.0, 20.0, 15.0], "area": 250, "iscrowd": 1},  # crowd
    {"id": 12, "image_id": 5, "category_id": 5, "bbox": [2.25, 3.5, 47.75, 36.5]},  # no area / iscrowd: filled in
    {"id": 4, "image_id": 5, "category_id": 1, "bbox": [1, 1, 20, 20], "area": 0, "iscrowd": 0},  # area 0: dropped
    {"id": 7, "image_id": 8, "category_id": 90, "bbox": [5, 5, 0, 10], "area": 0.0, "iscrowd": 0},  # w 0: dropped
    {"id": 9, "image_id": 8, "category_id": 5, "bbox": [5, 5, 7, 30], "area": 210, "iscrowd": 0},  # 7 px: dropped
    {"id": 10, "image_id": 5, "category_id": 90, "bbox": [30, 20, 25, 25], "area": 400, "iscrowd": True},  # clipped
]


def test_a_json_of_tricky_entries_builds_these_pinned_arrays_and_warning(tmp_path):
    """Pinned results of a build (values of the per-entry code before the checks were vectorised): categories listed
    out of id order with non-contiguous ids, integer and float numbers, crowd boxes (``true`` too), a missing area
    and iscrowd, boxes dropped for area 0, w 0 or a 7 px side, one clipped by more than 1 px, images without a box."""
    path = write_coco(tmp_path, "train2017", coco_json(TRICKY_ANNOTATIONS, [dict(i, height=int(i["height"]))
                                                                            for i in TRICKY_IMAGES]))
    path.write_text(json.dumps(coco_json(TRICKY_ANNOTATIONS, TRICKY_IMAGES)))  # the float height stays in the json
    with pytest.warns(DataWarning) as caught:
        train = build_dataset("coco", "train", 32, data_root=str(tmp_path))
    assert [str(w.message) for w in caught] == [
        f"COCO dataset {path}: annotations fixed on reading: missing area set to the box's w * h: 1 (e.g. annotation "
        "id 12); missing iscrowd set to 0: 1 (e.g. annotation id 12); degenerate box dropped (w <= 0 or h <= 0): 1 "
        "(e.g. annotation id 7); box dropped for its area <= 0: 1 (e.g. annotation id 4); box clipped to the image: "
        "2 (e.g. annotation id 3, annotation id 10); box with a side <= 7 px left out of training (the authors' rule):"
        " 1 (e.g. annotation id 9); image whose every box was dropped, left out of training: 1 (e.g. image id 8); "
        "image without annotations left out of training (the authors' COCO train set): 1 (e.g. image id 17)"
    ]
    assert train.class_names == ["bus", "person", "toothbrush"] and train.category_ids == [5, 1, 90]
    assert train.image_ids == [42, 5] and [train.image_size(i) for i in range(2)] == [(60, 80), (40, 50)]
    assert [train.image_path(i) for i in range(2)] == [tmp_path / "train2017" / name for name in ("b.jpg", "a.jpg")]
    np.testing.assert_array_equal(train.annotations.boxes, np.array(
        [[10, 5, 40.5, 25], [0, 50, 16, 60], [2.25, 3.5, 50, 40], [30, 20, 50, 40]], np.float32))
    assert train.annotations.labels.tolist() == [2, 1, 0, 2] and train.annotations.offsets.tolist() == [0, 2, 4]
    assert train.annotations.boxes.dtype == np.float32 and not train.annotations.difficult.any()
    assert train.fixups == {
        "missing area set to the box's w * h": 1, "missing iscrowd set to 0": 1,
        "degenerate box dropped (w <= 0 or h <= 0)": 1, "box dropped for its area <= 0": 1,
        "box clipped to the image": 2, "box with a side <= 7 px left out of training (the authors' rule)": 1,
        "image whose every box was dropped, left out of training": 1,
        "image without annotations left out of training (the authors' COCO train set)": 1,
    }
    assert (train.small_boxes_dropped, train.crowd_objects, train.coco) == (1, 2, None)
    test = COCODetection(path, tmp_path / "train2017", TestTransform(32), include_crowd=False)
    assert test.image_ids == [42, 5, 17, 8] and test.annotations.offsets.tolist() == [0, 1, 2, 2, 2]
    assert test.annotations.labels.tolist() == [2, 0] and test.crowd_objects == 0
    assert test.objects_to_score_per_class().tolist() == [2, 1, 2]  # the small and the dropped boxes are scored
    assert [a["area"] for a in test.coco.loadAnns([12, 4])] == [47.75 * 36.5, 0]


@pytest.mark.parametrize("collector_on", [True, False])
def test_a_json_is_decoded_with_the_cycle_collector_paused_and_its_state_restored(tmp_path, monkeypatch, collector_on):
    """Decoding COCO train2017 took 11-13 s with Python's cyclic collector on, 7 s with it paused (a JSON value
    holds no cycle); the collector is back as it was after the file, also after a syntax error."""
    states = []
    decode = json.loads
    monkeypatch.setattr(json, "loads", lambda text: states.append(gc.isenabled()) or decode(text))
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text('{"images": [1, 2.5, {"a": null}]}')
    bad.write_text('{"images": [1,, 2]}')
    (gc.enable if collector_on else gc.disable)()
    try:
        assert read_json_file(good) == {"images": [1, 2.5, {"a": None}]}
        assert gc.isenabled() == collector_on
        with pytest.raises(DataError, match=r"bad\.json:1:15: invalid JSON \(Expecting value\)"):
            read_json_file(bad)
        assert gc.isenabled() == collector_on and states == [False, False]
    finally:
        gc.enable()
