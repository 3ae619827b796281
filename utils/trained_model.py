"""Rebuild a trained detector from a checkpoint alone: architecture, anchors and class names come from the file.

A checkpoint written by ``main.py`` (``utils/checkpoint.py``) stores the run's flags in ``state["config"]``
(``version``, ``backbone``, ``size``, ``base_anchor_size``, ...) and the class names in ``state["class_names"]``,
so ``--trained_model W`` needs no other architecture flag. ``size`` runs it at another input side of as many pyramid
levels (the same layers; anchors of the same side in pixels, laid out for that input).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from models import Detector, build_detector
from utils.box import PriorBox
from utils.checkpoint import CheckpointError, check_pyramid_levels, load_checkpoint
from utils.messages import joined_lines


@dataclass(frozen=True)
class TrainedDetector:
    """A detector in eval mode with what is needed to read its outputs.

    - ``model``: ``images [B, 3, S, S]`` (BGR minus ``PIXEL_MEAN_BGR``) -> ``(loc [B, A, 4], conf [B, A, C])``;
    - ``priors``: ``[A, 4]`` anchors, cxcywh normalised, on the model's device;
    - ``class_names``: ``C`` names, index = label 0..C-1;
    - ``size``: the square input side S (the checkpoint's, or the one asked for); ``config``: the checkpoint's stored
      flags (``config["size"]`` the side it was trained at).
    """

    model: Detector
    priors: Tensor
    class_names: list[str]
    size: int
    config: dict


def load_trained_detector(checkpoint_path: str | os.PathLike, device: str | torch.device = "cpu",
                          size: int | None = None) -> TrainedDetector:
    """Build the checkpoint's detector, load its weights and move it to ``device`` in eval mode; at the input side
    ``size`` (a multiple of 64 of as many pyramid levels as the checkpoint's: 128-448, or 512 and above) with its
    anchors when given, else at the checkpoint's.

    Raises :class:`~utils.checkpoint.CheckpointError` (one line naming the file) when the file is missing, damaged,
    not written by ``main.py``, lacks an architecture key or holds weights that do not fit the stored architecture,
    or ``size`` has another number of pyramid levels.
    """
    return detector_from_state(load_checkpoint(checkpoint_path, source="--trained_model"), checkpoint_path, device,
                               size)


def detector_from_state(state: dict, checkpoint_path: str | os.PathLike, device: str | torch.device = "cpu",
                        size: int | None = None) -> TrainedDetector:
    """:func:`load_trained_detector` for a checkpoint already read with ``load_checkpoint`` (``checkpoint_path``
    only names the file in errors)."""
    path = Path(checkpoint_path)
    config, class_names = dict(state["config"]), list(state["class_names"])
    check_pyramid_levels(path, config, size, "use it")
    size = config["size"] if size is None else size
    model = build_detector(config["version"], config["backbone"], size, len(class_names))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise CheckpointError(f"{path}: the weights do not fit {config['version']}-{config['backbone']} "
                              f"({joined_lines(error)}); the file is damaged or was edited") from error
    device = torch.device(device)
    priors = PriorBox(base_anchor_size=float(config["base_anchor_size"]), size=size).forward()
    return TrainedDetector(model.to(device).eval(), priors.to(device), class_names, size, config)
