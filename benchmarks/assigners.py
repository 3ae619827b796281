"""Mutual Guidance against IoU assignment: a paired, multi-seed study with main.py's training and evaluation.

For every seed the same detector is trained twice, once per assignment arm (IoU, MG), with the same seed, so the
same initial weights, data order, augmentation and learning-rate schedule (main.py's loader is a pure function of
``(seed, iteration)``). Both arms are evaluated with main.py's evaluation (the paper's VOC metric on VOC-layout
sets) and the table gives, per arm, mean ± std over seeds of mAP and AP at every IoU threshold 0.50..0.95, the
per-seed paired differences MG - IoU and their mean ± std, and the assignment statistics of ``--assign_stats``.

Regimes (``--regime``, several allowed): ``scratch`` (random init, --iters), ``warm`` (one IoU-trained checkpoint of
--warm_iters, trained with the first seed; for every seed both arms fork from it and train --iters more with a fresh
schedule and that seed's data stream), ``switch`` (MG arm uses IoU
for the first --warm_iters of --iters, then MG) and ``long`` (scratch for --long_factor x --iters).

Examples::

    # CPU, shapes subset (about 20 minutes per detector on 2 shared cores, scratch + warm)
    python benchmarks/assigners.py --preset cpu --version retinanet --backbone resnet18 --regime scratch warm
    # one CUDA device call (<= 8 minutes; not measured here)
    python benchmarks/assigners.py --preset cuda --version retinanet --backbone resnet18 --regime warm
    # VOC (download first with data/scripts/VOC2007.sh and VOC2012.sh), the paper's detector, ImageNet weights
    python benchmarks/assigners.py --preset cuda --dataset voc --version pafpn --backbone vgg16 --size 320 \\
        --pretrained --iters 5000 --regime scratch

Results: ``<out_dir>/<regime>_<version>-<backbone>-<size>.md`` and ``.json``; every run's log, checkpoint and
detections under ``<out_dir>/work/``. After a stop (Ctrl-C, an error, a kill) the same command continues: finished
runs are reused and a stopped run resumes from its last checkpoint (saved every --checkpoint_interval iterations).
A diverged run (NaN/inf loss) is not resumed, as it would diverge again: rerun with a lower --lr or a longer
--lr_warmup, which trains every run again.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import main as cli  # noqa: E402
from benchmarks.common import environment, utc_stamp  # noqa: E402
from data import DEFAULT_ROOTS  # noqa: E402
from data.errors import DataError  # noqa: E402
from data.shapes import SHAPES_CLASSES, ensure_shapes_dataset, set_arguments_for  # noqa: E402
from models.builder import BACKBONES, NECKS  # noqa: E402
from utils.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from utils.distributed import resolve_device  # noqa: E402
from utils.files import json_safe, replace_text  # noqa: E402
from utils.logging import RUN_ID_FILE, logged_run_id  # noqa: E402
from utils.messages import iteration_span  # noqa: E402
from utils.run_exit import EXIT_BAD_INPUT, EXIT_DIVERGED, continued_by  # noqa: E402
from utils.run_flags import DATASET_DEFAULTS, MAX_SEED, NON_EMPTY_FLAGS, RUN_DEFAULTS  # noqa: E402
from utils.study import (  # noqa: E402
    ASSIGN_STATS,
    REGIMES,
    format_table,
    make_subset_root,
    read_assign_summary,
    read_eval_metrics,
    read_switch_phase_stats,
    regime_plan,
    summarise,
    table_statistics,
)

# Flags left unset take these values; ``cpu`` was sized on 2 shared cores, ``cuda`` for one device call of <= 8 min.
PRESETS = {
    "tiny": dict(size=128, batch_size=2, iters=4, warm_iters=2, lr=1e-2, lr_warmup=1, num_train=8, num_test=4,
                 workers=0, log_interval=2, amp=None, device="cpu"),
    "cpu": dict(size=128, batch_size=8, iters=60, warm_iters=240, lr=1e-2, lr_warmup=20, num_train=None, num_test=100,
                workers=0, log_interval=10, amp="bf16", device="cpu", threads=1),
    "cuda": dict(size=320, batch_size=32, iters=300, warm_iters=300, lr=1e-2, lr_warmup=50, num_train=None,
                 num_test=None, workers=8, log_interval=20, amp="bf16", device="cuda"),
}
RESULT_FILE = "study_result.json"  # a finished run's result and the flags it ran with, in its folder
# written before each attempt at a run (its flags, its run id, its seconds before, its start), so that the next call
# resumes the run however the attempt ended, a SIGKILL included
ATTEMPT_FILE = "study_attempt.json"
# what main.py's advice after a stop names, in place of its own commands (main.py --resume, --trained_model): the study
# goes on from the run itself, and a main.py command run by hand would not complete the study
CONTINUE_COMMAND = "the same benchmarks/assigners.py command (it goes on from this run's checkpoint)"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser("IoU vs Mutual Guidance assignment study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=tuple(PRESETS), default="cpu",
                        help="defaults for unset flags (default: cpu)")
    parser.add_argument("--regime", nargs="+", choices=REGIMES, default=["scratch"], help="one or more regimes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    parser.add_argument("--version", type=str.lower, choices=tuple(NECKS), default="retinanet",
                        help="detector (default: retinanet)")
    parser.add_argument("--backbone", type=str.lower, choices=tuple(BACKBONES), default="resnet18",
                        help="backbone (default: resnet18)")
    parser.add_argument("--size", type=int, default=None, help="input size")
    parser.add_argument("--pretrained", action="store_true",
                        help="keep main.py's backbone default (ImageNet weights for voc/coco/custom) "
                             "instead of random init")
    parser.add_argument("--iters", type=int, default=None, help="iterations of each arm")
    parser.add_argument("--warm_iters", type=int, default=None,
                        help="warm: iterations of the shared IoU checkpoint; switch: IoU iterations before MG")
    parser.add_argument("--long_factor", type=int, default=4, help="long: arms run long_factor x --iters (default: 4)")
    parser.add_argument("--batch_size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--lr_warmup", type=int, default=None, help="linear LR warm-up iterations of every run")
    parser.add_argument("--dataset", type=str.lower, choices=("shapes", "voc", "coco", "custom"), default="shapes")
    parser.add_argument("--data_root", type=str, default=None, help="dataset folder (main.py's default if unset)")
    parser.add_argument("--classes", type=str, default=None, help="custom datasets: class names (main.py --classes)")
    parser.add_argument("--num_train", type=int, default=None,
                        help="train on the first N ids of a VOC-layout set (shapes/custom/a VOC folder)")
    parser.add_argument("--num_test", type=int, default=None, help="evaluate on the first N test ids (VOC layout)")
    parser.add_argument("--full_data", action="store_true", help="ignore the preset's subset sizes")
    parser.add_argument("--expand_prob", type=float, default=None,
                        help="zoom-out probability of every run (default: main.py's for --dataset, 0 for shapes, "
                             "also for its subsets; 0.6 for the others)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: unchanged)")
    parser.add_argument("--log_interval", type=int, default=None, help="assignment statistics every N iterations")
    parser.add_argument("--checkpoint_interval", type=int, default=RUN_DEFAULTS["checkpoint_interval"],
                        help="main.py saves each run every N iterations and at its end, over the run's one checkpoint "
                             "file; a run killed without a chance to save (SIGKILL, the OOM killer, a reboot) resumes "
                             "from its last save (default: main.py's, %(default)s; no effect on the results)")
    parser.add_argument("--amp", type=str.lower, choices=("bf16", "fp16", "none"), default=None,
                        help="mixed precision (case-insensitive)")
    parser.add_argument("--device", type=str.lower, default=None, help="auto, cpu, cuda or cuda:N (case-insensitive)")
    parser.add_argument("--out_dir", type=str, default="runs/assigner_study", help="results folder")
    return parser


def fill_preset(args: argparse.Namespace) -> None:
    """Fill the flags left unset from ``--preset``, then refuse a value no run of the study could use (``ValueError``
    naming the flag), before any data is made or run trained."""
    for flag, takes in (("out_dir", "a folder for the results"), ("data_root", NON_EMPTY_FLAGS["data_root"]),
                        ("classes", NON_EMPTY_FLAGS["classes"])):
        if getattr(args, flag) == "":  # else taken for the flag left out: the current folder, the default data
            raise ValueError(f"--{flag} '' is empty: give {takes}, or leave --{flag} out")
    if Path(args.out_dir).exists() and not Path(args.out_dir).is_dir():
        raise ValueError(f"--out_dir {args.out_dir} is a file; give a folder for the results")
    from_preset = {key: PRESETS[args.preset][key] for key in ("warm_iters", "iters") if getattr(args, key) is None}
    for key, value in PRESETS[args.preset].items():
        if key in ("num_train", "num_test") and args.full_data:
            continue
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.amp == "none":
        args.amp = None
    resolve_device(args.device)  # ValueError naming --device for a name that is no device, or CUDA without CUDA
    if args.device == "auto":  # the runs, the heading and the record name the device it stands for
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if len(set(args.seeds)) != len(args.seeds):
        seeds = " ".join(map(str, args.seeds))
        raise ValueError(f"--seeds {seeds}: give every seed once (a repeated seed would repeat its runs)")
    for flag in ("iters", "threads", "num_train", "num_test", "checkpoint_interval"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if args.lr_warmup < 0:
        raise ValueError(f"--lr_warmup must be >= 0, got {args.lr_warmup}")
    if args.expand_prob is not None and not 0.0 <= args.expand_prob <= 1.0:
        raise ValueError(f"--expand_prob {args.expand_prob} must be a probability in [0, 1]")
    if args.lr_warmup >= args.iters:
        raise ValueError(f"--lr_warmup {args.lr_warmup} must be shorter than --iters {args.iters}")
    check_regimes(args, from_preset)


def check_regimes(args: argparse.Namespace, from_preset: dict[str, int]) -> None:
    """``ValueError`` for a flag that a run of some ``--regime`` would refuse: found before the first run trains,
    not after the earlier regimes (hours on VOC) have run. ``from_preset``: ``--warm_iters`` and ``--iters`` as
    ``--preset`` set them, those not given."""
    for seed in args.seeds:
        if not 0 <= seed <= MAX_SEED:
            raise ValueError(f"--seeds: every seed must be from 0 to {MAX_SEED}, got {seed}")
    if "long" in args.regime and args.long_factor < 1:
        raise ValueError(f"--regime long needs --long_factor >= 1, got {args.long_factor}")
    if "switch" in args.regime and not 0 < args.warm_iters < args.iters and (advice := switch_fix(args, from_preset)):
        raise ValueError(f"--regime switch needs 0 < --warm_iters ({args.warm_iters}) < --iters ({args.iters}): "
                         f"{advice}")
    for regime in args.regime:
        regime_plan(regime, args.iters, args.warm_iters, args.long_factor)
    if "warm" in args.regime and args.lr_warmup >= args.warm_iters:
        raise ValueError(f"--regime warm: --lr_warmup {args.lr_warmup} must be shorter than --warm_iters "
                         f"{args.warm_iters} (the shared IoU checkpoint's run); lower --lr_warmup or raise "
                         "--warm_iters")


def switch_fix(args: argparse.Namespace, from_preset: dict[str, int]) -> str | None:
    """What to give for ``--regime switch`` (IoU for ``--warm_iters`` of the ``--iters`` iterations, then MG) when
    ``--preset`` set one of them unfit for it (the cpu and cuda presets' ``--warm_iters``, the warm regime's shared
    checkpoint, is not below their ``--iters``), e.g. "--preset cpu sets ...; give --warm_iters below --iters, e.g.
    --warm_iters 30 (...)"; None when the values given are what does not fit."""
    if "warm_iters" in from_preset and args.iters >= 2:
        warm_iters, iters, change = args.iters // 2, args.iters, "--warm_iters below --iters"
    elif "iters" in from_preset and args.warm_iters >= 1:
        warm_iters, iters, change = args.warm_iters, 2 * args.warm_iters, "--iters above --warm_iters"
    else:
        return None
    sets = " and ".join(f"--{key} {value}" + (" (the warm regime's shared checkpoint)" if key == "warm_iters" else "")
                        for key, value in from_preset.items())
    example = f"--warm_iters {warm_iters}" if change.startswith("--warm_iters") else f"--iters {iters}"
    return (f"--preset {args.preset} sets {sets}; give {change}, e.g. {example} (IoU for {warm_iters} of the {iters} "
            "iterations, then MG)")


