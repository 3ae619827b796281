"""Bad COCO-format input (found by fuzzing): each is scored right or stopped by one DataError naming the file."""
import contextlib
import io
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import main as cli
from data import COCODetection, DataError, DataWarning, build_dataset
from data.coco_eval import detections_to_coco_results, evaluate_coco, with_positive_annotation_ids
from data.transforms import TestTransform
from tests.test_data_coco import GOOD_ANNOTATIONS, coco_json, write_coco
from tests.tiny_checkpoint import write_tiny_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::data.errors.DataWarning")

# image 7 (60x40), 3 (50x50), 9 (30x30) of coco_json; objects large enough to be kept by the small-box rule
OBJECTS = [
    {"image_id": 7, "category_id": 1, "bbox": [2.0, 4.0, 30.0, 20.0]},
    {"image_id": 7, "category_id": 90, "bbox": [35.0, 10.0, 20.0, 25.0]},
    {"image_id": 3, "category_id": 5, "bbox": [10.5, 10.0, 20.0, 30.0]},
    {"image_id": 9, "category_id": 1, "bbox": [5.0, 5.0, 20.0, 12.0]},
]


def annotations_with_ids(ids: list[int], crowd: bool = False) -> list[dict]:
    """:data:`OBJECTS` with these annotation ids, area and iscrowd."""
    return [
        dict(obj, id=i, area=obj["bbox"][2] * obj["bbox"][3], iscrowd=int(crowd)) for i, obj in zip(ids, OBJECTS)
    ]


def perfect_results(coco: COCO) -> list[dict]:
    """A detection of score 1 exactly on every non-crowd object of ``coco`` (read from its list, not its index, which
    keeps one of two annotations sharing an id)."""
    detections, image_ids = [], sorted(coco.getImgIds())
    category_ids = list(coco.getCatIds())
    for image_id in image_ids:
        anns = [a for a in coco.dataset["annotations"] if a["image_id"] == image_id and not a["iscrowd"]]
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        detections.append({
            "boxes": np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1),
            "scores": np.ones(len(anns)),
            "labels": np.array([category_ids.index(a["category_id"]) for a in anns], dtype=np.int64),
        })
    return detections_to_coco_results(detections, image_ids, category_ids)


def pycocotools_map(coco: COCO, results: list[dict]) -> float:
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, coco.loadRes([dict(r) for r in results]), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


def in_memory_coco(annotations: list[dict]) -> COCO:
    coco = COCO()
    coco.dataset = json.loads(json.dumps(coco_json(annotations)))
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def run_main(*argv: str) -> int:
    return cli.main(cli.get_args_parser().parse_args(list(argv)))


# -- 1. annotation ids <= 0 or repeated ---------------------------------------------------------------------------


@pytest.mark.parametrize("ids", [[0, 1, 2, 3], [-3, -2, -1, 0], [5, 0, 7, -8]])
def test_annotation_ids_from_zero_or_negative_still_score_perfect_detections_one(tmp_path, ids):
    path = write_coco(tmp_path, "val", coco_json(annotations_with_ids(ids)))
    dataset = COCODetection(path, tmp_path / "val", TestTransform(32))
    results = perfect_results(dataset.coco)
    assert pycocotools_map(in_memory_coco(annotations_with_ids(ids)), results) < 1.0  # what pycocotools alone gives
    assert evaluate_coco(results, dataset.coco, image_ids=dataset.image_ids)["mAP"] == 1.0
    assert sorted(dataset.coco.anns) == sorted(ids)  # the dataset's ground truth keeps the file's ids
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(results))
    assert evaluate_coco(results_file, dataset.coco, image_ids=dataset.image_ids)["mAP"] == 1.0


def test_repeated_annotation_ids_are_rejected_by_the_loader_and_scored_right_by_the_evaluator(tmp_path):
    """pycocotools' index keeps one of two annotations sharing an id, so both objects would be the same one."""
    annotations = annotations_with_ids([1, 2, 2, 3])
    coco = in_memory_coco(annotations)
    results = perfect_results(coco)
    assert pycocotools_map(coco, results) < 1.0
    assert evaluate_coco(results, coco)["mAP"] == 1.0
    path = write_coco(tmp_path, "val", coco_json(annotations))
    with pytest.raises(DataError, match=r"annotations\[2\] repeats id 2 of annotations\[1\]; give every entry"):
        COCODetection(path, tmp_path / "val", TestTransform(32))


