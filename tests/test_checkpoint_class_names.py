"""A trained model's class names travel from its checkpoint (or an evaluation's ``summary.json``) as names, not as a
``--classes`` string re-read as if typed: a name holding a comma (a COCO-layout category ``"person, sitting"``) stays
one class, and a one-class model's name stays a name when a file of that name is in the working folder."""
import json
from pathlib import Path

import numpy as np
import pytest

import main as cli
from data import DataError, build_dataset
from tests.test_coco_class_order import TEST_IMAGES, only_class_scored, training_argv
from tests.test_data_coco import write_coco
from tests.test_data_voc import write_voc_folder
from tests.tiny_checkpoint import write_tiny_checkpoint
from utils.checkpoint import CheckpointError, check_compatible, load_checkpoint, save_checkpoint
from utils.inference import evaluate_detections
from utils.run_flags import take_run_from_checkpoint

RUN = {"version": "fssd", "backbone": "resnet18", "size": 128, "base_anchor_size": 24.0, "dataset": "custom"}
OBJECTS = {"a": [("person, sitting", (4, 6, 30, 40), 0)], "b": [("car", (10, 8, 50, 40), 0)]}


def checkpoint_with_classes(path: Path, class_names: list[str]) -> Path:
    """The tiny checkpoint (random weights) with ``class_names`` and its classification layers cut to them, as a
    run on custom data would have saved it."""
    state = load_checkpoint(write_tiny_checkpoint(path))
    count, kept = len(state["class_names"]), len(class_names)
    model = {}
    for key, value in state["model"].items():  # channel a * C + c scores class c at the cell's anchor a
        if key.startswith("head.conf."):
            value = value.reshape(-1, count, *value.shape[1:])[:, :kept].reshape(-1, *value.shape[1:])
        model[key] = value
    save_checkpoint({**state, "model": model, "class_names": class_names,
                     "config": {**state["config"], "dataset": "custom"}}, path)
    return path


def run(*argv: str) -> int:
    return cli.main(cli.get_args_parser().parse_args([*argv, "--workers", "0", "--device", "cpu"]))


@pytest.mark.usefixtures("one_torch_thread")
def test_a_class_name_holding_a_comma_is_evaluated_and_rescored_as_one_class(tmp_path, capsys):
    """A model trained on a COCO-layout category "person, sitting", evaluated on VOC-layout data whose XML names
    the class so: two classes, not three ("person", "sitting", "car"); --eval_results re-scores it alike."""
    checkpoint = checkpoint_with_classes(tmp_path / "w.pth", ["person, sitting", "car"])
    checkpoint = only_class_scored(checkpoint, 0, checkpoint)  # every anchor "person, sitting" at 0.9
    root = write_voc_folder(tmp_path / "voc", OBJECTS, {"test": ["a", "b"]})
    assert run("--trained_model", str(checkpoint), "--dataset", "custom", "--data_root", str(root),
               "--eval_dir", str(tmp_path / "eval")) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    per_class = summary["metrics"]["per_class_AP50"]
    assert list(per_class) == ["person, sitting", "car"] and per_class["person, sitting"] > 0 == per_class["car"]
    assert summary["evaluated_with"]["classes"] == ["person, sitting", "car"]
    capsys.readouterr()
    assert run("--eval_results", str(tmp_path / "eval")) == 0
    captured = capsys.readouterr()
    assert "error" not in captured.err and "--classes ['person, sitting', 'car'] (from " in captured.out
    assert f"mAP={summary['metrics']['mAP']:.4f}" in captured.out