def data_flags(args: argparse.Namespace, out_dir: Path) -> list[str]:
    """main.py's data flags; a subset (--num_train/--num_test) becomes a custom VOC-layout folder of symlinks, trained
    with the augmentation of ``--dataset`` (``--expand_prob``: main.py's default for it unless given)."""
    flags = dataset_flags(args, out_dir)
    expand_prob = DATASET_DEFAULTS[args.dataset]["expand_prob"] if args.expand_prob is None else args.expand_prob
    if expand_prob != DATASET_DEFAULTS[flags[1]]["expand_prob"]:  # given only where main.py would choose another
        flags += ["--expand_prob", str(expand_prob)]
    return flags


def dataset_flags(args: argparse.Namespace, out_dir: Path) -> list[str]:
    """``--dataset`` (``custom`` for a subset), ``--data_root`` and ``--classes`` of main.py."""
    root, classes = args.data_root, args.classes
    if args.dataset == "shapes":
        root = str(ensure_shapes_dataset(root or DEFAULT_ROOTS["shapes"], **set_arguments_for(root)))
    if args.num_train is None and args.num_test is None:  # the set itself (shapes has its own classes)
        flags = ["--dataset", args.dataset]
        return flags + (["--data_root", root] if root else []) + (["--classes", classes] if classes else [])
    if args.dataset == "shapes":  # the subset is a custom VOC-layout folder, which needs the names
        classes = ",".join(SHAPES_CLASSES)
    if args.dataset == "coco" or root is None or classes is None:
        raise ValueError("--num_train/--num_test need a VOC-layout --data_root and --classes (or --dataset shapes); "
                         "pass --full_data to use the whole set")
    subset = make_subset_root(root, out_dir / "data" / subset_name(root, args.num_train, args.num_test),
                              args.num_train, args.num_test)
    return ["--dataset", "custom", "--data_root", str(subset), "--classes", classes]


