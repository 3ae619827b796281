"""A trained model's class names travel from its checkpoint (or an evaluation's ``summary.json``) as names, not as a
``--classes`` string re-read as if typed: a name holding a comma (a COCO-layout category ``"person, sitting"``) stays
one class, and a one-class model's name stays a name when a file of that name is in the working folder."""
import json
from pathlib import Path

import pytest

import main as cli
from tests.test_coco_class_order import only_class_scored
from tests.test_data_voc import write_voc_folder
from tests.tiny_checkpoint import write_tiny_checkpoint
from utils.checkpoint import load_checkpoint, save_checkpoint

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
    assert "error" not in captured.err
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
    assert list(json.loads(Path("eval/summary.json").read_text())["metrics"]["per_class_AP50"]) == ["dog"]
    assert run("--eval_results", "eval") == 0
    assert "error" not in capsys.readouterr().err