@pytest.mark.usefixtures("one_torch_thread")
def test_a_one_class_checkpoint_is_not_read_as_the_file_of_its_class_name_in_the_working_folder(
        tmp_path, monkeypatch, capsys):
    """A file named ``dog`` (a list of other classes) in the working folder: the checkpoint's class is still dog,
    for --trained_model and for --eval_results of its evaluation."""
    checkpoint = checkpoint_with_classes(tmp_path / "w.pth", ["dog"])
    root = write_voc_folder(tmp_path / "voc", {"a": [("dog", (4, 6, 30, 40), 0)]}, {"test": ["a"]})
    monkeypatch.chdir(tmp_path)
    Path("dog").write_text("cat\nhorse\n")
    assert run("--trained_model", str(checkpoint), "--dataset", "custom", "--data_root", str(root),
               "--eval_dir", "eval") == 0
    metrics = json.loads(Path("eval/summary.json").read_text())["metrics"]
    assert list(metrics["per_class_AP50"]) == ["dog"]
    capsys.readouterr()
    assert run("--eval_results", "eval") == 0
    captured = capsys.readouterr()
    assert "error" not in captured.err and "--classes dog (from eval/summary.json)" in captured.out
    assert f"mAP={metrics['mAP']:.4f} AP50={metrics['AP50']:.4f}" in captured.out  # re-scored as evaluated


@pytest.mark.usefixtures("one_torch_thread")
def test_resume_of_a_one_class_run_is_not_read_as_the_file_of_its_class_name_in_the_working_folder(
        tmp_path, monkeypatch, capsys):
    """A run trained with ``--classes dog``, resumed where a file named ``dog`` (a list of other classes) has
    appeared since: it continues on its class dog, and records it for the next resume."""
    root = write_voc_folder(tmp_path / "voc", {"a": [("dog", (4, 6, 30, 40), 0)], "b": [("dog", (8, 4, 40, 44), 0)]},
                            {"trainval": ["a"], "test": ["b"]})
    monkeypatch.chdir(tmp_path)
    argv = ("--dataset", "custom", "--data_root", str(root), "--version", "fssd", "--backbone", "resnet18", "--size",
            "128", "--no_pretrained", "--batch_size", "1", "--max_iter", "1", "--warm_iter", "0", "--name", "run")
    assert run(*argv, "--classes", "dog") == 0
    Path("dog").write_text("cat\nhorse\n")
    capsys.readouterr()
    assert run("--resume", "weights/run.pth") == 0
    captured = capsys.readouterr()
    assert "resumed from weights/run.pth at iteration 1/1" in captured.out and "error" not in captured.err
    assert "--classes dog," in captured.out


def test_resume_takes_the_checkpoints_class_names_where_its_run_had_classes():
    """The recorded ``--classes`` string is replaced by the checkpoint's names; a resumed run records those (a list),
    which the next resume takes too; a run without --classes (a COCO layout) gets none."""
    parser = cli.get_args_parser()
    for recorded, shown in (("dog,cat", "dog,cat"), ("/data/classes.txt", "/data/classes.txt"),
                            (["person, sitting", "car"], "['Dog, lying', 'cat']"), (("dog",), "['Dog, lying', 'cat']")):
        args = parser.parse_args(["--resume", "r.pth"])
        taken = take_run_from_checkpoint(args, RUN | {"classes": recorded}, ["Dog, lying", "cat"])
        assert args.classes == ("Dog, lying", "cat") and taken.endswith(f"--classes {shown}")  # shown as recorded
    many = [f"class{number}" for number in range(25)]
    taken = take_run_from_checkpoint(parser.parse_args(["--resume", "r.pth"]), RUN | {"classes": many}, many)
    assert taken.endswith(f"--classes {','.join(many[:20])} ... (25 classes)")
    args = parser.parse_args(["--resume", "r.pth"])
    take_run_from_checkpoint(args, RUN | {"classes": None}, ["person, sitting"])
    assert args.classes is None
    for damaged in ([], ["dog", 3], 7):
        with pytest.raises(CheckpointError, match="records --classes .* which main.py never writes"):
            take_run_from_checkpoint(parser.parse_args(["--resume", "r.pth"]), RUN | {"classes": damaged}, ["dog"])


@pytest.fixture(scope="module")
def coco_comma_run(tmp_path_factory, one_torch_thread) -> Path:
    """A finished one-iteration run on a COCO-layout folder whose category "person, sitting" holds a comma."""
    out = tmp_path_factory.mktemp("comma")
    categories = [{"id": 1, "name": "person, sitting"}, {"id": 2, "name": "car"}]
    annotations = [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [2, 4, 30, 20], "area": 600, "iscrowd": 0},
                   {"id": 2, "image_id": 3, "category_id": 2, "bbox": [10, 10, 20, 30], "area": 600, "iscrowd": 0}]
    data = {"images": TEST_IMAGES[:2], "annotations": annotations, "categories": categories}
    write_coco(out / "data", "train", data)
    write_coco(out / "data", "val", data)
    assert cli.main(cli.get_args_parser().parse_args(training_argv(out / "data", out))) == 0
    return out