def test_positive_unique_ids_are_scored_on_the_ground_truth_itself():
    coco = in_memory_coco(annotations_with_ids([4, 1, 9, 2]))
    assert with_positive_annotation_ids(coco) is coco
    assert evaluate_coco(perfect_results(coco), coco)["mAP"] == pycocotools_map(coco, perfect_results(coco)) == 1.0
    renumbered = with_positive_annotation_ids(in_memory_coco(annotations_with_ids([0, 1, 2, 3])))
    assert sorted(renumbered.anns) == [1, 2, 3, 4] and renumbered.anns[1]["bbox"] == OBJECTS[0]["bbox"]


# -- 2. a test split whose objects are all iscrowd=1 --------------------------------------------------------------


def crowd_only_folder(root: Path) -> Path:
    write_coco(root, "train", coco_json(annotations_with_ids([1, 2, 3, 4])))
    write_coco(root, "val", coco_json(annotations_with_ids([1, 2, 3, 4], crowd=True)))
    return root


def test_crowd_only_test_split_is_an_error_naming_the_file(tmp_path):
    root = crowd_only_folder(tmp_path)
    expected = (r"instances_val\.json: the test split's 3 images hold no object to score \(none, or all marked "
                r"iscrowd=1, which COCO's metric ignores\), so every AP would be undefined: annotate the test images")
    with pytest.raises(DataError, match=expected):
        build_dataset("custom", "test", 32, data_root=str(root))
    assert len(build_dataset("custom", "train", 32, data_root=str(root))) == 3  # the train split is not scored
    crowd_train = COCODetection(root / "annotations" / "instances_val.json", root / "val", TestTransform(32),
                                require_boxes=True)
    assert len(crowd_train.annotations.labels) == 4  # crowd boxes are trained on, as the authors do


def test_crowd_only_coco2017_val_is_an_error(tmp_path):
    write_coco(tmp_path, "val2017", coco_json(annotations_with_ids([1, 2, 3, 4], crowd=True)))
    with pytest.raises(DataError, match=r"instances_val2017\.json: the test split's 3 images hold no object to score"):
        build_dataset("coco", "test", 32, data_root=str(tmp_path))


def test_evaluating_images_without_an_object_to_score_is_an_error(tmp_path):
    annotations = annotations_with_ids([1, 2, 3, 4])
    annotations[3]["iscrowd"] = 1  # image 9: crowd only
    path = write_coco(tmp_path, "val", coco_json(annotations))
    dataset = COCODetection(path, tmp_path / "val", TestTransform(32))
    results = perfect_results(dataset.coco)
    assert evaluate_coco(results, dataset.coco, image_ids=[7, 9])["mAP"] == pytest.approx(1.0)
    expected = rf"{path}: the 1 evaluated image holds no object to score \(none, or all marked iscrowd=1"
    for found in (results, []):
        with pytest.raises(DataError, match=expected):
            evaluate_coco(found, dataset.coco, image_ids=[9])
    with pytest.raises(DataError, match=r"the COCO ground truth: the 3 evaluated images hold no object to score"):
        evaluate_coco(results, in_memory_coco(annotations_with_ids([1, 2, 3, 4], crowd=True)))


