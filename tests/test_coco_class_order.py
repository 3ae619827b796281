"""Custom COCO-layout data whose training and test jsons list the same categories in another order (or under other
ids): the test split's labels, and the category ids of the results it scores, follow the training split's classes
(or a checkpoint's), as mmdetection / torchvision users expect; jsons naming other classes are still refused. A
training json listing a ``--resume`` or ``--init_from`` checkpoint's classes in another order is read in the
checkpoint's."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import main as cli
from data import DataError, build_dataset
from tests.test_data_coco import write_coco
from tests.tiny_checkpoint import CLASS_NAMES, write_tiny_checkpoint
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.inference import evaluate_detections
from utils.logging import RunLog
from utils.run_data import check_splits

TRAIN_CATEGORIES = [{"id": 5, "name": "bus"}, {"id": 1, "name": "person"}, {"id": 90, "name": "toothbrush"}]
# the same classes listed in another order: with the training json's ids, and under ids of the test json's own
TEST_CATEGORIES = {
    "same ids": [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 5, "name": "bus"}],
    "other ids": [{"id": 12, "name": "Toothbrush"}, {"id": 13, "name": "bus"}, {"id": 11, "name": "person"}],
}
TEST_IMAGES = [
    {"id": 7, "file_name": "t7.jpg", "height": 40, "width": 60},
    {"id": 3, "file_name": "t3.jpg", "height": 50, "width": 50},
    {"id": 9, "file_name": "t9.jpg", "height": 30, "width": 30},
]
# (image id, class name, bbox): every side > 7 px, so each object is an item's box and is scored
TEST_OBJECTS = [(7, "person", [2, 4, 30, 20]), (7, "toothbrush", [35, 10, 20, 25]), (3, "bus", [10, 10, 20, 30]),
                (9, "toothbrush", [5, 5, 20, 20])]


def train_json() -> dict:
    images = [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 60}]
    annotations = [{"id": n, "image_id": 1, "category_id": c["id"], "bbox": [2 + 10 * n, 5, 9, 20], "area": 180,
                    "iscrowd": 0} for n, c in enumerate(TRAIN_CATEGORIES, 1)]
    return {"images": images, "annotations": annotations, "categories": TRAIN_CATEGORIES}


def val_json(categories: list[dict]) -> dict:
    id_of = {category["name"].lower(): category["id"] for category in categories}
    annotations = [{"id": n, "image_id": image_id, "category_id": id_of[name], "bbox": box, "area": box[2] * box[3],
                    "iscrowd": 0} for n, (image_id, name, box) in enumerate(TEST_OBJECTS, 1)]
    return {"images": TEST_IMAGES, "annotations": annotations, "categories": categories}


def write_folder(root: Path, test_categories: list[dict]) -> tuple[Path, Path]:
    return write_coco(root, "train", train_json()), write_coco(root, "val", val_json(test_categories))


@pytest.mark.parametrize("ids", list(TEST_CATEGORIES))
def test_the_test_split_takes_the_training_splits_class_order_and_scores_with_its_own_ids(ids, tmp_path):
    write_folder(tmp_path, TEST_CATEGORIES[ids])
    train = build_dataset("custom", "train", 32, data_root=str(tmp_path))
    assert train.class_names == ["bus", "person", "toothbrush"] and train.category_ids == [5, 1, 90]
    test = build_dataset("custom", "test", 32, data_root=str(tmp_path), class_order=train.class_names)
    id_of = {category["name"].lower(): category["id"] for category in TEST_CATEGORIES[ids]}
    assert [name.lower() for name in test.class_names] == ["bus", "person", "toothbrush"]
    assert test.category_ids == [id_of["bus"], id_of["person"], id_of["toothbrush"]]
    assert test.image_ids == [7, 3, 9]
    # label i is the training split's class i: person 1 and toothbrush 2 in image 7, bus 0 in 3, toothbrush 2 in 9
    assert [test.annotation(i)[1].tolist() for i in range(3)] == [[1, 2], [0], [2]]
    check_splits(train, test, RunLog(None))

    # the ground truth's own boxes and labels as detections: the results name the test json's ids, and score 1.0
    detections = [{"boxes": test.annotation(i)[0], "labels": test.annotation(i)[1], "scores": np.ones(len(labels))}
                  for i, labels in enumerate(test.annotation(i)[1] for i in range(3))]
    metrics = evaluate_detections(test, detections, tmp_path / "eval", run_info={"split": "test"})
    written = json.loads((tmp_path / "eval" / "detections_test_results.json").read_text())
    assert [(r["image_id"], r["category_id"]) for r in written] == [
        (image_id, id_of[name]) for image_id, name, _ in TEST_OBJECTS
    ]
    assert metrics["mAP"] == 1.0 and metrics["AP50"] == 1.0
    assert list(metrics["per_class_AP"].values()) == pytest.approx([1.0, 1.0, 1.0])
    assert [name.lower() for name in metrics["per_class_AP"]] == ["bus", "person", "toothbrush"]  # the labels' order


def test_without_a_class_order_the_labels_follow_the_jsons_own_order(tmp_path):
    write_folder(tmp_path, TEST_CATEGORIES["other ids"])
    test = build_dataset("custom", "test", 32, data_root=str(tmp_path))
    assert test.class_names == ["Toothbrush", "bus", "person"] and test.category_ids == [12, 13, 11]
    assert [test.annotation(i)[1].tolist() for i in range(3)] == [[2, 0], [1], [0]]


def test_jsons_naming_other_classes_are_refused_naming_both_files(tmp_path):
    categories = [{"id": 5, "name": "bus"}, {"id": 1, "name": "person"}, {"id": 90, "name": "car"}]
    data = val_json(TEST_CATEGORIES["same ids"])
    data["categories"] = categories
    train_file, test_file = write_coco(tmp_path, "train", train_json()), write_coco(tmp_path, "val", data)
    train = build_dataset("custom", "train", 32, data_root=str(tmp_path))
    test = build_dataset("custom", "test", 32, data_root=str(tmp_path), class_order=train.class_names)
    assert test.class_names == ["bus", "person", "car"]  # another set of names: the json's own order
    with pytest.raises(DataError) as error:
        check_splits(train, test, RunLog(None))
    assert str(error.value) == (
        f"the training split's classes ['bus', 'person', 'toothbrush'] differ from the test split's ['bus', 'person', "
        f"'car']: the categories of {train_file} and {test_file} must have the same names (in any order, under any "
        "ids); only in the training json: ['toothbrush'], only in the test json: ['car']"
    )


def test_check_data_and_training_accept_jsons_listing_the_categories_in_another_order(tmp_path, capsys):
    write_folder(tmp_path, TEST_CATEGORIES["other ids"])
    assert cli.main(cli.get_args_parser().parse_args([
        "--dataset", "custom", "--data_root", str(tmp_path), "--check_data", "--workers", "0"])) == 0
    assert "differ" not in capsys.readouterr().err


def only_class_scored(checkpoint: Path, label: int, path: Path) -> Path:
    """``checkpoint`` with a classification head that scores class ``label`` 0.9 at every anchor and every other
    class 0.001 (below the evaluation's 0.005): zero weights, biases ``logit(score)``; saved to ``path``."""
    state = load_checkpoint(checkpoint)
    model = dict(state["model"])
    classes = len(state["class_names"])
    for key in [k for k in model if k.startswith("head.conf.")]:
        if key.endswith("bias"):  # channel a * C + c scores class c at the cell's anchor a
            scores = torch.full((model[key].numel() // classes, classes), 0.001)
            scores[:, label] = 0.9
            model[key] = torch.log(scores / (1 - scores)).flatten()
        else:
            model[key] = torch.zeros_like(model[key])
    save_checkpoint({**state, "model": model}, path)
    return path


def test_a_checkpoint_is_evaluated_in_its_own_class_order_on_a_json_listing_them_in_another(tmp_path):
    """The tiny checkpoint's classes are circle, square, triangle; the test json lists them as triangle 30, circle 10,
    square 20. Only the checkpoint's label 1 (square) scores above the threshold, so every detection written must be
    of category 20, and only square's AP is defined by detections (the others have no detection: AP 0)."""
    assert CLASS_NAMES == ["circle", "square", "triangle"]
    checkpoint = only_class_scored(write_tiny_checkpoint(tmp_path / "tiny.pth"), 1, tmp_path / "square.pth")
    categories = [{"id": 30, "name": "triangle"}, {"id": 10, "name": "circle"}, {"id": 20, "name": "square"}]
    annotations = [{"id": n, "image_id": 7, "category_id": c, "bbox": [5, 5, 20, 20], "area": 400, "iscrowd": 0}
                   for n, c in enumerate((10, 20, 30), 1)]
    write_coco(tmp_path / "data", "val", {"images": TEST_IMAGES[:1], "annotations": annotations,
                                          "categories": categories})
    eval_dir = tmp_path / "eval"
    assert cli.main(cli.get_args_parser().parse_args([
        "--trained_model", str(checkpoint), "--dataset", "custom", "--data_root", str(tmp_path / "data"),
        "--workers", "0", "--device", "cpu", "--eval_dir", str(eval_dir)])) == 0
    written = json.loads((eval_dir / "detections_test_results.json").read_text())
    assert len(written) > 0 and {r["category_id"] for r in written} == {20}
    summary = json.loads((eval_dir / "summary.json").read_text())
    per_class = summary["metrics"]["per_class_AP"]
    assert list(per_class) == CLASS_NAMES and per_class["circle"] == per_class["triangle"] == 0.0
    assert not math.isnan(per_class["square"])


def test_training_builds_its_test_split_in_the_training_splits_class_order(tmp_path):
    from utils.distributed import DistributedContext
    from utils.run_flags import fill_dataset_defaults
    from utils.training_setup import build_training

    write_folder(tmp_path, TEST_CATEGORIES["other ids"])
    args = cli.get_args_parser().parse_args([
        "--dataset", "custom", "--data_root", str(tmp_path), "--workers", "0", "--version", "fssd", "--backbone",
        "resnet18", "--size", "128", "--no_pretrained", "--max_iter", "1", "--batch_size", "1"])
    fill_dataset_defaults(args)
    setup = build_training(args, torch.device("cpu"), DistributedContext(), RunLog(None))
    assert setup.test_dataset.class_names == ["bus", "person", "Toothbrush"]
    assert setup.test_dataset.category_ids == [13, 11, 12]


# the training json of a later run: the checkpoint's classes listed in another order, under other ids (and letter case)
REORDERED_TRAIN_CATEGORIES = [{"id": 12, "name": "Toothbrush"}, {"id": 13, "name": "bus"}, {"id": 11, "name": "person"}]


def training_argv(root: Path, out: Path, *extra: str) -> list[str]:
    """A one-iteration FSSD-ResNet18 run at 128 px on the COCO-layout folder ``root``, writing under ``out``."""
    return ["--dataset", "custom", "--data_root", str(root), "--version", "fssd", "--backbone", "resnet18", "--size",
            "128", "--no_pretrained", "--batch_size", "1", "--max_iter", "1", "--warm_iter", "0", "--workers", "0",
            "--device", "cpu", "--save_folder", str(out / "weights"), "--run_dir", str(out / "run"), "--eval_dir",
            str(out / "eval"), "--name", "run", *extra]  # fmt: skip


def folder_with_training_categories(root: Path, categories: list[dict], renamed: dict[str, str] | None = None) -> Path:
    """A COCO-layout folder whose training json holds :func:`train_json`'s objects (one per class, by name) under
    ``categories``, and whose test json is ``val_json(TEST_CATEGORIES["same ids"])``; ``renamed`` (old name -> new)
    names other classes in both jsons."""
    renamed = renamed or {}
    data = train_json()
    id_of = {category["name"].lower(): category["id"] for category in categories}
    name_of = {category["id"]: renamed.get(category["name"], category["name"]) for category in TRAIN_CATEGORIES}
    for annotation in data["annotations"]:
        annotation["category_id"] = id_of[name_of[annotation["category_id"]]]
    data["categories"] = categories
    test_data = val_json(TEST_CATEGORIES["same ids"])
    test_data["categories"] = [{**category, "name": renamed.get(category["name"], category["name"])}
                               for category in test_data["categories"]]
    write_coco(root, "train", data)
    write_coco(root, "val", test_data)
    return root


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, one_torch_thread) -> Path:
    """The checkpoint of a finished one-iteration run on a training json listing bus 5, person 1, toothbrush 90."""
    out = tmp_path_factory.mktemp("trained")
    root = folder_with_training_categories(out / "data", TRAIN_CATEGORIES)
    assert cli.main(cli.get_args_parser().parse_args(training_argv(root, out))) == 0
    return out / "weights" / "run.pth"


@pytest.mark.usefixtures("one_torch_thread")
def test_resume_continues_on_a_training_json_listing_the_checkpoints_classes_in_another_order(trained_run, tmp_path,
                                                                                              capsys):
    """The same set of names is the same classes: the training split is built in the checkpoint's order, so its
    labels (and the annotation fingerprint the checkpoint recorded) are those of the run, which goes on (here: a
    finished run, evaluated again, with its per-class table in the checkpoint's order)."""
    root = folder_with_training_categories(tmp_path / "data", REORDERED_TRAIN_CATEGORIES)
    assert cli.main(cli.get_args_parser().parse_args(training_argv(root, tmp_path, "--resume", str(trained_run)))) == 0
    captured = capsys.readouterr()
    assert f"resumed from {trained_run} at iteration 1/1" in captured.out and "error" not in captured.err
    assert load_checkpoint(tmp_path / "weights" / "run.pth")["class_names"] == ["bus", "person", "Toothbrush"]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert list(summary["metrics"]["per_class_AP"]) == ["bus", "person", "toothbrush"]


@pytest.mark.usefixtures("one_torch_thread")
def test_resume_on_a_training_json_naming_other_classes_is_still_refused(trained_run, tmp_path, capsys):
    categories = [{"id": 12, "name": "Toothbrush"}, {"id": 13, "name": "car"}, {"id": 11, "name": "person"}]
    folder_with_training_categories(tmp_path / "data", categories, {"bus": "car"})
    argv = training_argv(tmp_path / "data", tmp_path, "--resume", str(trained_run))
    assert cli.main(cli.get_args_parser().parse_args(argv)) == 2
    assert capsys.readouterr().err == (
        f"error: {trained_run} was trained on 3 classes (bus, person, toothbrush), but the dataset has 3 classes "
        "(Toothbrush, car, person); continue it on a json whose categories are the classes it was trained on (in any "
        f"order, under any ids): {tmp_path / 'data' / 'annotations' / 'instances_train.json'} names car, which it was "
        f"not trained on, and not bus; or start a new run from its weights with --init_from {trained_run} to train on "
        "these classes\n")


@pytest.mark.usefixtures("one_torch_thread")
def test_init_from_keeps_every_class_head_on_a_training_json_listing_its_classes_in_another_order(trained_run,
                                                                                                 tmp_path, capsys):
    """At lr 1e-12 one step leaves the weights where they were: the classification layers are the checkpoint's, each
    class's channels at its label in the checkpoint's order."""
    root = folder_with_training_categories(tmp_path / "data", REORDERED_TRAIN_CATEGORIES)
    argv = training_argv(root, tmp_path, "--init_from", str(trained_run), "--lr", "1e-12")
    assert cli.main(cli.get_args_parser().parse_args(argv)) == 0
    assert "start afresh" not in capsys.readouterr().out
    state, start = load_checkpoint(tmp_path / "weights" / "run.pth"), load_checkpoint(trained_run)
    assert state["class_names"] == ["bus", "person", "Toothbrush"]
    classifier = [key for key in start["model"] if key.startswith("head.conf.")]
    assert len(classifier) == 8
    for key in classifier:
        torch.testing.assert_close(state["model"][key], start["model"][key], rtol=0, atol=1e-9)


@pytest.mark.usefixtures("one_torch_thread")
def test_init_from_on_a_training_json_sharing_some_classes_keeps_theirs_and_starts_the_new_one_afresh(trained_run,
                                                                                                     tmp_path, capsys):
    """Partly the same names (person, bus; car is new), in the json's own class order: person and bus keep their
    classification weights at their labels there (at lr 1e-12 one step leaves them where they were), as on VOC-layout
    data, and car starts from the head's initialisation (the prior bias)."""
    categories = [{"id": 11, "name": "person"}, {"id": 13, "name": "car"}, {"id": 12, "name": "bus"}]
    folder_with_training_categories(tmp_path / "data", categories, {"toothbrush": "car"})
    argv = training_argv(tmp_path / "data", tmp_path, "--init_from", str(trained_run), "--lr", "1e-12")
    assert cli.main(cli.get_args_parser().parse_args(argv)) == 0
    assert ("it was trained on 3 classes (bus, person, toothbrush), this dataset has 3 (person, car, bus): kept the "
            "classifier of 2 of 3 classes (from the checkpoint's 3), each moved to its label here; new: car (from the "
            "head's initialisation); the rest comes from the checkpoint") in capsys.readouterr().out
    state, start = load_checkpoint(tmp_path / "weights" / "run.pth"), load_checkpoint(trained_run)
    assert state["class_names"] == ["person", "car", "bus"]
    for level in range(4):
        tuned, trained = (entry["model"][f"head.conf.{level}.bias"].reshape(6, 3) for entry in (state, start))
        torch.testing.assert_close(tuned[:, [0, 2]], trained[:, [1, 0]], rtol=0, atol=1e-9)
        torch.testing.assert_close(tuned[:, 1], torch.full((6,), -math.log(99)), rtol=0, atol=1e-6)


def test_eval_results_prints_the_per_class_table_in_the_order_of_the_evaluation_that_wrote_them(tmp_path, capsys):
    """An evaluation in the training order (bus, person, toothbrush) of a test json listing Toothbrush 12, bus 13,
    person 11; --eval_results of its folder re-scores it with the same numbers in the same table, in that order."""
    write_folder(tmp_path, TEST_CATEGORIES["other ids"])
    test = build_dataset("custom", "test", 32, data_root=str(tmp_path), class_order=["bus", "person", "toothbrush"])
    # the objects of the first two images detected: image 9's toothbrush is missed (toothbrush AP 0.5, the others 1)
    detections = [{"boxes": boxes, "labels": labels, "scores": np.full(len(labels), 0.9)}
                  for boxes, labels, _ in (test.annotation(i) for i in range(2))]
    detections.append({"boxes": np.zeros((0, 4)), "labels": np.zeros(0, np.int64), "scores": np.zeros(0)})
    evaluated_with = {"dataset": "custom", "data_root": str(tmp_path), "classes": None, "skip_unknown_classes": False}
    metrics = evaluate_detections(test, detections, tmp_path / "eval", run_info={
        "dataset": "custom", "split": "test", "evaluated_with": evaluated_with})
    assert list(metrics["per_class_AP"]) == ["bus", "person", "Toothbrush"]
    assert [metrics["per_class_AP"][name] for name in ("bus", "person")] == pytest.approx([1.0, 1.0])
    assert metrics["per_class_AP"]["Toothbrush"] == pytest.approx(0.5, abs=0.01)
    table = capsys.readouterr().out.split("per-class AP@[.50:.95]:\n")[1]

    assert cli.main(cli.get_args_parser().parse_args(["--eval_results", str(tmp_path / "eval"), "--workers",
                                                      "0"])) == 0
    out = capsys.readouterr().out
    assert out.split("per-class AP@[.50:.95]:\n")[1].startswith(table)
    assert table.splitlines()[:3] == ["  bus         1.000", "  person      1.000", "  Toothbrush  0.505"]


def test_a_json_category_that_is_a_softmax_background_entry_gets_a_warning_saying_to_remove_it(tmp_path, capsys):
    """labelme's labelme2coco writes its labels.txt's `_background_` as category 0, as a softmax classifier wants it;
    here the classifier is sigmoid with no background column, so it was an extra class without objects, with the
    warnings of any such class (the model cannot learn it, its AP undefined) but not why or what to do."""
    background = [{"id": 0, "name": "_background_"}]
    write_coco(tmp_path, "train", {**train_json(), "categories": background + TRAIN_CATEGORIES})
    write_coco(tmp_path, "val", {**val_json(TRAIN_CATEGORIES), "categories": background + TRAIN_CATEGORIES})
    train = build_dataset("custom", "train", 32, data_root=str(tmp_path))
    test = build_dataset("custom", "test", 32, data_root=str(tmp_path), class_order=train.class_names)
    assert train.class_names == ["_background_", "bus", "person", "toothbrush"]
    check_splits(train, test, RunLog(None))
    hint = ("'_background_' is a softmax classifier's background entry, which this sigmoid classifier, with no "
            "background column, does not use: remove it from the classes (a COCO-layout json: from its categories)")
    assert capsys.readouterr().out.splitlines() == [
        "warning: the test split holds no object to score of the classes ['_background_'] (none, or all marked "
        "difficult or iscrowd): their AP is undefined (nan) and left out of the means; move some of their images to "
        f"the test split; {hint}",
        "warning: no training image holds an object of the classes ['_background_']: the model cannot learn them "
        f"(their AP will be 0 or undefined); {hint}"]


def test_classes_in_the_jsons_order_are_taken_when_a_checkpoint_orders_the_labels(tmp_path):
    """--classes naming the json's categories in its own order (as documented) beside --init_from or --trained_model
    of a checkpoint listing them in another order: the labels follow the checkpoint, and --classes was compared with
    that order, so it was refused with a message claiming the json lists them in the checkpoint's order. With a
    class order given, --classes need only name the json's classes; other classes are refused, naming the json's."""
    write_folder(tmp_path, TEST_CATEGORIES["other ids"])  # the test json: Toothbrush, bus, person
    checkpoint_order = ["person", "toothbrush", "bus"]
    train = build_dataset("custom", "train", 32, data_root=str(tmp_path), classes=["bus", "person", "toothbrush"],
                          class_order=checkpoint_order)
    assert train.class_names == ["person", "toothbrush", "bus"]
    test = build_dataset("custom", "test", 32, data_root=str(tmp_path), classes="toothbrush,bus,person",
                         class_order=checkpoint_order)
    assert test.class_names == ["person", "Toothbrush", "bus"]
    assert build_dataset("custom", "test", 32, data_root=str(tmp_path), classes=checkpoint_order,
                         class_order=checkpoint_order).class_names == ["person", "Toothbrush", "bus"]
    with pytest.raises(DataError, match=r"^--classes \['person', 'car', 'bus'\] differ from the categories of "
                                        r".*instances_val\.json: \['Toothbrush', 'bus', 'person'\]; "):
        build_dataset("custom", "test", 32, data_root=str(tmp_path), classes="person,car,bus",
                      class_order=checkpoint_order)


def test_classes_differing_from_a_long_category_list_say_what_differs(tmp_path):
    """--classes of 1,000 names with two swapped, beside a json of those categories, was refused with both lists
    written out (26,000 characters, twice: both splits) and no word of the difference. Past 20 names each list shows
    its first 20 and a count, and the message says what differs: the same names in another order (the first
    position where they differ), or the names only one side has."""
    names = [f"c{i:02d}" for i in range(30)]
    data = {"images": [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 40}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 20, 20], "area": 400,
                             "iscrowd": 0}],
            "categories": [{"id": i + 1, "name": name} for i, name in enumerate(names)]}
    path = write_coco(tmp_path, "train", data)
    swapped = [names[0], names[2], names[1], *names[3:]]
    with pytest.raises(DataError) as error:
        build_dataset("custom", "train", 32, data_root=str(tmp_path), classes=swapped)
    first = ", ".join(repr(name) for name in swapped[:20])
    json_first = ", ".join(repr(name) for name in names[:20])
    assert str(error.value) == (
        f"--classes 30 names ({first} and 10 more) differ from the categories of {path}: 30 names ({json_first} and "
        "10 more); they are the same names in another order (the first that differs is the 2nd: 'c02' in --classes, "
        "'c01' in the json); a COCO-layout set takes its classes from its json: leave out --classes")
    other = [*names[:29], "zebra", "Extra"]
    with pytest.raises(DataError, match=r" and 11 more\) differ from the categories of .* and 10 more\); only in "
                                        r"--classes: \['zebra', 'Extra'\], only in the json: \['c29'\]; a COCO-layout"):
        build_dataset("custom", "train", 32, data_root=str(tmp_path), classes=other)