@pytest.mark.usefixtures("one_torch_thread")
def test_a_coco_category_holding_a_comma_is_evaluated_and_rescored_as_one_class(coco_comma_run, tmp_path, capsys):
    """The checkpoint's evaluation scores two classes as the run's final one did; --eval_results re-scores it."""
    checkpoint = coco_comma_run / "weights" / "run.pth"
    assert load_checkpoint(checkpoint)["class_names"] == ["person, sitting", "car"]
    capsys.readouterr()
    assert run("--trained_model", str(checkpoint), "--eval_dir", str(tmp_path / "eval")) == 0
    evaluated = json.loads((tmp_path / "eval" / "summary.json").read_text())["metrics"]
    assert list(evaluated["per_class_AP"]) == ["person, sitting", "car"]
    assert evaluated == json.loads((coco_comma_run / "eval" / "summary.json").read_text())["metrics"]  # as trained
    assert run("--eval_results", str(tmp_path / "eval")) == 0
    assert f"mAP={evaluated['mAP']:.4f}" in capsys.readouterr().out


@pytest.mark.usefixtures("one_torch_thread")
def test_a_run_on_a_coco_category_holding_a_comma_resumes(coco_comma_run, capsys):
    checkpoint = coco_comma_run / "weights" / "run.pth"
    assert run("--resume", str(checkpoint)) == 0  # the finished run evaluated again
    captured = capsys.readouterr()
    assert f"resumed from {checkpoint} at iteration 1/1" in captured.out and "error" not in captured.err
    assert "  person, sitting  " in captured.out


def evaluate_one_dog_found(tmp_path: Path, classes: str = "dog") -> None:
    """eval/ under ``tmp_path``: the evaluation, recorded with ``--classes classes`` (``dog``, or the absolute path of
    a file naming it), of one detection (score 0.9) that finds the one dog of a VOC-layout test split under
    ``tmp_path / "voc"``."""
    root = write_voc_folder(tmp_path / "voc", {"a": [("dog", (4, 6, 30, 40), 0)]}, {"test": ["a"]})
    dataset = build_dataset("custom", "test", 128, data_root=str(root), classes=classes)
    detections = [{"boxes": np.array([[4.0, 6.0, 30.0, 40.0]]), "labels": np.array([0]), "scores": np.array([0.9])}]
    evaluated_with = {"dataset": "custom", "data_root": str(root), "classes": classes, "skip_unknown_classes": False}
    evaluate_detections(dataset, detections, tmp_path / "eval", run_info={
        "dataset": "custom", "split": "test", "evaluated_with": evaluated_with})


def test_eval_results_does_not_read_a_recorded_class_name_as_the_file_of_that_name_in_the_working_folder(
        tmp_path, monkeypatch, capsys):
    """An evaluation given ``--classes dog`` (no file of that name then: a file would be recorded by its absolute
    path) records ``dog``; --eval_results, where a file named dog has appeared since, re-scores class dog."""
    monkeypatch.chdir(tmp_path)
    evaluate_one_dog_found(tmp_path)
    Path("dog").write_text("cat\nhorse\n")
    capsys.readouterr()
    assert run("--eval_results", "eval") == 0
    captured = capsys.readouterr()
    assert "error" not in captured.err and "--classes dog (from " in captured.out
    assert "eval: mAP=0.9000 AP50=1.0000 AP75=1.0000" in captured.out  # the box found: AP50 1


def test_class_names_holding_a_comma_are_quoted_where_a_message_lists_them():
    """'2 classes (person, sitting, car)' would read as three names; quoted, they read as two."""
    with pytest.raises(CheckpointError) as error:
        check_compatible("w.pth", RUN, ["person, sitting", "car"], {}, ["person", "sitting", "car"])
    assert str(error.value) == (
        "w.pth was trained on 2 classes ('person, sitting', 'car'), but the dataset has 3 classes (person, sitting, "
        "car); use it with the classes it was trained on")


