"""utils/trained_model.py: the one line for a checkpoint whose weights do not fit its architecture."""
import pytest
import torch

from models import build_detector
from utils.checkpoint import FORMAT, CheckpointError, save_checkpoint
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
