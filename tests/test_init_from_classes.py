"""``--init_from`` on a class list sharing some of the checkpoint's classes (a COCO model fine-tuned on a subset, on
VOC, or on its classes plus new ones): each shared class keeps its classification weights, matched by name (letter
case and accents ignored) or as VOC's name of a COCO class; the others start as a fresh classifier does."""
import argparse
import math

import pytest
import torch

from data import DataWarning
from data.shapes import generate_shapes_dataset
from main import get_args_parser, main
from models import build_detector, reorder_classes
from models.head import ANCHORS_PER_CELL
from tests.tiny_checkpoint import write_tiny_checkpoint
from utils.checkpoint import CheckpointError, load_checkpoint
from utils.logging import RunLog
from utils.names import VOC_COCO_SYNONYMS, class_sources
from utils.training_setup import load_initial_weights

TRAINED_ON = ["cat", "Dog", "bird", "horse"]
PRIOR_BIAS = -math.log(99.0)  # the head's classification bias: sigmoid = 0.01
# the names of instances_train2017.json's 80 categories, in its order (data/coco.py reads them as they are)
COCO_NAMES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant",
    "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli",
    "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet",
    "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
]  # fmt: skip
VOC_NAMES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip


def per_class(weights: torch.Tensor) -> torch.Tensor:
    """A ``head.conf.*`` weight or bias ``[ANCHORS_PER_CELL x C, ...]`` as ``[ANCHORS_PER_CELL, C, ...]``."""
    return weights.reshape(ANCHORS_PER_CELL, -1, *weights.shape[1:])


@pytest.fixture(scope="module")
def checkpoint() -> dict:
    """A checkpoint-like state of a 4-class FSSD-ResNet18 at 128 whose classification biases differ per class (the
    initial bias is the same for every class, so a row moved to the wrong class would go unseen)."""
    torch.manual_seed(0)
    model = build_detector("fssd", "resnet18", 128, num_classes=len(TRAINED_ON), pretrained=False)
    for conv in model.head.conf:
        torch.nn.init.normal_(conv.bias)
    config = {"version": "fssd", "backbone": "resnet18", "size": 128, "base_anchor_size": 24.0}
    return {"model": model.state_dict(), "class_names": TRAINED_ON, "iteration": 7, "config": config}


def fine_tuned(checkpoint: dict, class_names: list[str], seed: int = 1) -> torch.nn.Module:
    """A detector of ``class_names``, built with ``seed``, given ``checkpoint``'s weights as ``--init_from`` does."""
    torch.manual_seed(seed)
    model = build_detector("fssd", "resnet18", 128, num_classes=len(class_names), pretrained=False)
    args = argparse.Namespace(init_from="w.pth", size=128, base_anchor_size=24.0)
    load_initial_weights(model, checkpoint, args, class_names, RunLog(None))
    return model


def test_class_sources_match_names_ignoring_case_and_accents_and_voc_names_of_coco_classes():
    assert class_sources(["cat", "Dog", "bird"], ["DOG", "fish", "cat"]) == [1, None, 0]
    assert class_sources(["cafe\u0301"], ["Caf\u00e9"]) == [0]
    assert class_sources(["a", "b"], ["c"]) == [None]
    voc_from_coco = class_sources(COCO_NAMES, VOC_NAMES)
    assert [COCO_NAMES[source] for source in voc_from_coco] == [
        "airplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "dining table", "dog",
        "horse", "motorcycle", "person", "potted plant", "sheep", "couch", "train", "tv"]
    coco_from_voc = class_sources(VOC_NAMES, COCO_NAMES)
    renamed = {name: VOC_NAMES[source] for name, source in zip(COCO_NAMES, coco_from_voc)
               if source is not None and VOC_NAMES[source] != name}
    assert sum(source is not None for source in coco_from_voc) == 20
    assert renamed == {"airplane": "aeroplane", "motorcycle": "motorbike", "couch": "sofa",
                       "potted plant": "pottedplant", "dining table": "diningtable", "tv": "tvmonitor"}
    assert class_sources(["Airplane"], ["AEROPLANE"]) == [0]


def test_a_checkpoint_class_gives_its_weights_to_one_class_its_own_name_first():
    """A run of both ``sofa`` and ``couch`` from a model of ``couch``: couch keeps them, sofa starts afresh."""
    assert class_sources(["couch", "cat"], ["sofa", "couch"]) == [None, 0]
    assert class_sources(["couch", "sofa"], ["sofa", "couch"]) == [1, 0]