def test_splits_whose_long_category_lists_differ_show_the_first_names_and_the_difference(tmp_path):
    """A test json of 1,000 categories lacking one of the training json's: both lists were written out in full (a line
    of 26,000 characters) before the one name that differs. Past 20 names each shows its first 20 and a count."""
    names = [f"c{i:02d}" for i in range(30)]
    def data(categories: list[str]) -> dict:
        return {"images": [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 40}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 20, 20], "area": 400,
                                 "iscrowd": 0}],
                "categories": [{"id": i + 1, "name": name} for i, name in enumerate(categories)]}
    train_file, test_file = write_coco(tmp_path, "train", data(names)), write_coco(tmp_path, "val", data(names[:29]))
    train = build_dataset("custom", "train", 32, data_root=str(tmp_path))
    test = build_dataset("custom", "test", 32, data_root=str(tmp_path), class_order=train.class_names)
    with pytest.raises(DataError) as error:
        check_splits(train, test, RunLog(None))
    first = ", ".join(repr(name) for name in names[:20])
    assert str(error.value) == (
        f"the training split's classes 30 names ({first} and 10 more) differ from the test split's 29 names ({first} "
        f"and 9 more): the categories of {train_file} and {test_file} must have the same names (in any order, under "
        "any ids); only in the training json: ['c29'], only in the test json: []")
