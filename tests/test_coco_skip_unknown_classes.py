"""``--skip_unknown_classes`` on COCO-layout data: the categories of a json that are not the model's classes (a
checkpoint's, the training split's or ``--classes``) are left out, their objects counted in one warning, and the
evaluation scores the model's classes alone, as pycocotools does when told those categories. It was ignored without
a word there (the flag applied to VOC-layout data only)."""
import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import main as cli
from data import DEFAULT_ROOTS, DataError, DataWarning, build_dataset
from tests.test_coco_class_order import training_argv
from tests.test_data_coco import write_coco
from tests.tiny_checkpoint import CLASS_NAMES, write_tiny_checkpoint
from utils.inference import evaluate_detections
from utils.logging import RunLog
from utils.run_data import categories_kept_note, check_splits

# the model's three classes (tiny_checkpoint's) among five categories, person and hexagon not the model's
CATEGORIES = [{"id": 1, "name": "Circle"}, {"id": 2, "name": "person"}, {"id": 3, "name": "square"},
              {"id": 4, "name": "triangle"}, {"id": 7, "name": "hexagon"}]
IMAGES = [{"id": n, "file_name": f"{n}.jpg", "height": 64, "width": 64} for n in (1, 2, 3, 4)]
# (image id, category id, bbox); image 2 holds only a person, image 4 two circles
OBJECTS = [(1, 1, [2, 2, 20, 20]), (1, 2, [30, 30, 20, 20]), (2, 2, [30, 30, 20, 20]), (3, 3, [10, 10, 30, 20]),
           (3, 4, [40, 40, 20, 20]), (3, 7, [2, 40, 12, 12]), (4, 1, [4, 4, 16, 16]), (4, 1, [30, 20, 25, 30])]


def instances() -> dict:
    annotations = [{"id": n, "image_id": image, "category_id": category, "bbox": box, "area": box[2] * box[3],
                    "iscrowd": 0} for n, (image, category, box) in enumerate(OBJECTS, 1)]
    return {"images": IMAGES, "annotations": annotations, "categories": CATEGORIES}


def test_a_test_split_keeps_the_models_categories_and_counts_the_objects_left_out(tmp_path):
    write_coco(tmp_path, "val", instances())
    with pytest.warns(DataWarning, match=r"object of an unknown class skipped: 3 \(e.g. 'person' x2, 'hexagon' x1\)"):
        test = build_dataset("custom", "test", 64, data_root=str(tmp_path), class_order=CLASS_NAMES,
                             skip_unknown_classes=True)
    assert test.class_names == ["Circle", "square", "triangle"] and test.category_ids == [1, 3, 4]
    assert test.image_ids == [1, 2, 3, 4]  # an image of other categories alone is kept, as one without objects
    assert [test.annotation(i)[1].tolist() for i in range(4)] == [[0], [], [1, 2], [0, 0]]
    assert test.objects_to_score_per_class().tolist() == [3, 1, 1]
    labels, owner, crowd = test.objects_to_report()
    assert (labels.tolist(), owner.tolist(), crowd) == ([0, 1, 2, 0, 0], [0, 2, 2, 3, 3], 0)


def test_without_the_flag_the_refusal_of_the_json_says_to_pass_it(tmp_path, capsys):
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pth")
    write_coco(tmp_path / "coco", "val", instances())
    assert cli.main(cli.get_args_parser().parse_args(
        ["--trained_model", str(checkpoint), "--dataset", "custom", "--data_root", str(tmp_path / "coco"),
         "--eval_dir", str(tmp_path / "eval"), "--workers", "0"])) == 2
    assert capsys.readouterr().err.endswith(
        "names person, hexagon, which it was not trained on; or pass --skip_unknown_classes to leave out the objects "
        "of those categories (counted in one warning) and score its classes alone\n")