def test_reorder_classes_gives_a_class_without_a_source_the_initial_rows():
    torch.manual_seed(0)
    source = build_detector("fssd", "resnet18", 128, num_classes=3, pretrained=False).state_dict()
    initial = build_detector("fssd", "resnet18", 128, num_classes=2, pretrained=False).state_dict()
    moved = reorder_classes(source, [2, None], initial)
    for key in (key for key in source if key.startswith("head.conf.")):
        assert torch.equal(per_class(moved[key])[:, 0], per_class(source[key])[:, 2])
        assert torch.equal(per_class(moved[key])[:, 1], per_class(initial[key])[:, 1])
        assert moved[key].shape == initial[key].shape
    assert all(torch.equal(moved[key], value) for key, value in source.items() if not key.startswith("head.conf."))
    subset = reorder_classes(source, [1])  # every class has a source: no initial needed
    assert torch.equal(per_class(subset["head.conf.0.bias"])[:, 0], per_class(source["head.conf.0.bias"])[:, 1])
    with pytest.raises(ValueError, match=r"class 1 has no source .* give initial"):
        reorder_classes(source, [0, None])


def test_init_from_keeps_the_shared_classes_rows_and_gives_a_new_class_a_fresh_classifier(checkpoint, capsys):
    """4 classes fine-tuned on 3 of them (another order, another letter case) and 1 new: the kept rows are the
    checkpoint's at their new labels, the new class's are those of a fresh head built with the same seed (the prior
    bias, weights drawn from Normal(0, 0.01)), and every other weight is the checkpoint's."""
    class_names = ["bird", "fish", "cat", "dog"]
    model = fine_tuned(checkpoint, class_names)
    assert ("model weights from w.pth (iteration 7); fresh optimizer and schedule; it was trained on 4 classes (cat, "
            "Dog, bird, horse), this dataset has 4 (bird, fish, cat, dog): kept the classifier of 3 of 4 classes (from "
            "the checkpoint's 4), each moved to its label here; new: fish (from the head's initialisation); the rest "
            "comes from the checkpoint") in capsys.readouterr().out
    torch.manual_seed(1)
    fresh = build_detector("fssd", "resnet18", 128, num_classes=4, pretrained=False).state_dict()
    state = model.state_dict()
    classifier = [key for key in state if key.startswith("head.conf.")]
    assert len(classifier) == 8
    for key in classifier:
        rows, trained = per_class(state[key]), per_class(checkpoint["model"][key])
        for label, source in ((0, 2), (2, 0), (3, 1)):
            assert torch.equal(rows[:, label], trained[:, source]), key
        assert torch.equal(rows[:, 1], per_class(fresh[key])[:, 1]), key
    for level in range(4):
        assert torch.equal(per_class(state[f"head.conf.{level}.bias"])[:, 1], torch.full((6,), PRIOR_BIAS))
        new_weights = per_class(state[f"head.conf.{level}.weight"])[:, 1]
        assert abs(new_weights.std().item() - 0.01) < 1e-3 and abs(new_weights.mean().item()) < 1e-3
    others = [key for key in state if not key.startswith("head.conf.")]
    assert len(others) > 100
    assert all(torch.equal(state[key], checkpoint["model"][key]) for key in others)


def test_init_from_on_a_subset_keeps_every_class_without_a_new_one(checkpoint, capsys):
    model = fine_tuned(checkpoint, ["horse", "cat"])
    assert ("this dataset has 2 (horse, cat): kept the classifier of 2 of 2 classes (from the checkpoint's 4), each "
            "moved to its label here; new: none; the rest comes from the checkpoint") in capsys.readouterr().out
    bias = per_class(model.state_dict()["head.conf.2.bias"])
    assert torch.equal(bias, per_class(checkpoint["model"]["head.conf.2.bias"])[:, [3, 0]])


def test_init_from_a_coco_named_checkpoint_on_voc_names_maps_the_six_synonyms(capsys):
    """A model of COCO's categories (FSSD-ResNet18 at 128: the head's size depends on the class count alone)
    fine-tuned on VOC's 20 classes: all 20 are COCO classes, 6 under other names, and the log names those 6."""
    torch.manual_seed(0)
    coco = build_detector("fssd", "resnet18", 128, num_classes=80, pretrained=False)
    torch.nn.init.normal_(coco.head.conf[0].bias)
    state = {"model": coco.state_dict(), "class_names": COCO_NAMES, "iteration": 3, "config": {}}
    model = fine_tuned(state, VOC_NAMES)
    assert ("kept the classifier of 20 of 20 classes (from the checkpoint's 80: aeroplane as its airplane, "
            "diningtable as its dining table, motorbike as its motorcycle, pottedplant as its potted plant, sofa as "
            "its couch, tvmonitor as its tv), each moved to its label here; new: none") in capsys.readouterr().out
    bias, trained = per_class(model.state_dict()["head.conf.0.bias"]), per_class(coco.state_dict()["head.conf.0.bias"])
    for label, name in enumerate(VOC_NAMES):
        assert torch.equal(bias[:, label], trained[:, COCO_NAMES.index(VOC_COCO_SYNONYMS.get(name, name))]), name


