"""main.py's evaluation applies the authors' post-processing (facts §7): at most 300 detections per image, per-class
NMS at --nms_thresh 0.5, boxes in each original image's pixels. The post-processing itself is tested in
test_postprocess.py; this checks what main.py hands it, through the devkit files a --trained_model run writes."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from data.voc import from_devkit_pixels
from main import get_args_parser, main
from tests.test_data_voc import write_voc_folder
from tests.tiny_checkpoint import CLASS_NAMES, write_tiny_checkpoint
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.inference import replaced_evaluation_note, write_summary

SIZES = {"a": (48, 64), "b": (90, 40)}  # (height, width), one per image


def read_devkit_files(folder: Path) -> dict[str, list[tuple[str, float, np.ndarray]]]:
    """Class name -> its lines ``(image id, score, box x1y1x2y2 in 0-based continuous pixels)``."""
    detections = {}
    for name in CLASS_NAMES:
        lines = [line.split() for line in (folder / f"comp4_det_test_{name}.txt").read_text().splitlines()]
        detections[name] = [(line[0], float(line[1]), from_devkit_pixels(np.array([line[2:]], float))[0])
                            for line in lines]
    return detections


def pairwise_iou(boxes: np.ndarray) -> np.ndarray:
    """``[n, 4]`` continuous boxes -> ``[n, n]`` IoU (the diagonal set to 0)."""
    top_left = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    iou = inter / (area[:, None] + area[None, :] - inter)
    np.fill_diagonal(iou, 0.0)
    return iou


def test_trained_model_evaluation_keeps_300_detections_per_image_after_per_class_nms(tmp_path):
    """The tiny checkpoint's random weights score thousands of (anchor, class) pairs per image far above 0.005, so
    more than 300 boxes survive NMS in each image (about 1,300 without the cap) and the cap decides the count:
    exactly 300 per image, whatever the image's size."""
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pth")
    root = tmp_path / "data"
    for image_id, size in SIZES.items():
        write_voc_folder(root, {image_id: [("circle", (5, 6, 30, 40), 0)]}, {"test": list(SIZES), "train": []},
                         size=size)
    eval_dir = tmp_path / "eval"
    code = main(get_args_parser().parse_args([
        "--trained_model", str(checkpoint), "--dataset", "custom", "--data_root", str(root), "--workers", "0",
        "--device", "cpu", "--batch_size", "2", "--eval_dir", str(eval_dir),
    ]))
    assert code == 0
    detections = read_devkit_files(eval_dir)
    for image_id, (height, width) in SIZES.items():
        per_class = {name: [d for d in rows if d[0] == image_id] for name, rows in detections.items()}
        assert sum(map(len, per_class.values())) == 300, {name: len(rows) for name, rows in per_class.items()}
        for rows in per_class.values():
            boxes = np.array([box for _, _, box in rows])
            assert (boxes >= -1e-4).all() and (boxes[:, [0, 2]] <= width + 1e-4).all()
            assert (boxes[:, [1, 3]] <= height + 1e-4).all()  # scaled to this image's own (height, width)
            iou = pairwise_iou(boxes)
            assert iou.max() <= 0.5 + 1e-5  # per-class NMS at 0.5: no two kept boxes of a class overlap more
            assert iou.max() > 0.4  # and not a stricter one
        assert min(score for rows in per_class.values() for _, score, _ in rows) > 0.005


def with_constant_scores(checkpoint: Path, score: float, path: Path) -> Path:
    """``checkpoint`` with a classification head that scores every (anchor, class) pair ``score`` (zero weights,
    bias ``logit(score)``), saved to ``path``."""
    state = load_checkpoint(checkpoint)
    model = dict(state["model"])
    for key in [k for k in model if k.startswith("head.conf.")]:
        model[key] = torch.full_like(model[key], math.log(score / (1 - score)) if key.endswith("bias") else 0.0)
    save_checkpoint({**state, "model": model}, path)
    return path


def test_trained_model_evaluation_keeps_the_scores_above_0_005(tmp_path):
    """Facts §7: the evaluation keeps the (anchor, class) pairs scoring above 0.005. The test above cannot see the
    threshold (its scores are far above any); here every pair scores 0.0051 (then detections are written) or 0.0049
    (then none is), so main.py's evaluation must threshold between the two."""
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pth")
    root = tmp_path / "data"
    for image_id, size in SIZES.items():
        write_voc_folder(root, {image_id: [("circle", (5, 6, 30, 40), 0)]}, {"test": list(SIZES), "train": []},
                         size=size)
    counts = {}
    for score in (0.0051, 0.0049):
        eval_dir = tmp_path / f"eval_{score}"
        code = main(get_args_parser().parse_args([
            "--trained_model", str(with_constant_scores(checkpoint, score, tmp_path / f"{score}.pth")),
            "--dataset", "custom", "--data_root", str(root), "--workers", "0", "--device", "cpu",
            "--batch_size", "2", "--eval_dir", str(eval_dir),
        ]))
        assert code == 0
        detections = read_devkit_files(eval_dir)
        counts[score] = sum(map(len, detections.values()))
        assert all(found == pytest.approx(score, abs=1e-4) for rows in detections.values() for _, found, _ in rows)
    assert counts[0.0051] > 0 and counts[0.0049] == 0