def test_a_test_json_without_annotations_is_refused_naming_it_before_any_inference(tmp_path, monkeypatch, capsys):
    """A test json listing images but no annotation (unlabelled images) has nothing to score: its split stops the
    run when it is built, naming the json, as a crowd-only one does; ``--trained_model`` used to run the detector
    over every image first, ``--check_data`` and training to name no file."""
    path = write_coco(tmp_path / "data", "val", coco_json([]))
    write_coco(tmp_path / "data", "train", coco_json(annotations_with_ids([1, 2, 3, 4])))
    expected = (f"{path}: the test split's 3 images hold no object to score (none, or all marked iscrowd=1, which "
                "COCO's metric ignores), so every AP would be undefined")
    with pytest.raises(DataError) as error:
        build_dataset("custom", "test", 32, data_root=str(tmp_path / "data"))
    assert expected in str(error.value)
    monkeypatch.setattr("utils.run_evaluation.run_inference", lambda *args, **kwargs: pytest.fail("inference ran"))
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pth")
    for flags in (["--trained_model", str(checkpoint), "--device", "cpu"], ["--check_data"]):
        assert run_main(*flags, "--dataset", "custom", "--data_root", str(tmp_path / "data"), "--workers", "0") == 2
        assert expected in capsys.readouterr().err


def test_crowd_only_test_split_stops_check_data_with_exit_code_2(tmp_path, capsys):
    root = crowd_only_folder(tmp_path)
    assert run_main("--dataset", "custom", "--data_root", str(root), "--check_data", "--workers", "0") == 2
    err = capsys.readouterr().err
    assert "the test split's 3 images hold no object to score" in err and "Traceback" not in err


def test_objects_to_score_are_counted_per_class_without_crowd_ones(tmp_path):
    objects = annotations_with_ids([1, 2, 3, 4])
    objects[1]["iscrowd"] = 1  # the one toothbrush
    write_coco(tmp_path, "val", coco_json(objects))
    test_split = build_dataset("custom", "test", 32, data_root=str(tmp_path))
    assert test_split.class_names == ["bus", "person", "toothbrush"]
    assert test_split.objects_to_score_per_class().tolist() == [1, 2, 0] and test_split.objects_to_score() == 3


