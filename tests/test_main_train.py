"""End-to-end runs of main.py on a tiny synthetic set (CPU): train, save, reload, evaluate, resume, guards."""
import csv
import errno
import io
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision

import main as cli
from data import DataError, DataWarning
from data import dataset as dataset_module
from data.shapes import SHAPES_CLASSES, generate_shapes_dataset
from models.backbones import ResNet18
from models.pretrained import read_backbone_weights
from tests.test_data_coco import GOOD_ANNOTATIONS, coco_json, write_coco
from utils import checkpoint as checkpoint_module
from utils import run_evaluation, training_run, training_setup
from utils.checkpoint import load_checkpoint
from utils.distributed import DistributedContext, unwrap_model
from utils.environment import compiled_criterion_problem
from utils.logging import RunLog
from utils.loss import MultiBoxLoss
from utils.run_exit import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_REFUSED_BY_SYSTEM, divergence_advice
from utils.run_flags import fill_dataset_defaults
from utils.run_lock import exclusive_run

SIZE = "128"  # a multiple of 64 small enough for CPU tests
ITERS = 8


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    """16 train + 6 test images of the shapes generator, used as a custom VOC-layout set."""
    return generate_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", num_trainval=16, num_test=6)


def base_args(root: Path, *extra: str) -> list[str]:
    return [
        "--dataset", "custom", "--data_root", str(root), "--classes", ",".join(SHAPES_CLASSES),
        "--version", "fssd", "--backbone", "resnet18", "--size", SIZE, "--no_pretrained",
        "--batch_size", "2", "--max_iter", str(ITERS), "--warm_iter", "2", "--lr", "0.01", "--workers", "0",
        "--log_interval", "1", "--checkpoint_interval", "4", "--save_folder", "weights", "--run_dir", "run",
        "--device", "cpu", *extra,
    ]  # fmt: skip


def run(workdir: Path, argv: list[str]) -> int:
    old = Path.cwd()
    os.chdir(workdir)
    try:
        return cli.main(cli.get_args_parser().parse_args(argv))
    finally:
        os.chdir(old)


def logged_losses(run_dir: Path) -> list[tuple[int, float, float]]:
    with open(run_dir / "train.csv", newline="") as handle:
        return [(int(r["iteration"]), float(r["loss_l"]), float(r["loss_c"])) for r in csv.DictReader(handle)]


CKPT = "CUSTOM_fssd_resnet18_size128_anchor24.0{}.pth"


@pytest.fixture(scope="module")
def trained(shapes_root, tmp_path_factory):
    """One short baseline run, shared by the tests that need a checkpoint."""
    workdir = tmp_path_factory.mktemp("baseline")
    assert run(workdir, base_args(shapes_root)) == 0
    return workdir


@pytest.mark.parametrize("mutual_guide", [False, True])
def test_short_run_trains_saves_reloads_and_evaluates(mutual_guide, shapes_root, trained, tmp_path, capsys):
    if mutual_guide:
        workdir = tmp_path
        assert run(workdir, base_args(shapes_root, "--mutual_guide", "--assign_stats")) == 0
    else:
        workdir = trained
    checkpoint = workdir / "weights" / CKPT.format("_MG" if mutual_guide else "")
    state = load_checkpoint(checkpoint)
    assert state["iteration"] == ITERS and state["config"]["mutual_guide"] is mutual_guide
    assert state["class_names"] == list(SHAPES_CLASSES)

    losses = logged_losses(workdir / "run")
    assert [it for it, _, _ in losses] == list(range(1, ITERS + 1))
    totals = [l + c for _, l, c in losses]
    assert all(math.isfinite(t) for t in totals)
    assert sum(totals[-3:]) < sum(totals[:3]), totals
    if mutual_guide:
        header = (workdir / "run" / "train.csv").read_text().splitlines()[0]
        assert "num_pos_cls" in header and "disagree_with_iou" in header

    capsys.readouterr()
    # a VOC-layout folder without --classes: the checkpoint's class names read the XML; a copy of the training data,
    # so that --eval_results below must take the evaluation's --data_root, not the training run's
    evaluated_root = copy_of(shapes_root, tmp_path)
    assert run(workdir, ["--dataset", "custom", "--data_root", str(evaluated_root), "--trained_model", str(checkpoint),
                         "--workers", "0", "--device", "cpu", "--batch_size", "4", "--lr", "0.02",
                         "--max_iter", "3", "--seed", "4", "--no_pretrained"]) == 0
    out = capsys.readouterr().out
    assert "with --trained_model the flags --no_pretrained, --lr, --max_iter, --seed are ignored" in out
    scores = out.split("CUSTOM test: ")[1].splitlines()[0]
    assert scores.startswith("mAP=") and "AP50=" in scores and "AP75=" in scores
    curves = workdir / "eval" / "CUSTOM" / f"{SHAPES_CLASSES[0]}_pr.npz"
    assert sorted(workdir.glob("eval/CUSTOM/*_pr.npz")) == sorted(curves.with_name(f"{name}_pr.npz")
                                                                 for name in SHAPES_CLASSES)
    curves.unlink()

    # the saved results files give the same numbers without the model, and the curves again
    assert run(workdir, ["--dataset", "custom", "--data_root", str(shapes_root), "--classes", ",".join(SHAPES_CLASSES),
                         "--eval_results", "eval/CUSTOM", "--size", SIZE]) == 0
    assert f"eval/CUSTOM: {scores}" in capsys.readouterr().out
    assert curves.is_file()
    # and without the dataset flags, read from the summary.json the evaluation wrote beside them
    assert run(workdir, ["--eval_results", "eval/CUSTOM"]) == 0
    out = capsys.readouterr().out
    assert (f"evaluating as the evaluation that wrote them: --dataset custom, --data_root {evaluated_root}, --classes "
            f"{','.join(SHAPES_CLASSES)} (from {Path('eval/CUSTOM/summary.json')})") in out
    assert f"eval/CUSTOM: {scores}" in out


def test_a_run_trains_with_the_paper_s_sgd(trained):
    """Facts §6: SGD, momentum 0.9, weight decay 5e-4 on the conv weights, none on the biases and BatchNorm weights
    (a group each), at the schedule's last rate, as the run's checkpoint holds them."""
    state = load_checkpoint(trained / "weights" / CKPT.format(""))
    model = state["model"]
    groups = state["optimizer"]["param_groups"]
    assert [(g["momentum"], g["weight_decay"], g["nesterov"], g["dampening"]) for g in groups] == [
        (0.9, 5e-4, False, 0), (0.9, 0.0, False, 0)]
    decayed = [key for key, value in model.items() if value.dtype.is_floating_point and value.ndim > 1]
    assert [len(g["params"]) for g in groups] == [len(decayed), sum(k.endswith((".weight", ".bias")) for k in model)
                                                  - len(decayed)]
    last_lr = 1e-6 + (0.01 - 1e-6) * 0.5 * (1 + math.cos(math.pi * (ITERS - 1 - 2) / (ITERS - 2)))  # iteration 7
    assert [g["lr"] for g in groups] == pytest.approx([last_lr, last_lr], rel=1e-12)


def test_the_training_split_augments_with_the_expand_prob_and_seed_given(shapes_root):
    """--expand_prob reaches the training transform (the test split has none); 0.6, the paper's, when not given.
    --seed is the dataset's augmentation seed (sample i of epoch e draws from (seed, e, i)); 0 when not given."""
    from utils.run_data import make_dataset

    for given, expected in ((["--expand_prob", "0.25", "--seed", "5"], (0.25, 5)), ([], (0.6, 0))):
        args = cli.get_args_parser().parse_args(base_args(shapes_root, *given))
        fill_dataset_defaults(args)
        dataset = make_dataset(args, "train", 128, train=True)
        assert (dataset.transform.expand_probability, dataset.seed) == expected
        assert not hasattr(make_dataset(args, "test", 128, train=False).transform, "expand_probability")


def test_the_seed_sets_the_detector_s_initial_weights(shapes_root, tmp_path):
    """--seed seeds torch before the detector is built (without --pretrained every weight is drawn): the same seed gives
    the same initial weights, another seed other ones."""
    def initial_weights(seed: str) -> dict:
        args = cli.get_args_parser().parse_args(base_args(shapes_root, "--seed", seed))
        fill_dataset_defaults(args)
        setup = training_setup.build_training(args, torch.device("cpu"), DistributedContext(), RunLog(tmp_path / seed))
        return setup.model.state_dict()

    first, again, other = initial_weights("5"), initial_weights("5"), initial_weights("6")
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["head.conf.0.weight"], other["head.conf.0.weight"])


def test_log_txt_records_the_command_config_software_and_code_that_ran(shapes_root, trained):
    """log.txt named the run, its data size and schedule, but not the flags (seed, learning rate, data folder), the
    versions or the code's commit needed to run it again."""
    lines = [line.split(" ", 2)[2] for line in (trained / "run" / "log.txt").read_text().splitlines()]
    config = json.loads(next(line for line in lines if line.startswith("config: ")).removeprefix("config: "))
    assert config == json.loads(json.dumps(load_checkpoint(trained / "weights" / CKPT.format(""))["config"]))
    assert config["seed"] == 0 and config["lr"] == 0.01 and config["data_root"] == str(shapes_root)
    assert f"command: {shlex.join(sys.argv)} (in {trained})" in lines
    assert any(line.startswith(f"software: python {platform.python_version()}, torch {torch.__version__}")
               for line in lines)
    assert any(line.startswith("code: git commit ") for line in lines)


def test_resume_path_refuses_another_architecture_before_reading_the_data(trained, tmp_path, capsys):
    checkpoint = str(trained / "weights" / CKPT.format(""))
    capsys.readouterr()
    argv = ["--resume", checkpoint, "--backbone", "vgg16", "--data_root", str(tmp_path / "absent"), "--device", "cpu"]
    assert run(trained, argv) == EXIT_BAD_INPUT
    assert capsys.readouterr().err.strip() == (
        f"error: {checkpoint} was trained with --backbone resnet18, but --backbone vgg16 was given; "
        "drop --backbone or pass a checkpoint trained with --backbone vgg16"
    )