class RunFailed(RuntimeError):
    """A main.py run of the study exited with an error (main.py printed it); ``exit_code`` is main.py's, which the
    study exits with."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def subset_name(root: str, num_train: int | None, num_test: int | None) -> str:
    """The subset folder's name: its sizes and its source folder (name and a hash of its path), so that subsets of
    different sets never share a folder, nor a run of one the flags of a run of another."""
    source = Path(root).resolve()
    digest = hashlib.sha256(str(source).encode()).hexdigest()[:8]
    return f"{source.name}-{digest}_train{num_train}_test{num_test}"


def run_main(argv: list[str], work: Path, args: argparse.Namespace) -> None:
    """One main.py run in this process, logging to ``work``; a non-zero exit code raises :class:`RunFailed`."""
    diverged = (f"Run the same benchmarks/assigners.py command again with {divergence_changes(args)}, which trains "
                "every run of the study afresh")
    with continued_by(CONTINUE_COMMAND, diverged):
        code = cli.main(cli.get_args_parser().parse_args(argv))
    if code == EXIT_DIVERGED:  # resuming its checkpoint with the same flags would repeat the same batches
        raise RunFailed(diverged_advice(args, work, "its error is above"), code)
    if code == EXIT_BAD_INPUT:  # a flag or the data refused before training: the same command would stop again
        raise RunFailed(f"main.py refused the flags or data of the run in {work} (exit code {code}, its error is "
                        "above): fix what it names (main.py's --warm_iter is this script's --lr_warmup) and run the "
                        "command again; the finished runs are kept", code)
    if code != 0:
        raise RunFailed(f"the run in {work} stopped (main.py exit code {code}, its error is above, its log "
                        f"{work / 'log.txt'}; main.py's --warm_iter there is this script's --lr_warmup); the finished "
                        "runs are kept: the same command continues, and resumes this run from the checkpoint main.py "
                        "saved (or trains it again when it saved none)", code)


def diverged_advice(args: argparse.Namespace, work: Path, error: str) -> str:
    """What to do after the run in ``work`` diverged (main.py exit code 3): the study's flags to change
    (:func:`divergence_changes`); ``error`` says where main.py's error is."""
    return (f"the run in {work} diverged (a NaN/inf loss, main.py exit code {EXIT_DIVERGED}, {error}, its log "
            f"{work / 'log.txt'}): with the same flags it would diverge again on the same batches, so the same "
            f"command will not resume it; run the command again with {divergence_changes(args)}, "
            "which trains every run of the study afresh with the new flags (both arms must share them), or delete "
            f"{work} to train this run again with the same flags")