def test_an_xml_class_holding_a_comma_that_classes_split_says_to_rename_it(tmp_path):
    """``--classes "person, sitting,car"`` is three names: the XML's 'person, sitting' is unknown, and 'add it to
    --classes' alone cannot be done; the error says how --classes read it and to rename the class."""
    root = write_voc_folder(tmp_path, OBJECTS, {"trainval": ["a", "b"]})
    with pytest.raises(DataError) as error:
        build_dataset("voc", "train", 128, data_root=str(root), classes="person, sitting,car")
    assert ("a.xml: unknown class 'person, sitting' (classes: person, sitting, car); --classes read it as 2 names: a "
            "name given with --classes cannot hold a comma, so rename the class in the XML files and in --classes "
            "(e.g. 'person_sitting'), or pass --skip_unknown_classes to leave such objects out") in str(error.value)
    with pytest.raises(DataError, match=r"unknown class 'person, sitting' \(classes: car\); a name given with "
                                        r"--classes cannot hold a comma, so rename"):
        build_dataset("voc", "train", 128, data_root=str(root), classes="car")


@pytest.mark.usefixtures("one_torch_thread")
def test_a_checkpoint_class_name_holding_a_slash_is_refused_before_evaluating_on_voc_layout_data(tmp_path, capsys):
    """A COCO-layout category 'a/b' cannot name a VOC results file (comp4_det_test_<class>.txt): one line naming the
    checkpoint, before the model runs, not a missing-folder error when the results are written."""
    checkpoint = checkpoint_with_classes(tmp_path / "w.pth", ["a/b", "car"])
    root = write_voc_folder(tmp_path / "voc", {"a": [("a/b", (4, 6, 30, 40), 0)]}, {"test": ["a"]})
    assert run("--trained_model", str(checkpoint), "--dataset", "custom", "--data_root", str(root),
               "--eval_dir", str(tmp_path / "eval")) == 2
    assert (f"error: the class names of {checkpoint}: class name 'a/b' contains a slash, but each class names a VOC "
            "results file") in capsys.readouterr().err


SHAPES = {"a": [("circle", (4, 6, 30, 40), 0), ("triangle", (30, 10, 60, 40), 0)],
          "b": [("square", (10, 8, 50, 40), 0)]}


def test_trained_model_refusing_the_classes_given_says_to_drop_classes(tmp_path, capsys):
    """A VOC-layout folder with --classes in another order than the checkpoint's (circle, square, triangle): refused
    with "use it with the classes it was trained on", which did not say that dropping --classes, so that the
    checkpoint's are taken, is the fix."""
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pth")
    root = write_voc_folder(tmp_path / "voc", SHAPES, {"test": ["a", "b"]})
    assert run("--trained_model", str(checkpoint), "--dataset", "custom", "--data_root", str(root), "--classes",
               "triangle,square,circle") == 2
    assert capsys.readouterr().err == (
        f"error: {checkpoint} was trained on 3 classes (circle, square, triangle), but the dataset has 3 classes "
        "(triangle, square, circle); drop --classes: --trained_model reads a VOC-layout folder with the checkpoint's "
        "classes (and --skip_unknown_classes leaves out objects of other classes)\n")


def test_trained_model_on_a_json_naming_other_categories_names_the_json_and_the_classes_that_differ(tmp_path,
                                                                                                    capsys):
    """A COCO-layout folder whose test json names two of the model's three classes and one more: the refusal named
    no file and no class that differs."""
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pth")
    categories = [{"id": 1, "name": "square"}, {"id": 2, "name": "circle"}, {"id": 3, "name": "hexagon"}]
    annotations = [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [2, 4, 30, 20], "area": 600, "iscrowd": 0}]
    json_path = write_coco(tmp_path / "coco", "val", {"images": TEST_IMAGES[:1], "annotations": annotations,
                                                       "categories": categories})
    assert run("--trained_model", str(checkpoint), "--dataset", "custom", "--data_root", str(tmp_path / "coco")) == 2
    assert capsys.readouterr().err == (
        f"error: {checkpoint} was trained on 3 classes (circle, square, triangle), but the dataset has 3 classes "
        f"(square, circle, hexagon); evaluate it on a json whose categories are the classes it was trained on (in any "
        f"order, under any ids): {json_path} names hexagon, which it was not trained on, and not triangle\n")


