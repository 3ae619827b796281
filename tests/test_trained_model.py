"""utils/trained_model.py: the one line for a checkpoint whose weights do not fit its architecture; another input
size of as many pyramid levels."""
import pytest
import torch

from models import build_detector
from utils.checkpoint import FORMAT, CheckpointError, save_checkpoint
from utils.box import PriorBox
from utils.trained_model import load_trained_detector

CONFIG = {"version": "fssd", "backbone": "resnet18", "size": 128, "base_anchor_size": 24.0}
CLASSES = ["circle", "square"]


@pytest.fixture(scope="module")
def weights() -> dict:
    torch.manual_seed(0)
    return build_detector("fssd", "resnet18", 128, len(CLASSES)).state_dict()


def save(path, weights: dict) -> None:
    save_checkpoint({"format": FORMAT, "model": weights, "iteration": 1, "max_iter": 1, "config": CONFIG,
                     "class_names": CLASSES}, path)


@pytest.mark.parametrize("edit, named", [
    (lambda w: w.update({"backbone.conv1.weight": torch.zeros(64, 3, 3, 3)}),
     "size mismatch for backbone.conv1.weight: copying a param with shape torch.Size([64, 3, 3, 3]) from checkpoint"),
    (lambda w: w.pop("neck.transform.reduce.0.conv.weight"),
     'Missing key(s) in state_dict: "neck.transform.reduce.0.conv.weight"'),
    (lambda w: w.update({"head.extra.weight": torch.zeros(1)}), 'Unexpected key(s) in state_dict: "head.extra.weight"'),
])
def test_weights_that_do_not_fit_are_named(tmp_path, weights, edit, named):
    """The line said only '(Error(s) in loading state_dict for Detector:)', the first line of torch's message, so
    --trained_model, --demo and --export never said which weight did not fit."""
    edited = dict(weights)
    edit(edited)
    save(tmp_path / "edited.pth", edited)
    with pytest.raises(CheckpointError) as error:
        load_trained_detector(tmp_path / "edited.pth")
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'edited.pth'}: the weights do not fit fssd-resnet18 (Error(s) in loading "
                              f"state_dict for Detector: ")
    assert named in message and "\n" not in message
    assert message.endswith("; the file is damaged or was edited")


def test_another_size_of_as_many_pyramid_levels_loads_every_weight_with_that_sizes_anchors(tmp_path, weights):
    """``size``: the same layers at 256 (4 levels, as at 128) with the anchors of a 256 input; at 512 (5 levels) the
    weights lack a level's layers: one line saying why and which sizes fit."""
    save(tmp_path / "w.pth", weights)
    detector = load_trained_detector(tmp_path / "w.pth", size=256)
    assert detector.size == 256 and detector.config["size"] == 128
    torch.testing.assert_close(detector.priors, PriorBox(24.0, 256).forward(), rtol=0, atol=0)
    for key, value in detector.model.state_dict().items():
        torch.testing.assert_close(value, weights[key], rtol=0, atol=0)
    with torch.no_grad():
        loc, conf = detector.model(torch.zeros(1, 3, 256, 256))
    assert loc.shape == (1, len(detector.priors), 4) and conf.shape == (1, len(detector.priors), len(CLASSES))
    with pytest.raises(CheckpointError, match=r"was trained with --size 128, whose model has 4 pyramid levels .*but "
                                              r"--size 512 builds 5 .*; use it at a --size from 128 to 448"):
        load_trained_detector(tmp_path / "w.pth", size=512)