def divergence_changes(args: argparse.Namespace) -> str:
    """The study's flags to change after a diverged run, as main.py's advice names its own (--warm_iter is the study's
    --lr_warmup, no --amp is the study's --amp none), e.g. "a lower --lr (now 0.01) or a longer --lr_warmup (now
    20)"."""
    changes = [f"a lower --lr (now {args.lr:g})", f"a longer --lr_warmup (now {args.lr_warmup})"]
    changes += {"bf16": ["--amp none (float32)"],
                "fp16": ["--amp bf16 or none (float16 overflows above 65504)"]}.get(args.amp or "", [])
    return f"{', '.join(changes[:-1])} or {changes[-1]}"


def recorded_attempt(work: Path) -> dict:
    """The last attempt at the run in ``work`` as :data:`ATTEMPT_FILE` records it, ``{}`` when none is."""
    path = work / ATTEMPT_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_json(path: Path, value: dict) -> None:
    """``value`` as indented JSON in ``path``, replaced whole (a kill mid-write leaves the old file or the new one)."""
    replace_text(path, json.dumps(value, indent=2) + "\n")


def diverged_earlier(work: Path, key: dict) -> bool:
    """Whether the last attempt at the run in ``work`` had the flags ``key`` and diverged."""
    attempt = recorded_attempt(work)
    return attempt.get("key") == key and attempt.get("diverged", False)