def test_an_object_of_a_class_the_model_was_not_trained_on_is_not_told_to_join_classes(tmp_path, capsys):
    """--trained_model on a VOC-layout folder holding a class the model has no output for: "add it to --classes"
    led to the refusal of a class list other than the checkpoint's; only --skip_unknown_classes evaluates there."""
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pth")
    objects = {**SHAPES, "c": [("hexagon", (4, 6, 30, 40), 0), ("circle", (30, 10, 60, 40), 0)]}
    root = write_voc_folder(tmp_path / "voc", objects, {"test": ["a", "b", "c"]})
    assert run("--trained_model", str(checkpoint), "--dataset", "custom", "--data_root", str(root)) == 2
    err = capsys.readouterr().err
    assert (f"{root / 'Annotations' / 'c.xml'}: unknown class 'hexagon' (classes: circle, square, triangle); "
            f"{checkpoint} was not trained on it: pass --skip_unknown_classes to leave such objects out (counted in "
            "one warning)\n") in err
    assert "add it to --classes" not in err


@pytest.mark.parametrize("recorded", ["dog", "file"])
def test_eval_results_on_an_object_of_a_class_the_results_lack_says_to_skip_it_not_to_add_it_to_classes(
        recorded, tmp_path, monkeypatch, capsys):
    """A test XML given an object of another class since the evaluation: --eval_results said "add it to --classes",
    which scored that class as no detections (AP 0, halving the means); the detections are of the evaluation's
    classes, so only --skip_unknown_classes re-scores them. Also for an evaluation given a --classes file, which its
    summary.json records by its path (it said "add it to --classes" there, though no --classes was given)."""
    monkeypatch.chdir(tmp_path)
    if recorded == "file":
        recorded = str(tmp_path / "classes.txt")
        Path(recorded).write_text("dog\n")
    evaluate_one_dog_found(tmp_path, recorded)
    root = write_voc_folder(tmp_path / "voc", {"a": [("dog", (4, 6, 30, 40), 0), ("cat", (30, 10, 60, 40), 0)]},
                            {"test": ["a"]})
    capsys.readouterr()
    assert run("--eval_results", "eval") == 2
    err = capsys.readouterr().err
    assert (f"{root / 'Annotations' / 'a.xml'}: unknown class 'cat' (classes: dog); the model that made the "
            "detections in eval was not trained on it: pass --skip_unknown_classes to leave such objects out (counted "
            "in one warning)\n") in err
    assert "add it to --classes" not in err


def test_eval_results_given_a_class_file_names_that_file_for_an_object_of_another_class(tmp_path, monkeypatch, capsys):
    """--eval_results given ``--classes classes.txt`` (its classes, not the evaluation's): an object of another class
    is told to join that file, one name per line, not "--classes", the flag that names the file."""
    monkeypatch.chdir(tmp_path)
    evaluate_one_dog_found(tmp_path)
    root = write_voc_folder(tmp_path / "voc", {"a": [("dog", (4, 6, 30, 40), 0), ("cat", (30, 10, 60, 40), 0)]},
                            {"test": ["a"]})
    Path("classes.txt").write_text("dog\n")
    capsys.readouterr()
    assert run("--eval_results", "eval", "--classes", "classes.txt") == 2
    assert (f"{root / 'Annotations' / 'a.xml'}: unknown class 'cat' (classes: dog); add it to the class file "
            "classes.txt, one name per line, or pass --skip_unknown_classes") in capsys.readouterr().err