def test_a_test_split_of_objects_too_small_to_train_on_is_still_scored(tmp_path, capsys):
    """Boxes with a side <= 7 px are left out of training (facts §5), not out of COCO's metric: a test split holding
    only such objects has objects to score, and training on the other split may start."""
    tiny = [dict(obj, bbox=[obj["bbox"][0], obj["bbox"][1], 6.0, 5.0]) for obj in OBJECTS]
    write_coco(tmp_path, "train", coco_json(annotations_with_ids([1, 2, 3, 4])))
    write_coco(tmp_path, "val", coco_json([dict(a, id=i, area=30.0, iscrowd=0) for i, a in enumerate(tiny, 1)]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # nothing is left out of a test split's scoring: no warning
        test_split = build_dataset("custom", "test", 32, data_root=str(tmp_path))
    assert len(test_split.annotations.labels) == 0 and test_split.objects_to_score() == 4
    with pytest.raises(DataError, match="no image has a box to train on"):  # the same json as a training split
        COCODetection(tmp_path / "annotations" / "instances_val.json", tmp_path / "val", TestTransform(32),
                      drop_empty=True)
    assert run_main("--dataset", "custom", "--data_root", str(tmp_path), "--check_data", "--workers", "0") == 0
    assert "hold no object to score" not in capsys.readouterr().err



def test_check_data_counts_the_test_splits_objects_as_the_metric_scores_them(tmp_path, capsys):
    """The report of a test split counts the json's objects, which COCO's metric scores (crowd ones apart), not the
    loader's boxes: a 5 px object, one outside its image and a crowd one of the test json are counted, and their
    image has objects; the training split's report counts what is trained on."""
    objects = annotations_with_ids([1, 2, 3, 4])
    objects[0]["bbox"] = [2.0, 4.0, 5.0, 20.0]  # image 7: too small to train on, scored
    objects[2]["bbox"], objects[2]["iscrowd"] = [45.0, 45.0, 20.0, 20.0], 1  # image 3: crowd, past the image
    objects[3]["bbox"] = [40.0, 40.0, 20.0, 12.0]  # image 9 (30x30): outside it altogether, scored (never matched)
    write_coco(tmp_path, "train", coco_json(annotations_with_ids([1, 2, 3, 4])))
    write_coco(tmp_path, "val", coco_json(objects))
    assert run_main("--dataset", "custom", "--data_root", str(tmp_path), "--check_data", "--workers", "0") == 0
    out = capsys.readouterr().out
    assert ("custom train: 3 images, 4 objects (0 iscrowd), 0 images without objects\n"
            "objects per class: bus 1, person 2, toothbrush 1") in out
    assert ("custom test: 3 images, 4 objects (1 iscrowd), 0 images without objects\n"
            "annotations fixed on reading: box outside its image dropped: 1; box clipped to the image: 1\n"
            "objects per class: bus 1, person 2, toothbrush 1") in out


# -- 3. split leaks and shared files ------------------------------------------------------------------------------


def two_splits(root: Path, train_images: list[dict], test_images: list[dict]) -> None:
    """A custom COCO layout: train/ with one object in each of ``train_images``, test/ with :data:`OBJECTS`."""
    train_objects = [{"id": n, "image_id": image["id"], "category_id": 1, "bbox": [1, 1, 20, 20], "area": 400,
                      "iscrowd": 0} for n, image in enumerate(train_images, 1)]
    write_coco(root, "train", coco_json(train_objects, train_images))
    write_coco(root, "test", coco_json(annotations_with_ids([1, 2, 3, 4]), test_images))


TEST_IMAGES = [{"id": 7, "file_name": "000000000007.jpg", "height": 40, "width": 60},
               {"id": 3, "file_name": "000000000003.jpg", "height": 50, "width": 50},
               {"id": 9, "file_name": "000000000009.jpg", "height": 30, "width": 30}]


def test_train_file_name_reaching_into_the_test_folder_is_a_split_leak(tmp_path):
    train_images = [{"id": 1, "file_name": "a.jpg", "height": 30, "width": 30},
                    {"id": 2, "file_name": "../test/000000000003.jpg", "height": 50, "width": 50}]
    two_splits(tmp_path, train_images, TEST_IMAGES)
    expected = (rf"instances_train\.json and .*instances_test\.json share 1 image\(s\) of {tmp_path / 'test'} "
                r"\(000000000003\.jpg as train '\.\./test/000000000003\.jpg', test '000000000003\.jpg'\), so the "
                r"model would be tested on images it trained on")
    for split in ("train", "test"):
        with pytest.raises(DataError, match=expected):
            build_dataset("custom", split, 32, data_root=str(tmp_path))


def test_symlinked_image_shared_by_two_folders_is_a_split_leak(tmp_path):
    train_images = [{"id": 1, "file_name": "a.jpg", "height": 30, "width": 30}]
    two_splits(tmp_path, train_images, TEST_IMAGES)
    os.symlink(tmp_path / "test", tmp_path / "test_link")
    data = json.loads((tmp_path / "annotations" / "instances_train.json").read_text())
    data["images"].append({"id": 2, "file_name": "../test_link/000000000009.jpg", "height": 30, "width": 30})
    (tmp_path / "annotations" / "instances_train.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"share 1 image\(s\) of .*test \(000000000009\.jpg as "):
        build_dataset("custom", "train", 32, data_root=str(tmp_path))


def test_splits_in_different_folders_with_the_same_file_names_are_disjoint(tmp_path):
    two_splits(tmp_path, TEST_IMAGES, TEST_IMAGES)  # train/000000000007.jpg is not test/000000000007.jpg
    assert len(build_dataset("custom", "train", 32, data_root=str(tmp_path))) == 3
    assert len(build_dataset("custom", "test", 32, data_root=str(tmp_path))) == 3


def test_a_broken_other_json_is_left_to_its_own_split(tmp_path):
    two_splits(tmp_path, TEST_IMAGES, TEST_IMAGES)
    (tmp_path / "annotations" / "instances_train.json").write_text("{broken")
    assert len(build_dataset("custom", "test", 32, data_root=str(tmp_path))) == 3
    with pytest.raises(DataError, match=r"instances_train\.json:1:2: invalid JSON"):
        build_dataset("custom", "train", 32, data_root=str(tmp_path))


@pytest.mark.parametrize("second_name", ["000000000007.jpg", "./000000000007.jpg", "sub/../000000000007.jpg"])
def test_two_image_ids_sharing_one_file_are_an_error(tmp_path, second_name):
    (tmp_path / "x" / "sub").mkdir(parents=True)
    images = TEST_IMAGES + [{"id": 11, "file_name": second_name, "height": 40, "width": 60}]
    path = write_coco(tmp_path, "x", coco_json(annotations_with_ids([1, 2, 3, 4]), TEST_IMAGES))
    path.write_text(json.dumps(coco_json(annotations_with_ids([1, 2, 3, 4]), images)))
    with pytest.raises(DataError, match="1 problem") as error:
        COCODetection(path, tmp_path / "x", TestTransform(32))
    assert (f"{path}: image ids 7 and 11 both use the image file {tmp_path / 'x' / '000000000007.jpg'} (file_name "
            in str(error.value))
    assert "list each image once, with all its annotations under one image id" in str(error.value)
    # a split built for evaluation says what the scoring would do, a training split what the training would
    assert ("so its detections would be scored against the boxes of one image id at a time (the objects of each id "
            "missed under the other, and their detections false positives there)") in str(error.value)
    with pytest.raises(DataError, match="so it would be trained with the boxes of one image at a time"):
        COCODetection(path, tmp_path / "x", TestTransform(32), drop_empty=True)


# -- 4. numbers and nesting that overflowed -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda d: d["images"][0].update(height=1e20), "image id 7 has height 1e+20, beyond 2147483647 px"),
        (lambda d: d["images"][1].update(width=10**30), "image id 3 has width 1000000000000000000000000000000, beyond"),
        (lambda d: d["images"][1].update(width=10**400), "image id 3 has width 1000000000000"),
        (lambda d: d["annotations"][0]["bbox"].__setitem__(2, 1e20),
         "annotation id 1 (image id 7): bbox [-2.0, 4.0, 1e+20, 20.0] has a number beyond 2147483647 px"),
        (lambda d: d["annotations"][1].update(bbox=[1, 1, 10**400, 5], area=None),
         "annotation id 2 (image id 7): bbox [1, 1, 1000000000"),
        (lambda d: d["annotations"][1].update(area=10**400), "annotation id 2 (image id 7): area 1000000000"),
        (lambda d: d["annotations"][2].update(category_id=2**63),
         "annotations[2] 'category_id' is 9223372036854775808, an integer id beyond the 64-bit range"),
    ],
)
def test_huge_sizes_boxes_and_ids_name_the_file_and_the_entry(tmp_path, change, problem):
    data = json.loads(json.dumps(coco_json(GOOD_ANNOTATIONS)))
    path = write_coco(tmp_path, "x", data)
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="1 problem") as error:
        COCODetection(path, tmp_path / "x", TestTransform(32))
    assert f"{path}: {problem}" in str(error.value)


def test_deeply_nested_json_names_the_file(tmp_path):
    path = write_coco(tmp_path, "x", coco_json(GOOD_ANNOTATIONS))
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match=rf"^{path}: invalid JSON \(arrays or objects nested more than about"):
        COCODetection(path, tmp_path / "x", TestTransform(32))
    results = tmp_path / "results.json"
    results.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match=rf"^{results}: invalid JSON \(arrays or objects nested"):
        evaluate_coco(results, in_memory_coco(annotations_with_ids([1, 2, 3, 4])))