def finished_result(work: Path, key: dict) -> dict | None:
    """The result of the run in ``work`` when it finished with the same ``key`` (main.py flags, warm run); else None."""
    path = work / RESULT_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if result_key(saved["key"]) != key or set(ASSIGN_STATS) - set(saved["result"]["stats"]):
        return None  # other flags, or a run of an earlier version that logged fewer statistics
    return saved["result"]


def result_key(key: dict) -> dict:
    """A saved run's ``key`` less ``--checkpoint_interval``, which earlier versions recorded in it (as the run's
    length): when a run saves does not change its result."""
    return {"argv": without_flag(key["argv"], "--checkpoint_interval"), "fork_of": key["fork_of"]}


@dataclass(frozen=True)
class StoppedRun:
    """A run that stopped in its folder before its end: its last checkpoint, its main.py run id and the seconds it
    ran up to that checkpoint (the time after it is spent again)."""

    checkpoint: Path
    run_id: str
    seconds: float


def stopped_run(work: Path, key: dict) -> StoppedRun | None:
    """The run that an earlier attempt with the same ``key`` trained in ``work`` and left unfinished, to resume from
    its last checkpoint: main.py saves one every ``--checkpoint_interval`` iterations and on Ctrl-C or SIGTERM, and
    keeps the last one after an error or a kill (SIGKILL, the OOM killer, a reboot). None when there is none: no
    attempt with ``key`` is recorded, it stopped before training or before its first save, or the folder's checkpoint
    is another run's (or unreadable)."""
    attempt = recorded_attempt(work)
    if attempt.get("key") != key:
        return None
    run_id = attempt["run_id"]  # the run it resumed, else the one main.py started there: a new id in run_id.txt
    if run_id is None and logged_run_id(work) != attempt["earlier_run_id"]:
        run_id = logged_run_id(work)
    checkpoints = [path for path in work.glob("*.pth") if ".earlier-" not in path.name]
    if run_id is None or len(checkpoints) != 1:
        return None
    try:
        saved_run_id = load_checkpoint(checkpoints[0])["config"].get("run_id")
    except CheckpointError:  # main.py sets an unreadable file aside when the run is trained again
        return None
    if saved_run_id != run_id:
        return None
    ran = max(0.0, checkpoints[0].stat().st_mtime - attempt["started"])  # 0: the attempt saved nothing new
    return StoppedRun(checkpoints[0], run_id, attempt["seconds"] + ran)