def scored_by_pycocotools(json_path: Path, results: list[dict], category_ids: list[int]) -> np.ndarray:
    """pycocotools' 12 numbers for ``results`` on the categories ``category_ids`` of ``json_path`` alone."""
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(json_path))
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(results), iouType="bbox")
        evaluator.params.catIds = category_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def test_the_evaluation_scores_the_models_classes_alone_as_pycocotools_does(tmp_path):
    """Detections of the three classes (a circle found twice and one missed, a square shifted, a triangle found):
    the numbers are pycocotools' over those three categories, not the five of the json (person and hexagon, never
    detected, would halve the means)."""
    json_path = write_coco(tmp_path, "val", instances())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        test = build_dataset("custom", "test", 64, data_root=str(tmp_path), class_order=CLASS_NAMES,
                             skip_unknown_classes=True)
    detections = [
        {"boxes": np.array([[2.0, 2, 22, 22], [3, 3, 21, 22]]), "labels": np.array([0, 0]),
         "scores": np.array([0.9, 0.4])},
        {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, np.int64), "scores": np.zeros(0)},
        {"boxes": np.array([[30.0, 10, 60, 30], [40, 40, 60, 60]]), "labels": np.array([1, 2]),
         "scores": np.array([0.8, 0.7])},
        {"boxes": np.array([[4.0, 4, 20, 20]]), "labels": np.array([0]), "scores": np.array([0.6])},
    ]
    metrics = evaluate_detections(test, detections, tmp_path / "eval", run_info={"split": "test"})
    results = [{"image_id": image, "category_id": [1, 3, 4][label], "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": score}
               for image, found in zip([1, 2, 3, 4], detections)
               for (x1, y1, x2, y2), label, score in zip(found["boxes"].tolist(), found["labels"].tolist(),
                                                         found["scores"].tolist())]
    expected = scored_by_pycocotools(json_path, results, [1, 3, 4])
    np.testing.assert_allclose(metrics["stats"], expected)
    # by hand: the square's IoU is 10*20 / (30*20 + 30*20 - 10*20) = 0.2, below every threshold: AP 0; the triangle
    # is exact: AP 1; the circles: 2 of 3 found at the two top scores (the 0.4 duplicate is a false positive), so
    # precision 1 up to recall 2/3 and 0 beyond: 67 of the 101 recall thresholds, AP 67/101
    assert list(metrics["per_class_AP"]) == ["Circle", "square", "triangle"]
    assert list(metrics["per_class_AP"].values()) == pytest.approx([67 / 101, 0.0, 1.0])
    assert metrics["mAP"] == pytest.approx((67 / 101 + 0 + 1) / 3)


def test_trained_model_evaluates_on_a_json_of_more_categories_with_the_flag(tmp_path, capsys):
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pth")
    write_coco(tmp_path / "coco", "val", instances())
    with pytest.warns(DataWarning, match=r"object of an unknown class skipped: 3 \(e.g. 'person' x2, 'hexagon' x1\)"):
        assert cli.main(cli.get_args_parser().parse_args(
            ["--trained_model", str(checkpoint), "--dataset", "custom", "--data_root", str(tmp_path / "coco"),
             "--skip_unknown_classes", "--eval_dir", str(tmp_path / "eval"), "--workers", "0"])) == 0
    captured = capsys.readouterr()
    assert "per-class AP@[.50:.95]:\n  Circle    " in captured.out and "person" not in captured.out
    capsys.readouterr()
    with pytest.warns(DataWarning, match="object of an unknown class skipped: 3"):  # the flag taken from the summary
        assert cli.main(cli.get_args_parser().parse_args(["--eval_results", str(tmp_path / "eval")])) == 0
    out = capsys.readouterr().out
    assert "--skip_unknown_classes (from " in out and "per-class AP@[.50:.95]:\n  Circle    " in out
    assert "person" not in out


def test_classes_train_on_some_of_a_jsons_categories_in_their_order(tmp_path):
    write_coco(tmp_path, "train", instances())
    with pytest.warns(DataWarning, match=r"object of an unknown class skipped: 4 \(e.g. 'person' x2, 'square' x1"):
        train = build_dataset("custom", "train", 64, data_root=str(tmp_path), classes="triangle,circle",
                              skip_unknown_classes=True)
    assert train.class_names == ["triangle", "Circle"] and train.category_ids == [4, 1]
    assert [train.annotation(i)[1].tolist() for i in range(len(train))] == [[1], [], [0], [1, 1]]


def test_classes_naming_a_class_the_json_lacks_is_an_error_naming_the_json(tmp_path):
    json_path = write_coco(tmp_path, "train", instances())
    with pytest.raises(DataError) as error:
        build_dataset("custom", "train", 64, data_root=str(tmp_path), classes="circle,dog,star",
                      skip_unknown_classes=True)
    assert str(error.value) == (
        f"{json_path} has no category dog, star: --skip_unknown_classes keeps the categories named circle, dog, star "
        "and leaves out the others, so each needs one: name it as the json does, or add it to 'categories' (a class "
        "without objects)")