def test_integer_too_long_to_read_names_the_file(tmp_path):
    limit = sys.get_int_max_str_digits()
    if limit == 0:
        pytest.skip("this Python reads integers of any length")
    path = write_coco(tmp_path, "x", coco_json(GOOD_ANNOTATIONS))
    path.write_text(path.read_text().replace('"area": 600.0', '"area": ' + "9" * (limit + 1), 1))
    with pytest.raises(DataError, match=rf"^{path}: invalid JSON \(a number of more than {limit} digits\)"):
        COCODetection(path, tmp_path / "x", TestTransform(32))


# -- 5. encodings and a folder in place of the file ---------------------------------------------------------------


@pytest.mark.parametrize(
    "encode, problem",
    [
        (lambda text: text.replace('"bus"', '"b\xe9s"').encode("latin-1"), r"not UTF-8 text \(byte 0xe9 at offset"),
        (lambda text: text.encode("utf-16"), r"not UTF-8 text \(byte 0xff at offset 0"),
    ],
)
def test_json_that_is_not_utf8_names_the_file(tmp_path, encode, problem):
    path = write_coco(tmp_path, "x", coco_json(GOOD_ANNOTATIONS))
    path.write_bytes(encode(path.read_text()))
    with pytest.raises(DataError, match=rf"^{path}: {problem}.*save the file as UTF-8"):
        COCODetection(path, tmp_path / "x", TestTransform(32))