def test_trained_model_refuses_a_mismatch_with_one_line(shapes_root, trained, capsys):
    checkpoint = str(trained / "weights" / CKPT.format(""))
    common = ["--dataset", "custom", "--data_root", str(shapes_root), "--trained_model", checkpoint, "--device", "cpu"]
    capsys.readouterr()
    assert run(trained, common + ["--classes", ",".join(SHAPES_CLASSES), "--backbone", "vgg16"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {checkpoint} was trained with --backbone resnet18, but --backbone vgg16 was given; "
        "drop --backbone or pass a checkpoint trained with --backbone vgg16"
    )
    renamed = ",".join(reversed(SHAPES_CLASSES))
    assert run(trained, common + ["--classes", renamed]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trained on 6 classes (circle, square, triangle, star, ...)" in err


class _SignalAt(MultiBoxLoss):
    """MultiBoxLoss that sends this process SIGINT during its ``at``-th call (0-based)."""

    at = -1

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def forward(self, *args, **kwargs):
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        self.calls += 1
        return super().forward(*args, **kwargs)


def test_interrupt_saves_and_resume_continues_exactly(shapes_root, trained, tmp_path, monkeypatch, capsys):
    """SIGINT during iteration 2 (0-based) saves after 3 iterations; --resume (now with 2 workers) replays the rest."""
    monkeypatch.setattr(_SignalAt, "at", 2)
    monkeypatch.setattr(training_setup, "MultiBoxLoss", _SignalAt)
    assert run(tmp_path, base_args(shapes_root)) == EXIT_INTERRUPTED
    assert "SIGINT received: stopped after iteration 3" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "weights" / CKPT.format(""))["iteration"] == 3

    monkeypatch.setattr(_SignalAt, "at", -1)
    partial = tmp_path / "weights" / f".{CKPT.format('')}.tmp99999"  # a save killed half-way by another attempt
    partial.write_bytes(b"PK half a checkpoint")
    assert run(tmp_path, base_args(shapes_root, "--resume", "--workers", "2")) == 0
    assert "removed 1 partial checkpoint file(s) of a save that was cut short" in capsys.readouterr().out
    assert not partial.exists()
    # resumed, not set aside
    assert not [path.name for path in (tmp_path / "weights").iterdir() if ".earlier-" in path.name]
    # bit for bit on a CPU: the same batches, learning rates, momentum and random states give the same arithmetic
    resumed, reference = logged_losses(tmp_path / "run"), logged_losses(trained / "run")
    assert [it for it, _, _ in resumed] == list(range(1, ITERS + 1))
    assert resumed == reference
    final = load_checkpoint(tmp_path / "weights" / CKPT.format(""))["model"]
    expected = load_checkpoint(trained / "weights" / CKPT.format(""))["model"]
    assert [key for key, value in expected.items() if not torch.equal(final[key], value)] == []


def test_a_run_started_with_init_from_continues_as_the_interrupt_message_says(shapes_root, trained, tmp_path,
                                                                              monkeypatch, capsys):
    """No architecture flags and no --no_pretrained: --resume PATH takes the checkpoint's architecture and fetches no
    ImageNet weights (offline here), as --init_from did."""
    argv = [arg for arg in base_args(shapes_root, "--name", "tuned")
            if arg not in ("--version", "fssd", "--backbone", "resnet18", "--size", SIZE, "--no_pretrained")]
    source = trained / "weights" / CKPT.format("")
    monkeypatch.setattr(_SignalAt, "at", 2)
    monkeypatch.setattr(training_setup, "MultiBoxLoss", _SignalAt)
    assert run(tmp_path, argv + ["--init_from", str(source)]) == EXIT_INTERRUPTED
    checkpoint = Path("weights") / "tuned.pth"
    assert (f"continue with the same command, --init_from {source} replaced by --resume {checkpoint}"
            ) in capsys.readouterr().out
    monkeypatch.setattr(_SignalAt, "at", -1)
    assert run(tmp_path, argv + ["--resume", str(checkpoint)]) == 0
    assert load_checkpoint(tmp_path / checkpoint)["iteration"] == ITERS


def test_resume_path_alone_continues_a_run_of_non_default_flags_exactly(shapes_root, tmp_path, monkeypatch, capsys):
    """A run of non-default flags (custom data, Mutual Guidance after iteration 2, seed, zoom-out, bf16, its own --name
    and run folder) stopped after iteration 3 continues with `--resume PATH` alone (and --workers 0, not a run flag):
    every run flag comes from the checkpoint, and the losses and final weights are those of the uninterrupted run."""
    argv = base_args(shapes_root, "--mutual_guide", "--mutual_guide_from", "2", "--seed", "5", "--expand_prob", "0.5",
                     "--amp", "bf16", "--name", "mine")
    argv[argv.index("--run_dir") + 1] = "mine_run"
    seeds, build_loader = [], training_run.build_loader  # --seed orders the batches of every run here
    monkeypatch.setattr(training_run, "build_loader", lambda *args, **kwargs: seeds.append(kwargs["seed"])
                        or build_loader(*args, **kwargs))
    for name in ("whole", "cut"):
        (tmp_path / name).mkdir()
    assert run(tmp_path / "whole", argv) == 0
    monkeypatch.setattr(_SignalAt, "at", 2)
    monkeypatch.setattr(training_setup, "MultiBoxLoss", _SignalAt)
    assert run(tmp_path / "cut", argv) == EXIT_INTERRUPTED
    monkeypatch.setattr(_SignalAt, "at", -1)
    capsys.readouterr()
    assert run(tmp_path / "cut", ["--resume", str(Path("weights") / "mine.pth"), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert (f"resuming {Path('weights') / 'mine.pth'} with its run's flags not given here: --version fssd, --backbone "
            f"resnet18, --size 128, --base_anchor_size 24.0, --dataset custom, --data_root {shapes_root}, --classes "
            f"{','.join(SHAPES_CLASSES)}, --mutual_guide, --mutual_guide_from 2, --batch_size 2, --lr 0.01, "
            "--warm_iter 2, --seed 5, --expand_prob 0.5, --amp bf16, --name mine, --save_folder weights, "
            f"--run_dir mine_run, --eval_interval 0, --checkpoint_interval 4, --log_interval 1, --nms_thresh 0.5, "
            f"--max_iter {ITERS}\n"
            ) in out
    assert f"resumed from {Path('weights') / 'mine.pth'} at iteration 3/{ITERS}" in out
    log_lines = (tmp_path / "cut" / "mine_run" / "log.txt").read_text().splitlines()
    taken = [line for line in log_lines if "with its run's flags not given here: " in line]
    assert len(taken) == 1 and taken[0].endswith(f"--nms_thresh 0.5, --max_iter {ITERS}")  # printed once, recorded
    assert out.count("with its run's flags not given here: ") == 1
    resumed, reference = logged_losses(tmp_path / "cut" / "mine_run"), logged_losses(tmp_path / "whole" / "mine_run")
    assert [it for it, _, _ in resumed] == list(range(1, ITERS + 1))
    assert resumed == reference  # bit for bit, in bf16 and with zoom-out too
    final = load_checkpoint(tmp_path / "cut" / "weights" / "mine.pth")
    expected = load_checkpoint(tmp_path / "whole" / "weights" / "mine.pth")
    assert final["iteration"] == ITERS and final["config"]["mutual_guide_from"] == 2
    assert seeds == [5, 5, 5]
    assert [key for key, value in expected["model"].items() if not torch.equal(final["model"][key], value)] == []


def test_resume_path_evaluates_where_and_as_its_run_did(shapes_root, tmp_path, capsys):
    """A finished run of --eval_dir ev --nms_thresh 0.6 resumed by `--resume PATH` alone (evaluated again) wrote to
    eval/CUSTOM/ (eval/CUSTOM/x/ since evaluations follow --name) at NMS 0.5: it now takes both from the checkpoint.
    Given with --resume, another folder and threshold are used, not refused (as another --name or interval)."""
    argv = base_args(shapes_root, "--name", "x", "--max_iter", "2", "--warm_iter", "1", "--eval_dir", "ev",
                     "--nms_thresh", "0.6")
    assert run(tmp_path, argv) == 0
    shutil.rmtree(tmp_path / "ev")
    capsys.readouterr()
    resume = ["--resume", str(Path("weights") / "x.pth"), "--workers", "0"]
    assert run(tmp_path, resume) == 0
    assert ", --eval_dir ev, --nms_thresh 0.6, --max_iter 2\n" in capsys.readouterr().out
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert (summary["config"]["eval_dir"], summary["config"]["nms_thresh"]) == ("ev", 0.6)
    assert not (tmp_path / "eval").exists()

    assert run(tmp_path, resume + ["--eval_dir", "ev2", "--nms_thresh", "0.45"]) == 0
    summary = json.loads((tmp_path / "ev2" / "summary.json").read_text())
    assert (summary["config"]["eval_dir"], summary["config"]["nms_thresh"]) == ("ev2", 0.45)
    assert load_checkpoint(tmp_path / "weights" / "x.pth")["config"]["nms_thresh"] == 0.45  # the run's from now on


def test_trained_model_evaluates_at_its_runs_nms_threshold(shapes_root, tmp_path, monkeypatch, capsys):
    """--trained_model alone of a run trained with --nms_thresh 0.6 ran NMS at 0.5, so it did not print the run's
    final scores again as the README says: it takes the run's threshold, and says so."""
    real_postprocessor, thresholds = run_evaluation.PostProcessor, []

    def postprocessor(*args, **kwargs):
        thresholds.append(kwargs["nms_thresh"])
        return real_postprocessor(*args, **kwargs)

    monkeypatch.setattr(run_evaluation, "PostProcessor", postprocessor)
    argv = base_args(shapes_root, "--name", "n", "--max_iter", "2", "--warm_iter", "1", "--nms_thresh", "0.6")
    assert run(tmp_path, argv) == 0
    capsys.readouterr()
    assert run(tmp_path, ["--trained_model", str(Path("weights") / "n.pth"), "--workers", "0", "--device", "cpu"]) == 0
    assert (f"evaluating as the checkpoint was trained: --dataset custom, --data_root {shapes_root}, --batch_size 2, "
            "--nms_thresh 0.6\n") in capsys.readouterr().out
    assert thresholds == [0.6, 0.6]


def test_an_evaluation_says_how_many_images_the_largest_pre_nms_top_k_left_inexact(trained, tmp_path, monkeypatch,
                                                                                   capsys):
    """An image with more candidates than the largest pre-NMS top-k that keeps fewer than 300 detections from them
    may lack lower-scoring detections (utils/postprocess.py); the evaluation says how many such images it had, in one
    line. With a largest top-k of 1 every one of the 6 test images is one."""
    real_postprocessor = run_evaluation.PostProcessor

    def postprocessor(*args, **kwargs):
        return real_postprocessor(*args, **kwargs, pre_nms_topk=1, max_pre_nms_topk=1)

    monkeypatch.setattr(run_evaluation, "PostProcessor", postprocessor)
    checkpoint = trained / "weights" / CKPT.format("")
    assert run(tmp_path, ["--trained_model", str(checkpoint), "--workers", "0", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("note: 6 of 6 test images had more than 1 (anchor, class) pairs scoring above 0.005 and fewer "
                     "than 300 detections from the best 1: their detections are those, the best of the exact ones, "
                     "and may lack lower-scoring ones") == 1


def test_resume_path_refuses_a_flag_given_that_differs_from_its_run(shapes_root, trained, tmp_path, capsys):
    """The flags given with --resume PATH keep their value: one that differs from the run's is refused as before."""
    checkpoint = trained / "weights" / CKPT.format("")
    assert run(tmp_path, ["--resume", str(checkpoint), "--batch_size", "4", "--workers", "0"]) == EXIT_BAD_INPUT
    assert (f"{checkpoint} was saved by a run with --batch_size 2, this run has 4; resume with the same flags"
            ) in capsys.readouterr().err
    assert not (tmp_path / "weights").exists()


def test_the_assignment_summary_of_a_resumed_run_is_that_of_the_whole_run(shapes_root, tmp_path, monkeypatch):
    """--assign_stats: stopped after iteration 3 and resumed, the run's assign_summary row is the uninterrupted run's
    (the mean over all 8 log intervals, not over the 5 of the last attempt), once."""
    argv = base_args(shapes_root, "--mutual_guide", "--assign_stats")
    (tmp_path / "whole").mkdir()
    (tmp_path / "cut").mkdir()
    assert run(tmp_path / "whole", argv) == 0
    monkeypatch.setattr(_SignalAt, "at", 2)
    monkeypatch.setattr(training_setup, "MultiBoxLoss", _SignalAt)
    assert run(tmp_path / "cut", argv) == EXIT_INTERRUPTED
    monkeypatch.setattr(_SignalAt, "at", -1)
    assert run(tmp_path / "cut", argv + ["--resume"]) == 0
    summaries = [RunLog(tmp_path / name / "run").rows("assign_summary") for name in ("whole", "cut")]
    assert len(summaries[1]) == 1 and summaries[1][0]["log_intervals"] == ITERS
    assert summaries[1] == summaries[0]


def test_a_signal_during_the_final_save_lets_it_finish_then_stops_before_the_evaluation(shapes_root, tmp_path,
                                                                                        monkeypatch, capsys):
    real_save = training_run.save_checkpoint

    def save_after_a_signal(state, path):
        if state["iteration"] == ITERS:
            os.kill(os.getpid(), signal.SIGINT)  # handled before the write below starts
        real_save(state, path)

    monkeypatch.setattr(training_run, "save_checkpoint", save_after_a_signal)
    assert run(tmp_path, base_args(shapes_root)) == EXIT_INTERRUPTED
    checkpoint = Path("weights") / CKPT.format("")
    assert (f"evaluation interrupted; training is complete and saved in {checkpoint}: evaluate it with: python "
            f"main.py --trained_model {checkpoint}") in capsys.readouterr().out
    assert load_checkpoint(tmp_path / checkpoint)["iteration"] == ITERS
    assert not (tmp_path / "eval").exists()


def test_a_second_signal_during_a_save_stops_at_once_with_one_line_keeping_the_last_checkpoint(
        shapes_root, tmp_path, monkeypatch, capsys):
    """SIGINT during iteration 6 (1-based) stops after it, saving it; a second SIGINT while torch.save writes that
    checkpoint (the impatient Ctrl-C) stops at once: the checkpoint of iteration 4 stays, no partial file, and one
    line says so and how to continue (it was a RuntimeError traceback of torch's zip writer and exit code 1)."""
    monkeypatch.setattr(_SignalAt, "at", 5)
    monkeypatch.setattr(training_setup, "MultiBoxLoss", _SignalAt)
    real_save = checkpoint_module.torch.save

    class SignalledFile:
        """The checkpoint's file, where a second SIGINT arrives during the third write."""

        def __init__(self, handle):
            self.handle, self.writes = handle, 0

        def write(self, data):
            self.writes += 1
            if self.writes == 3:
                os.kill(os.getpid(), signal.SIGINT)
            return self.handle.write(data)

        def flush(self):
            self.handle.flush()

    def save(state, handle):
        real_save(state, SignalledFile(handle) if state["iteration"] == 6 else handle)

    monkeypatch.setattr(checkpoint_module.torch, "save", save)
    assert run(tmp_path, base_args(shapes_root)) == EXIT_INTERRUPTED
    checkpoint = Path("weights") / CKPT.format("")
    assert (f"interrupted again: stopped at once, without saving; the checkpoint of iteration 4, {checkpoint}, is "
            "kept; continue with the same command plus --resume (from iteration 4)\n") in capsys.readouterr().out
    assert sorted(path.name for path in (tmp_path / "weights").iterdir()) == [CKPT.format("")]
    assert load_checkpoint(tmp_path / checkpoint)["iteration"] == 4


def test_an_evaluation_that_an_interrupt_skipped_runs_first_on_resume(shapes_root, tmp_path, monkeypatch, capsys):
    """Batch 8: 2 iterations per epoch, --eval_interval 1 evaluates at 2 and 4. SIGINT during iteration 4 saves it
    and stops before its evaluation; --resume evaluates iteration 4 first, then goes on (6: the final one)."""
    argv = base_args(shapes_root, "--batch_size", "8", "--max_iter", "6", "--warm_iter", "1", "--eval_interval", "1")
    monkeypatch.setattr(_SignalAt, "at", 3)
    monkeypatch.setattr(training_setup, "MultiBoxLoss", _SignalAt)
    assert run(tmp_path, argv) == EXIT_INTERRUPTED
    assert "SIGINT received: stopped after iteration 4" in capsys.readouterr().out

    def eval_iterations() -> list[int]:
        with open(tmp_path / "run" / "eval.csv", newline="") as handle:
            return [int(row["iteration"]) for row in csv.DictReader(handle)]

    assert eval_iterations() == [2]
    monkeypatch.setattr(_SignalAt, "at", -1)
    assert run(tmp_path, argv + ["--resume"]) == 0
    assert eval_iterations() == [2, 4, 6]
    assert "CUSTOM test after iteration 4: mAP=" in capsys.readouterr().out  # evaluations during training say when
    assert run(tmp_path, argv + ["--resume"]) == 0  # the run is finished: its evaluation of 4 is not repeated
    assert eval_iterations() == [2, 4, 6]
    out = capsys.readouterr().out
    assert ("resumed from weights/CUSTOM_fssd_resnet18_size128_anchor24.0.pth at iteration 6/6\nthe run was already "
            "complete: it is evaluated again, and this evaluation replaces its final one in the logs\n") in out
    assert "CUSTOM test: mAP=" in out and "CUSTOM test after" not in out


BEST = "CUSTOM_fssd_resnet18_size128_anchor24.0_best.pth"


def scripted_scores(monkeypatch, scores: list[float]) -> list[dict]:
    """Make the evaluations during and at the end of training report ``scores`` as their mAP, in order (the real
    evaluation runs; AP50/AP75 are its own). Returns, per evaluation, the weights it evaluated."""
    real_evaluate, evaluated = training_run.evaluate, []

    def evaluate(model, *args, **kwargs):
        evaluated.append({k: v.clone() for k, v in unwrap_model(model).state_dict().items()})
        metrics = real_evaluate(model, *args, **kwargs)
        return dict(metrics, mAP=scores[len(evaluated) - 1])

    monkeypatch.setattr(training_run, "evaluate", evaluate)
    return evaluated


def eval_rows(run_dir: Path) -> list[tuple[int, float]]:
    return [(row["iteration"], row["mAP"]) for row in RunLog(run_dir).rows("eval")]


@pytest.mark.parametrize("config, best_at, said", [
    ({"mutual_guide": True, "mutual_guide_from": 6}, 4,
     "; it precedes the switch to Mutual Guidance (after iteration 6): its weights were trained with IoU assignment "
     "alone"),
    ({"mutual_guide": True, "mutual_guide_from": 6}, 6,  # iterations 1-6 are IoU's, 7 MG's
     "; it precedes the switch to Mutual Guidance (after iteration 6): its weights were trained with IoU assignment "
     "alone"),
    ({"mutual_guide": True, "mutual_guide_from": 6}, 7, ""),
    ({"mutual_guide": True, "mutual_guide_from": 6}, 8, ""),
    ({"mutual_guide": True, "mutual_guide_from": None}, 4, ""),
    ({"mutual_guide": False, "mutual_guide_from": None}, 4, ""),
])  # fmt: skip
def test_a_switched_runs_best_evaluation_before_the_switch_says_its_weights_are_iou_trained(config, best_at, said,
                                                                                          tmp_path, capsys):
    """The _best.pth of a --mutual_guide --mutual_guide_from run (its name ends _MG_best) may hold weights of an
    evaluation before the switch, trained with IoU assignment alone: comparing it as the MG arm compares two IoU
    models, so the run's last line about it says so (an evaluation after iteration 6 of a switch at 6 is one)."""
    from types import SimpleNamespace

    from utils.distributed import DistributedContext

    checkpoints = training_run.RunCheckpoints(tmp_path / "r_MG.pth", SimpleNamespace(config=config), None,
                                              DistributedContext(), RunLog(None), None)
    checkpoints.keeps_best = True
    checkpoints.best.record({"mAP": 0.5}, best_at)
    checkpoints.log_best()
    assert capsys.readouterr().out == (f"best evaluation: mAP 0.5000 after iteration {best_at}, saved in "
                                       f"{tmp_path / 'r_MG_best.pth'}{said}\n")


def test_the_best_evaluation_is_kept_as_its_own_checkpoint(shapes_root, tmp_path, monkeypatch, capsys):
    """Batch 8: --eval_interval 1 evaluates after iterations 2, 4, 6 and 8 (the final one). The second scores highest:
    <name>_best.pth holds the weights it evaluated, its iteration and scores; --trained_model evaluates it; --resume
    of it is refused with the way forward."""
    argv = base_args(shapes_root, "--batch_size", "8", "--warm_iter", "1", "--eval_interval", "1")
    evaluated = scripted_scores(monkeypatch, [0.2, 0.5, 0.3, 0.4])
    assert run(tmp_path, argv) == 0
    out = capsys.readouterr().out
    assert eval_rows(tmp_path / "run") == [(2, 0.2), (4, 0.5), (6, 0.3), (8, 0.4)]
    best = load_checkpoint(tmp_path / "weights" / BEST)
    assert (best["iteration"], best["max_iter"], best["best_metrics"]["mAP"]) == (4, ITERS, 0.5)
    assert set(best["best_metrics"]) == {"mAP", "AP50", "AP75"} and "optimizer" not in best
    assert best["config"]["run_id"] == load_checkpoint(tmp_path / "weights" / CKPT.format(""))["config"]["run_id"]
    assert best["model"].keys() == evaluated[1].keys()
    assert all(torch.equal(best["model"][key], evaluated[1][key]) for key in evaluated[1])
    assert not all(torch.equal(best["model"][key], evaluated[3][key]) for key in evaluated[3])
    path = Path("weights") / BEST
    assert f"best evaluation so far (mAP 0.5000 after iteration 4): saved {path}\n" in out
    assert f"best evaluation: mAP 0.5000 after iteration 4, saved in {path}\n" in out
    assert "best evaluation so far (mAP 0.4000" not in out

    monkeypatch.undo()
    assert run(tmp_path, ["--trained_model", str(tmp_path / path), "--device", "cpu", "--eval_dir", "again"]) == 0
    summary = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert summary["metrics"]["AP50"] == pytest.approx(best["best_metrics"]["AP50"], abs=1e-12)
    capsys.readouterr()
    assert run(tmp_path, argv + ["--resume", str(tmp_path / path)]) == EXIT_BAD_INPUT
    assert (f"{tmp_path / path} holds the weights of its run's best evaluation (after iteration 4), not a training "
            "state to resume: --resume the run's own checkpoint, or start a new run from these weights with "
            f"--init_from {tmp_path / path}") in capsys.readouterr().err


def test_named_runs_evaluate_into_folders_of_their_own(shapes_root, trained, tmp_path, monkeypatch, capsys):
    """Two runs on one dataset given --name (an IoU and an MG run to compare) wrote their evaluations to one
    eval/CUSTOM, the second's replacing the first's: each writes eval/CUSTOM/<name>/, its --eval_interval evaluation
    and its final one alike, and --trained_model of its checkpoint evaluates there again (of its best checkpoint, in
    <name>_best/). A run without --name keeps eval/CUSTOM."""
    real_evaluate_detections, folders = run_evaluation.evaluate_detections, []

    def evaluate_detections(dataset, detections, out_dir, **kwargs):
        folders.append(out_dir)
        return real_evaluate_detections(dataset, detections, out_dir, **kwargs)

    monkeypatch.setattr(run_evaluation, "evaluate_detections", evaluate_detections)
    for name, assignment in (("iou", []), ("mg", ["--mutual_guide"])):  # 2 iterations per epoch: evaluated at 2, 4
        argv = base_args(shapes_root, "--name", name, "--batch_size", "8", "--max_iter", "4", "--warm_iter", "1",
                         "--eval_interval", "1", *assignment)
        argv[argv.index("--run_dir") + 1] = f"run_{name}"
        assert run(tmp_path, argv) == 0
        assert f"run folder run_{name}, evaluations in {Path('eval', 'CUSTOM', name)}\n" in capsys.readouterr().out
    assert folders == [Path("eval", "CUSTOM", "iou")] * 2 + [Path("eval", "CUSTOM", "mg")] * 2
    for name, mutual_guide in (("iou", False), ("mg", True)):
        summary = json.loads((tmp_path / "eval" / "CUSTOM" / name / "summary.json").read_text())
        assert summary["checkpoint"] == str(Path("weights") / f"{name}.pth")
        assert summary["config"]["mutual_guide"] is mutual_guide
    assert sorted(path.name for path in (tmp_path / "eval" / "CUSTOM").iterdir()) == ["iou", "mg"]

    for checkpoint, folder in (("iou.pth", "iou"), ("iou_best.pth", "iou_best")):
        path = tmp_path / "weights" / checkpoint
        assert run(tmp_path, ["--trained_model", str(path), "--device", "cpu", "--workers", "0"]) == 0
        assert f"on 6 images, results to {Path('eval', 'CUSTOM', folder)}\n" in capsys.readouterr().out
        summary = json.loads((tmp_path / "eval" / "CUSTOM" / folder / "summary.json").read_text())
        assert summary["checkpoint"] == str(path)
    # the run without --name (and --trained_model of its checkpoint, which another test may have run since)
    assert json.loads((trained / "eval" / "CUSTOM" / "summary.json").read_text())["checkpoint"].endswith(
        str(Path("weights") / CKPT.format("")))


@pytest.fixture(scope="module")
def four_shapes_root(tmp_path_factory) -> Path:
    """4 train + 2 test images: with ``--batch_size 2`` an epoch of 2 iterations, as ``shapes_root`` with 8, at a
    quarter of the training and a third of the evaluation."""
    return generate_shapes_dataset(tmp_path_factory.mktemp("four") / "shapes", num_trainval=4, num_test=2)


def test_a_resumed_run_compares_with_its_best_evaluation_and_a_new_run_sets_the_best_aside(
        four_shapes_root, tmp_path, monkeypatch, capsys):
    """SIGINT in iteration 6 stops the run after evaluations at 2 (0.2) and 4 (0.5); resumed, 6 (0.3) and 8 (0.45)
    score lower, so the best checkpoint stays that of 4. A new run of the same name sets it aside and keeps its own
    (a run of 2 iterations: its final evaluation is its best)."""
    argv = base_args(four_shapes_root, "--warm_iter", "1", "--eval_interval", "1")
    scripted_scores(monkeypatch, [0.2, 0.5])
    monkeypatch.setattr(_SignalAt, "at", 5)
    monkeypatch.setattr(training_setup, "MultiBoxLoss", _SignalAt)
    assert run(tmp_path, argv) == EXIT_INTERRUPTED
    assert load_checkpoint(tmp_path / "weights" / BEST)["iteration"] == 4
    monkeypatch.undo()
    scripted_scores(monkeypatch, [0.3, 0.45])
    assert run(tmp_path, argv + ["--resume"]) == 0
    assert eval_rows(tmp_path / "run") == [(2, 0.2), (4, 0.5), (6, 0.3), (8, 0.45)]
    best = load_checkpoint(tmp_path / "weights" / BEST)
    assert (best["iteration"], best["best_metrics"]["mAP"]) == (4, 0.5)
    assert f"best evaluation: mAP 0.5000 after iteration 4, saved in {Path('weights') / BEST}\n" in \
        capsys.readouterr().out

    monkeypatch.undo()
    scripted_scores(monkeypatch, [0.1])
    assert run(tmp_path, argv + ["--max_iter", "2"]) == 0  # one evaluation, the final one
    out = capsys.readouterr().out
    earlier = [p for p in (tmp_path / "weights").iterdir() if p.name.startswith(f"{Path(BEST).stem}.earlier-")]
    assert len(earlier) == 1 and load_checkpoint(earlier[0])["iteration"] == 4
    kept_as = Path("weights") / earlier[0].name
    assert f"an earlier run's best checkpoint was at {Path('weights') / BEST}: kept as {kept_as}" in out
    best = load_checkpoint(tmp_path / "weights" / BEST)
    assert (best["iteration"], best["best_metrics"]["mAP"]) == (2, 0.1)


def test_a_run_resumed_under_another_name_compares_with_its_best_evaluation(four_shapes_root, tmp_path, monkeypatch,
                                                                            capsys):
    """Evaluations at 2 (0.2) and 4 (0.5), SIGINT in iteration 6; resumed with --name renamed (which applies from then
    on), 6 (0.3) and 8 (0.45) score lower. The resumed run looked for its best only beside its new checkpoint, found
    none, took 0.3 for its best so far and ended naming renamed_best.pth (0.45) as the run's best: it goes on
    comparing with the best of iteration 4, where it is, and its checkpoint records where, for a later resume."""
    argv = base_args(four_shapes_root, "--warm_iter", "1", "--eval_interval", "1")
    evaluated = scripted_scores(monkeypatch, [0.2, 0.5])
    monkeypatch.setattr(_SignalAt, "at", 5)
    monkeypatch.setattr(training_setup, "MultiBoxLoss", _SignalAt)
    assert run(tmp_path, argv) == EXIT_INTERRUPTED
    assert len(evaluated) == 2
    monkeypatch.undo()
    evaluated = scripted_scores(monkeypatch, [0.3, 0.45])
    assert run(tmp_path, argv + ["--resume", str(Path("weights") / CKPT.format("")), "--name", "renamed"]) == 0
    assert len(evaluated) == 2 and eval_rows(tmp_path / "run") == [(2, 0.2), (4, 0.5), (6, 0.3), (8, 0.45)]
    out = capsys.readouterr().out
    assert "best evaluation so far" not in out.split("resumed from")[1]
    assert f"best evaluation: mAP 0.5000 after iteration 4, saved in {Path('weights') / BEST}\n" in out
    assert not (tmp_path / "weights" / "renamed_best.pth").exists()
    assert load_checkpoint(tmp_path / "weights" / "renamed.pth")["best_checkpoint"] == str(Path("weights") / BEST)


def test_a_best_checkpoint_that_meets_a_full_disk_is_written_when_the_run_resumes(shapes_root, tmp_path, monkeypatch,
                                                                                  capsys):
    """The checkpoint of iteration 2 is saved, its evaluation's best checkpoint meets a full disk: the run stops before
    logging that evaluation, so --resume evaluates iteration 2 again and writes it."""
    argv = base_args(shapes_root, "--batch_size", "8", "--warm_iter", "1", "--eval_interval", "1", "--max_iter", "4",
                     "--checkpoint_interval", "2")
    real_save = training_run.save_checkpoint

    def no_space_for_the_best(state, path):
        if Path(path).name == BEST:
            raise OSError(errno.ENOSPC, "No space left on device; no checkpoint is there yet", str(path))
        real_save(state, path)

    monkeypatch.setattr(training_run, "save_checkpoint", no_space_for_the_best)
    assert run(tmp_path, argv) == EXIT_REFUSED_BY_SYSTEM
    assert (f"error: {Path('weights') / BEST}: No space left on device; no checkpoint is there yet; free space or fix "
            "the folder, then continue with the same command plus --resume (from iteration 2)\n"
            ) in capsys.readouterr().err
    assert not (tmp_path / "run" / "eval.csv").exists() and not (tmp_path / "weights" / BEST).exists()
    monkeypatch.undo()
    assert run(tmp_path, argv + ["--resume"]) == 0
    rows = eval_rows(tmp_path / "run")
    assert [iteration for iteration, _ in rows] == [2, 4]
    best = load_checkpoint(tmp_path / "weights" / BEST)
    assert best["best_metrics"]["mAP"] == max(score for _, score in rows)
    assert best["iteration"] == next(iteration for iteration, score in rows if score == best["best_metrics"]["mAP"])


class _Terminated(Exception):
    """What SIGTERM's default action (the process ends at once, no word) stands for in a test."""


def test_sigterm_while_the_final_evaluations_best_checkpoint_is_saved_stops_with_one_line(shapes_root, tmp_path,
                                                                                           monkeypatch, capsys):
    """A scheduler's SIGTERM after the final evaluation, while its best checkpoint is written, ended the process at
    once without a word (exit -15, the partial file left): SIGTERM was taken as Ctrl-C during the evaluation alone."""
    argv = base_args(shapes_root, "--batch_size", "8", "--warm_iter", "1", "--eval_interval", "1", "--max_iter", "2")
    real_save = training_run.save_checkpoint

    def terminated_while_saving_the_best(state, path):
        if Path(path).name == BEST:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
        real_save(state, path)

    def default_action(signum, frame):
        raise _Terminated

    monkeypatch.setattr(training_run, "save_checkpoint", terminated_while_saving_the_best)
    previous = signal.signal(signal.SIGTERM, default_action)
    try:
        assert run(tmp_path, argv) == EXIT_INTERRUPTED
        assert signal.getsignal(signal.SIGTERM) is default_action
    finally:
        signal.signal(signal.SIGTERM, previous)
    checkpoint = Path("weights") / CKPT.format("")
    assert (f"interrupted after the final evaluation, before its row and best checkpoint were saved; training is "
            f"complete and saved in {checkpoint}: continue with the same command plus --resume to evaluate it again"
            ) in capsys.readouterr().out
    assert sorted(path.name for path in (tmp_path / "weights").iterdir()) == [CKPT.format("")]
    assert not (tmp_path / "run" / "eval.csv").exists()


def test_no_best_checkpoint_without_evaluations_during_training(shapes_root, trained):
    assert not (trained / "weights" / BEST).exists()


def test_init_from_starts_a_new_run_from_the_checkpoint_weights_and_architecture(shapes_root, trained, tmp_path,
                                                                                 capsys):
    """--init_from alone (no --version/--backbone/--size: the dataset's defaults would be another model) takes the
    checkpoint's architecture and weights; at lr 1e-12 one step leaves the weights where they were. Without
    --no_pretrained too: the ImageNet weights a custom dataset starts from by default are not fetched (offline here).
    --classes in capitals name the same classes (the XML's names are matched ignoring case): the classifier is kept."""
    argv = [arg for arg in base_args(shapes_root, "--max_iter", "1", "--warm_iter", "0", "--lr", "1e-12")
            if arg not in ("--version", "fssd", "--backbone", "resnet18", "--size", SIZE, "--no_pretrained")]
    argv[argv.index("--classes") + 1] = ",".join(SHAPES_CLASSES).upper()
    source = trained / "weights" / CKPT.format("")
    assert run(tmp_path, argv + ["--init_from", str(source)]) == 0
    assert f"model weights from {source} (iteration {ITERS}); fresh optimizer and schedule" in capsys.readouterr().out
    state, start = load_checkpoint(tmp_path / "weights" / CKPT.format("")), load_checkpoint(source)
    assert state["iteration"] == 1
    assert {k: state["config"][k] for k in ("version", "backbone", "size")} == {
        "version": "fssd", "backbone": "resnet18", "size": int(SIZE)}
    weights = [key for key in start["model"] if key.endswith(".weight")]
    assert len(weights) > 20
    for key in weights:
        torch.testing.assert_close(state["model"][key], start["model"][key], rtol=0, atol=1e-9)


def test_init_from_on_some_of_the_checkpoints_classes_keeps_their_classifier(shapes_root, trained, tmp_path, capsys):
    """--init_from a 6-class checkpoint on 2 of its classes (ring listed before circle): every weight comes from the
    checkpoint (at lr 1e-12 one step leaves them there), each class's classification weights moved to its label; they
    started from the head's initialisation, as for classes the checkpoint had never seen."""
    argv = base_args(shapes_root, "--max_iter", "1", "--warm_iter", "0", "--lr", "1e-12", "--skip_unknown_classes")
    argv[argv.index("--classes") + 1] = "ring,circle"
    source = trained / "weights" / CKPT.format("")
    with pytest.warns(DataWarning, match="object of an unknown class skipped"):
        assert run(tmp_path, argv + ["--init_from", str(source)]) == 0
    assert (f"model weights from {source} (iteration {ITERS}); fresh optimizer and schedule; it was trained on 6 "
            "classes (circle, square, triangle, star, ...), this dataset has 2 (ring, circle): kept the classifier "
            "of 2 of 2 classes (from the checkpoint's 6), each moved to its label here; new: none; the rest comes "
            "from the checkpoint") in capsys.readouterr().out
    state, start = load_checkpoint(tmp_path / "weights" / CKPT.format("")), load_checkpoint(source)
    assert state["class_names"] == ["ring", "circle"]
    classifier = sorted(key for key in state["model"] if key.startswith("head.conf."))
    assert len(classifier) == 8 and state["model"]["head.conf.0.weight"].shape[0] == 6 * 2
    assert start["model"]["head.conf.0.weight"].shape[0] == 6 * 6
    for key in classifier:  # anchor a's class c is channel a x C + c
        kept = start["model"][key].reshape(6, 6, *start["model"][key].shape[1:])[:, [SHAPES_CLASSES.index("ring"), 0]]
        torch.testing.assert_close(state["model"][key], kept.reshape(state["model"][key].shape), rtol=0, atol=1e-9)
    learned = [key for key in start["model"] if key.endswith((".weight", ".bias")) and not key.startswith("head.conf.")]
    assert len(learned) > 40  # (BatchNorm's running statistics move in a training step whatever the lr)
    for key in learned:
        torch.testing.assert_close(state["model"][key], start["model"][key], rtol=0, atol=1e-9)
    # evaluated alone, the checkpoint's test split is read as in training (its classes, unknown ones skipped)
    with pytest.warns(DataWarning, match="object of an unknown class skipped"):
        assert run(tmp_path, ["--trained_model", str(tmp_path / "weights" / CKPT.format("")), "--workers", "0",
                              "--device", "cpu"]) == 0
    assert "--skip_unknown_classes" in capsys.readouterr().out


def test_init_from_on_the_same_classes_listed_in_another_order_keeps_each_class_classifier(shapes_root, trained,
                                                                                          tmp_path, capsys):
    """--classes naming the checkpoint's 6 classes in reverse (a VOC-layout set): the same classes, so each keeps the
    classification channels it had, at its new label (a COCO layout is read in the checkpoint's order instead); they
    were thrown away as for a new class list. At lr 1e-12 one step leaves the weights where they were."""
    argv = base_args(shapes_root, "--max_iter", "1", "--warm_iter", "0", "--lr", "1e-12", "--eval_interval", "0")
    argv[argv.index("--classes") + 1] = ",".join(reversed(SHAPES_CLASSES))
    source = trained / "weights" / CKPT.format("")
    assert run(tmp_path, argv + ["--init_from", str(source)]) == 0
    assert (f"model weights from {source} (iteration {ITERS}); fresh optimizer and schedule; it was trained on these "
            "6 classes in another order (circle, square, triangle, star, ...): each class keeps its classification "
            "weights, moved to its label here (ring, cross, star, triangle, ...)") in capsys.readouterr().out
    state, start = load_checkpoint(tmp_path / "weights" / CKPT.format("")), load_checkpoint(source)
    assert state["class_names"] == list(reversed(SHAPES_CLASSES))
    for level in range(4):
        weight = start["model"][f"head.conf.{level}.weight"]
        per_class = weight.reshape(6, len(SHAPES_CLASSES), *weight.shape[1:])  # anchor, class, ...
        torch.testing.assert_close(state["model"][f"head.conf.{level}.weight"],
                                   per_class.flip(1).reshape(weight.shape), rtol=0, atol=1e-9)


def test_a_new_run_says_what_its_weights_start_from(trained, tmp_path):
    """--init_from logged where its weights came from; --pretrained PATH (or torchvision's weights, or none) was not
    named anywhere but in log.txt's config: one line now says what the backbone starts from and that the neck and
    head start from their initialisation."""
    log = (trained / "run" / "log.txt").read_text()
    assert "starting weights: resnet18 backbone, fssd neck and head from their initialisation (--no_pretrained)" in log
    weights = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    args = cli.get_args_parser().parse_args(["--version", "fssd", "--backbone", "resnet18", "--pretrained",
                                             str(weights)])
    read = read_backbone_weights(weights, ResNet18)
    assert training_setup.starting_weights(args, read) == (
        f"starting weights: resnet18 backbone from --pretrained {weights} (120 tensors); fssd neck and head from "
        "their initialisation")
    torch.save({"state_dict": {f"backbone.{key}": value for key, value in torch.load(weights).items()}}, weights)
    assert training_setup.starting_weights(args, read_backbone_weights(weights, ResNet18)) == (
        f"starting weights: resnet18 backbone from --pretrained {weights} (120 tensors, taken from its 'state_dict' "
        "entry, prefix 'backbone.' removed); fssd neck and head from their initialisation")
    args.pretrained = True
    assert training_setup.starting_weights(args, None) == (
        "starting weights: resnet18 backbone from torchvision's ImageNet weights (resnet18-f37072fd.pth); fssd neck "
        "and head from their initialisation")


def test_init_from_alone_trains_on_the_data_the_checkpoint_was_trained_on(shapes_root, trained, tmp_path, capsys):
    """``--init_from W`` without --dataset (to train a run longer, as the README offers) trained on the default
    dataset, VOC: here "VOCdevkit/VOC2007 not found: download it", and with VOC at hand a fine-tuning of the model
    on VOC's 20 classes. Like --trained_model and --resume, it now takes the checkpoint's dataset, --data_root and
    classes, and says so; a --dataset given keeps its own data flags."""
    source = trained / "weights" / CKPT.format("")
    argv = ["--init_from", str(source), "--batch_size", "2", "--max_iter", "1", "--warm_iter", "0", "--workers", "0",
            "--device", "cpu", "--save_folder", "weights", "--run_dir", "run", "--eval_interval", "0", "--name", "more"]
    assert run(tmp_path, argv) == 0
    out = capsys.readouterr().out
    assert (f"starting from {source}'s weights on the data it was trained on: --dataset custom, --data_root "
            f"{shapes_root}, --classes {','.join(SHAPES_CLASSES)}\n") in out
    assert "start afresh" not in out
    state = load_checkpoint(tmp_path / "weights" / "more.pth")
    assert state["class_names"] == list(SHAPES_CLASSES)
    assert (state["config"]["dataset"], state["config"]["data_root"]) == ("custom", str(shapes_root))
    assert run(tmp_path, argv + ["--dataset", "voc", "--data_root", str(tmp_path / "VOCdevkit")]) == EXIT_BAD_INPUT
    assert f"{tmp_path / 'VOCdevkit' / 'VOC2007'} not found" in capsys.readouterr().err


def test_resume_with_classes_other_than_the_checkpoints_says_to_drop_classes_or_start_from_its_weights(
        shapes_root, trained, tmp_path, capsys):
    """"use it with the classes it was trained on" did not say that --resume without --classes takes the
    checkpoint's, nor that --init_from trains its weights on other classes."""
    argv = base_args(shapes_root)
    argv[argv.index("--classes") + 1] = ",".join(reversed(SHAPES_CLASSES))
    source = trained / "weights" / CKPT.format("")
    assert run(tmp_path, argv + ["--resume", str(source)]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err.endswith(
        f"error: {source} was trained on 6 classes (circle, square, triangle, star, ...), but the dataset has 6 "
        "classes (ring, cross, star, triangle, ...); drop --classes: --resume reads a VOC-layout folder with the "
        f"checkpoint's classes; or start a new run from its weights with --init_from {source} to train on these "
        "classes\n")


def test_init_from_takes_the_checkpoints_anchor_size_unless_given_and_trained_model_checks_a_given_one(
        shapes_root, trained, tmp_path, capsys):
    """Another --base_anchor_size fine-tunes the checkpoint's weights (the layers do not depend on it: the same number
    of anchors per location at every size) on the anchors given; --trained_model, which evaluates the weights on the
    anchors they were trained with, refuses one."""
    state = load_checkpoint(trained / "weights" / CKPT.format(""))
    state["config"]["base_anchor_size"] = 32.0  # the head's shapes do not depend on it
    source = tmp_path / "anchor32.pth"
    checkpoint_module.save_checkpoint(state, source)
    argv = [arg for arg in base_args(shapes_root, "--max_iter", "1", "--warm_iter", "0", "--eval_interval", "0")
            if arg not in ("--version", "fssd", "--backbone", "resnet18", "--size", SIZE)]
    assert run(tmp_path, argv + ["--init_from", str(source)]) == 0
    saved = load_checkpoint(tmp_path / "weights" / "CUSTOM_fssd_resnet18_size128_anchor32.0.pth")
    assert saved["config"]["base_anchor_size"] == 32.0
    capsys.readouterr()

    assert run(tmp_path, argv + ["--init_from", str(source), "--base_anchor_size", "24", "--lr", "1e-12"]) == 0
    assert (f"model weights from {source} (iteration {ITERS}), trained with --base_anchor_size 32, here 24 (the "
            "layers are the same; the anchors are this run's); fresh optimizer and schedule") in capsys.readouterr().out
    saved = load_checkpoint(tmp_path / "weights" / CKPT.format(""))
    assert saved["config"]["base_anchor_size"] == 24.0
    for key in [key for key in state["model"] if key.endswith(".weight")]:  # loaded whole (lr 1e-12: not moved)
        torch.testing.assert_close(saved["model"][key], state["model"][key], rtol=0, atol=1e-9)
    evaluate = ["--dataset", "custom", "--data_root", str(shapes_root), "--classes", ",".join(SHAPES_CLASSES),
                "--device", "cpu", "--workers", "0", "--trained_model", str(source)]
    assert run(tmp_path, evaluate + ["--base_anchor_size", "24"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert ("the box offsets it predicts are relative to the anchors it was trained with, so other anchors would "
            "stretch every box (another --size keeps them: their side is in pixels); drop --base_anchor_size, or "
            f"fine-tune it on these anchors with --init_from {source} --base_anchor_size 24\n") in err


def test_init_from_fine_tunes_at_another_size_of_as_many_pyramid_levels_and_refuses_one_of_another_count(
        shapes_root, trained, tmp_path, capsys):
    """A 128-px checkpoint fine-tuned at 192 (both below 512: 4 pyramid levels, the same layers) loads every weight;
    at 512 (5 levels) its layers lack the fifth level's: refused with that reason before the data (here absent) is
    read."""
    source = trained / "weights" / CKPT.format("")
    argv = [arg for arg in base_args(shapes_root, "--max_iter", "1", "--warm_iter", "0", "--lr", "1e-12")
            if arg not in ("--version", "fssd", "--backbone", "resnet18", "--size", SIZE)]
    assert run(tmp_path, argv + ["--init_from", str(source), "--size", "192"]) == 0
    assert (f"model weights from {source} (iteration {ITERS}), trained with --size 128, here 192 (the layers are the "
            "same; the anchors are this run's); fresh optimizer and schedule") in capsys.readouterr().out
    state, start = load_checkpoint(tmp_path / "weights" / "CUSTOM_fssd_resnet18_size192_anchor24.0.pth"), \
        load_checkpoint(source)
    assert state["config"]["size"] == 192
    for key in [key for key in start["model"] if key.endswith(".weight")]:
        torch.testing.assert_close(state["model"][key], start["model"][key], rtol=0, atol=1e-9)

    absent = [str(tmp_path / "absent") if arg == str(shapes_root) else arg for arg in argv]
    assert run(tmp_path, absent + ["--init_from", str(source), "--size", "512"]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err == (
        f"error: {source} was trained with --size 128, whose model has 4 pyramid levels (strides 8 to 64), but "
        "--size 512 builds 5 (strides 8 to 128): the layers of the fifth level would have no weights; fine-tune it "
        "at a --size from 128 to 448 (4 levels: any multiple of 64 below 512), or drop --size\n")


def test_trained_model_evaluates_at_another_size_of_as_many_pyramid_levels_in_a_folder_of_its_own(
        trained, tmp_path, capsys):
    """A 128-px checkpoint evaluated at --size 192 (4 pyramid levels, the same layers): it was refused as trained
    at another size. It runs on 192-px inputs with the anchors laid out for 192, into
    eval/CUSTOM/<checkpoint file name>_size192 (the trained size's eval/CUSTOM kept), whose summary.json records both
    sizes and --eval_results re-scores alike."""
    checkpoint = trained / "weights" / CKPT.format("")
    shutil.copytree(trained / "eval", tmp_path / "eval")
    at_trained_size = (tmp_path / "eval" / "CUSTOM" / "summary.json").read_bytes()
    capsys.readouterr()
    assert run(tmp_path, ["--trained_model", str(checkpoint), "--size", "192", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    folder = Path("eval") / "CUSTOM" / f"{checkpoint.stem}_size192"  # its run had no --name
    assert (f"evaluating {checkpoint} (iteration {ITERS}/{ITERS}) at --size 192, not the --size 128 it was trained at "
            "(the same weights on a 192 x 192 input; the anchors keep their side in pixels) on 6 images, results to "
            f"{folder}\n") in out
    scores = out.split("CUSTOM test: ")[1].splitlines()[0]
    summary = json.loads((tmp_path / folder / "summary.json").read_text())
    assert (summary["input_size"], summary["config"]["size"], summary["num_images"]) == (192, 128, 6)
    assert scores == (f"mAP={summary['metrics']['mAP']:.4f} AP50={summary['metrics']['AP50']:.4f} "
                      f"AP75={summary['metrics']['AP75']:.4f}")
    assert (tmp_path / "eval" / "CUSTOM" / "summary.json").read_bytes() == at_trained_size
    assert json.loads(at_trained_size)["input_size"] == 128  # the training run's final evaluation
    detections = sum(len((tmp_path / folder / f"comp4_det_test_{name}.txt").read_text().splitlines())
                     for name in SHAPES_CLASSES)
    assert detections > 0

    assert run(tmp_path, ["--eval_results", str(folder)]) == 0  # the dataset from its summary.json; the size unused
    assert f"{folder}: {scores}" in capsys.readouterr().out


def test_resume_with_another_schedule_is_refused(shapes_root, trained, capsys):
    capsys.readouterr()
    assert run(trained, base_args(shapes_root, "--resume", "--lr", "0.02")) == 2
    assert "was saved by a run with --lr 0.01, this run has 0.02" in capsys.readouterr().err


class _NaNAt(MultiBoxLoss):
    """MultiBoxLoss whose loss_c is NaN from its 5th call on."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def forward(self, *args, **kwargs):
        loss_l, loss_c = super().forward(*args, **kwargs)
        self.calls += 1
        return loss_l, loss_c * (float("nan") if self.calls > 5 else 1.0)


def test_nan_loss_stops_naming_the_iteration_and_keeps_the_good_checkpoint(shapes_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(training_setup, "MultiBoxLoss", _NaNAt)
    assert run(tmp_path, base_args(shapes_root)) == EXIT_DIVERGED
    checkpoint = tmp_path / "weights" / CKPT.format("")
    # iteration 6 of 8 after a warm-up of 2: lr = 1e-6 + (0.01 - 1e-6) * 0.5 * (1 + cos(pi * 3 / 6)) = 0.005
    error = (f"error: the loss became NaN/inf at iteration 6 (lr 0.005); the checkpoint of iteration 4, "
             f"{Path('weights') / checkpoint.name}, is kept (finite weights). Start again with a lower --lr "
             "(peak 0.01) or a longer --warm_iter (2), or check the data with --check_data\n")
    assert error in capsys.readouterr().err
    assert (tmp_path / "run" / "log.txt").read_text().endswith(" " + error)  # why the run stopped, in its log too
    state = load_checkpoint(checkpoint)
    assert state["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def _loss_raising_at(call: int, error: BaseException) -> type[MultiBoxLoss]:
    """A MultiBoxLoss that raises ``error`` at its ``call``-th call (iteration ``call``)."""

    class RaisingAt(MultiBoxLoss):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.calls = 0

        def forward(self, *args, **kwargs):
            self.calls += 1
            if self.calls == call:
                raise error
            return super().forward(*args, **kwargs)

    return RaisingAt


def test_out_of_memory_mid_run_says_how_to_continue_from_its_checkpoint(shapes_root, tmp_path, monkeypatch, capsys):
    out_of_memory = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.\nSee documentation")
    monkeypatch.setattr(training_setup, "MultiBoxLoss", _loss_raising_at(6, out_of_memory))
    assert run(tmp_path, base_args(shapes_root)) == EXIT_REFUSED_BY_SYSTEM
    error = ("error: out of memory (CUDA out of memory. Tried to allocate 2.00 GiB.); free the memory, then continue "
             "with the same command plus --resume (from iteration 4); or start again with a lower --batch_size or "
             "--size\n")
    assert capsys.readouterr().err.endswith(error)
    assert (tmp_path / "run" / "log.txt").read_text().endswith(" " + error)
    assert load_checkpoint(tmp_path / "weights" / CKPT.format(""))["iteration"] == 4


# PyTorch's SIGCHLD handler raises it wherever the main process is when a worker is killed (here, in the loss)
_WORKER_KILLED = RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. ")


def test_a_worker_killed_mid_run_is_one_line_naming_the_cause_and_how_to_continue(shapes_root, tmp_path, monkeypatch,
                                                                                 capsys):
    """It was PyTorch's traceback, in no log, without a word of the memory, --workers or the checkpoint kept."""
    monkeypatch.setattr(training_setup, "MultiBoxLoss", _loss_raising_at(6, _WORKER_KILLED))
    assert run(tmp_path, base_args(shapes_root, "--workers", "2")) == EXIT_REFUSED_BY_SYSTEM
    error = ("error: a DataLoader worker process was killed (SIGKILL), most often by the system's out-of-memory killer "
             "or a container's memory limit: lower --workers (2 here; 0 loads the data in this process), then "
             "continue with the same command plus --resume (from iteration 4)\n")
    assert capsys.readouterr().err.endswith(error)
    assert (tmp_path / "run" / "log.txt").read_text().endswith(" " + error)
    assert load_checkpoint(tmp_path / "weights" / CKPT.format(""))["iteration"] == 4


def test_a_worker_killed_in_the_final_evaluation_says_how_to_evaluate_the_saved_run(shapes_root, tmp_path,
                                                                                    monkeypatch, capsys):
    def worker_killed(*_):
        raise RuntimeError("DataLoader worker (pid(s) 4242) exited unexpectedly") from RuntimeError(
            "DataLoader worker (pid 4242) is killed by signal: Bus error. It is possible that dataloader's workers are "
            "out of shared memory. Please try to raise your shared memory limit.")

    monkeypatch.setattr(training_run, "evaluate", worker_killed)
    argv = base_args(shapes_root, "--max_iter", "2", "--warm_iter", "1", "--workers", "2")
    assert run(tmp_path, argv) == EXIT_REFUSED_BY_SYSTEM
    checkpoint = Path("weights") / CKPT.format("")
    error = ("error: a DataLoader worker process died of a bus error: the shared memory (/dev/shm) through which the "
             "workers hand over their batches is full; give the container more (docker run --shm-size 8g, or "
             "--ipc=host) or lower --workers (2 here; 0 loads the data in this process); training is complete and "
             f"saved in {checkpoint}, but its evaluation stopped: evaluate it with: python main.py --trained_model "
             f"{checkpoint}\n")
    assert capsys.readouterr().err.endswith(error)
    assert (tmp_path / "run" / "log.txt").read_text().endswith(" " + error)


# gloo's closed connection, as a collective meets it under torchrun when another process was killed
_PEER_KILLED = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer "
                            "[127.0.0.1]:29500")


def test_a_process_killed_mid_run_is_one_line_saying_how_to_continue(shapes_root, tmp_path, monkeypatch, capsys):
    """Under torchrun, another process killed without a word used to leave a gloo traceback on this one; it now says
    what happened and how to go on from the last checkpoint, which is whole."""
    monkeypatch.setattr(training_setup, "MultiBoxLoss", _loss_raising_at(4, _PEER_KILLED))
    argv = base_args(shapes_root, "--max_iter", "6", "--warm_iter", "1", "--checkpoint_interval", "2")
    assert run(tmp_path, argv) == EXIT_REFUSED_BY_SYSTEM
    checkpoint = Path("weights") / CKPT.format("")
    assert capsys.readouterr().err.endswith(
        "stopped: another process has gone (its connection closed): its line says why, or, if it was killed, "
        "torchrun's summary gives its exit code (-9: SIGKILL, which the out-of-memory killer sends); the checkpoint "
        f"of iteration 2, {checkpoint}, is kept; continue with the same command plus --resume (from iteration 2)\n")
    assert load_checkpoint(tmp_path / checkpoint)["iteration"] == 2


def test_out_of_memory_in_the_final_evaluation_gives_the_command_that_evaluates_in_smaller_batches(
        shapes_root, tmp_path, monkeypatch, capsys):
    def out_of_memory(*_):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB.")

    monkeypatch.setattr(training_run, "evaluate", out_of_memory)
    assert run(tmp_path, base_args(shapes_root, "--max_iter", "2", "--warm_iter", "1")) == EXIT_REFUSED_BY_SYSTEM
    checkpoint = Path("weights") / CKPT.format("")
    assert capsys.readouterr().err.endswith(
        f"error: out of memory (CUDA out of memory. Tried to allocate 1.00 GiB.); training is complete and saved in "
        f"{checkpoint}, but its evaluation stopped: evaluate it with fewer images per batch: python main.py "
        f"--trained_model {checkpoint} --batch_size 1\n")
    assert "error: out of memory (CUDA out of memory. Tried to allocate 1.00 GiB.)" in (
        tmp_path / "run" / "log.txt").read_text()
    assert load_checkpoint(tmp_path / checkpoint)["iteration"] == 2


def test_out_of_memory_in_the_final_evaluation_of_batches_of_one_does_not_advise_fewer_images(
        shapes_root, tmp_path, monkeypatch, capsys):
    def out_of_memory(*_):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB.")

    monkeypatch.setattr(training_run, "evaluate", out_of_memory)
    argv = base_args(shapes_root, "--max_iter", "2", "--warm_iter", "1", "--batch_size", "1")
    assert run(tmp_path, argv) == EXIT_REFUSED_BY_SYSTEM
    checkpoint = Path("weights") / CKPT.format("")
    assert capsys.readouterr().err.endswith(
        f"but its evaluation stopped: free the memory, then evaluate it with: python main.py --trained_model "
        f"{checkpoint}\n")


@pytest.mark.parametrize("amp_dtype, precision", [
    (None, ""),
    (torch.bfloat16, ", train in float32 (no --amp)"),
    (torch.float16, ", use --amp bf16 (float16 overflows above 65504) or float32 (no --amp)"),
])
def test_the_divergence_advice_names_the_flags_to_change(amp_dtype, precision):
    args = cli.get_args_parser().parse_args(["--lr", "0.05", "--warm_iter", "100"])
    assert divergence_advice(args, amp_dtype) == (
        f"Start again with a lower --lr (peak 0.05) or a longer --warm_iter (100){precision}, or check the data with "
        "--check_data")


def test_the_divergence_advice_quotes_the_learning_rate_exactly():
    """``:g`` rounded --lr 0.0012345678 to "peak 0.00123457", not the value the run used."""
    args = cli.get_args_parser().parse_args(["--lr", "0.0012345678", "--warm_iter", "100"])
    assert "a lower --lr (peak 0.0012345678) or" in divergence_advice(args, None)


def disk_full_after_the_first_save(monkeypatch) -> list[int]:
    """Make every checkpoint write after the first meet a full disk (ENOSPC inside torch.save). Returns the list that
    records the iteration of each write tried."""
    real_save, saves = torch.save, []

    def save_on_a_disk_that_fills_up(obj, handle):
        saves.append(obj["iteration"])
        if len(saves) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, handle)

    monkeypatch.setattr(checkpoint_module.torch, "save", save_on_a_disk_that_fills_up)
    return saves


def test_a_full_disk_at_a_checkpoint_stops_with_one_line_and_resume_continues(shapes_root, trained, tmp_path,
                                                                              monkeypatch, capsys):
    """The save after iteration 8 meets a full disk: the run stops (exit 1) naming the file and the reason, the
    checkpoint of iteration 4 is kept, and --resume finishes the run as if nothing had happened."""
    saves = disk_full_after_the_first_save(monkeypatch)
    assert run(tmp_path, base_args(shapes_root)) == EXIT_REFUSED_BY_SYSTEM == 1
    monkeypatch.undo()
    path = Path("weights") / CKPT.format("")
    assert saves == [4, 8]
    assert (f"error: {path}: No space left on device; the checkpoint already at {path} is untouched; free space or "
            "fix the folder, then continue with the same command plus --resume (from iteration 4)\n"
            ) in capsys.readouterr().err
    assert load_checkpoint(tmp_path / path)["iteration"] == 4

    assert run(tmp_path, base_args(shapes_root, "--resume")) == 0
    resumed, reference = logged_losses(tmp_path / "run"), logged_losses(trained / "run")
    assert [it for it, _, _ in resumed] == list(range(1, ITERS + 1))
    assert resumed[-1][1:] == pytest.approx(reference[-1][1:], rel=1e-6, abs=1e-7)


def test_a_data_error_whose_save_meets_a_full_disk_says_both_and_resumes_from_the_kept_checkpoint(
        shapes_root, tmp_path, monkeypatch, capsys):
    """Read 11 fails in iteration 6 (checkpoint of 4 saved): the save of the 5 done iterations meets a full disk. The
    one line names the refused file, both fixes and --resume from iteration 4, not main()'s generic "run again"."""
    image_reader_failing_from(11, monkeypatch)
    saves = disk_full_after_the_first_save(monkeypatch)
    assert run(tmp_path, base_args(shapes_root)) == EXIT_REFUSED_BY_SYSTEM
    path = Path("weights") / CKPT.format("")
    assert saves == [4, 5]
    assert (f"error: {path}: No space left on device; the checkpoint already at {path} is untouched; free space or fix "
            "the folder, fix or replace the file (--check_data scans every image), then continue with the same command "
            "plus --resume (from iteration 4)\n") in capsys.readouterr().err
    assert load_checkpoint(tmp_path / path)["iteration"] == 4


def test_a_data_error_with_non_finite_weights_keeps_the_last_checkpoint_and_names_its_iteration(
        shapes_root, tmp_path, monkeypatch, capsys):
    """Read 11 fails in iteration 6 after the checkpoint of 4; the weights are then found not finite: nothing is saved
    and the line names the kept checkpoint's iteration, the one --resume continues from."""
    image_reader_failing_from(11, monkeypatch)
    real_check = training_run.non_finite_weights
    failed = []
    real_read = dataset_module.read_image

    def read(path):
        try:
            return real_read(path)
        except DataError:
            failed.append(path)
            raise

    def poisoned_after_the_data_error(model):
        return ["head.loc.weight"] if failed else real_check(model)

    monkeypatch.setattr(dataset_module, "read_image", read)
    monkeypatch.setattr(training_run, "non_finite_weights", poisoned_after_the_data_error)
    assert run(tmp_path, base_args(shapes_root)) == EXIT_BAD_INPUT
    path = Path("weights") / CKPT.format("")
    assert (f"training stopped by a data error: the weights are not finite, so the checkpoint of iteration 4, {path}, "
            "is kept; fix or replace the file (--check_data scans every image), then continue with the same command "
            "plus --resume (from iteration 4)\n") in capsys.readouterr().out
    assert load_checkpoint(tmp_path / path)["iteration"] == 4


def test_check_data_scans_both_splits(shapes_root, tmp_path, capsys):
    assert run(tmp_path, ["--dataset", "custom", "--data_root", str(shapes_root), "--classes", ",".join(SHAPES_CLASSES),
                          "--check_data", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "custom train: 16 images" in out and "custom test: 6 images" in out
    assert out.splitlines()[-1] == "--check_data found no problem: custom can be trained and evaluated on"


def test_bf16_autocast_run_with_evaluation_every_epoch(shapes_root, tmp_path, capsys):
    """bf16 autocast on CPU, batch 8 (2 iterations per epoch), --eval_interval 1: evaluates at iterations 2 and 3.
    --trained_model alone then evaluates as the run was trained (its dataset, data root and bf16) and prints the
    final evaluation's scores again."""
    argv = base_args(shapes_root, "--amp", "bf16", "--batch_size", "8", "--max_iter", "3", "--warm_iter", "1",
                     "--eval_interval", "1")
    assert run(tmp_path, argv) == 0
    final_scores = capsys.readouterr().out.split("CUSTOM test: ")[-1].splitlines()[0]
    checkpoint = tmp_path / "weights" / CKPT.format("")
    assert run(tmp_path, ["--trained_model", str(checkpoint), "--workers", "0", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"evaluating as the checkpoint was trained: --dataset custom, --data_root {shapes_root}, --amp bf16" in out
    assert out.split("CUSTOM test: ")[-1].splitlines()[0] == final_scores
    state = load_checkpoint(tmp_path / "weights" / CKPT.format(""))
    assert state["iteration"] == 3 and state["config"]["amp"] == "bf16" and state["scaler"] == {}
    assert state["config"]["amp_dtype"] == "bf16"  # what --resume compares (bare --amp would read the same here)
    assert all(math.isfinite(l) and math.isfinite(c) for _, l, c in logged_losses(tmp_path / "run"))
    assert all(v.dtype != torch.bfloat16 for v in state["model"].values())  # weights stay float32
    with open(tmp_path / "run" / "eval.csv", newline="") as handle:
        assert [int(row["iteration"]) for row in csv.DictReader(handle)] == [2, 3]


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")),
                    reason="torch.compile on a CPU needs a C++ compiler")
@pytest.mark.skipif(compiled_criterion_problem(torch.__version__) is not None,
                    reason=f"torch {torch.__version__} miscompiles the criterion: --compile_loss is refused")
def test_compiled_run_follows_the_eager_run(shapes_root, tmp_path):
    """--compile --compile_loss compile the model and the MG criterion (assignment + losses): the first two iterations'
    losses equal the eager run's (later ones drift apart with float rounding, as any two kernel orders do)."""
    eager_dir, compiled_dir = tmp_path / "eager", tmp_path / "compiled"
    for workdir, extra in ((eager_dir, ()), (compiled_dir, ("--compile", "--compile_loss"))):
        workdir.mkdir()
        assert run(workdir, base_args(shapes_root, "--mutual_guide", "--max_iter", "2", "--warm_iter", "1",
                                      *extra)) == 0
    eager, compiled = logged_losses(eager_dir / "run"), logged_losses(compiled_dir / "run")
    assert [row[0] for row in compiled] == [row[0] for row in eager] == [1, 2]
    torch.testing.assert_close(torch.tensor(compiled), torch.tensor(eager), rtol=1e-4, atol=1e-5)
    assert load_checkpoint(compiled_dir / "weights" / CKPT.format("_MG"))["config"]["compile_loss"] is True


def copy_of(shapes_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(shapes_root, root)
    return root


def test_a_fresh_run_keeps_the_earlier_runs_checkpoint_and_logs(shapes_root, trained, tmp_path, capsys):
    (tmp_path / "weights").mkdir()
    earlier = tmp_path / "weights" / CKPT.format("")
    shutil.copy(trained / "weights" / CKPT.format(""), earlier)
    shutil.copytree(trained / "run", tmp_path / "run")
    assert run(tmp_path, base_args(shapes_root, "--max_iter", "2", "--warm_iter", "1")) == 0
    kept = [path for path in (tmp_path / "weights").iterdir() if ".earlier-" in path.name]
    out = capsys.readouterr().out
    assert len(kept) == 1 and f"an earlier run's checkpoint was at weights/{earlier.name}: kept as" in out
    assert load_checkpoint(kept[0])["iteration"] == ITERS and load_checkpoint(earlier)["iteration"] == 2
    earlier_logs = [path for path in (tmp_path / "run").iterdir() if path.is_dir()]
    assert len(earlier_logs) == 1
    assert f"an earlier run's logs were in run: moved to {Path('run') / earlier_logs[0].name}" in out
    assert [it for it, _, _ in logged_losses(tmp_path / "run")] == [1, 2]
    assert logged_losses(earlier_logs[0]) == logged_losses(trained / "run")


def test_resume_on_a_changed_training_set_is_refused(shapes_root, trained, tmp_path, capsys):
    root = copy_of(shapes_root, tmp_path)
    trainval = root / "ImageSets" / "Main" / "trainval.txt"
    trainval.write_text("\n".join(trainval.read_text().split()[:12]) + "\n")
    shutil.copytree(trained / "weights", tmp_path / "weights")
    assert run(tmp_path, base_args(root, "--resume")) == 2
    err = capsys.readouterr().err
    assert "was saved by a run on 16 training images, this run has 12: the training set changed" in err
    # the same images, one object relabelled
    shutil.copy(shapes_root / "ImageSets" / "Main" / "trainval.txt", trainval)
    first = (root / "Annotations" / f"{trainval.read_text().split()[0]}.xml")
    xml = first.read_text()
    name = xml.split("<name>")[1].split("</name>")[0]
    other = next(c for c in SHAPES_CLASSES if c != name)
    first.write_text(xml.replace(f"<name>{name}</name>", f"<name>{other}</name>", 1))
    assert run(tmp_path, base_args(root, "--resume")) == 2
    assert "was saved by a run on other training annotations" in capsys.readouterr().err


@pytest.mark.parametrize("path", [False, True])
def test_resume_on_an_object_of_a_class_the_checkpoint_lacks_names_it_and_the_flag_not_classes(
        path, shapes_root, trained, tmp_path, capsys):
    """An object of a class the run was not trained on, added to a training XML since: bare --resume (the run's
    flags) said "add it to --classes", which the checkpoint's classes then refused; as --resume PATH, it names the
    checkpoint and --skip_unknown_classes, which leaves the object out and so reads the run's training set."""
    root = copy_of(shapes_root, tmp_path)
    first = root / "Annotations" / f"{(root / 'ImageSets' / 'Main' / 'trainval.txt').read_text().split()[0]}.xml"
    xml = first.read_text()
    added = xml[xml.index("<object>"):xml.index("</object>") + len("</object>")]
    name = added.split("<name>")[1].split("</name>")[0]
    first.write_text(xml.replace("</annotation>", added.replace(f"<name>{name}</name>", "<name>hexagon</name>")
                                 + "\n</annotation>"))
    shutil.copytree(trained / "weights", tmp_path / "weights")
    checkpoint = Path("weights") / CKPT.format("")
    resume = ["--resume", str(checkpoint)] if path else ["--resume"]
    assert run(tmp_path, base_args(root, *resume)) == 2
    err = capsys.readouterr().err
    assert (f"{first}: unknown class 'hexagon' (classes: {', '.join(SHAPES_CLASSES)}); {checkpoint} was not trained "
            "on it: pass --skip_unknown_classes to leave such objects out (counted in one warning)") in err
    assert "add it to --classes" not in err
    if not path:  # the advice continues the run: its training set without the object added
        with pytest.warns(DataWarning, match=r"object of an unknown class skipped: 1 \(e.g. 'hexagon' x1\)"):
            assert run(tmp_path, base_args(root, *resume, "--skip_unknown_classes")) == 0
        assert f"resumed from {checkpoint} at iteration {ITERS}/{ITERS}" in capsys.readouterr().out


def test_resume_with_the_classes_in_capitals_continues(shapes_root, trained, tmp_path, capsys):
    """The loaders match --classes to the XML's names ignoring letter case: the same classes, the same training set."""
    shutil.copytree(trained / "weights", tmp_path / "weights")
    argv = base_args(shapes_root, "--resume")
    argv[argv.index("--classes") + 1] = ",".join(SHAPES_CLASSES).upper()
    # a longer run is another schedule: refused for --max_iter, not for the classes
    assert run(tmp_path, argv + ["--max_iter", str(ITERS + 1)]) == 2
    assert (f"was saved by a run of {ITERS} iterations, this run has {ITERS + 1} (--epochs or --max_iter); resume with "
            "the same run length") in capsys.readouterr().err
    assert run(tmp_path, argv) == 0  # the finished run is evaluated again
    assert "the training set changed" not in capsys.readouterr().err


def test_a_checkpoint_missing_an_entry_or_weights_is_one_line_with_resume_and_init_from(
        shapes_root, trained, tmp_path, capsys):
    shutil.copytree(trained / "weights", tmp_path / "weights")
    path = tmp_path / "weights" / CKPT.format("")
    state = load_checkpoint(path)
    del state["optimizer"]
    torch.save(state, path)
    before = folder_contents(tmp_path)
    assert run(tmp_path, base_args(shapes_root, "--resume")) == EXIT_BAD_INPUT
    assert (f"{Path('weights') / path.name} cannot be resumed: it has no 'optimizer' entry (a damaged or edited "
            "file)") in capsys.readouterr().err
    state["optimizer"] = load_checkpoint(trained / "weights" / CKPT.format(""))["optimizer"]
    next(iter(state["optimizer"]["state"].values()))["momentum_buffer"].fill_(float("nan"))
    torch.save(state, path)
    assert run(tmp_path, base_args(shapes_root, "--resume")) == EXIT_BAD_INPUT  # not a divergence at its 1st step
    assert (f"{Path('weights') / path.name} cannot be resumed: its optimizer state holds NaN/inf (momentum_buffer of "
            "backbone.conv1.weight)") in capsys.readouterr().err
    del state["model"]["head.conf.0.bias"]
    torch.save(state, path)
    assert run(tmp_path, base_args(shapes_root, "--name", "fresh", "--init_from", str(path))) == EXIT_BAD_INPUT
    assert 'Missing key(s) in state_dict: "head.conf.0.bias"' in capsys.readouterr().err
    assert folder_contents(tmp_path).keys() == before.keys()


def break_first_test_image(root: Path) -> Path:
    first = (root / "ImageSets" / "Main" / "test.txt").read_text().split()[0]
    image = root / "JPEGImages" / f"{first}.jpg"
    image.write_bytes(b"not an image")
    return image


def test_a_data_error_in_an_evaluation_during_training_saves_the_iterations_done(shapes_root, tmp_path, capsys):
    """Batch 8 of 16 images: 2 iterations an epoch; the evaluation after iteration 2 meets an undecodable test image."""
    image = break_first_test_image(copy_of(shapes_root, tmp_path))
    argv = base_args(tmp_path / "data", "--batch_size", "8", "--max_iter", "3", "--warm_iter", "1",
                     "--eval_interval", "1")
    assert run(tmp_path, argv) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert f"{image}: OpenCV cannot decode the file as an image" in captured.err
    assert "saved weights/CUSTOM_fssd_resnet18_size128_anchor24.0.pth after iteration 2" in captured.out
    assert load_checkpoint(tmp_path / "weights" / CKPT.format(""))["iteration"] == 2


def image_reader_failing_from(call: int, monkeypatch) -> None:
    """Make the dataset's image reader fail (a DataError naming the file) from its ``call``-th call (1-based) on."""
    calls = []
    real_read = dataset_module.read_image

    def read(path):
        calls.append(path)
        if len(calls) >= call:
            raise DataError(f"{path}: cannot be read (the test's broken disk)")
        return real_read(path)

    monkeypatch.setattr(dataset_module, "read_image", read)


@pytest.mark.parametrize("failing_read, saved", [(1, None), (7, 3)], ids=["first batch", "fourth iteration"])
def test_a_data_error_during_training_saves_the_iterations_done_and_resume_continues(
        failing_read, saved, shapes_root, trained, tmp_path, monkeypatch, capsys):
    """Batch 2, no workers: reads 1-2 are iteration 1, so read 7 fails in iteration 4 (3 done) and read 1 in the first,
    where there is nothing to save."""
    image_reader_failing_from(failing_read, monkeypatch)
    assert run(tmp_path, base_args(shapes_root)) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert "(the test's broken disk)" in captured.err
    assert "(the test's broken disk)" in (tmp_path / "run" / "log.txt").read_text()
    checkpoint = tmp_path / "weights" / CKPT.format("")
    if saved is None:
        assert "training stopped by a data error: no checkpoint was saved" in captured.out and not checkpoint.exists()
        return
    assert f"training stopped by a data error: saved weights/{CKPT.format('')} after iteration {saved}" in captured.out
    assert load_checkpoint(checkpoint)["iteration"] == saved
    monkeypatch.undo()
    assert run(tmp_path, base_args(shapes_root, "--resume")) == 0
    resumed, reference = logged_losses(tmp_path / "run"), logged_losses(trained / "run")
    assert [it for it, _, _ in resumed] == list(range(1, ITERS + 1))
    assert [loss for row in resumed for loss in row[1:]] == pytest.approx(
        [loss for row in reference for loss in row[1:]], rel=1e-6, abs=1e-7)


def test_a_data_error_in_the_final_evaluation_says_how_to_evaluate_the_saved_run(shapes_root, tmp_path, capsys):
    image = break_first_test_image(copy_of(shapes_root, tmp_path))
    assert run(tmp_path, base_args(tmp_path / "data", "--max_iter", "2", "--warm_iter", "1")) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert f"{image}: OpenCV cannot decode the file as an image" in captured.err
    assert f"error: {image}: OpenCV cannot decode the file as an image" in (tmp_path / "run" / "log.txt").read_text()
    assert (f"training is complete and saved in weights/{CKPT.format('')}, but its evaluation stopped: fix or replace "
            f"the file, then evaluate it with: python main.py --trained_model weights/{CKPT.format('')}"
            ) in captured.out
    assert load_checkpoint(tmp_path / "weights" / CKPT.format(""))["iteration"] == 2


needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (always full)")


@needs_dev_full
def test_a_full_disk_in_the_final_evaluation_says_how_to_evaluate_the_saved_run(shapes_root, tmp_path, capsys):
    """summary.json on a full disk: the write() itself is refused (an OSError without a file name from Python). The
    summary is written to a temporary file beside it, then renamed: that file is the one on the full disk here."""
    summary = Path("eval") / "CUSTOM" / "summary.json"
    (tmp_path / summary).parent.mkdir(parents=True)
    (tmp_path / summary).with_name(f".summary.json.tmp{os.getpid()}").symlink_to("/dev/full")
    assert run(tmp_path, base_args(shapes_root, "--max_iter", "2", "--warm_iter", "1")) == EXIT_REFUSED_BY_SYSTEM
    assert (f"error: {summary}: No space left on device; training is complete and saved in weights/{CKPT.format('')}, "
            "but its evaluation stopped: free space or fix the folder, then evaluate it with: python main.py "
            f"--trained_model weights/{CKPT.format('')}") in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "weights" / CKPT.format(""))["iteration"] == 2


@needs_dev_full
def test_a_full_disk_under_the_run_log_stops_with_one_line_naming_it(shapes_root, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "log.txt").symlink_to("/dev/full")
    assert run(tmp_path, base_args(shapes_root)) == EXIT_REFUSED_BY_SYSTEM
    assert (f"error: {Path('run') / 'log.txt'}: No space left on device; free space or fix the folder, then run again"
            ) in capsys.readouterr().err
    assert not (tmp_path / "weights").exists()


class OutputReaderGone(io.StringIO):
    """Standard output piped to a program that ended (``| head``, ``| less`` quit): from the line that starts with
    ``broken_at``, every write raises BrokenPipeError, as Python's ``print`` does there."""

    def __init__(self, broken_at: str):
        super().__init__()
        self.broken_at, self.broken = broken_at, False

    def write(self, text: str) -> int:
        self.broken = self.broken or text.startswith(self.broken_at)
        if self.broken:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
        return super().write(text)


def test_output_whose_reader_ended_stops_the_run_with_advice_about_the_pipe_not_the_disk(
        shapes_root, tmp_path, monkeypatch, capsys):
    """It said "free space or fix the folder" and log.txt ended without a word about why the run stopped."""
    monkeypatch.setattr(sys, "stdout", OutputReaderGone(broken_at="iteration 3/4"))  # saved after 2
    argv = base_args(shapes_root, "--max_iter", "4", "--checkpoint_interval", "2")
    assert run(tmp_path, argv) == EXIT_REFUSED_BY_SYSTEM
    error = ("error: <standard output>: Broken pipe; the program reading main.py's output ended (head or less, say) "
             "or its terminal closed: send the output to a file (> train.out 2>&1, or run under nohup), then continue "
             "with the same command plus --resume (from iteration 2)")
    assert capsys.readouterr().err == error + "\n"
    assert (tmp_path / "run" / "log.txt").read_text().endswith(f" {error}\n")
    assert load_checkpoint(tmp_path / "weights" / CKPT.format(""))["iteration"] == 2


def test_a_warm_up_longer_than_max_iter_is_refused_before_the_data_is_read(tmp_path, monkeypatch, capsys):
    """--max_iter 3 with shapes' default --warm_iter 50: refused at once, not after generating 2,500 images."""
    import data.shapes

    def no_generation(*args, **kwargs):
        raise AssertionError("the shapes set was generated before the flags were checked")

    monkeypatch.setattr(data.shapes, "ensure_shapes_dataset", no_generation)
    argv = ["--dataset", "shapes", "--data_root", str(tmp_path / "shapes"), "--max_iter", "3", "--device", "cpu",
            "--save_folder", "weights", "--run_dir", "run", "--eval_dir", "eval"]
    assert run(tmp_path, argv) == EXIT_BAD_INPUT
    assert ("--warm_iter 50 must be shorter than the run (3 iterations); lower --warm_iter or raise --max_iter"
            in capsys.readouterr().err)  # --epochs would change nothing beside --max_iter
    argv += ["--warm_iter", "1", "--mutual_guide", "--mutual_guide_from", "3"]
    assert run(tmp_path, argv) == EXIT_BAD_INPUT
    assert ("--mutual_guide_from 3 is not before the end of the run (3 iterations), so Mutual Guidance would never be "
            "used; lower it or raise --max_iter") in capsys.readouterr().err


def folder_contents(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_fresh_start_that_fails_before_training_changes_no_file(shapes_root, trained, tmp_path, capsys):
    """The earlier run's logs and checkpoint are set aside together, and only when training starts."""
    shutil.copytree(trained / "weights", tmp_path / "weights")
    shutil.copytree(trained / "run", tmp_path / "run")
    before = folder_contents(tmp_path)
    assert run(tmp_path, base_args(shapes_root, "--warm_iter", "20")) == EXIT_BAD_INPUT
    assert "--warm_iter 20 must be shorter than the run (8 iterations)" in capsys.readouterr().err
    assert folder_contents(tmp_path) == before
    assert run(tmp_path, base_args(shapes_root, "--mutual_guide", "--mutual_guide_from", "8")) == EXIT_BAD_INPUT
    assert ("--mutual_guide_from 8 is not before the end of the run (8 iterations), so Mutual Guidance would never be "
            "used") in capsys.readouterr().err
    assert run(tmp_path, base_args(shapes_root, "--version", "pafpn", "--batch_size", "1")) == EXIT_BAD_INPUT
    assert ("--batch_size 1: --version pafpn trains on at least 2 images per process (the BatchNorm of its "
            "global-context branch") in capsys.readouterr().err
    assert folder_contents(tmp_path) == before


def test_resuming_a_finished_run_evaluates_it_again_without_repeating_its_rows(shapes_root, trained, tmp_path,
                                                                               monkeypatch, capsys):
    """The final eval row is replaced only by a new one: an evaluation stopped by Ctrl-C leaves the earlier row."""
    shutil.copytree(trained / "weights", tmp_path / "weights")
    shutil.copytree(trained / "run", tmp_path / "run")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training_run, "evaluate", interrupted)
    assert run(tmp_path, base_args(shapes_root, "--resume")) == EXIT_INTERRUPTED
    assert (tmp_path / "run" / "eval.csv").read_bytes() == (trained / "run" / "eval.csv").read_bytes()
    monkeypatch.undo()
    assert run(tmp_path, base_args(shapes_root, "--resume")) == 0
    assert "resumed from weights/" in capsys.readouterr().out
    assert (tmp_path / "run" / "train.csv").read_bytes() == (trained / "run" / "train.csv").read_bytes()
    with open(tmp_path / "run" / "eval.csv", newline="") as handle:
        assert [row["iteration"] for row in csv.DictReader(handle)] == [str(ITERS)]
    assert not [path for path in (tmp_path / "run").iterdir() if path.is_dir()]


def test_resume_of_a_copy_continues_the_runs_logs_and_keeps_the_checkpoint_at_the_runs_path(shapes_root, trained,
                                                                                            tmp_path, capsys):
    """Logs follow the run (its id in the checkpoint and the run folder), not the file: --resume of a copy continues
    the folder's logs; the checkpoint at the run's path, another file, is set aside before it is overwritten. A
    --resume PATH without the architecture flags continues the checkpoint's architecture (not the dataset's default)."""
    shutil.copytree(trained / "weights", tmp_path / "weights")
    shutil.copytree(trained / "run", tmp_path / "run")
    shutil.copy(trained / "weights" / CKPT.format(""), tmp_path / "copy.pth")
    argv = [arg for arg in base_args(shapes_root, "--resume", "copy.pth")
            if arg not in ("--version", "fssd", "--backbone", "resnet18", "--size", SIZE)]
    assert run(tmp_path, argv) == 0
    out = capsys.readouterr().out
    assert "resumed from copy.pth at iteration 8/8" in out and "an earlier run's logs" not in out
    assert not [path for path in (tmp_path / "run").iterdir() if path.is_dir()]
    assert (tmp_path / "run" / "train.csv").read_bytes() == (trained / "run" / "train.csv").read_bytes()
    with open(tmp_path / "run" / "eval.csv", newline="") as handle:
        assert [row["iteration"] for row in csv.DictReader(handle)] == [str(ITERS)]  # replaced, not repeated
    kept = [path for path in (tmp_path / "weights").iterdir() if ".earlier-" in path.name]
    assert len(kept) == 1 and kept[0].read_bytes() == (trained / "weights" / CKPT.format("")).read_bytes()



def test_resume_of_a_checkpoint_saved_from_another_folder_says_where_the_run_continues(shapes_root, trained, tmp_path,
                                                                                       capsys):
    """--save_folder weights and --run_dir run are relative: resumed from another current folder, the run goes on in
    that folder's weights/ and run/, apart from its own files. A note says so and where to run from instead; run
    from there, it continues in place without the note."""
    shutil.copytree(trained / "weights", tmp_path / "a" / "weights")
    shutil.copytree(trained / "run", tmp_path / "a" / "run")
    (tmp_path / "b").mkdir()
    checkpoint = tmp_path / "a" / "weights" / CKPT.format("")
    resume = ["--resume", str(checkpoint), "--workers", "0", "--device", "cpu"]
    assert run(tmp_path / "b", resume) == 0
    assert (f"note: {checkpoint} was saved by this run in {tmp_path / 'a'}, but its relative folders (--save_folder "
            f"weights, --run_dir run) are taken in the current folder, {tmp_path / 'b'}: it continues there, apart "
            f"from its files; run the command from {tmp_path / 'a'} to continue them\n") in capsys.readouterr().out
    assert (tmp_path / "b" / "weights" / checkpoint.name).is_file()
    assert run(tmp_path / "a", resume) == 0
    assert "note:" not in capsys.readouterr().out
    assert not [path for path in (tmp_path / "a" / "weights").iterdir() if ".earlier-" in path.name]

def test_a_run_resumed_after_another_run_used_its_folder_begins_new_logs(shapes_root, trained, tmp_path, capsys):
    """Run A finished; run B (Mutual Guidance, same --run_dir) set A's logs aside; A resumed must not rewind or
    replace B's rows: B's logs are set aside in turn. A's checkpoint, B's being another file, stays in place."""
    shutil.copytree(trained / "weights", tmp_path / "weights")
    shutil.copytree(trained / "run", tmp_path / "run")
    assert run(tmp_path, base_args(shapes_root, "--mutual_guide", "--max_iter", "2", "--warm_iter", "1")) == 0
    b_eval = (tmp_path / "run" / "eval.csv").read_bytes()
    capsys.readouterr()
    assert run(tmp_path, base_args(shapes_root, "--resume")) == 0
    assert "an earlier run's logs were in run: moved to" in capsys.readouterr().out
    folders = sorted(path for path in (tmp_path / "run").iterdir() if path.is_dir())
    assert len(folders) == 2
    set_aside = {folder: (folder / "eval.csv").read_bytes() for folder in folders}
    assert b_eval in set_aside.values()  # B's evaluation, intact
    assert (trained / "run" / "eval.csv").read_bytes() in set_aside.values()  # A's rows before B started
    with open(tmp_path / "run" / "eval.csv", newline="") as handle:
        assert [row["iteration"] for row in csv.DictReader(handle)] == [str(ITERS)]
    assert not [path.name for path in (tmp_path / "weights").iterdir() if ".earlier-" in path.name]
    assert (tmp_path / "run" / "run_id.txt").read_text().strip() == load_checkpoint(
        tmp_path / "weights" / CKPT.format(""))["config"]["run_id"]


def test_a_checkpoint_from_before_run_ids_continues_its_own_logs_only(shapes_root, trained, tmp_path, capsys):
    """A checkpoint without a run id continues the logs at its run folder unless another run (with an id) has
    written there since; then those are set aside, not rewritten."""
    shutil.copytree(trained / "weights", tmp_path / "weights")
    shutil.copytree(trained / "run", tmp_path / "run")
    path = tmp_path / "weights" / CKPT.format("")
    state = load_checkpoint(path)
    del state["config"]["run_id"]
    checkpoint_module.save_checkpoint(state, path)
    (tmp_path / "run" / "run_id.txt").unlink()
    assert run(tmp_path, base_args(shapes_root, "--resume")) == 0
    assert not [folder for folder in (tmp_path / "run").iterdir() if folder.is_dir()]  # its own logs: continued

    assert run(tmp_path, base_args(shapes_root, "--mutual_guide", "--max_iter", "2", "--warm_iter", "1")) == 0
    other_eval = (tmp_path / "run" / "eval.csv").read_bytes()
    assert run(tmp_path, base_args(shapes_root, "--resume")) == 0
    folders = [folder for folder in (tmp_path / "run").iterdir() if folder.is_dir()]
    assert len(folders) == 2 and other_eval in {(folder / "eval.csv").read_bytes() for folder in folders}
    capsys.readouterr()


def test_a_test_split_that_cannot_be_scored_stops_before_training(shapes_root, tmp_path, capsys):
    root = copy_of(shapes_root, tmp_path)
    test_list = root / "ImageSets" / "Main" / "test.txt"
    test_list.write_text("")
    empty_list = f"{test_list} lists no image id: add the ids of the split's images, one per line"
    assert run(tmp_path, base_args(root)) == EXIT_BAD_INPUT
    assert empty_list in capsys.readouterr().err
    assert not (tmp_path / "weights" / CKPT.format("")).exists()
    check = ["--dataset", "custom", "--data_root", str(root), "--classes", ",".join(SHAPES_CLASSES), "--check_data"]
    assert run(tmp_path, check + ["--workers", "0"]) == EXIT_BAD_INPUT
    assert empty_list in capsys.readouterr().err
    coco = tmp_path / "coco"  # a COCO-layout test json listing no image
    write_coco(coco, "train", coco_json(GOOD_ANNOTATIONS), image_folder="images")
    write_coco(coco, "val", coco_json([]) | {"images": []}, image_folder="images")
    with pytest.warns(DataWarning):  # the train json's boxes clipped or too small
        assert run(tmp_path, ["--dataset", "custom", "--data_root", str(coco), "--check_data", "--workers", "0"]) == (
            EXIT_BAD_INPUT
        )
    assert "error: the test split has no images, so training could not be evaluated" in capsys.readouterr().err


def test_unwritable_output_folders_stop_before_training(shapes_root, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    for flag in ("--save_folder", "--run_dir", "--eval_dir"):
        assert run(tmp_path, base_args(shapes_root) + [flag, "afile/sub"]) == EXIT_BAD_INPUT
        assert f"error: {flag} afile/sub: cannot write there" in capsys.readouterr().err
    assert not list(tmp_path.glob("weights/*.pth"))  # no checkpoint written


@pytest.mark.parametrize("best", ["", "_best"])
def test_a_folder_at_the_checkpoint_path_stops_before_training(shapes_root, tmp_path, capsys, best):
    """A folder named like the run's checkpoint (or best checkpoint) is not an earlier run's checkpoint to set aside:
    the run stops before the data, naming it, and leaves it where it is."""
    folder = tmp_path / "weights" / CKPT.format(best)
    (folder / "notes").mkdir(parents=True)
    assert run(tmp_path, base_args(shapes_root, "--eval_interval", "1")) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert (f"error: weights/{CKPT.format(best)} is a folder, where this run writes its "
            f"{'best ' if best else ''}checkpoint: move it, or give this run another --name (or --save_folder)") in err
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == [CKPT.format(best)]
    assert (folder / "notes").is_dir()


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_a_stop_in_the_final_evaluation_says_how_to_evaluate_the_saved_run(shapes_root, tmp_path, monkeypatch, capsys,
                                                                           stop):
    """Ctrl-C, or SIGTERM (a scheduler's stop), during the final evaluation: exit 130 with the command that evaluates
    the saved run, and SIGTERM's own handler back afterwards."""
    def interrupted(*args, **kwargs):
        if stop == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
        raise KeyboardInterrupt

    monkeypatch.setattr(training_run, "evaluate", interrupted)
    handler = signal.getsignal(signal.SIGTERM)
    assert run(tmp_path, base_args(shapes_root, "--max_iter", "1", "--warm_iter", "0")) == EXIT_INTERRUPTED
    assert (f"evaluation interrupted; training is complete and saved in weights/{CKPT.format('')}: evaluate it with: "
            f"python main.py --trained_model weights/{CKPT.format('')}") in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "weights" / CKPT.format(""))["iteration"] == 1
    assert signal.getsignal(signal.SIGTERM) is handler


def rewrite_annotations(root: Path, split_list: str, edit) -> None:
    """Apply ``edit`` (XML text -> XML text) to the annotation of every image of ``ImageSets/Main/<split_list>``."""
    for image_id in (root / "ImageSets" / "Main" / split_list).read_text().split():
        xml = root / "Annotations" / f"{image_id}.xml"
        xml.write_text(edit(xml.read_text()))


def test_splits_with_nothing_to_learn_or_score_stop_before_training(shapes_root, tmp_path, capsys):
    root = copy_of(shapes_root, tmp_path)
    rewrite_annotations(root, "test.txt",
                        lambda xml: re.sub(r"<difficult>\d</difficult>", "<difficult>1</difficult>", xml))
    assert run(tmp_path, base_args(root)) == EXIT_BAD_INPUT
    assert "error: the test split's 6 images hold no object to score (none, or all marked difficult or iscrowd)" in (
        capsys.readouterr().err
    )
    shutil.rmtree(root)
    root = copy_of(shapes_root, tmp_path)
    rewrite_annotations(root, "trainval.txt", lambda xml: re.sub(r"<object>.*?</object>", "", xml, flags=re.S))
    assert run(tmp_path, base_args(root)) == EXIT_BAD_INPUT
    assert "error: the training split's 16 images hold no object: there is nothing to learn" in capsys.readouterr().err
    assert not list(tmp_path.glob("weights/*.pth"))  # no checkpoint written


def test_evaluating_a_test_split_with_nothing_to_score_stops_with_the_training_runs_error(shapes_root, trained,
                                                                                          tmp_path, capsys):
    """--trained_model and --eval_results on a test split whose objects are all difficult: the error training gives
    (exit 2, before any image is read), not a table of nan and an empty score line with exit 0; a split that scores
    some classes only says which AP is nan and why, as training does."""
    root = copy_of(shapes_root, tmp_path)
    rewrite_annotations(root, "test.txt",
                        lambda xml: re.sub(r"<difficult>\d</difficult>", "<difficult>1</difficult>", xml))
    checkpoint = str(trained / "weights" / CKPT.format(""))
    data = ["--dataset", "custom", "--data_root", str(root), "--workers", "0", "--device", "cpu"]
    capsys.readouterr()
    assert run(tmp_path, [*data, "--trained_model", checkpoint]) == EXIT_BAD_INPUT
    refusal = "error: the test split's 6 images hold no object to score (none, or all marked difficult or iscrowd)"
    captured = capsys.readouterr()
    assert refusal in captured.err and "Evaluating" not in captured.err + captured.out
    results = shutil.copytree(trained / "eval" / "CUSTOM", tmp_path / "results")
    assert run(tmp_path, [*data, "--classes", ",".join(SHAPES_CLASSES), "--eval_results", str(results)]) == (
        EXIT_BAD_INPUT
    )
    assert refusal in capsys.readouterr().err

    first = SHAPES_CLASSES[0]  # every object of the first class scored, the others difficult
    rewrite_annotations(root, "test.txt", lambda xml: re.sub(
        r"(<name>(\w+)</name>.*?<difficult>)1(</difficult>)",
        lambda m: m[1] + ("0" if m[2] == first else "1") + m[3], xml, flags=re.S))
    assert run(tmp_path, [*data, "--trained_model", checkpoint]) == 0
    assert (f"warning: the test split holds no object to score of the classes {list(SHAPES_CLASSES[1:])} (none, or all "
            "marked difficult or iscrowd): their AP is undefined (nan)") in capsys.readouterr().out


def test_a_class_without_training_objects_is_warned_about(shapes_root, tmp_path, capsys):
    argv = base_args(shapes_root, "--max_iter", "1", "--warm_iter", "0")
    argv[argv.index("--classes") + 1] += ",hexagon"
    assert run(tmp_path, argv) == 0
    assert "warning: no training image holds an object of the classes ['hexagon']: the model cannot learn them" in (
        capsys.readouterr().out
    )


def test_a_named_run_has_its_own_checkpoint_and_logs(shapes_root, trained, tmp_path, capsys):
    """--name keeps several experiments of one architecture (seeds, learning rates) apart: none sets another aside."""
    argv = [a for a in base_args(shapes_root, "--max_iter", "2", "--warm_iter", "1") if a not in ("--run_dir", "run")]
    assert run(tmp_path, [*argv, "--name", "fssd_seed1.pth", "--seed", "1"]) == 0
    assert run(tmp_path, [*argv, "--name", "fssd_seed2", "--seed", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == ["fssd_seed1.pth", "fssd_seed2.pth"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["fssd_seed1", "fssd_seed2"]
    assert load_checkpoint(tmp_path / "weights" / "fssd_seed1.pth")["config"]["seed"] == 1
    assert "fssd_seed1" in (tmp_path / "runs" / "fssd_seed1" / "log.txt").read_text()
    capsys.readouterr()
    assert run(tmp_path, [*argv, "--name", "fssd_seed1", "--seed", "1", "--resume"]) == 0  # the named run's file
    assert "resumed" in capsys.readouterr().out.lower()


def test_a_run_of_a_checkpoint_another_run_is_writing_stops_before_touching_anything(
        shapes_root, trained, tmp_path, capsys):
    """Two runs started with the same flags (two GPUs, say) would set each other's files aside: the second stops."""
    shutil.copytree(trained / "weights", tmp_path / "weights")
    shutil.copytree(trained / "run", tmp_path / "run")
    before = folder_contents(tmp_path)
    with exclusive_run(tmp_path / "weights" / CKPT.format("")):  # the first run, still training
        assert run(tmp_path, base_args(shapes_root)) == EXIT_BAD_INPUT
    assert (f"error: {Path('weights') / CKPT.format('')} is the checkpoint of a run still going on (process "
            f"{os.getpid()}): give this run another --name") in capsys.readouterr().err
    assert folder_contents(tmp_path) == before
    # following the advice half-way, another --save_folder but the same log folder, would mix the two runs' logs
    with exclusive_run(tmp_path / "weights" / CKPT.format("")), exclusive_run(tmp_path / "run"):
        assert run(tmp_path, base_args(shapes_root, "--save_folder", "weights2")) == EXIT_BAD_INPUT
    assert (f"error: run is the log folder of a run still going on (process {os.getpid()}): give this run another "
            "--run_dir (or --name)") in capsys.readouterr().err
    assert folder_contents(tmp_path) == before


def test_a_run_whose_best_checkpoint_is_the_checkpoint_of_a_running_run_stops_before_touching_it(
        shapes_root, tmp_path, capsys):
    """--name foo keeps its best evaluation in weights/foo_best.pth, the checkpoint of a run named foo_best: while that
    run trains, a run named foo set that file aside at its start, then replaced it with its best checkpoint."""
    (tmp_path / "weights").mkdir()
    other = tmp_path / "weights" / "foo_best.pth"
    other.write_bytes(b"the checkpoint of the run named foo_best")
    argv = base_args(shapes_root, "--name", "foo", "--eval_interval", "1", "--max_iter", "2", "--warm_iter", "1")
    with exclusive_run(other):  # that run, still training
        assert run(tmp_path, argv) == EXIT_BAD_INPUT
    assert (f"error: {Path('weights') / 'foo_best.pth'} is a checkpoint of a run still going on (process "
            f"{os.getpid()}): this run would keep its best evaluation there; give this run another --name (or "
            "--save_folder), or wait for that run to end") in capsys.readouterr().err
    assert [path.name for path in (tmp_path / "weights").iterdir()] == ["foo_best.pth"]
    assert other.read_bytes() == b"the checkpoint of the run named foo_best"


def test_epochs_set_the_run_length_when_max_iter_is_not_given(shapes_root, tmp_path):
    """16 training images in batches of 8: --epochs 2 is 4 iterations, logged as epochs 0, 0, 1, 1."""
    argv = base_args(shapes_root, "--batch_size", "8", "--warm_iter", "1", "--epochs", "2")
    del argv[argv.index("--max_iter"):argv.index("--max_iter") + 2]
    assert run(tmp_path, argv) == 0
    state = load_checkpoint(tmp_path / "weights" / CKPT.format(""))
    assert (state["iteration"], state["max_iter"]) == (4, 4)
    with open(tmp_path / "run" / "train.csv", newline="") as handle:
        assert [(int(row["iteration"]), int(row["epoch"])) for row in csv.DictReader(handle)] == [
            (1, 0), (2, 0), (3, 1), (4, 1)]
    # the same length given as --max_iter resumes (the finished run is evaluated again); another is refused
    assert run(tmp_path, argv[:argv.index("--epochs")] + ["--max_iter", "4", "--resume"]) == 0
    assert run(tmp_path, argv[:argv.index("--epochs")] + ["--epochs", "3", "--resume"]) == EXIT_BAD_INPUT


def test_relative_data_paths_are_found_again_from_another_folder(shapes_root, tmp_path, capsys):
    """A run given --data_root and a --classes file relative to its folder: --trained_model and --eval_results, run
    from another folder, still find the data (the checkpoint and summary.json hold the paths as absolute ones)."""
    workdir, elsewhere = tmp_path / "work", tmp_path / "elsewhere" / "deeper"
    workdir.mkdir()
    elsewhere.mkdir(parents=True)
    (workdir / "classes.txt").write_text("\n".join(SHAPES_CLASSES) + "\n")
    argv = base_args(Path(os.path.relpath(shapes_root, workdir)), "--max_iter", "1", "--warm_iter", "0")
    argv[argv.index("--classes") + 1] = "classes.txt"
    assert run(workdir, argv + ["--eval_dir", str(workdir / "eval")]) == 0
    final_scores = capsys.readouterr().out.split("CUSTOM test: ")[-1].splitlines()[0]
    checkpoint = workdir / "weights" / CKPT.format("")
    assert run(elsewhere, ["--trained_model", str(checkpoint), "--workers", "0", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"evaluating as the checkpoint was trained: --dataset custom, --data_root {shapes_root}" in out
    assert out.split("CUSTOM test: ")[-1].splitlines()[0] == final_scores
    assert run(elsewhere, ["--eval_results", str(workdir / "eval")]) == 0
    out = capsys.readouterr().out
    assert f"--data_root {shapes_root}, --classes {workdir / 'classes.txt'}" in out
    assert out.splitlines()[-1].endswith(final_scores)


def test_an_eval_interval_as_long_as_the_run_is_named(shapes_root, tmp_path, capsys):
    # was accepted silently: the run only evaluated at its end, and its best checkpoint was the final model
    assert run(tmp_path, base_args(shapes_root, "--max_iter", "1", "--warm_iter", "0", "--eval_interval", "1")) == 0
    assert ("warning: --eval_interval 1 epoch (8 iterations) is not shorter than the run (1 iteration): only the "
            "final evaluation runs, and the best checkpoint is the final model; lower --eval_interval to evaluate "
            "during training") in capsys.readouterr().out