def without_flag(argv: list[str], flag: str) -> list[str]:
    """``argv`` without ``flag`` and its value."""
    index = argv.index(flag) if flag in argv else None
    return argv if index is None else argv[:index] + argv[index + 2:]


def main_argv(args: argparse.Namespace, data: list[str], seed: int, max_iter: int, work: Path,
              extra: tuple[str, ...] = ()) -> list[str]:
    """main.py's flags for one run of the study in ``work`` (``data``: its data flags, ``extra``: the arm's)."""
    return data + [
        "--version", args.version, "--backbone", args.backbone, "--size", str(args.size),
        "--batch_size", str(args.batch_size), "--max_iter", str(max_iter), "--warm_iter", str(args.lr_warmup),
        "--lr", str(args.lr), "--workers", str(args.workers), "--seed", str(seed), "--device", args.device,
        "--log_interval", str(args.log_interval), "--assign_stats",
        "--save_folder", str(work), "--run_dir", str(work), "--eval_dir", str(work / "eval"),
        *(["--amp", args.amp] if args.amp else []), *([] if args.pretrained else ["--no_pretrained"]), *extra,
    ]  # fmt: skip


def check_main_flags(args: argparse.Namespace) -> None:
    """main.py's own checks (its parser, then :func:`main.check_flags`) of the flags every run of the study will
    pass it, so that a value main.py refuses (``--size 100``) stops the study at once with main.py's message, not
    after the data is generated or linked. The data flags are checked as given (``--dataset``, ``--classes``): their
    folders are checked when the data is made."""
    parser = cli.get_args_parser()
    data = ["--dataset", args.dataset, *(["--classes", args.classes] if args.classes else [])]
    work = Path(args.out_dir)
    runs = [(seed, plan) for regime in args.regime for seed in args.seeds
            for plan in regime_plan(regime, args.iters, args.warm_iters, args.long_factor)]
    for seed, plan in runs:
        argv = main_argv(args, data, seed, plan.max_iter, work, plan.flags)
        cli.check_flags(parser.parse_args(argv + ["--checkpoint_interval", str(args.checkpoint_interval)]), parser)


