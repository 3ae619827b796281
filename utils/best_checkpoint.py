"""The run's best evaluation, kept as a checkpoint of its own next to the run's: ``<run name>_best.pth``.

With ``--eval_interval N`` a run is evaluated every N epochs and at its end; the weights of the evaluation with the
highest ``mAP`` (VOC: the paper's mean over IoU .50:.95; COCO: AP) are written to the best checkpoint. It holds what
evaluation, ``--demo``, ``--export`` and ``--init_from`` read (no optimizer, no random states), plus
``"best_metrics"``: ``{"mAP", "AP50", "AP75"}`` of that evaluation; its ``"iteration"`` is the evaluated one.
"""
from __future__ import annotations

import math
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from utils.checkpoint import FORMAT

SCORE = "mAP"  # the metric a higher value of which makes an evaluation the best
KEPT_METRICS = ("mAP", "AP50", "AP75")


def best_checkpoint_path(checkpoint_path: Path) -> Path:
    """``weights/VOC_pafpn_vgg16_size320_anchor24.0_MG.pth`` -> ``weights/VOC_..._MG_best.pth``."""
    return checkpoint_path.with_name(f"{checkpoint_path.stem}_best{checkpoint_path.suffix}")


def is_best_checkpoint(state: Mapping[str, Any]) -> bool:
    """Whether a loaded checkpoint is a best checkpoint (weights of one evaluation, no training state)."""
    return "best_metrics" in state


@dataclass
class BestEvaluation:
    """The best evaluation of a run so far: its ``score`` (``mAP``) and ``iteration``, ``None`` before the first;
    ``path``: where a better one is written, ``saved_in``: the file that holds the best so far (``path``, or the best
    checkpoint of the run under another ``--name`` or ``--save_folder`` before a resume)."""

    path: Path
    score: float | None = None
    iteration: int | None = None
    saved_in: Path | None = None

    @classmethod
    def of_run(cls, path: Path, run_id: str | None) -> BestEvaluation:
        """The best evaluation that the file at ``path`` records when it belongs to the run ``run_id`` (a resumed
        run goes on comparing with it); an empty record when there is no such file, it belongs to another run (or
        to none: saved before run ids) or cannot be read."""
        found = cls(path)
        if run_id is None or not path.is_file():
            return found
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except (OSError, RuntimeError, pickle.UnpicklingError, EOFError, ValueError):
            return found
        if not isinstance(state, dict) or state.get("format") != FORMAT or not is_best_checkpoint(state):
            return found
        metrics, config = state.get("best_metrics"), state.get("config")
        if isinstance(config, dict) and config.get("run_id") == run_id and isinstance(metrics, dict):
            score, iteration = metrics.get(SCORE), state.get("iteration")
            if isinstance(score, float) and math.isfinite(score) and isinstance(iteration, int):
                found.score, found.iteration, found.saved_in = score, iteration, path
        return found

    def take_if_better(self, other: BestEvaluation) -> None:
        """Take ``other``'s record (the same run's best, saved elsewhere) when it scores higher, or as high at an
        earlier iteration (the first evaluation to reach a score stays the best); new bests still go to ``path``."""
        if other.score is None or other.iteration is None:
            return
        mine = None if self.score is None or self.iteration is None else (self.score, -self.iteration)
        if mine is None or (other.score, -other.iteration) > mine:
            self.score, self.iteration, self.saved_in = other.score, other.iteration, other.saved_in

    def improves(self, metrics: Mapping[str, Any]) -> bool:
        """Whether ``metrics`` (one evaluation's) score strictly higher than the best so far; a NaN score (no
        ground truth to score) never does."""
        score = metrics.get(SCORE)
        return isinstance(score, float) and math.isfinite(score) and (self.score is None or score > self.score)

    def checkpoint(self, model_state: Mapping[str, Any], iteration: int, max_iter: int, config: Mapping[str, Any],
                   class_names: list[str], metrics: Mapping[str, Any]) -> dict:
        """The best checkpoint's content for the evaluation ``metrics`` of the weights ``model_state`` after
        ``iteration`` completed iterations."""
        return {
            "format": FORMAT, "model": model_state, "iteration": iteration, "max_iter": max_iter,
            "config": dict(config), "class_names": list(class_names),
            "best_metrics": {key: float(metrics[key]) for key in KEPT_METRICS if key in metrics},
        }

    def record(self, metrics: Mapping[str, Any], iteration: int) -> None:
        """Make ``metrics``, the evaluation after ``iteration`` iterations, the best so far (once it is saved)."""
        self.score, self.iteration, self.saved_in = float(metrics[SCORE]), iteration, self.path