def test_json_with_a_utf8_byte_order_mark_is_read(tmp_path):
    path = write_coco(tmp_path, "x", coco_json(GOOD_ANNOTATIONS))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert COCODetection(path, tmp_path / "x", TestTransform(32)).image_ids == [7, 3, 9]


def test_results_file_encodings(tmp_path):
    coco = in_memory_coco(annotations_with_ids([1, 2, 3, 4]))
    results = perfect_results(coco)
    path = tmp_path / "results.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(results).encode())
    assert evaluate_coco(path, coco)["mAP"] == 1.0
    path.write_bytes(json.dumps(results).encode("utf-16"))
    with pytest.raises(DataError, match=rf"^{path}: not UTF-8 text \(byte 0xff at offset 0"):
        evaluate_coco(path, coco)
    path.write_bytes(b'[{"image_id": 7, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.5, "n": "\xe9"}]')
    with pytest.raises(DataError, match=rf"^{path}: not UTF-8 text \(byte 0xe9"):
        evaluate_coco(path, coco)


def test_non_utf8_eval_results_exit_code_2_naming_the_file(tmp_path, capsys):
    write_coco(tmp_path, "val", coco_json(annotations_with_ids([1, 2, 3, 4])))
    results = tmp_path / "results.json"
    results.write_bytes(b'[{"image_id": 7, "n": "\xe9"}]')
    code = run_main("--dataset", "custom", "--data_root", str(tmp_path), "--eval_results", str(results))
    err = capsys.readouterr().err
    assert code == 2 and f"{results}: not UTF-8 text" in err and "Traceback" not in err


def test_folder_in_place_of_the_json_says_so(tmp_path):
    (tmp_path / "annotations" / "instances_train.json").mkdir(parents=True)
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=r"instances_train\.json is a folder, not a COCO instances json file"):
        build_dataset("custom", "train", 32, data_root=str(tmp_path))
    with pytest.raises(DataError, match=r"COCO results file .*train is a folder; give the results JSON file in it"):
        evaluate_coco(tmp_path / "train", in_memory_coco(annotations_with_ids([1, 2, 3, 4])))


@pytest.mark.parametrize("content, what", [
    ([{"image_id": 7, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.9}],
     "a JSON array of 1 entry, as a detections results file holds (entries with a 'score'), not"),
    ([], "a JSON array of 0 entries, not"),
    ("instances", "a JSON string, not"),
])
def test_a_json_that_is_not_an_object_says_what_it_holds(tmp_path, content, what):
    """A results file, or another tool's export, passed where an instances file goes: "no 'images' list" would
    suggest that one key is missing from an instances file."""
    write_coco(tmp_path, "train", coco_json(GOOD_ANNOTATIONS)).write_text(json.dumps(content))
    with pytest.raises(DataError) as error:
        build_dataset("custom", "train", 32, data_root=str(tmp_path))
    assert str(error.value) == (f"{tmp_path / 'annotations/instances_train.json'}: not a COCO instances file: it "
                                f"holds {what} an object {{\"images\": [...], \"annotations\": [...], "
                                "\"categories\": [...]}")