def train_and_evaluate(args: argparse.Namespace, data: list[str], seed: int, max_iter: int, work: Path,
                       extra: tuple[str, ...] = (), fork_of: str | None = None,
                       switch_after: int | None = None) -> dict:
    """Train + evaluate one run in ``work``; returns its metrics, assignment statistics and wall seconds. A run of the
    ``switch`` regime (MG after iteration ``switch_after`` in its MG arm) also keeps the statistics of MG's phase,
    those iterations in either arm (``stats_mg_phase``, :func:`read_switch_phase_stats`).

    A run that finished earlier in ``work`` with the same main.py flags (and, for a fork, from the same warm run, id
    ``fork_of``) is not trained again: its saved result is returned. One that stopped there with the same flags after
    saving a checkpoint (Ctrl-C, an error, a kill after a periodic save) continues from it (``main.py --resume``: the
    same batches and learning rates; a run started ``--init_from`` resumes its own checkpoint instead).
    """
    argv = main_argv(args, data, seed, max_iter, work, extra)
    key = {"argv": argv, "fork_of": fork_of}
    if (result := finished_result(work, key)) is not None:
        print(f"{work}: finished earlier with the same flags, its result is reused", flush=True)
        return result
    (work / RESULT_FILE).unlink(missing_ok=True)  # the folder's checkpoint and logs are no longer that run's
    if diverged_earlier(work, key):
        raise RunFailed(diverged_advice(args, work, "in an earlier call of this command"), EXIT_DIVERGED)
    stopped = stopped_run(work, key)
    run_argv = argv + ["--checkpoint_interval", str(args.checkpoint_interval)]
    if stopped is None:  # a new run: main.py gives it an id of its own once it starts training
        attempt = {"key": key, "run_id": None, "earlier_run_id": logged_run_id(work), "seconds": 0.0}
    else:
        print(f"{work}: the run stopped there earlier with the same flags, it continues from "
              f"{stopped.checkpoint.name}", flush=True)
        run_argv = without_flag(run_argv, "--init_from") + ["--resume", str(stopped.checkpoint)]
        attempt = {"key": key, "run_id": stopped.run_id, "earlier_run_id": None, "seconds": stopped.seconds}
    work.mkdir(parents=True, exist_ok=True)
    attempt["started"] = time.time()
    write_json(work / ATTEMPT_FILE, attempt)
    start = time.perf_counter()
    try:
        run_main(run_argv, work, args)
    except RunFailed as failure:
        if failure.exit_code == EXIT_DIVERGED:  # the next call with these flags says so instead of resuming it
            write_json(work / ATTEMPT_FILE, attempt | {"diverged": True})
        raise
    result = {
        "metrics": read_eval_metrics(work / "eval" / "summary.json"),
        "stats": read_assign_summary(work / "metrics.jsonl"),
        "seconds": attempt["seconds"] + time.perf_counter() - start,
    }
    if switch_after is not None:
        result["stats_mg_phase"] = read_switch_phase_stats(work / "metrics.jsonl", switch_after)
    write_json(work / RESULT_FILE, {"key": key, "result": result})
    (work / ATTEMPT_FILE).unlink(missing_ok=True)
    return result


def checkpoint_in(work: Path) -> Path:
    """The checkpoint the run in ``work`` just saved; main.py renames an earlier run's to ``*.earlier-*.pth``."""
    checkpoints = [path for path in work.glob("*.pth") if ".earlier-" not in path.name]
    if len(checkpoints) != 1:
        raise ValueError(f"{work}: expected one checkpoint of the run, found {len(checkpoints)}; use another --out_dir")
    return checkpoints[0]


def run_seed(args: argparse.Namespace, data: list[str], regime: str, seed: int, work: Path,
             init_from: Path | None, fork_of: str | None = None) -> dict:
    """Both arms of ``regime`` for one seed; ``init_from``: the shared warm checkpoint both arms fork from, saved by
    the run of id ``fork_of``."""
    init = ("--init_from", str(init_from)) if init_from else ()
    switch_after = args.warm_iters if regime == "switch" else None
    return {plan.arm: train_and_evaluate(args, data, seed, plan.max_iter, work / plan.arm, plan.flags + init, fork_of,
                                         switch_after)
            for plan in regime_plan(regime, args.iters, args.warm_iters, args.long_factor)}


