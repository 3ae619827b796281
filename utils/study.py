"""Reusable parts of the paired IoU-vs-Mutual-Guidance study (``benchmarks/assigners.py``).

A study trains the same detector twice per seed, once per assignment *arm* (``IoU``, ``MG``), with ``main.py``'s
training loop and evaluation, and compares the two arms seed by seed. This module holds what does not train:
dataset subsets, the per-regime plan of runs, reading a run's results back and the summary table.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data import voc_folder_list
from utils.loss.stats import mean_over_rows
from utils.messages import counted, iteration_span

ARMS = ("IoU", "MG")
REGIMES = ("scratch", "warm", "switch", "long")
# main.py logs these with --assign_stats (utils/loss/multibox_loss.py documents them)
ASSIGN_STATS = (
    "pos_per_object", "cls_pos_per_image", "reg_pos_per_image", "cls_pos_anchor_iou", "cls_pos_pred_iou",
    "reg_pos_anchor_iou", "reg_pos_pred_iou", "disagree_with_iou",
)  # fmt: skip


@dataclass(frozen=True)
class ArmPlan:
    """One arm's run: ``max_iter`` iterations with extra ``main.py`` flags; ``fork`` = start from the warm
    checkpoint."""

    arm: str
    max_iter: int
    flags: tuple[str, ...]
    fork: bool = False


def regime_plan(regime: str, iters: int, warm_iters: int, long_factor: int) -> list[ArmPlan]:
    """The two arms of a regime (both see the same seed, data order and schedule).

    - ``scratch``: random init, ``iters`` iterations.
    - ``warm``: both arms fork from one IoU-trained checkpoint of ``warm_iters`` iterations (made by the caller)
      and train ``iters`` more with a fresh optimizer and schedule (the caller trains it once, for all seeds).
    - ``switch``: ``iters`` iterations; the MG arm assigns by IoU for the first ``warm_iters``, then by MG.
    - ``long``: from scratch, ``long_factor * iters`` iterations.
    """
    if regime not in REGIMES:
        raise ValueError(f"--regime {regime!r}: choose from {', '.join(REGIMES)}")
    if regime == "switch" and not 0 < warm_iters < iters:
        raise ValueError(f"--regime switch needs 0 < --warm_iters ({warm_iters}) < --iters ({iters})")
    if regime == "warm" and warm_iters < 1:
        raise ValueError(f"--regime warm needs --warm_iters >= 1 (the shared IoU checkpoint), got {warm_iters}")
    max_iter = iters * long_factor if regime == "long" else iters
    mg_flags = ("--mutual_guide",) + (("--mutual_guide_from", str(warm_iters)) if regime == "switch" else ())
    fork = regime == "warm"
    return [ArmPlan("IoU", max_iter, (), fork), ArmPlan("MG", max_iter, mg_flags, fork)]


def make_subset_root(source: str | Path, dest: str | Path, num_train: int | None, num_test: int | None) -> Path:
    """A VOC-layout folder at ``dest`` holding the first ``num_train`` / ``num_test`` ids of ``source``'s lists.

    ``Annotations`` and ``JPEGImages`` are symbolic links to ``source``'s folders (nothing is copied); ``None``
    keeps a whole list. Returns ``dest``.
    """
    source, dest = Path(source).resolve(), Path(dest)
    for folder in ("Annotations", "JPEGImages"):
        if not (source / folder).is_dir():
            raise FileNotFoundError(f"{source / folder} not found: --data_root must be a VOC-layout folder")
    (dest / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for split, count in (("train", num_train), ("test", num_test)):
        name, _ = voc_folder_list(source, split)  # the lists main.py would read (never train on the test images)
        ids = [line.strip() for line in (source / "ImageSets" / "Main" / f"{name}.txt").read_text().splitlines()]
        ids = [image_id for image_id in ids if image_id]
        if count is not None and not 0 < count <= len(ids):
            raise ValueError(f"--num_{split} {count}: {source} lists {counted(len(ids), f'{name} image')}; give at "
                             f"most {len(ids)}, or --full_data")
        (dest / "ImageSets" / "Main" / f"{name}.txt").write_text("\n".join(ids[:count]) + "\n")
    for folder in ("Annotations", "JPEGImages"):
        link = dest / folder
        if link.is_symlink() and link.resolve() != (source / folder).resolve():
            link.unlink()  # a subset of another set made earlier under this name: its ids are gone, so its images too
        if not link.exists():
            os.symlink(source / folder, link, target_is_directory=True)
    return dest


def read_eval_metrics(summary_path: str | Path) -> dict[str, float]:
    """``mAP``, ``AP50``, ``AP75`` and ``AP@t`` for every IoU threshold from an evaluation's ``summary.json``.

    ``AP@t`` is the mean over classes (classes without ground truth left out) of the VOC AP at threshold ``t``;
    COCO summaries have no per-threshold table, so they give ``mAP``, ``AP50`` and ``AP75`` only.
    """
    metrics = json.loads(Path(summary_path).read_text())["metrics"]
    result = {key: _float(metrics.get(key)) for key in ("mAP", "AP50", "AP75")}
    for threshold, per_class in zip(metrics.get("iou_thresholds", []), metrics.get("per_threshold_AP", [])):
        values = [_float(v) for v in per_class]
        finite = [v for v in values if not math.isnan(v)]
        result[f"AP@{threshold:.2f}"] = float(np.mean(finite)) if finite else math.nan
    return result


def read_assign_summary(metrics_jsonl: str | Path) -> dict[str, float]:
    """The ``assign_summary`` row a ``--assign_stats`` run writes at its end (statistics averaged over log
    intervals)."""
    rows = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line.strip()]
    summaries = [row for row in rows if row.get("kind") == "assign_summary"]
    if not summaries:
        raise ValueError(f"{metrics_jsonl} has no assign_summary row: train with --assign_stats")
    return {name: float(summaries[-1][name]) for name in ASSIGN_STATS}


def read_switch_phase_stats(metrics_jsonl: str | Path, after: int) -> dict[str, float]:
    """The assignment statistics of a run of the ``switch`` regime averaged over its log intervals after iteration
    ``after`` (MG's phase): the ``assign_summary_mg`` row the MG arm's run writes, else (the IoU arm, which switches
    nothing) the mean of its ``train`` rows of those iterations, taken as main.py takes that row's
    (:func:`utils.loss.stats.mean_over_rows`)."""
    rows = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line.strip()]
    if summaries := [row for row in rows if row.get("kind") == "assign_summary_mg"]:
        return {name: float(summaries[-1][name]) for name in ASSIGN_STATS}
    logged = [row for row in rows if row.get("kind") == "train" and row["iteration"] > after]
    if not logged:
        raise ValueError(f"{metrics_jsonl} has no train row after iteration {after}: log intervals longer than the "
                         "MG phase (lower --log_interval)")
    return mean_over_rows(logged, ASSIGN_STATS)


def table_statistics(regime: str, per_seed: dict[int, dict[str, dict]], warm_iters: int,
                     iters: int) -> tuple[dict[int, dict[str, dict]], str]:
    """The results ``per_seed[seed][arm]`` whose ``stats`` the table of ``regime`` shows, and what they average (its
    heading's words). ``switch``, whose runs assign by IoU for iterations 1..``warm_iters`` of ``iters``: the
    ``stats_mg_phase`` of every run (MG's phase, the same iterations for the IoU arm) when each has them; results
    saved before runs kept them give the whole run, the IoU phase included, which the heading says."""
    if regime != "switch":
        return per_seed, "mean over log intervals"
    if all("stats_mg_phase" in result for arms in per_seed.values() for result in arms.values()):
        phase = {seed: {arm: result | {"stats": result["stats_mg_phase"]} for arm, result in arms.items()}
                 for seed, arms in per_seed.items()}
        return phase, (f"mean over the log intervals after the switch to MG, "
                       f"{iteration_span(warm_iters + 1, iters)}, both arms")
    return per_seed, (f"mean over the whole run's log intervals, the IoU phase of {iteration_span(1, warm_iters)} "
                      f"included: these results were saved before runs kept the MG "
                      "phase's")


def _float(value) -> float:
    return math.nan if value is None else float(value)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; NaN for one value)."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else math.nan


def _pm(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    mean, std = mean_std(values)
    if math.isnan(std):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def summarise(per_seed: dict[int, dict[str, dict]]) -> dict:
    """Per-arm mean ± std over seeds and the paired differences MG - IoU of every metric and statistic.

    ``per_seed[seed][arm]`` is ``{"metrics": {...}, "stats": {...}, "seconds": float}``.
    Returns ``{"metrics": {name: {"IoU": [..], "MG": [..], "diff": [..]}}, "stats": {...}, "seconds": {...}}``,
    every list in ``per_seed``'s order (the order of ``--seeds``, which :func:`format_table`'s columns follow).
    """
    seeds = list(per_seed)
    summary: dict[str, dict] = {}
    for section in ("metrics", "stats"):
        names = list(per_seed[seeds[0]]["IoU"][section])
        summary[section] = {
            name: {arm: [per_seed[s][arm][section][name] for s in seeds] for arm in ARMS} for name in names
        }
        for entry in summary[section].values():
            entry["diff"] = [mg - iou for mg, iou in zip(entry["MG"], entry["IoU"])]
    summary["seconds"] = {arm: [per_seed[s][arm]["seconds"] for s in seeds] for arm in ARMS}
    return summary


def format_table(title: str, seeds: list[int], summary: dict, stats_caption: str = "mean over log intervals") -> str:
    """The study's markdown: metrics (in %) per arm as mean ± std over seeds, then MG - IoU: its mean ± std, the
    number of seeds where MG scored higher, and its value per seed; a line saying what these are; then the
    assignment statistics per arm (``stats_caption``: what they average, :func:`table_statistics`) and the training +
    evaluation time."""
    seed_heads = " | ".join(f"seed {s}" for s in seeds)
    lines = [f"### {title}", "",
             f"| metric (%) | IoU | MG | MG − IoU | seeds MG > IoU | {seed_heads} |",
             "|---|---|---|---|---|" + "---|" * len(seeds)]  # fmt: skip
    for name, entry in summary["metrics"].items():
        per_seed = " | ".join(f"{d * 100:+.1f}" for d in entry["diff"])
        higher = f"{sum(d > 0 for d in entry['diff'])}/{len(entry['diff'])}"
        lines.append(f"| {name} | {_pm(entry['IoU'])} | {_pm(entry['MG'])} | {_pm(entry['diff'])} | {higher} | "
                     f"{per_seed} |")
    if len(seeds) > 1:
        lines += ["", f"IoU, MG: mean ± sample std (ddof 1) over the {len(seeds)} seeds; MG − IoU: mean ± sample "
                      "std of the per-seed paired differences MG − IoU; seeds MG > IoU: seeds whose unrounded MG value "
                      "is higher (a difference shown as +0.0 may count)."]
    else:
        lines += ["", "IoU, MG and MG − IoU: the values of the one seed (no std)."]
    lines += ["", f"| assignment statistic ({stats_caption}) | IoU | MG | MG − IoU |", "|---|---|---|---|"]
    for name, entry in summary["stats"].items():
        lines.append(f"| {name} | {_pm(entry['IoU'], 1, 3)} | {_pm(entry['MG'], 1, 3)} | {_pm(entry['diff'], 1, 3)} |")
    seconds = summary["seconds"]
    lines.append(f"| seconds per arm (train + eval) | {_pm(seconds['IoU'], 1, 0)} | {_pm(seconds['MG'], 1, 0)} | |")
    return "\n".join(lines) + "\n"
