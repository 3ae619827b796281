"""--trained_model, --eval_results, --resume PATH and --init_from without --data_root take the shapes set's
--data_root that the checkpoint or summary.json records: a folder that no longer holds that set is refused, not
filled with another set and scored (or, for --resume, generated for half a minute and then refused as another training
set; for --init_from, trained on)."""
import json

import pytest

from data import DataError, shapes
from data.shapes import SHAPES_CLASSES
from main import get_args_parser, main
from models import build_detector
from utils.checkpoint import FORMAT, save_checkpoint
from utils.run_data import check_recorded_shapes_set


@pytest.fixture
def no_generation(monkeypatch):
    """Fail at once where main.py would generate a shapes set (2,000 + 500 images, about 30 s)."""
    def generate(root, *args, **kwargs):
        raise AssertionError(f"a shapes set was generated in {root}")

    monkeypatch.setattr(shapes, "ensure_shapes_dataset", generate)


def checkpoint_on(tmp_path, data_root):
    """A checkpoint as a run on the shapes set in ``data_root`` saves it (that folder recorded absolute)."""
    config = {"version": "fssd", "backbone": "resnet18", "size": 128, "base_anchor_size": 24.0, "dataset": "shapes",
              "data_root": str(data_root)}
    model = build_detector("fssd", "resnet18", 128, len(SHAPES_CLASSES))
    path = tmp_path / "run.pth"
    save_checkpoint({"format": FORMAT, "model": model.state_dict(), "iteration": 1, "max_iter": 1, "config": config,
                     "class_names": list(SHAPES_CLASSES), "optimizer": {}, "scaler": {}, "rng": {}}, path)
    return path


def run_main(*argv: str) -> int:
    return main(get_args_parser().parse_args([*argv, "--workers", "0", "--device", "cpu"]))


def test_an_evaluations_shapes_folder_that_no_longer_holds_its_set_is_refused(tmp_path, no_generation, capsys):
    gone = tmp_path / "tiny_set"
    results = tmp_path / "eval"
    results.mkdir()
    (results / "summary.json").write_text(json.dumps({"evaluated_with": {"dataset": "shapes",
                                                                         "data_root": str(gone)}}))
    assert run_main("--eval_results", str(results)) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        f"error: {results / 'summary.json'} records the shapes set in --data_root {gone}, which holds none now")
    assert not gone.exists()


def test_a_recorded_shapes_folder_is_taken_while_it_holds_a_set_and_a_given_one_always(tmp_path):
    present = shapes.generate_shapes_dataset(tmp_path / "present", seed=1, num_trainval=2, num_test=2)
    args = get_args_parser().parse_args(["--trained_model", "w.pth", "--dataset", "shapes",
                                         "--data_root", str(present)])
    check_recorded_shapes_set(args, None, "w.pth")  # taken, and it holds the (small) set: evaluated there
    args.data_root = str(tmp_path / "absent")
    check_recorded_shapes_set(args, args.data_root, "w.pth")  # given: generated there, as asked
    with pytest.raises(DataError, match=r"^w\.pth records the shapes set in --data_root .*absent, which holds none"):
        check_recorded_shapes_set(args, None, "w.pth")
    args.dataset = "custom"
    check_recorded_shapes_set(args, None, "w.pth")  # other datasets are never generated: their readers say what lacks


@pytest.mark.parametrize("mode", ["--trained_model", "--resume", "--init_from"])
def test_a_checkpoints_shapes_folder_that_no_longer_holds_its_set_is_refused_before_generating(
        tmp_path, no_generation, capsys, mode):
    # was: seed 0's default set (2,000 + 500 images, about 30 s) generated in the missing folder; --trained_model then
    # printed the scores on those 500 test images as if they were the run's (the run trained on 16 images of another
    # seed, say), and --resume refused the run's training set as changed (its 30 images against those 2,000)
    gone = tmp_path / "tiny_set"
    checkpoint = checkpoint_on(tmp_path, gone)
    assert run_main(mode, str(checkpoint)) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {checkpoint} records the shapes set in --data_root {gone}, which holds none now (moved or deleted): "
        f"give --data_root the folder that holds it now; --dataset shapes --data_root {gone} generates seed 0's "
        "default set there (2000 + 500 images), another set unless the run used that one")
    assert not gone.exists()
    with pytest.raises(AssertionError, match="a shapes set was generated in"):  # given: generated there, as asked
        run_main(mode, str(checkpoint), "--data_root", str(gone))