def test_an_evaluation_replacing_another_runs_evaluation_in_its_folder_says_so(tmp_path, capsys):
    """Runs without --name (an IoU and a --mutual_guide run, say) evaluate into one folder, eval/<DATASET>/: an
    evaluation of the MG run's checkpoint where the IoU run's evaluation is replaces its files with a note naming the
    IoU run's checkpoint, not silently (the note's cases: test_replaced_evaluation_note_...)."""
    state = load_checkpoint(write_tiny_checkpoint(tmp_path / "tiny.pth"))
    mg = tmp_path / "mg.pth"
    save_checkpoint({**state, "config": {**state["config"], "run_id": "run-mg"}}, mg)
    root = write_voc_folder(tmp_path / "data", {"a": [("circle", (5, 6, 30, 40), 0)]}, {"test": ["a"], "train": []})
    eval_dir = tmp_path / "eval"
    write_summary(eval_dir / "summary.json", {"mAP": 0.25}, {"checkpoint": "weights/iou.pth",
                                                             "config": {"run_id": "run-iou"}}, 1, complete=True)
    assert main(get_args_parser().parse_args([
        "--trained_model", str(mg), "--dataset", "custom", "--data_root", str(root), "--workers", "0",
        "--device", "cpu", "--eval_dir", str(eval_dir)])) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == [
        f"note: {eval_dir} holds the evaluation of another run's checkpoint, weights/iou.pth: this evaluation "
        "replaces its files; give each run its own --name (or --eval_dir) to keep both (runs without --name, an IoU "
        "and a --mutual_guide run say, share eval/<DATASET>/)"]
    assert json.loads((eval_dir / "summary.json").read_text())["checkpoint"] == str(mg)


def test_replaced_evaluation_note_is_for_another_runs_evaluation_alone(tmp_path):
    """No note for an empty folder, for an evaluation of the same run (its checkpoint again, its best checkpoint, an
    evaluation during training), of an earlier run of the same checkpoint path (trained again: its start said where
    the earlier checkpoint went) or one whose run is not known (a checkpoint saved before run ids)."""
    folder = tmp_path / "eval"
    assert replaced_evaluation_note(folder, {"config": {"run_id": "a"}}) is None
    write_summary(folder / "summary.json", {}, {"checkpoint": "weights/a.pth", "config": {"run_id": "a"}}, 1, True)
    assert replaced_evaluation_note(folder, {"checkpoint": "weights/a_best.pth", "config": {"run_id": "a"}}) is None
    assert replaced_evaluation_note(folder, {"checkpoint": "weights/b.pth", "config": {}}) is None
    assert replaced_evaluation_note(folder, {"checkpoint": "./weights/a.pth", "config": {"run_id": "b"}}) is None
    assert "another run's checkpoint, weights/a.pth:" in replaced_evaluation_note(folder, {"config": {"run_id": "b"}})
    write_summary(folder / "summary.json", {}, {"checkpoint": "weights/old.pth", "config": {}}, 1, True)
    assert replaced_evaluation_note(folder, {"config": {"run_id": "b"}}) is None
    (folder / "summary.json").write_text("{not json")
    assert replaced_evaluation_note(folder, {"config": {"run_id": "b"}}) is None


def test_replaced_evaluation_note_names_the_same_runs_evaluation_at_another_input_size(tmp_path):
    """--trained_model --size 448 --eval_dir a folder of the same checkpoint's evaluation at its trained size 320
    replaced it without a word (the same run): the note names both sizes; a summary written before input_size was
    recorded is read at its config's size."""
    folder = tmp_path / "eval"
    run = {"checkpoint": "weights/a.pth", "config": {"run_id": "a", "size": 320}}
    write_summary(folder / "summary.json", {}, run | {"input_size": 320}, 1, True)
    assert replaced_evaluation_note(folder, run | {"input_size": 320}) is None
    expected = (f"note: {folder} holds the evaluation of weights/a.pth at --size 320: this one at --size 448 replaces "
                "its files; give each its own --eval_dir to keep both (without --eval_dir, an evaluation at another "
                "size than the trained one writes to a folder of its own, ending in _size<S>)")
    assert replaced_evaluation_note(folder, run | {"input_size": 448}) == expected
    write_summary(folder / "summary.json", {}, run, 1, True)  # no input_size: an evaluation at the config's size
    assert replaced_evaluation_note(folder, run | {"input_size": 448}) == expected