def run_regime(args: argparse.Namespace, data: list[str], regime: str, out_dir: Path) -> dict:
    """Every seed of ``regime``; ``warm`` first trains the one IoU checkpoint (seed = the first seed) all forks
    share."""
    tag = f"{args.version}-{args.backbone}-{args.size}"
    work = out_dir / "work" / f"{regime}_{tag}"
    warm, init_from, fork_of = None, None, None
    if regime_plan(regime, args.iters, args.warm_iters, args.long_factor)[0].fork:
        warm = train_and_evaluate(args, data, args.seeds[0], args.warm_iters, work / "warm")
        init_from = checkpoint_in(work / "warm")
        fork_of = (work / "warm" / RUN_ID_FILE).read_text().strip()  # a new warm checkpoint: every fork trains again
    per_seed = {seed: run_seed(args, data, regime, seed, work / f"seed{seed}", init_from, fork_of)
                for seed in args.seeds}
    shown, stats_caption = table_statistics(regime, per_seed, args.warm_iters, args.iters)
    summary = summarise(shown)
    iters = args.iters * args.long_factor if regime == "long" else args.iters
    title = (f"{regime}: {args.version}-{args.backbone} {args.size} px, {iters} iterations of batch {args.batch_size}"
             + (f" from one shared IoU checkpoint of {args.warm_iters} iterations" if warm else "")
             + (f", IoU for {iteration_span(1, args.warm_iters)} then MG" if regime == "switch" else "")
             + f", seeds {' '.join(map(str, args.seeds))}")
    table = format_table(title, list(args.seeds), summary, stats_caption)
    if warm:
        table += "\nThe shared IoU checkpoint before the fork: " + ", ".join(
            f"{name} {warm['metrics'][name] * 100:.1f}" for name in ("mAP", "AP50", "AP75")) + "\n"
    env = environment(torch.device(args.device))
    table += (f"\nMeasured {env['date']} on {env['card'] or env['cpu']} ({args.device}, {torch.get_num_threads()} "
              f"threads), torch {env['torch']}.\n")
    record = {"regime": regime, "title": title, "args": vars(args), "environment": env,
              "warm_checkpoint": warm, "per_seed": per_seed, "summary": summary, "stats_caption": stats_caption,
              "table": table}
    stem = out_dir / f"{regime}_{tag}"
    stem.with_suffix(".md").write_text(table)
    stem.with_suffix(".json").write_text(json.dumps(json_safe(record), indent=2, default=str) + "\n")
    return record


def main(args: argparse.Namespace) -> list[dict]:
    fill_preset(args)
    check_main_flags(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = data_flags(args, out_dir)
    env = environment(torch.device(args.device))
    print(f"# IoU vs MG study, {env['date']}, device {args.device} ({env['card'] or env['cpu']}), "
          f"torch {env['torch']}, {torch.get_num_threads()} threads, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    records = []
    for regime in args.regime:
        record = run_regime(args, data, regime, out_dir)
        print(record["table"], flush=True)
        records.append(record)
    print(f"finished {utc_stamp()}; results in {out_dir}")
    return records


def run_from_command_line(argv: list[str] | None = None) -> None:
    """:func:`main` on ``argv`` (the command line's when None); a refusal (bad flags or data, a failed run) stops
    it with one ``error:`` line on stderr and an exit code, not a traceback: a failed run's, else main.py's for bad
    input (:data:`EXIT_BAD_INPUT`), as main.py itself refuses those flags and data."""
    try:
        main(get_args_parser().parse_args(argv))
    except RunFailed as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except (ValueError, FileNotFoundError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


if __name__ == "__main__":
    run_from_command_line()