def test_init_from_sharing_no_class_starts_the_classifier_afresh_as_before(checkpoint, capsys):
    model = fine_tuned(checkpoint, ["ring", "cross"])
    assert ("it was trained on 4 classes (cat, Dog, bird, horse), this dataset has 2 (ring, cross): its "
            "classification layers (8 tensors) start afresh, the rest comes from the checkpoint"
            ) in capsys.readouterr().out
    torch.manual_seed(1)
    fresh = build_detector("fssd", "resnet18", 128, num_classes=2, pretrained=False).state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh[key] if key.startswith("head.conf.") else checkpoint["model"][key]), key


def test_init_from_on_the_same_classes_in_another_order_logs_as_before(checkpoint, capsys):
    model = fine_tuned(checkpoint, ["horse", "bird", "dog", "cat"])
    assert ("it was trained on these 4 classes in another order (cat, Dog, bird, horse): each class keeps its "
            "classification weights, moved to its label here (horse, bird, dog, cat)") in capsys.readouterr().out
    assert torch.equal(per_class(model.state_dict()["head.conf.1.weight"]),
                       per_class(checkpoint["model"]["head.conf.1.weight"])[:, [3, 2, 1, 0]])


def test_main_fine_tunes_a_checkpoint_on_some_of_its_classes_and_a_new_one(tmp_path, monkeypatch, one_torch_thread,
                                                                          capsys):
    """main.py --init_from a 3-class checkpoint (circle, square, triangle) on circle, star, square of a shapes set:
    the log line names the kept and the new classes, and at lr 1e-12 one step leaves circle's and square's
    classification weights the checkpoint's, at their new labels."""
    root = generate_shapes_dataset(tmp_path / "shapes", num_trainval=4, num_test=2)
    source = write_tiny_checkpoint(tmp_path / "tiny.pth")
    monkeypatch.chdir(tmp_path)
    argv = ["--init_from", str(source), "--dataset", "custom", "--data_root", str(root), "--classes",
            "circle,star,square", "--skip_unknown_classes", "--max_iter", "1", "--warm_iter", "0", "--lr", "1e-12",
            "--batch_size", "1", "--workers", "0", "--device", "cpu", "--name", "tuned"]
    with pytest.warns(DataWarning, match="unknown class skipped"):
        assert main(get_args_parser().parse_args(argv)) == 0
    assert (f"model weights from {source} (iteration 1); fresh optimizer and schedule; it was trained on 3 classes "
            "(circle, square, triangle), this dataset has 3 (circle, star, square): kept the classifier of 2 of 3 "
            "classes (from the checkpoint's 3), each moved to its label here; new: star (from the head's "
            "initialisation); the rest comes from the checkpoint") in capsys.readouterr().out
    state, start = load_checkpoint(tmp_path / "weights" / "tuned.pth"), load_checkpoint(source)
    assert state["class_names"] == ["circle", "star", "square"]
    for level in range(4):
        key = f"head.conf.{level}.weight"
        tuned, trained = per_class(state["model"][key]), per_class(start["model"][key])
        torch.testing.assert_close(tuned[:, [0, 2]], trained[:, [0, 1]], rtol=0, atol=1e-9)
        bias = per_class(state["model"][f"head.conf.{level}.bias"])
        torch.testing.assert_close(bias[:, 1], torch.full((6,), PRIOR_BIAS), rtol=0, atol=1e-6)


def test_init_from_an_edited_checkpoint_with_another_classification_layer_is_refused_in_one_line(checkpoint):
    """Some classes shared and a ``head.conf.*`` entry the detector does not have (an edited file): the transfer of
    the rows ended in a KeyError's traceback, where the same classes get the damaged-file message."""
    edited = {**checkpoint, "model": {**checkpoint["model"], "head.conf.9.bias": torch.zeros(6 * 4)}}
    for class_names in (["bird", "fish"], ["cat", "Dog", "bird", "horse"]):  # sharing none: no head.conf entry read
        with pytest.raises(CheckpointError, match=r"^w\.pth: .*head\.conf\.9\.bias.*; the file is damaged or was "
                                                  r"edited$"):
            fine_tuned(edited, class_names)