@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_an_empty_json_says_it_is_empty(tmp_path, content):
    """A 0-byte (or blank) json, as an interrupted copy or export leaves: "invalid JSON (Expecting value)" at line
    1 column 1 hides that there is nothing to read."""
    path = write_coco(tmp_path, "train", coco_json(GOOD_ANNOTATIONS))
    path.write_text(content)
    with pytest.raises(DataError) as error:
        build_dataset("custom", "train", 32, data_root=str(tmp_path))
    assert str(error.value) == f"{path}: the file is empty, not JSON (an interrupted copy or export?): write it again"

@pytest.mark.parametrize("file_name, problem", [
    (".", "{folder}: image file is a folder, not a regular file: replace it with the file itself"),
    ("loop.jpg", "{folder}/loop.jpg: image file cannot be read (Too many levels of symbolic links)"),
    ("sub\\a.jpg", "{folder}/sub\\a.jpg: image file not found (image id 5 in {json}); folders in file_name are "
                   "separated by /, not \\ (a Windows path): write \"sub/a.jpg\""),
    (" ", "{json}: image id 5 has no file_name"),
    ("sub/missing.jpg", "{folder}/sub/missing.jpg: image file not found (image id 5 in {json})"),
    ("sub/inner", "{folder}/sub/inner: image file is a folder, not a regular file: replace it with the file itself"),
    ("sub/a.png", "{folder}/sub/a.png: image file not found (image id 5 in {json}); {folder}/sub holds a.jpg: write "
                  "\"file_name\": \"sub/a.jpg\""),
    ("sub/broken.jpg", "{folder}/sub/broken.jpg: image file is a broken symbolic link (to {folder}/sub/gone.jpg, "
                       "which does not exist): fetch or copy its target"),
    ("sub/a.jpg/b.jpg", "{folder}/sub/a.jpg/b.jpg: image file cannot be read (Not a directory) (image id 5 in "
                        "{json})"),
])
def test_a_file_name_naming_no_image_file_says_what_it_names(tmp_path, file_name, problem):
    """The same messages whether or not the file's folder is listed (names in sub-folders are looked up in one
    listing of each sub-folder the json names, the others one file at a time)."""
    path = write_coco(tmp_path, "test", coco_json(annotations_with_ids([1, 2, 3, 4]), TEST_IMAGES))
    folder = tmp_path / "test"
    (folder / "sub" / "inner").mkdir(parents=True)
    (folder / "000000000003.jpg").rename(folder / "sub" / "a.jpg")
    os.symlink("loop.jpg", folder / "loop.jpg")
    os.symlink("gone.jpg", folder / "sub" / "broken.jpg")
    data = json.loads(path.read_text())
    data["images"].append({"id": 5, "file_name": file_name, "height": 40, "width": 60})
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as error:
        COCODetection(path, folder, TestTransform(32))
    assert problem.format(folder=folder, json=path) in str(error.value)


# -- 6. a negative area ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("area", [-1, -600.0])
def test_a_negative_area_names_the_annotation_and_the_area_to_write(tmp_path, area):
    """A negative ``area`` (e.g. a polygon's signed shoelace area, negative for a clockwise one) takes an object out
    of COCO's metric: pycocotools ignores ground truth whose area is outside [0, 1e10], as a crowd region, so such an
    object's detections are neither found nor missed; training would drop its box. Both splits stop on it."""
    annotations = annotations_with_ids([1, 2, 3, 4])
    annotations[2]["area"] = area
    path = write_coco(tmp_path, "test", coco_json(annotations))
    coco = in_memory_coco(annotations)
    detections = perfect_results(coco)
    detections[0]["bbox"] = [30.0, 25.0, 10.0, 10.0]  # the bus, of area < 0, is missed
    assert pycocotools_map(coco, detections) == 1.0  # the object of area < 0 and the miss of it: neither scored
    for drop_empty in (False, True):
        with pytest.raises(DataError, match="1 problem") as error:
            COCODetection(path, tmp_path / "test", TestTransform(32), drop_empty=drop_empty)
        assert (f"{path}: annotation id 3 (image id 3): area {area!r} is negative: COCO's metric would ignore the "
                "object (as a crowd region) and training would drop its box; write the object's area in pixels (its "
                "box's w * h is 600.0) or leave it out (it is then set to w * h)") in str(error.value)