def test_the_coco_dataset_takes_the_flag_and_classes_with_it(tmp_path, monkeypatch):
    """``--dataset coco --classes person --skip_unknown_classes`` trains a person detector on COCO; --classes alone
    is still refused there."""
    monkeypatch.setitem(DEFAULT_ROOTS, "coco", tmp_path)
    write_coco(tmp_path, "val2017", instances())
    with pytest.warns(DataWarning, match="object of an unknown class skipped: 6"):
        test = build_dataset("coco", "test", 64, classes=["person"], skip_unknown_classes=True)
    assert (test.class_names, test.category_ids, test.objects_to_score_per_class().tolist()) == (["person"], [2], [2])
    parse = cli.get_args_parser().parse_args
    for argv in (["--dataset", "coco", "--skip_unknown_classes"],
                 ["--dataset", "coco", "--classes", "person", "--skip_unknown_classes"]):
        args = parse(argv)
        cli.fill_dataset_defaults(args)
        assert args.skip_unknown_classes
    args = parse(["--dataset", "coco", "--classes", "person"])
    with pytest.raises(ValueError, match="the coco dataset takes its classes from its json: drop --classes, or add "
                                         "--skip_unknown_classes to train on these of its categories alone"):
        cli.fill_dataset_defaults(args)


def test_classes_naming_some_of_the_categories_without_the_flag_are_told_of_it(tmp_path):
    write_coco(tmp_path, "train", instances())
    with pytest.raises(DataError, match=r"leave out --classes, or add --skip_unknown_classes to train on these of its "
                                        r"categories alone$"):
        build_dataset("custom", "train", 64, data_root=str(tmp_path), classes="triangle,circle")


def test_a_test_json_of_more_categories_than_the_training_json_is_scored_on_the_training_ones_with_the_flag(tmp_path):
    """A training json of some of the test json's categories (a subset made for training, val2017 left whole): the
    refusal of the splits says to pass the flag, which keeps the training json's categories in the test split."""
    train_data = instances()
    train_data["categories"] = [category for category in CATEGORIES if category["id"] in (1, 3)]
    train_data["annotations"] = [a for a in train_data["annotations"] if a["category_id"] in (1, 3)]
    train_file, test_file = write_coco(tmp_path, "train", train_data), write_coco(tmp_path, "val", instances())
    train = build_dataset("custom", "train", 64, data_root=str(tmp_path))
    test = build_dataset("custom", "test", 64, data_root=str(tmp_path), class_order=train.class_names)
    with pytest.raises(DataError) as error:
        check_splits(train, test, RunLog(None))
    assert str(error.value).endswith(
        f"only in the training json: [], only in the test json: ['person', 'triangle', 'hexagon']; or pass "
        f"--skip_unknown_classes to score the categories of {train_file} alone in {test_file}")
    with pytest.warns(DataWarning, match="object of an unknown class skipped: 4"):
        test = build_dataset("custom", "test", 64, data_root=str(tmp_path), class_order=train.class_names,
                             skip_unknown_classes=True)
    check_splits(train, test, RunLog(None))
    assert test.class_names == ["Circle", "square"]


def test_coco_training_images_holding_only_other_categories_are_counted_as_such(tmp_path, monkeypatch):
    """``--dataset coco`` training drops the images without annotations (the authors' train set); with --classes
    person, images 3 and 4 hold annotations, of other categories: the warning said they had none."""
    monkeypatch.setitem(DEFAULT_ROOTS, "coco", tmp_path)
    write_coco(tmp_path, "train2017", instances())
    with pytest.warns(DataWarning, match=r"image without annotations of the classes kept left out of training \(the "
                                         r"authors' COCO train set\): 2 \(e.g. image id 3, image id 4\)"):
        train = build_dataset("coco", "train", 64, classes=["person"], skip_unknown_classes=True)
    assert train.image_ids == [1, 2]


def test_a_test_json_without_objects_of_the_classes_kept_says_so(tmp_path):
    data = instances()
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] != 4]  # no triangle
    json_path = write_coco(tmp_path, "val", data)
    with pytest.raises(DataError) as error:
        build_dataset("custom", "test", 64, data_root=str(tmp_path), class_order=["triangle"],
                      skip_unknown_classes=True)
    assert str(error.value) == (
        f"{json_path}: the test split's 4 images hold no object of triangle to score (none, or all marked iscrowd=1; "
        "the objects of the other categories are left out by --skip_unknown_classes), so every AP would be undefined: "
        "annotate the test images, or evaluate on a json holding objects of these classes")