def evaluate_dog_found_cat_missed(tmp_path: Path) -> Path:
    """eval/ under ``tmp_path``: the evaluation, recorded with ``--classes`` the class file ``tmp_path/classes.txt``
    (dog, cat), of a VOC-layout test split of one dog (found: AP 1) and one cat (its one detection elsewhere: AP 0).
    Returns the class file."""
    class_file = tmp_path / "classes.txt"
    class_file.write_text("dog\ncat\n")
    root = write_voc_folder(tmp_path / "voc", {"a": [("dog", (4, 6, 30, 40), 0)], "b": [("cat", (30, 10, 60, 40), 0)]},
                            {"test": ["a", "b"]})
    dataset = build_dataset("custom", "test", 128, data_root=str(root), classes=str(class_file))
    detections = [{"boxes": np.array([[4.0, 6.0, 30.0, 40.0]]), "labels": np.array([0]), "scores": np.array([0.9])},
                  {"boxes": np.array([[70.0, 60.0, 90.0, 80.0]]), "labels": np.array([1]), "scores": np.array([0.8])}]
    evaluated_with = {"dataset": "custom", "data_root": str(root), "classes": str(class_file),
                      "skip_unknown_classes": False}
    evaluate_detections(dataset, detections, tmp_path / "eval", run_info={
        "dataset": "custom", "split": "test", "evaluated_with": evaluated_with})
    return class_file


@pytest.mark.parametrize(("edited", "differs"), [
    ("dog\ncat\nbird\n", "it now names 'bird', which the evaluation did not have"),
    ("dog\n", "it now lacks 'cat'"),
    ("dog\nCat\n", "it now names 'Cat', which the evaluation did not have, and lacks 'cat'"),
])
def test_eval_results_refuses_a_recorded_class_file_edited_since_the_evaluation(edited, differs, tmp_path, capsys):
    """The summary.json records a --classes file by its path, and --eval_results read it as it is now: a class added
    since scored AP 0 (no results file of it), lowering the means; one removed refused its objects as of a class "the
    model was not trained on". The file is compared with the classes of the evaluation's per-class table."""
    class_file = evaluate_dog_found_cat_missed(tmp_path)
    class_file.write_text(edited)
    capsys.readouterr()
    assert run("--eval_results", str(tmp_path / "eval")) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        f"error: --eval_results {tmp_path / 'eval'}: {class_file}, the --classes file recorded in "
        f"{tmp_path / 'eval' / 'summary.json'}, was edited since that evaluation of 2 classes (dog, cat): {differs}; "
        "give the file those classes again (the keys of its metrics' per_class_AP50, in order), one name per line, or "
        "give them with --classes\n")
    assert "mAP" not in captured.out


def test_eval_results_refuses_a_recorded_class_file_deleted_since_the_evaluation(tmp_path, capsys):
    """It said "--classes FILE: class list file not found (a class name cannot hold a slash)", of a --classes not
    given; it names the summary.json that recorded the file, and the classes to give instead."""
    class_file = evaluate_dog_found_cat_missed(tmp_path)
    class_file.unlink()
    capsys.readouterr()
    assert run("--eval_results", str(tmp_path / "eval")) == 2
    assert capsys.readouterr().err == (
        f"error: --eval_results {tmp_path / 'eval'}: {class_file}, the --classes file recorded in "
        f"{tmp_path / 'eval' / 'summary.json'}, is not found (moved or deleted): give --classes that evaluation's 2 "
        "classes (dog, cat), as a comma list or a file of one name per line (the keys of its metrics' per_class_AP50, "
        "in order)\n")


def test_eval_results_scores_a_recorded_class_file_reordered_since_the_evaluation_by_class_name(tmp_path, capsys):
    """Another order of the same classes in the recorded file scores each class's results file against that class's
    objects (read by name): dog still found (AP 1), cat still missed (AP 0), the means unchanged."""
    class_file = evaluate_dog_found_cat_missed(tmp_path)
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["metrics"]["per_class_AP50"] == {"dog": 1.0, "cat": 0.0}
    class_file.write_text("cat\ndog\n")
    capsys.readouterr()
    assert run("--eval_results", str(tmp_path / "eval")) == 0
    captured = capsys.readouterr()
    assert "error" not in captured.err
    assert "  cat  0.0000\n  dog  1.0000\n" in captured.out
    assert f"mAP={summary['metrics']['mAP']:.4f} AP50=0.5000" in captured.out