def test_classes_keep_their_order_beside_an_init_from_checkpoint_of_the_same_classes_in_another(tmp_path):
    """``--init_from`` (its class names the ``class_order``) with ``--classes circle,triangle --skip_unknown_classes``
    on a json: the labels followed the checkpoint's order (triangle, Circle), not the order typed, as they do on a
    VOC layout and without --init_from (the checkpoint's classification weights are moved to the labels typed)."""
    write_coco(tmp_path, "train", instances())
    with pytest.warns(DataWarning, match="object of an unknown class skipped: 4"):
        train = build_dataset("custom", "train", 64, data_root=str(tmp_path), classes="circle,triangle",
                              skip_unknown_classes=True, class_order=["triangle", "circle"])
    assert train.class_names == ["Circle", "triangle"] and train.category_ids == [1, 4]
    assert [train.annotation(i)[1].tolist() for i in range(len(train))] == [[0], [], [1], [0, 0]]


@pytest.mark.usefixtures("one_torch_thread")
def test_init_from_without_classes_says_the_flag_keeps_every_training_category(tmp_path, capsys):
    """``--init_from`` (circle, square, triangle) with ``--skip_unknown_classes`` and no ``--classes`` on a json of
    five categories: the run trains on all five (the checkpoint's classes at most order a json's labels, a
    deliberate choice: a fine-tuning run's classes are its data's), and the flag left nothing out without a word; a
    note now says so, and which --classes would leave out the others."""
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pth")
    train_json = write_coco(tmp_path / "coco", "train", instances())
    write_coco(tmp_path / "coco", "val", instances())
    assert cli.main(cli.get_args_parser().parse_args(
        training_argv(tmp_path / "coco", tmp_path, "--init_from", str(checkpoint), "--skip_unknown_classes"))) == 0
    assert (f"note: --skip_unknown_classes leaves out no category of {train_json} without --classes: --init_from "
            f"{checkpoint}'s classes choose none (a fine-tuning run trains on its data's classes), so this run trains "
            "on its 5 (Circle, person, square, triangle, ...); to train on those of its classes alone, give --classes "
            "circle,square,triangle\n") in capsys.readouterr().out


def test_the_note_of_categories_kept_names_the_classes_to_give(tmp_path):
    """A checkpoint class holding a comma is named in a file (a comma list cannot hold it); one sharing no class
    with the json leaves the choice to the user; one trained on every category of the json, or --classes given,
    gets no note (the flag leaves out what a run asks it to)."""
    data = instances()
    data["categories"][1]["name"] = "person, sitting"
    json_path = write_coco(tmp_path, "train", data)
    dataset = build_dataset("custom", "train", 64, data_root=str(tmp_path))
    args = cli.get_args_parser().parse_args(["--init_from", "w.pth", "--skip_unknown_classes"])
    assert categories_kept_note(args, dataset, ["person, sitting", "dog", "circle"]).endswith(
        "; to train on those of its classes alone, give --classes a file naming them, one per line ('person, "
        "sitting', 'circle')")
    assert categories_kept_note(args, dataset, ["dog"]) == (
        f"note: --skip_unknown_classes leaves out no category of {json_path} without --classes: --init_from w.pth's "
        "classes choose none (a fine-tuning run trains on its data's classes), so this run trains on its 5 ('Circle', "
        "'person, sitting', 'square', 'triangle', ...); to train on some of them alone, give --classes naming those")
    every = ["hexagon", "triangle", "square", "person, sitting", "circle", "dog"]
    assert categories_kept_note(args, dataset, every) is None
    args.classes = "circle"
    assert categories_kept_note(args, dataset, ["circle"]) is None


def test_the_classes_the_note_of_categories_kept_gives_are_one_shell_word(tmp_path):
    """COCO's categories hold spaces (traffic light, fire hydrant): the note said `give --classes circle,traffic
    light`, which a shell splits into two arguments (argparse: unrecognized arguments: light). It quotes them."""
    data = instances()
    data["categories"][1]["name"] = "traffic light"
    write_coco(tmp_path, "train", data)
    dataset = build_dataset("custom", "train", 64, data_root=str(tmp_path))
    args = cli.get_args_parser().parse_args(["--init_from", "w.pth", "--skip_unknown_classes"])
    assert categories_kept_note(args, dataset, ["traffic light", "circle"]).endswith(
        "; to train on those of its classes alone, give --classes 'traffic light,circle'")
