import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

import main as cli
from data import DataWarning
from data.errors import CorruptImageWarning, DataError
from data.loader import default_workers
from tests.test_checkpoint_class_names import evaluate_one_dog_found
from utils import training_run
from utils.checkpoint import RUN_KEYS, CheckpointError, check_same_run
from utils.distributed import unwrap_model
from utils.run_evaluation import eval_folder, evaluated_run_name
from utils.run_exit import (
    EXIT_BAD_INPUT,
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    EXIT_REFUSED_BY_SYSTEM,
    how_to_continue,
    log_error,
    stopped_run_advice,
)
from utils.run_flags import (
    amp_dtype_for,
    check_flag_combinations,
    check_flag_values,
    check_run_length,
    fill_dataset_defaults,
    take_evaluation_settings_from_checkpoint,
    take_run_from_checkpoint,
)
from models.backbones import ResNet18
from utils.training_setup import check_training_flags

ROOT = Path(__file__).resolve().parents[1]


def parse(*argv: str):
    return cli.get_args_parser().parse_args(list(argv))


def test_compile_loss_is_refused_before_any_file_is_read_on_a_torch_that_miscompiles_the_criterion(monkeypatch):
    """torch 2.5.1 and 2.6.0 failed to build the compiled criterion's kernel on the CPU (a C++ error after the data
    was read), 2.8.0 and 2.9.1 gave wrong IoU-assignment losses without a word: --compile_loss names the fix."""
    monkeypatch.setattr(torch, "__version__", "2.9.1+cu128")
    with pytest.raises(ValueError, match=r"^--compile_loss: torch 2\.9\.1\+cu128 miscompiles the criterion .*; "
                                         r"compiling it needs torch 2\.14 or newer: .* -m pip install -U "
                                         r"'torch>=2\.14,<2\.15' .*, or train without --compile_loss"):
        check_flag_values(parse("--compile_loss"))
    check_flag_values(parse("--compile"))  # the model alone is compiled as before
    monkeypatch.setattr(torch, "__version__", "2.14.1+cu130")
    check_flag_values(parse("--compile_loss"))


def test_help_explains_every_flag():
    result = subprocess.run([sys.executable, "main.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    flags = ["--version", "--backbone", "--dataset", "--size", "--mutual_guide", "--trained_model",
             "--base_anchor_size", "--nms_thresh", "--batch_size", "--lr", "--warm_iter", "--save_folder", "--epochs",
             "--device", "--workers", "--seed", "--amp", "--resume", "--eval_interval", "--data_root", "--pretrained",
             "--no_pretrained", "--classes", "--check_data", "--eval_results", "--assign_stats", "--log_interval",
             "--checkpoint_interval", "--max_iter", "--sync_bn", "--run_dir", "--compile", "--compile_loss",
             "--cuda_graph", "--expand_prob", "--init_from", "--name"]
    for flag in flags:
        assert flag in result.stdout, flag


def test_seed_defaults_of_the_original():
    args = parse()
    fill_dataset_defaults(args)
    assert (args.base_anchor_size, args.nms_thresh, args.batch_size, args.lr, args.save_folder) == (
        24.0, 0.5, 32, 1e-2, "weights/")
    assert args.mutual_guide is False and args.dataset == "voc"


@pytest.mark.parametrize("name", ["VOC", "Coco", "SHAPES", "custom"])
def test_dataset_names_are_case_insensitive(name):
    assert parse("--dataset", name).dataset == name.lower()


def test_dataset_defaults_fill_only_missing_flags():
    voc = parse("--dataset", "VOC")
    fill_dataset_defaults(voc)
    assert (voc.version, voc.backbone, voc.size, voc.epochs, voc.warm_iter, voc.pretrained) == (
        "pafpn", "vgg16", 320, 250, 500, True)
    assert voc.expand_prob == 0.6  # the paper's zoom-out probability
    coco = parse("--dataset", "coco", "--size", "512", "--no_pretrained")
    fill_dataset_defaults(coco)
    assert (coco.epochs, coco.size, coco.pretrained) == (140, 512, False)
    shapes = parse("--dataset", "shapes", "--pretrained", "r18.pth")
    fill_dataset_defaults(shapes)
    assert (shapes.backbone, shapes.pretrained, shapes.lr, shapes.epochs) == ("resnet18", "r18.pth", 6e-2, 12)
    assert shapes.expand_prob == 0.0
    explicit = parse("--dataset", "shapes", "--lr", "0.005")
    fill_dataset_defaults(explicit)
    assert explicit.lr == 0.005


SAVED_RUN = dict(version="fssd", backbone="resnet18", size=128, base_anchor_size=24.0, dataset="custom",
                 data_root="/data/x", classes="a,b,c", skip_unknown_classes=True, mutual_guide=True,
                 mutual_guide_from=10, batch_size=4, lr=0.02, warm_iter=5, seed=7, expand_prob=0.3, amp="bf16",
                 name="mine", save_folder="w/", run_dir=None, eval_interval=2, checkpoint_interval=10, log_interval=5,
                 assign_stats=False, epochs=250, max_iter=40, workers=3, device="cuda")


def test_resume_path_takes_the_run_flags_not_given_from_the_checkpoint():
    args = parse("--resume", "r.pth", "--seed", "0", "--warm_iter", "0", "--workers", "0")
    taken = take_run_from_checkpoint(args, SAVED_RUN)
    fill_dataset_defaults(args)
    assert (args.dataset, args.data_root, args.classes, args.skip_unknown_classes, args.mutual_guide,
            args.mutual_guide_from, args.batch_size, args.lr, args.expand_prob, args.amp, args.max_iter) == (
        "custom", "/data/x", "a,b,c", True, True, 10, 4, 0.02, 0.3, "bf16", 40)
    assert (args.name, args.save_folder, args.run_dir, args.eval_interval, args.checkpoint_interval,
            args.log_interval, args.assign_stats) == ("mine", "w/", None, 2, 10, 5, False)
    assert (args.seed, args.warm_iter, args.workers, args.device, args.epochs) == (0, 0, 0, "auto", 250)  # given
    assert taken.startswith("--version fssd, --backbone resnet18, --size 128, --base_anchor_size 24.0, --dataset "
                            "custom, --data_root /data/x, --classes a,b,c, --skip_unknown_classes, --mutual_guide, ")
    assert "--seed" not in taken and "--warm_iter" not in taken and taken.endswith("--max_iter 40")


def test_resume_path_takes_the_length_as_saved_and_no_data_flags_for_another_dataset():
    by_epochs = parse("--resume", "r.pth", "--dataset", "voc")
    take_run_from_checkpoint(by_epochs, SAVED_RUN | {"max_iter": None})
    assert (by_epochs.max_iter, by_epochs.epochs, by_epochs.dataset) == (None, 250, "voc")
    assert (by_epochs.data_root, by_epochs.classes, by_epochs.skip_unknown_classes) == (None, None, False)
    assert by_epochs.batch_size == 4  # refused later, with the other dataset, by check_same_run
    given_length = parse("--resume", "r.pth", "--epochs", "3")
    take_run_from_checkpoint(given_length, SAVED_RUN)
    assert (given_length.max_iter, given_length.epochs) == (None, 3)


def test_resume_path_takes_the_evaluation_folder_and_nms_threshold_of_its_run():
    """A resumed run's evaluations go on where they were written and with the same NMS: --eval_dir and --nms_thresh
    were left at their defaults, so a run trained with --nms_thresh 0.6 evaluated at 0.5 once resumed. Given, they
    keep their value, as --name and the intervals do (they change no training step: nothing to refuse)."""
    saved = SAVED_RUN | {"eval_dir": "e/mine", "nms_thresh": 0.6}
    args = parse("--resume", "r.pth")
    taken = take_run_from_checkpoint(args, saved)
    fill_dataset_defaults(args)
    assert (args.eval_dir, args.nms_thresh) == ("e/mine", 0.6)
    assert ", --eval_dir e/mine, --nms_thresh 0.6, " in taken
    for argv in (["--eval_dir", "other", "--nms_thresh", "0.45"], ["--eval_dir", "e/mine", "--nms_thresh", "0.5"]):
        given = parse("--resume", "r.pth", *argv)  # 0.5, the default, given: given all the same
        taken = take_run_from_checkpoint(given, saved)
        fill_dataset_defaults(given)
        assert (given.eval_dir, given.nms_thresh) == (argv[1], float(argv[3]))
        assert "--eval_dir" not in taken and "--nms_thresh" not in taken
    unset = parse("--resume", "r.pth")
    take_run_from_checkpoint(unset, SAVED_RUN | {"eval_dir": None})  # a run without --eval_dir: eval/<DATASET>...
    fill_dataset_defaults(unset)
    assert (unset.eval_dir, unset.nms_thresh) == (None, 0.5)


def test_resume_continues_batchnorm_synchronised_as_its_run_did():
    """A torchrun run of --sync_bn resumed by `--resume PATH` alone went on with per-process BatchNorm statistics, and
    a run resumed with --sync_bn added or dropped mixed both: another arithmetic than the run's, silently. --resume
    PATH takes --sync_bn from the checkpoint, and adding it to a run trained without is refused, as --mutual_guide."""
    args = parse("--resume", "r.pth")
    taken = take_run_from_checkpoint(args, SAVED_RUN | {"sync_bn": True})
    assert args.sync_bn is True and ", --sync_bn" in taken
    unsynchronised = parse("--resume", "r.pth")
    assert "--sync_bn" not in take_run_from_checkpoint(unsynchronised, SAVED_RUN | {"sync_bn": False})
    assert unsynchronised.sync_bn is False
    saved = {key: SAVED_RUN.get(key) for key in RUN_KEYS} | {"sync_bn": False, "world_size": 2}
    with pytest.raises(CheckpointError, match=r"^r\.pth was saved by a run without --sync_bn, this run has --sync_bn; "
                                              r"resume with the same flags"):
        check_same_run("r.pth", saved, saved | {"sync_bn": True})


@pytest.mark.parametrize("key, value", [("batch_size", "4"), ("mutual_guide", 1), ("amp", "fp8"), ("dataset", "kitti"),
                                        ("nms_thresh", "0.6"), ("eval_dir", 3)])
def test_resume_path_refuses_a_run_flag_main_never_writes(key, value):
    with pytest.raises(CheckpointError, match=rf"r\.pth records --{key} {value!r}, which main\.py never writes"):
        take_run_from_checkpoint(parse("--resume", "r.pth"), SAVED_RUN | {key: value})


@pytest.mark.parametrize("key, value, problem", [
    ("nms_thresh", 2.0, "--nms_thresh 2.0 must be an IoU in (0, 1]"),
    ("nms_thresh", float("nan"), "--nms_thresh nan must be an IoU in (0, 1]"),
    ("nms_thresh", 0, "--nms_thresh 0 must be an IoU in (0, 1]"),
    ("lr", -0.01, "--lr must be a number > 0 and at most 3.4e+38 (float32's largest), got -0.01"),
    ("batch_size", 0, "--batch_size must be >= 1, got 0"),
    ("expand_prob", 1.5, "--expand_prob 1.5 must be a probability in [0, 1]"),
    ("seed", -1, "--seed must be an integer from 0 to 4294967295, got -1"),
    ("name", "../elsewhere", "--name '../elsewhere': use 1-200 ASCII letters (a-z, A-Z), digits and . _ - + = @, "
                             "starting with a letter or digit (it names a file and a folder), e.g. --name "
                             "voc_pafpn_mg_seed1"),
    ("mutual_guide", False, "--mutual_guide_from 10 needs --mutual_guide and a value >= 0"),
])
def test_resume_path_refuses_a_run_flag_value_out_of_its_range(key, value, problem):
    """A value main.py would refuse given as a flag was taken from the checkpoint unchecked, then refused as if given
    ("error: --nms_thresh 2.0 must be an IoU in (0, 1]" for a run given no --nms_thresh): it names the file now, as
    --trained_model does."""
    with pytest.raises(CheckpointError) as error:
        take_run_from_checkpoint(parse("--resume", "r.pth"), SAVED_RUN | {key: value})
    flag = "mutual_guide_from" if key == "mutual_guide" else key
    assert str(error.value).startswith(f"r.pth records --{flag} ")
    assert str(error.value).endswith(f", which main.py never writes ({problem}); it was edited or damaged: give "
                                     f"--{flag} to resume with, or use a checkpoint as main.py saved it")
    given = {"nms_thresh": "0.4", "lr": "0.01", "batch_size": "2", "expand_prob": "0.5", "seed": "3", "name": "mine",
             "mutual_guide": None}[key]
    if given is not None:  # the flag given replaces the file's value
        args = parse("--resume", "r.pth", f"--{key}", given)
        take_run_from_checkpoint(args, SAVED_RUN | {key: value})
        assert str(getattr(args, key)) == given
    # given beside the file's values, a flag out of range with them is the flag's error, not the file's
    with pytest.raises(ValueError, match=r"^--base_anchor_size 200: the smallest anchors' side") as error:
        take_run_from_checkpoint(parse("--resume", "r.pth", "--base_anchor_size", "200"), SAVED_RUN)
    assert not isinstance(error.value, CheckpointError)


@pytest.mark.parametrize("argv, run_name, folder", [
    (["--dataset", "voc"], None, "eval/VOC"),  # the runs without --name: the original code's folders
    (["--dataset", "coco"], None, "eval/COCO"),
    (["--dataset", "custom"], "pets", "eval/CUSTOM/pets"),
    (["--dataset", "voc", "--eval_dir", "mine"], "pets", "mine"),  # given: it wins
])
def test_evaluation_folder_follows_the_run_name(argv, run_name, folder):
    assert eval_folder(parse(*argv), run_name) == Path(folder)


def test_trained_model_evaluates_under_the_name_of_the_checkpoints_run():
    assert evaluated_run_name({"config": {"name": None}}, "w.pth") is None
    assert evaluated_run_name({"config": {}}, "w.pth") is None  # saved before --name
    assert evaluated_run_name({"config": {"name": "pets"}}, "w.pth") == "pets"
    assert evaluated_run_name({"config": {"name": "pets"}, "best_metrics": {"mAP": 0.5}}, "w.pth") == "pets_best"
    # at another --size than the trained one: a folder of its own, the trained size's evaluation kept
    at_320 = {"name": "pets", "size": 320}
    assert evaluated_run_name({"config": at_320}, "w.pth", 448) == "pets_size448"
    assert evaluated_run_name({"config": at_320, "best_metrics": {"mAP": 0.5}}, "w.pth", 448) == "pets_best_size448"
    assert evaluated_run_name({"config": at_320}, "w.pth", 320) == "pets"
    # a run without --name at another size: named after the checkpoint file, so two such checkpoints (an IoU and an
    # MG run's, say) keep their evaluations apart, and none takes the folder of a run named "size384"
    unnamed = {"config": {"name": None, "size": 320}}
    assert evaluated_run_name(unnamed, "weights/VOC_pafpn_vgg16_size320_anchor24.0.pth", 384) == \
        "VOC_pafpn_vgg16_size320_anchor24.0_size384"
    assert evaluated_run_name(unnamed, "weights/VOC_pafpn_vgg16_size320_anchor24.0_MG.pth", 384) == \
        "VOC_pafpn_vgg16_size320_anchor24.0_MG_size384"
    assert evaluated_run_name(unnamed | {"best_metrics": {"mAP": 0.5}}, "VOC_fssd_vgg16_size320_anchor24.0_best.pth",
                              384) == "VOC_fssd_vgg16_size320_anchor24.0_best_size384"
    assert evaluated_run_name(unnamed, "w.pth", 320) is None  # at the trained size: eval/<DATASET>, as trained
    for edited in ("../elsewhere", "", 3):  # would write outside eval/<DATASET>/, or is not a name
        with pytest.raises(CheckpointError, match=rf"^w\.pth records --name {edited!r}, which main\.py never writes; "
                                                  r"it was edited or damaged: give --eval_dir"):
            evaluated_run_name({"config": {"name": edited}}, "w.pth")


def test_trained_model_leaves_the_architecture_to_the_checkpoint():
    args = parse("--trained_model", "w.pth")
    fill_dataset_defaults(args)
    assert (args.version, args.backbone, args.size) == (None, None, None)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--size", "300"], "--size 300 is not a multiple of 64 from 128; use e.g. 320 or 512"),
        (["--size", "64"], "--size 64 is not a multiple of 64 from 128; use e.g. 320 or 512"),
        (["--size", "0"], "--size 0 is not a multiple of 64 from 128; use e.g. 320 or 512"),
        (["--size", "-64"], "--size -64 is not a multiple of 64 from 128; use e.g. 320 or 512"),
        (["--dataset", "custom"], "--dataset custom needs --data_root"),
        (["--batch_size", "0"], "--batch_size must be >= 1"),
        (["--init_from", "a.pth", "--resume"], "--init_from starts a new run and --resume continues one"),
        (["--mutual_guide_from", "100"], "--mutual_guide_from 100 needs --mutual_guide"),
        (["--dataset", "shapes", "--device", "cpu", "--cuda_graph"], "--cuda_graph needs a CUDA device"),
        (["--expand_prob", "1.5"], "--expand_prob 1.5 must be a probability in [0, 1]"),
        (["--lr", "-1"], "--lr must be a number > 0 and at most 3.4e+38 (float32's largest), got -1.0"),
        (["--lr", "inf"], "--lr must be a number > 0 and at most 3.4e+38 (float32's largest), got inf"),
        # a float64 above float32's largest: SGD's update of the float32 weights would overflow at the first step
        (["--lr", "1e308"], "--lr must be a number > 0 and at most 3.4e+38 (float32's largest), got 1e+308"),
        # argparse took -inf and -1e-3 for flags: "argument --lr: expected one argument"
        (["--lr", "-inf"], "--lr must be a number > 0 and at most 3.4e+38 (float32's largest), got -inf"),
        (["--lr", "-1e-3"], "--lr must be a number > 0 and at most 3.4e+38 (float32's largest), got -0.001"),
        (["--nms_thresh", "-1E-3"], "--nms_thresh -0.001 must be an IoU in (0, 1]"),
        (["--base_anchor_size", "-Infinity"], "--base_anchor_size -inf: the smallest anchors' side"),
        (["--nms_thresh", "-NaN"], "--nms_thresh nan must be an IoU in (0, 1]"),
        (["--device", "gpu"], "--device gpu is not a device this program runs on; use auto, cpu, cuda or cuda:N"),
        (["--trained_model", "w.pth", "--resume"], "--resume trains, --trained_model evaluates a checkpoint"),
        (["--trained_model", "w.pth", "--init_from", "a.pth"], "--init_from trains, --trained_model evaluates"),
        # the checkpoint was read (minutes for a large one), then ignored by the data check or the scoring
        (["--check_data", "--resume", "w.pth"], "--resume trains, --check_data checks the data without training; "
                                                "give only one of them"),
        (["--eval_results", "eval/VOC", "--init_from", "a.pth"],
         "--init_from trains, --eval_results scores saved detections without training; give only one of them"),
        (["--trained_model", "w.pth", "--eval_results", "eval/VOC"],
         "--trained_model and --eval_results each run alone"),
        (["--trained_model", "w.pth", "--demo", "a.jpg", "--export", "onnx"], "--demo and --export each run alone"),
        (["--demo_output", "out"], "--demo_output applies to --demo, which was not given"),
        # without --trained_model, --check_data and --eval_results ran and --demo / --export were silently ignored
        (["--demo", "a.jpg", "--eval_results", "eval/VOC"], "--demo and --export need --trained_model PATH"),
        (["--export", "onnx", "--check_data"], "--demo and --export need --trained_model PATH"),
        (["--trained_model", "w.pth", "--export_nms"], "--export_nms applies to --export, which was not given"),
        (["--trained_model", "w.pth", "--opset", "13"], "--opset applies to --export, which was not given"),
        (["--max_iter", "-5"], "--max_iter must be >= 1, got -5"),
        (["--epochs", "0"], "--epochs must be >= 1, got 0"),
        (["--workers", "-2"], "--workers must be >= 0, got -2"),
        (["--warm_iter", "-1"], "--warm_iter must be >= 0, got -1"),
        (["--eval_interval", "-1"], "--eval_interval must be >= 0, got -1"),
        (["--checkpoint_interval", "0"], "--checkpoint_interval must be >= 1, got 0"),
        (["--nms_thresh", "1.5"], "--nms_thresh 1.5 must be an IoU in (0, 1]"),
        (["--trained_model", "w.pth", "--demo", "a.jpg", "--score_thresh", "2"],
         "--score_thresh 2.0 must be a probability in [0, 1)"),
        # read by --demo and --export_nms alone: training, evaluation and --export without NMS ignored it silently
        (["--score_thresh", "0.5"], "--score_thresh applies to --demo and --export_nms, neither of which was given "
                                    "(evaluation keeps every detection scoring above 0.005); add one or drop "
                                    "--score_thresh"),
        (["--trained_model", "w.pth", "--score_thresh", "0.5"], "--score_thresh applies to --demo and --export_nms"),
        # given at --demo's default it was taken for not given: the evaluation ran, keeping its 0.005, without a word
        (["--trained_model", "w.pth", "--score_thresh", "0.3"], "--score_thresh applies to --demo and --export_nms"),
        (["--trained_model", "w.pth", "--export", "onnx", "--score_thresh", "0.3"],
         "--score_thresh applies to --demo and --export_nms"),
        (["--trained_model", "w.pth", "--export", "onnx", "--score_thresh", "0.5"],
         "--score_thresh applies to --demo and --export_nms"),
        (["--trained_model", "w.pth", "--export", "onnx", "--nms_thresh", "0.6"],
         "--nms_thresh with --export applies to --export_nms, which was not given (the graph without it outputs the "
         "boxes and scores of every anchor); add --export_nms or drop --nms_thresh"),
        (["--seed", "-1"], "--seed must be an integer from 0 to 4294967295, got -1"),
        (["--seed", str(2**64)], f"--seed must be an integer from 0 to 4294967295, got {2**64}"),
        (["--init_from", "w.pth", "--pretrained", "r18.pth"], "--pretrained is not used with --init_from"),
        # --resume replaces every weight too: the file was read (and a missing one stopped the run), then overwritten
        (["--resume", "--pretrained", "r18.pth"], "--pretrained is not used with --resume, whose checkpoint holds the "
                                                  "backbone weights; drop --pretrained"),
        (["--dataset", "shapes", "--classes", "a,b"], "--classes is for VOC, COCO and custom data; the shapes dataset "
                                                      "has its own classes: drop --classes"),
        (["--dataset", "coco", "--classes", "person"], "the coco dataset takes its classes from its json: drop "
                                                       "--classes, or add --skip_unknown_classes to train on these of "
                                                       "its categories alone"),
        # would do nothing: the shapes reader leaves no object out
        (["--dataset", "shapes", "--check_data", "--skip_unknown_classes"], "--skip_unknown_classes is for VOC, COCO "
                                                                            "and custom data; the shapes dataset has"),
        (["--name", "../elsewhere"], "--name '../elsewhere': use 1-200 ASCII letters (a-z, A-Z), digits and . _ - + = "
                                     "@, starting"),
        (["--name", ".pth"], "--name '': use 1-200 ASCII letters"),
        (["--name", "seed 1"], "--name 'seed 1': use 1-200 ASCII letters"),
        # 'letters' alone: é is one, and was refused without a word on why
        (["--name", "été"], "--name 'été': use 1-200 ASCII letters (a-z, A-Z), digits"),
        (["--name", "x" * 201], "--name 'xxxx"),
        (["--base_anchor_size", "320"], "--base_anchor_size 320: the smallest anchors' side in pixels must be from 1 "
                                        "to below the --size 320 input (at or above it every anchor covers the whole "
                                        "image); the default is 24"),
        (["--base_anchor_size", "0.5", "--size", "512"], "--base_anchor_size 0.5: the smallest anchors' side in pixels "
                                                         "must be from 1 to below the --size 512 input"),
        (["--base_anchor_size", "nan"], "--base_anchor_size nan: the smallest anchors' side"),
        (["--base_anchor_size", "0.123456789"], "--base_anchor_size 0.123456789: the smallest anchors' side"),
        (["--eval_results", "no/such/eval"], "--eval_results no/such/eval: no such file or folder; give the "
                                             "eval/<DATASET> folder an evaluation wrote (or its results file)"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv, message, capsys):
    assert cli.main(parse(*argv)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("flag, argv, run", [
    # each ran a training run: --trained_model '' trained instead of evaluating, --init_from '' from random weights
    ("--trained_model", [], "a checkpoint file"),
    ("--eval_results", [], "the folder or file of saved detections"),
    ("--init_from", [], "a checkpoint file"),
    ("--pretrained", [], "a backbone state dict file, or --no_pretrained"),  # random backbone weights
    ("--data_root", [], "the dataset folder"),  # the default folder
    ("--classes", [], "class names (cat,dog) or a file of them"),  # voc's 20
    ("--save_folder", [], "a folder"),  # the current folder
    ("--run_dir", [], "a folder"),
    ("--eval_dir", [], "a folder"),
    ("--demo", ["--trained_model", "w.pth", "--demo_output", "d", "--demo", "a.jpg"], "image files or folders"),
    ("--demo_output", ["--trained_model", "w.pth", "--demo", "a.jpg"], "a folder"),
    ("--export_path", ["--trained_model", "w.pth", "--export", "onnx"], "a file name ending in .onnx"),
])
def test_an_empty_path_is_refused_not_taken_for_the_default(flag, argv, run, monkeypatch, capsys):
    for mode in ("run_training", "run_evaluation_only", "run_eval_results", "run_use"):
        monkeypatch.setattr(cli, mode, lambda *_: pytest.fail("an empty value was taken for no flag"))
    assert cli.main(parse("--dataset", "shapes", "--device", "cpu", *argv, flag, "")) == 2
    assert capsys.readouterr().err == f"error: {flag} '' is empty: give {run}, or leave {flag} out\n"


def test_a_path_given_with_a_tilde_the_shell_left_is_taken_in_the_home_folder(monkeypatch, tmp_path):
    """`--eval_dir=~/results` (the shell expands no '~' after '--flag=', nor in quotes) wrote the evaluation to a folder
    named '~' in the current folder, without a word."""
    monkeypatch.setenv("HOME", str(tmp_path))
    args = parse("--dataset", "shapes", "--eval_dir=~/results", "--save_folder", "~", "--run_dir=~/runs/a",
                 "--data_root=~/shapes", "--resume=~/w.pth")
    cli.check_flags(args, cli.get_args_parser())
    assert (args.eval_dir, args.save_folder, args.run_dir, args.data_root, args.resume) == (
        str(tmp_path / "results"), str(tmp_path), str(tmp_path / "runs" / "a"), str(tmp_path / "shapes"),
        str(tmp_path / "w.pth"))
    args = parse("--trained_model=~/w.pth", "--demo", "~/a.jpg", "b~.jpg", "--demo_output=~/d")
    cli.check_flags(args, cli.get_args_parser())
    assert (args.trained_model, args.demo, args.demo_output) == (
        str(tmp_path / "w.pth"), [str(tmp_path / "a.jpg"), "b~.jpg"], str(tmp_path / "d"))


@pytest.mark.parametrize("argv, message", [
    # reported only after the checkpoint was read (minutes for a large one), or hidden by its missing-file error
    (["--trained_model", "no/such.pth", "--nms_thresh", "2"], "--nms_thresh 2.0 must be an IoU in (0, 1]"),
    (["--init_from", "no/such.pth", "--lr", "-1"], "--lr must be a number > 0 and at most 3.4e+38"),
    (["--resume", "no/such.pth", "--seed", "-1"], "--seed must be an integer from 0 to 4294967295, got -1"),
    (["--init_from", "no/such.pth", "--size", "300"], "--size 300 is not a multiple of 64 from 128"),
    (["--resume", "no/such.pth", "--name", "seed 1"], "--name 'seed 1': use 1-200 ASCII letters"),
    (["--trained_model", "no/such.pth", "--dataset", "shapes", "--classes", "a,b"],
     "--classes is for VOC, COCO and custom"),
    (["--trained_model", "no/such.pth", "--batch_size", "0"], "--batch_size must be >= 1, got 0"),
    (["--trained_model", "no/such.pth", "--device", "gpu"], "--device gpu is not a device this program runs on"),
    (["--trained_model", "no/such.pth", "--device", "cpu", "--cuda_graph"], "--cuda_graph needs a CUDA device"),
    (["--trained_model", "no/such.pth", "--nms_thresh", "0.4"], "checkpoint no/such.pth does not exist"),
])
def test_flag_values_are_checked_before_a_checkpoint_is_read(argv, message, capsys):
    assert cli.main(parse(*argv)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    # another size of as many pyramid levels is evaluated (test_main_train.py); across the level boundary, refused
    (["--size", "512"], "tiny.pth was trained with --size 128, whose model has 4 pyramid levels (strides 8 to 64), but "
                        "--size 512 builds 5 (strides 8 to 128): the layers of the fifth level would have no weights; "
                        "evaluate it at a --size from 128 to 448 (4 levels: any multiple of 64 below 512), or drop "
                        "--size"),
    (["--version", "retinanet"], "tiny.pth was trained with --version fssd, but --version retinanet was given"),
    # the layers fit, but the box offsets are relative to the anchors: --init_from takes it, evaluation refuses it
    (["--base_anchor_size", "32"], "tiny.pth was trained with --base_anchor_size 24.0, but --base_anchor_size 32.0 "
                                   "was given: the box offsets it predicts are relative to the anchors it was trained "
                                   "with, so other anchors would stretch every box (another --size keeps them: their "
                                   "side is in pixels); drop --base_anchor_size, or fine-tune it on these anchors with "
                                   "--init_from "),
    # was refused as trained with 24, "pass a checkpoint trained with --base_anchor_size -5.0"
    (["--base_anchor_size", "-5"], "--base_anchor_size -5: the smallest anchors' side in pixels must be from 1 to "
                                   "below the input size (at or above it every anchor covers the whole image); the "
                                   "default is 24"),
    (["--base_anchor_size", "inf"], "--base_anchor_size inf: the smallest anchors' side in pixels must be from 1 to "
                                    "below the input size"),
])
def test_trained_model_refuses_another_architecture_before_reading_the_data(argv, message, tmp_path, monkeypatch,
                                                                             capsys):
    """The test split was read first (a shapes set of 2,500 images generated at a --data_root that did not exist),
    then the architecture flags were compared with the checkpoint's."""
    from tests.tiny_checkpoint import write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pth")
    monkeypatch.setattr(cli, "make_dataset", lambda *_, **__: pytest.fail("the dataset was read"))
    root = tmp_path / "shapes"
    assert cli.main(parse("--trained_model", str(checkpoint), "--data_root", str(root), "--device", "cpu",
                          *argv)) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and err.count("\n") == 1
    assert not root.exists()


@pytest.mark.parametrize("argv, notice", [
    (["--trained_model", "w.pth", "--lr", "0.1", "--seed", "3", "--amp", "bf16"],
     "with --trained_model the flags --lr, --seed are ignored"),
    # these modes said nothing of the flags they do not read
    (["--check_data", "--mutual_guide", "--lr", "0.1", "--nms_thresh", "0.6", "--workers", "0"],
     "with --check_data the flags --mutual_guide, --lr, --nms_thresh are ignored"),
    (["--eval_results", "eval/VOC", "--name", "x", "--eval_dir", "zz", "--dataset", "voc"],
     "with --eval_results the flags --name, --eval_dir are ignored"),
    (["--trained_model", "w.pth", "--demo", "a.jpg", "--dataset", "coco", "--amp", "bf16", "--batch_size", "4"],
     "with --demo the flags --dataset, --amp are ignored"),
    (["--trained_model", "w.pth", "--export", "onnx", "--batch_size", "4", "--epochs", "3"],
     "with --export the flags --batch_size, --epochs are ignored"),
    (["--trained_model", "w.pth", "--export", "onnx", "--no_pretrained"], "with --export the flag --no_pretrained is "
                                                                          "ignored"),
    (["--check_data", "--dataset", "shapes", "--data_root", "d", "--workers", "0", "--size", "128"], ""),
    (["--dataset", "shapes", "--amp", "bf16", "--eval_dir", "e", "--batch_size", "4"], ""),  # training reads them all
    # --max_iter sets the run's length: a training run dropped --epochs without a word
    (["--dataset", "shapes", "--epochs", "3", "--max_iter", "100"], "with --max_iter the flag --epochs is ignored"),
    (["--dataset", "shapes", "--max_iter", "100"], ""),
    (["--trained_model", "w.pth", "--epochs", "3", "--max_iter", "100"],
     "with --trained_model the flags --epochs, --max_iter are ignored"),
])
def test_flags_a_mode_does_not_read_are_named(argv, notice):
    parser = cli.get_args_parser()
    assert check_flag_combinations(parser.parse_args(argv), parser) == notice


def test_eval_results_without_dataset_needs_the_summary_beside_them(tmp_path, capsys):
    folder = tmp_path / "eval" / "VOC"
    folder.mkdir(parents=True)
    assert cli.main(parse("--eval_results", str(folder))) == 2
    assert (f"--eval_results {folder}: {folder / 'summary.json'} not found, so the dataset the results are of is "
            "unknown; give --dataset (and --data_root, --classes as the evaluation had them)"
            ) in capsys.readouterr().err
    (folder / "summary.json").write_text("{")
    assert cli.main(parse("--eval_results", str(folder))) == 2
    assert f"{folder / 'summary.json'} unreadable (" in capsys.readouterr().err
    (folder / "summary.json").write_text('{"metrics": {}}')  # written by hand, or by another tool
    assert cli.main(parse("--eval_results", str(folder))) == 2
    assert (f"{folder / 'summary.json'} names no dataset (no 'evaluated_with' entry), so the dataset the results are "
            "of is unknown; give --dataset") in capsys.readouterr().err


@pytest.mark.parametrize("extra", [[], ["--dataset", "custom", "--data_root", "voc", "--classes", "dog"]])
def test_eval_results_reads_the_summary_beside_the_results_once(extra, tmp_path, monkeypatch, capsys):
    """--eval_results took its flags, its checks (the evaluation finished, on as many images) and the class order
    from the summary.json beside the results, reading and parsing it for each: four or five times."""
    monkeypatch.chdir(tmp_path)
    evaluate_one_dog_found(tmp_path)
    read_text, reads = Path.read_text, []

    def counted_read_text(path: Path, *args, **kwargs) -> str:
        reads.extend([path] if path.name == "summary.json" else [])
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counted_read_text)
    assert cli.main(parse("--eval_results", "eval", *extra, "--workers", "0")) == 0
    assert reads == [Path("eval") / "summary.json"]
    assert "eval: mAP=0.9000 AP50=1.0000 AP75=1.0000" in capsys.readouterr().out


@pytest.mark.parametrize("extra", [[], ["--dataset", "custom"]])
def test_eval_results_of_a_folder_whose_evaluation_did_not_finish_stops_before_the_data_is_read(extra, tmp_path,
                                                                                               monkeypatch, capsys):
    """A custom dataset's test split is read before its results are (minutes on a large COCO-layout set): the folder's
    summary.json, which says its evaluation did not finish writing, is read first."""
    monkeypatch.setattr(cli, "make_dataset", lambda *_, **__: pytest.fail("the dataset was read"))
    folder = tmp_path / "eval" / "CUSTOM"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"complete": False, "evaluated_with": {
        "dataset": "custom", "data_root": str(tmp_path / "data")}}))
    (folder / "detections_test_results.json").write_text("[]")
    assert cli.main(parse("--eval_results", str(folder), "--data_root", str(tmp_path / "data"), *extra)) == 2
    assert capsys.readouterr().err == (
        f"error: --eval_results {folder}: {folder / 'summary.json'} records an evaluation that did not finish writing "
        "its results there (stopped by a full disk, a refused write or a crash, or still running), so the folder may "
        "hold a mix of its files and an earlier evaluation's; evaluate the checkpoint again (--trained_model), which "
        "writes the folder whole, or wait for the one still running\n")


def test_eval_results_of_the_folder_above_named_runs_names_their_folders(tmp_path, monkeypatch, capsys):
    """`--eval_results eval/CUSTOM` after runs given --name (their results in eval/CUSTOM/<name>/) asked for --dataset,
    then, given it, said the folder held no results: neither named the folders that do."""
    monkeypatch.setattr(cli, "make_dataset", lambda *_, **__: pytest.fail("the dataset was read"))
    folder = tmp_path / "eval" / "CUSTOM"
    for name in ("pets_best", "pets", "notes"):
        (folder / name).mkdir(parents=True)
    for name in ("pets_best", "pets"):
        (folder / name / "summary.json").write_text('{"evaluated_with": {"dataset": "custom"}}')
        (folder / name / "detections_test_results.json").write_text("[]")
    written_to = "(an evaluation writes to eval/<DATASET>, or to eval/<DATASET>/<name> for a run given --name)"
    expected = (f"error: --eval_results {folder}: no evaluation wrote its results there, but one did in each of its "
                f"folders pets, pets_best {written_to}: give one of them, e.g. --eval_results {folder / 'pets'}\n")
    for extra in ([], ["--dataset", "custom", "--data_root", str(tmp_path)]):
        assert cli.main(parse("--eval_results", str(folder), *extra)) == 2
        assert capsys.readouterr().err == expected
    shutil.rmtree(folder / "pets_best")
    pets = Path("CUSTOM") / "pets"
    assert cli.main(parse("--eval_results", str(folder.parent))) == 2  # eval itself: two levels up
    assert capsys.readouterr().err == (f"error: --eval_results {folder.parent}: no evaluation wrote its results there, "
                                       f"but one did in its folder {pets} {written_to}: give --eval_results "
                                       f"{folder.parent / pets}\n")


@pytest.mark.parametrize("dataset, results, message", [
    ("shapes", "detections.json", "a VOC dataset needs the folder holding comp4_det_test_<class>.txt"),
    ("voc", "detections.json", "a VOC dataset needs the folder holding comp4_det_test_<class>.txt"),
    ("coco", "eval", "a COCO dataset needs a results JSON file"),
])
def test_eval_results_of_the_wrong_kind_stop_before_the_test_split_is_read(dataset, results, message, tmp_path,
                                                                           monkeypatch, capsys):
    # the test split was read first (with --dataset shapes, 2,500 images generated at an absent --data_root)
    monkeypatch.setattr(cli, "make_dataset", lambda *_, **__: pytest.fail("the dataset was read"))
    (tmp_path / "detections.json").write_text("[]")
    (tmp_path / "eval").mkdir()
    path = tmp_path / results
    assert cli.main(parse("--eval_results", str(path), "--dataset", dataset, "--data_root", str(tmp_path / "d"))) == 2
    assert capsys.readouterr().err == f"error: --eval_results {path}: {message}\n"


@pytest.mark.parametrize("order", [("--pretrained", "r18.pth", "--no_pretrained"),
                                   ("--no-pretrained", "--pretrained", "r18.pth")])
def test_pretrained_and_no_pretrained_together_are_refused(order, capsys):
    """Either spelling of --no_pretrained (--no-pretrained was the only one before the other flags' underscores)."""
    with pytest.raises(SystemExit) as stop:
        cli.get_args_parser().parse_args(list(order))
    assert stop.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_no_pretrained_takes_both_spellings():
    assert parse("--no_pretrained").pretrained is False and parse("--no-pretrained").pretrained is False
    assert parse().pretrained is None


def test_amp_choice():
    cpu = torch.device("cpu")
    assert amp_dtype_for(None, cpu) is None
    assert amp_dtype_for("auto", cpu) is torch.bfloat16
    assert amp_dtype_for("fp16", cpu) is torch.float16
    assert parse("--amp").amp == "auto" and parse("--amp", "fp16").amp == "fp16"


@pytest.mark.parametrize("argv, amp, device", [
    (["--amp", "BF16", "--device", "CPU"], "bf16", "cpu"),  # refused while --dataset VOC, --version PAFPN were taken
    (["--amp", "Fp16", "--device", "CUDA:1"], "fp16", "cuda:1"),
    (["--amp", "AUTO", "--device", "Auto"], "auto", "auto"),
    (["--amp", "--device", "Cuda"], "auto", "cuda"),
])
def test_amp_and_device_take_any_letter_case(argv, amp, device):
    args = parse(*argv)
    assert (args.amp, args.device) == (amp, device)


def test_cpu_in_capitals_runs_on_the_cpu(monkeypatch):
    devices = []
    monkeypatch.setattr(cli, "run_training", lambda args, device, *_: devices.append(device) or 0)
    assert cli.main(parse("--dataset", "shapes", "--device", "CPU", "--amp", "BF16", "--workers", "0")) == 0
    assert devices == [torch.device("cpu")]


def test_unknown_amp_or_device_names_the_flag_and_the_accepted_values(capsys):
    with pytest.raises(SystemExit) as stop:
        parse("--amp", "BF32")
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "argument --amp: invalid choice: 'bf32' (choose from 'auto', 'bf16', 'fp16')" in err[0]
    assert cli.main(parse("--device", "GPU")) == 2
    assert capsys.readouterr().err == ("error: --device gpu is not a device this program runs on; use auto, cpu, cuda "
                                       "or cuda:N\n")


def test_a_dash_word_that_is_no_number_is_still_read_as_a_flag(capsys):
    with pytest.raises(SystemExit) as stop:
        parse("--lr", "-info")  # -inf and more: not a number, so a flag (unknown), as argparse reads it
    assert stop.value.code == 2
    assert "argument --lr: expected one argument" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, expected", [
    ("--data_root", "-data", "argument --data_root: expected one argument; -data starts with '-', so it is read as "
                             "a flag: write --data_root=-data (or ./-data for a path)"),
    ("--demo", "-photo.jpg", "argument --demo: expected at least one argument; -photo.jpg starts with '-', so it is "
                             "read as a flag: write --demo=-photo.jpg (or ./-photo.jpg for a path)"),
])
def test_a_path_starting_with_a_dash_says_how_to_give_it(flag, value, expected, capsys):
    """A folder or file named -data: argparse said only 'expected one argument', without the way to pass it."""
    with pytest.raises(SystemExit) as stop:
        parse("--trained_model", "w.pth", flag, value)
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"main.py: error: {expected} (see --help)\n"


def test_unknown_dataset_is_one_line_naming_the_flag_and_exit_2(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.get_args_parser().parse_args(["--dataset", "imagenet"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--dataset" in err[0] and "imagenet" in err[0] and "voc" in err[0]


def test_custom_coco_layout_needs_no_classes_flag(tmp_path, capsys):
    import json

    import cv2
    import numpy as np

    (tmp_path / "annotations").mkdir()
    gt = {"images": [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 60}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [5, 5, 20, 20], "area": 400,
                           "iscrowd": 0}],
          "categories": [{"id": 3, "name": "kite"}]}
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        cv2.imwrite(str(tmp_path / split / "a.jpg"), np.full((40, 60, 3), 90, np.uint8))
        (tmp_path / "annotations" / f"instances_{split}.json").write_text(json.dumps(gt))
    assert cli.main(parse("--dataset", "custom", "--data_root", str(tmp_path), "--check_data", "--workers", "0")) == 0
    # the same category id under another name in the test json: the model's labels would be scored as other classes
    gt["categories"] = [{"id": 3, "name": "bird"}]
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(gt))
    assert cli.main(parse("--dataset", "custom", "--data_root", str(tmp_path), "--check_data", "--workers", "0")) == 2
    assert "the training split's classes ['kite'] differ from the test split's ['bird']" in capsys.readouterr().err


def test_custom_coco_jsons_naming_a_category_in_another_letter_case_are_one_class_list(tmp_path, capsys):
    """A train json naming category 3 'kite' and a test json naming it 'Kite' (written by another tool) list the same
    classes: category names are compared ignoring letter case everywhere else (--classes, a json's repeated names,
    checkpoints against data)."""
    import json

    import cv2
    import numpy as np

    (tmp_path / "annotations").mkdir()
    for split, name in (("train", "kite"), ("val", "Kite")):
        gt = {"images": [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 60}],
              "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [5, 5, 20, 20], "area": 400,
                               "iscrowd": 0}],
              "categories": [{"id": 3, "name": name}]}
        (tmp_path / split).mkdir()
        cv2.imwrite(str(tmp_path / split / "a.jpg"), np.full((40, 60, 3), 90, np.uint8))
        (tmp_path / "annotations" / f"instances_{split}.json").write_text(json.dumps(gt))
    assert cli.main(parse("--dataset", "custom", "--data_root", str(tmp_path), "--check_data", "--workers", "0")) == 0


def test_default_workers_share_the_cores_among_the_processes_of_the_node(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert default_workers() == 12  # 15 left for workers, capped at 12
    for dataset in ("voc", "shapes"):  # shapes had 2 workers anywhere: the loader alone gave 581 images/s on an H200
        args = parse("--dataset", dataset)  # machine, where its training loop runs at 1,040-1,290 with 8-12
        fill_dataset_defaults(args)
        assert args.workers == 12, dataset
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_workers() == 3  # 4 cores per process, one for the process itself
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert default_workers() == 2  # never fewer than 2
    voc = parse("--dataset", "voc")
    fill_dataset_defaults(voc)
    assert voc.workers == 2
    explicit = parse("--dataset", "voc", "--workers", "0")
    fill_dataset_defaults(explicit)
    assert explicit.workers == 0


def test_more_workers_than_four_per_core_are_refused_at_start(monkeypatch, capsys):
    # 10**12 workers were accepted: the run wrote its log folder, then hung forking DataLoader processes
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(cli, "run_training", lambda *_: 0)
    assert cli.main(parse("--dataset", "shapes", "--device", "cpu", "--workers", str(10**12))) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --workers {10**12}: at most 8, 4 per core of the 2 this process may use (each worker is a "
                   "process of its own; the default, 2 here, suits most runs)\n")
    for workers, allowed in ((8, True), (9, False)):
        args = parse("--dataset", "shapes", "--workers", str(workers))
        if allowed:
            fill_dataset_defaults(args)
        else:
            with pytest.raises(ValueError, match="--workers 9: at most 8"):
                fill_dataset_defaults(args)


def test_sync_bn_in_one_process_is_refused_at_start(tmp_path):
    from utils.distributed import DistributedContext

    args = parse("--dataset", "shapes", "--sync_bn", "--eval_dir", str(tmp_path / "e"))
    fill_dataset_defaults(args)
    cuda = torch.device("cuda", 0)  # only compared, never used: no GPU needed
    # one CUDA process: SyncBatchNorm had nothing to synchronise with and the flag was silently ignored
    with pytest.raises(ValueError, match=r"^--sync_bn synchronises BatchNorm across the processes of torchrun, and "
                                         r"this run is a single process: start it with torchrun --nproc_per_node=N "
                                         r"\(N > 1\) or drop --sync_bn$"):
        check_training_flags(args, cuda, DistributedContext())
    check_training_flags(args, cuda, DistributedContext(rank=0, world_size=2))
    with pytest.raises(ValueError, match="--sync_bn needs CUDA devices"):
        check_training_flags(args, torch.device("cpu"), DistributedContext())
    assert list(tmp_path.iterdir()) == []  # checked, nothing created


def test_a_shapes_folder_that_cannot_be_created_is_bad_input_naming_data_root(tmp_path, capsys):
    (tmp_path / "file").write_text("in the way")
    root = tmp_path / "file" / "shapes"
    # was exit code 1 naming a temp folder the user never gave: 'error: .../file/.shapes.tmp-123: Not a directory'
    assert cli.main(parse("--dataset", "shapes", "--data_root", str(root), "--check_data", "--workers", "0")) == 2
    assert capsys.readouterr().err == (f"error: {root}: the shapes dataset cannot be generated there "
                                       f"({tmp_path / 'file'} is not a folder); pass --data_root a folder that can be "
                                       "created and written\n")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


@pytest.mark.parametrize("path, problem", [("absent.pth", "no such file"), ("folder", "a folder")])
def test_a_pretrained_file_that_cannot_be_read_stops_before_the_data_is_read(path, problem, tmp_path, monkeypatch,
                                                                            capsys):
    # found when the model was built, after both splits were read (here: a shapes set generated at --data_root)
    monkeypatch.setattr(training_run, "build_training", lambda *_: pytest.fail("the data was read"))
    (tmp_path / "folder").mkdir()
    root, weights = tmp_path / "shapes", tmp_path / path
    folders = ["--save_folder", str(tmp_path / "w"), "--run_dir", str(tmp_path / "r"),
               "--eval_dir", str(tmp_path / "e")]
    assert cli.main(parse("--dataset", "shapes", "--data_root", str(root), "--device", "cpu", "--pretrained",
                          str(weights), *folders)) == 2
    assert capsys.readouterr().err == (f"error: --pretrained {weights}: {problem}; give the path of a torchvision "
                                       "state dict (e.g. resnet18-f37072fd.pth) or pass --no_pretrained\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


@pytest.mark.parametrize("argv, change", [
    (["--lr", "0.5"], "was saved by a run with --lr 0.02, this run has 0.5; resume with the same flags"),
    (["--seed", "3"], "was saved by a run with --seed 7, this run has 3; resume with the same flags"),
    (["--batch_size", "8"], "was saved by a run with --batch_size 4, this run has 8; resume with the same flags"),
    (["--mutual_guide"], "was saved by a run without --mutual_guide (IoU assignment), this run has --mutual_guide; "
                         "to switch to Mutual Guidance partway, start a run with --mutual_guide --mutual_guide_from "
                         "ITER; resume with the same"),
    (["--max_iter", "80"], "was saved by a run of 40 iterations, this run has 80 (--epochs or --max_iter)"),
])
def test_resume_path_refuses_another_schedule_before_reading_the_data(argv, change, tmp_path, monkeypatch, capsys):
    """A flag that changes the schedule or data stream was refused by resume_run, after both splits were read and the
    model built (here: a shapes set generated at an absent --data_root, given: one taken from the checkpoint is
    refused before, see tests/test_main_recorded_shapes.py)."""
    from tests.tiny_checkpoint import write_tiny_checkpoint
    from utils.checkpoint import load_checkpoint, save_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pth")
    state = load_checkpoint(checkpoint)
    state["config"] |= dict(batch_size=4, lr=0.02, warm_iter=5, seed=7, mutual_guide=False, mutual_guide_from=None,
                            expand_prob=0.0, world_size=1, max_iter=40, epochs=12, data_root=str(tmp_path / "shapes"))
    state["max_iter"] = 40
    save_checkpoint(state | {"optimizer": {}, "scaler": {}, "rng": {}}, checkpoint)  # a training state, as resumed
    monkeypatch.setattr(training_run, "build_training", lambda *_: pytest.fail("the data was read"))
    folders = ["--save_folder", str(tmp_path / "w"), "--run_dir", str(tmp_path / "r"),
               "--eval_dir", str(tmp_path / "e"), "--data_root", str(tmp_path / "shapes")]
    assert cli.main(parse("--resume", str(checkpoint), "--device", "cpu", "--workers", "0", *folders, *argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {checkpoint} {change}") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.pth"]


def test_bare_resume_without_a_checkpoint_stops_before_the_data_is_read(tmp_path, monkeypatch, capsys):
    def build_training(*_):
        raise AssertionError("the data was read (and the model built) before the checkpoint")

    monkeypatch.setattr(training_run, "build_training", build_training)
    folders = ["--save_folder", str(tmp_path / "w"), "--run_dir", str(tmp_path / "r"),
               "--eval_dir", str(tmp_path / "e")]
    assert cli.main(parse("--dataset", "shapes", "--device", "cpu", "--resume", *folders)) == 2
    assert capsys.readouterr().err.startswith(f"error: checkpoint {tmp_path / 'w'}/SHAPES_fssd_resnet18_size192_"
                                              "anchor24.0.pth does not exist; check --resume without PATH")
    assert list(tmp_path.iterdir()) == []


def test_checkpoints_hold_the_plain_module_of_a_compiled_model():
    model = torch.nn.Linear(2, 3)
    assert unwrap_model(torch.compile(model)) is model and unwrap_model(model) is model
    assert list(unwrap_model(torch.compile(model)).state_dict()) == ["weight", "bias"]


def test_errors_one_process_may_meet_alone_are_printed_by_every_process(capsys):
    from utils.distributed import DistributedContext

    second = DistributedContext(rank=1, world_size=2)
    log_error(second, "error: bad flag")
    assert capsys.readouterr().err == ""  # every process meets it: the main one says it
    log_error(second, "error: img.jpg: cannot be read", every_process=True)
    assert capsys.readouterr().err == "[rank 1] error: img.jpg: cannot be read\n"
    log_error(DistributedContext(), "error: img.jpg: cannot be read", every_process=True)
    assert capsys.readouterr().err == "error: img.jpg: cannot be read\n"


def test_an_error_is_recorded_in_the_runs_log_when_it_can_be(tmp_path, capsys):
    from utils.distributed import DistributedContext
    from utils.logging import RunLog

    log_error(DistributedContext(), "error: the loss became NaN/inf at iteration 6", log=RunLog(tmp_path / "run"))
    assert capsys.readouterr().err == "error: the loss became NaN/inf at iteration 6\n"
    assert (tmp_path / "run" / "log.txt").read_text().endswith(" error: the loss became NaN/inf at iteration 6\n")


    class FullDisk(RunLog):
        def record(self, message):
            raise OSError(28, "No space left on device", str(tmp_path / "run" / "log.txt"))

    # a full disk: the line on stderr is all there is, and the run goes on to say and do what it does after it
    log_error(DistributedContext(), "error: img.jpg: cannot be read", log=FullDisk(tmp_path / "run"))
    assert capsys.readouterr().err == "error: img.jpg: cannot be read\n"


def test_an_error_whose_standard_error_reader_ended_is_still_recorded_in_the_runs_log(tmp_path, monkeypatch):
    """``main.py ... 2>&1 | head``: printing the error raised BrokenPipeError, so log.txt never said why the run
    stopped."""
    from utils.distributed import DistributedContext
    from utils.logging import RunLog

    class ReaderGone(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stderr", ReaderGone())
    log_error(DistributedContext(), "error: <standard output>: Broken pipe", log=RunLog(tmp_path / "run"))
    assert (tmp_path / "run" / "log.txt").read_text().endswith(" error: <standard output>: Broken pipe\n")


def test_data_warnings_are_one_line_for_the_user(capsys):
    passed = []
    show = cli.one_line_data_warnings(lambda *args: passed.append(args))
    fixed = "VOC dataset: annotations fixed on reading: box clipped to the image: 2 (e.g. a.xml)"
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        warnings.warn(fixed, DataWarning)
        warnings.warn("something else", UserWarning)
    assert capsys.readouterr().err == f"warning: {fixed}\n"
    assert len(passed) == 1 and passed[0][1] is UserWarning


def test_under_torchrun_a_warning_about_the_whole_dataset_comes_from_rank_0_alone(monkeypatch, capsys):
    """Every process reads the annotations and meets their fix-ups alike: rank 0 alone says so (each process used to
    print the same lines). A corrupt image is read by one process's share of a batch: that process says it."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, expected in (("0", 2), ("1", 1)):
        monkeypatch.setenv("RANK", rank)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = cli.one_line_data_warnings(warnings.showwarning)
            warnings.warn("VOC dataset: annotations fixed on reading: object of an unknown class skipped: 30",
                          DataWarning)
            warnings.warn(f"img{rank}.jpg: corrupt JPEG data (libjpeg: premature end)", CorruptImageWarning)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line]
        assert len(lines) == expected
        assert lines[-1] == f"warning: img{rank}.jpg: corrupt JPEG data (libjpeg: premature end)"
        # rank 1's line starts on a new line, below rank 0's progress bar on the terminal they share
        assert err.startswith("\n") == (rank == "1")


def test_under_torchrun_the_line_ending_the_named_images_says_they_are_this_process_s(monkeypatch, capsys):
    """Each torchrun process names the first 10 images of a kind it reads, and said then "any more in this run are not
    named", which the next process's 10 named lines belied: the line now says it is this process's."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = cli.one_line_data_warnings(warnings.showwarning)
        for number in range(11):
            warnings.warn(f"img{number}.jpg: corrupt JPEG data (libjpeg: premature end)", CorruptImageWarning)
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 11 and lines[-1] == ("warning: 10 images with corrupt JPEG data named by this process (rank "
                                              "1); any more it reads are not named (--check_data counts them)")


def test_a_corrupt_image_whose_path_is_not_utf8_is_named_once_and_does_not_stop_the_run(tmp_path, capfd):
    """A file name with bytes that are not UTF-8 (a Linux path from another encoding) reaches Python as lone
    surrogates; recording the line as shown encoded it as strict UTF-8, and the UnicodeEncodeError escaped from
    warnings.warn inside read_image, stopping training with a traceback."""
    path = tmp_path / os.fsdecode(b"caf\xe9.jpg")
    message = f"{path}: corrupt JPEG data (libjpeg: Corrupt JPEG data: premature end of data segment)"
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = cli.one_line_data_warnings(warnings.showwarning)
        for _ in range(2):
            warnings.warn(message, CorruptImageWarning)
    err = capfd.readouterr().err  # stderr shows the undecodable byte as it can
    assert err.count("\n") == 1 and err.startswith(f"warning: {tmp_path}/caf") and err.endswith(
        ".jpg: corrupt JPEG data (libjpeg: Corrupt JPEG data: premature end of data segment)\n")


def test_a_refused_file_operation_is_one_line_and_other_os_errors_keep_their_traceback(monkeypatch, capsys):
    args = cli.get_args_parser().parse_args(["--dataset", "shapes", "--device", "cpu"])

    def refuse(error):
        def run_training(*_):
            raise error
        monkeypatch.setattr(cli, "run_training", run_training)

    refuse(PermissionError(13, "Permission denied", "runs/x/log.txt"))
    assert cli.main(args) == EXIT_REFUSED_BY_SYSTEM == 1
    # raised before training (a run_training that saved nothing): no checkpoint of this run to resume
    assert capsys.readouterr().err == ("error: runs/x/log.txt: Permission denied; free space or fix the folder, then "
                                       "run again\n")
    refuse(ConnectionRefusedError(111, "Connection refused"))  # not a file: not this message
    with pytest.raises(ConnectionRefusedError):
        cli.main(args)

    def evaluation_on_a_full_disk(*_):
        raise OSError(28, "No space left on device", "eval/SHAPES/summary.json")

    monkeypatch.setattr(cli, "run_evaluation_only", evaluation_on_a_full_disk)
    monkeypatch.setattr(cli, "load_checkpoint", lambda path, source: {"config": {"dataset": "shapes"}})
    evaluate = cli.get_args_parser().parse_args(["--dataset", "shapes", "--device", "cpu", "--trained_model", "w.pth"])
    assert cli.main(evaluate) == EXIT_REFUSED_BY_SYSTEM
    assert capsys.readouterr().err == ("error: eval/SHAPES/summary.json: No space left on device; free space or fix "
                                       "the folder, then run again\n")  # nothing to resume


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried "
                 "to allocate 102400000000 bytes. Error code 12 (Cannot allocate memory)"),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB.\nSee documentation for Memory Management"),
])
def test_out_of_memory_is_one_line_saying_what_to_lower(monkeypatch, capsys, error):
    def run_training(*_):
        raise error

    monkeypatch.setattr(cli, "run_training", run_training)
    assert cli.main(parse("--dataset", "shapes", "--device", "cpu")) == EXIT_REFUSED_BY_SYSTEM
    err = capsys.readouterr().err
    first = str(error).splitlines()[0]
    assert err == f"error: out of memory ({first}); lower --batch_size or --size, then run again\n"


@pytest.mark.parametrize("error, line", [
    (RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. "),
     "error: a DataLoader worker process was killed (SIGKILL), most often by the system's out-of-memory killer or a "
     "container's memory limit: lower --workers (2 here; 0 loads the data in this process), then run again\n"),
    (RuntimeError("unable to open shared memory object </torch_8182_3567019908_2> in read-write mode: Too many open "
                  "files (24)"),
     "error: no file descriptor left for the batches the DataLoader workers hand over (each tensor holds one until "
     "this process takes it): raise the limit (ulimit -n 65536 in the shell that starts main.py) or lower --workers "
     "(2 here; 0 loads the data in this process), then run again\n"),
])
def test_a_worker_failure_outside_training_is_one_line_naming_the_cause_and_the_fix(monkeypatch, capsys, error, line):
    """An evaluation (--trained_model) whose DataLoader worker is killed, or whose workers run out of file
    descriptors: PyTorch's traceback before."""
    def run_evaluation_only(*_):
        raise error

    monkeypatch.setattr(cli, "run_evaluation_only", run_evaluation_only)
    monkeypatch.setattr(cli, "load_checkpoint", lambda path, source: {"config": {"dataset": "shapes"}})
    evaluate = parse("--dataset", "shapes", "--device", "cpu", "--trained_model", "w.pth", "--workers", "2")
    assert cli.main(evaluate) == EXIT_REFUSED_BY_SYSTEM
    assert capsys.readouterr().err == line


@pytest.mark.parametrize("mode, argv", [
    ("--demo", ("--trained_model", "w.pth", "--demo", "images")),
    ("--export", ("--trained_model", "w.pth", "--export", "onnx")),
    ("--eval_results", ("--eval_results", "eval/SHAPES")),
])
def test_a_one_process_mode_under_torchrun_is_refused_at_start(monkeypatch, capsys, mode, argv):
    """Under torchrun every process used to run --demo, --export or --eval_results whole: the same tables printed
    once per process, the same files written by each in turn ('waiting for another evaluation ... to finish writing'),
    N times the work. Refused before any file is read, said once by rank 0."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(cli, "load_checkpoint", lambda *_, **__: pytest.fail("read a checkpoint before refusing"))
    assert cli.main(parse(*argv, "--device", "cpu")) == 2
    assert capsys.readouterr().err == (
        f"error: {mode} runs in one process, not under torchrun (each of the 2 processes would run it whole and write "
        f"the same files): run it with python main.py\n")


def exchange_as_rank(monkeypatch, rank: int, sent: list) -> None:
    """``torch.distributed.broadcast_object_list`` of a 2-process group faked for process ``rank``: rank 0's objects
    are recorded in ``sent``, rank 1 receives those recorded (rank 0 is simulated first)."""
    def broadcast_object_list(objects: list, src: int = 0, **_) -> None:
        if rank == 0:
            sent.append(list(objects))
        else:
            objects[:] = sent.pop(0)

    monkeypatch.setattr(torch.distributed, "broadcast_object_list", broadcast_object_list)


@pytest.mark.parametrize("mode", ["training", "--trained_model"])
def test_a_folder_rank_0_cannot_write_stops_every_process_at_start(tmp_path, monkeypatch, mode):
    """Rank 0 alone checks the folders it writes; it refused an unwritable one alone, and the other processes went on
    reading the data into the first collective, where they died on rank 0's exit (a gloo traceback). Rank 0's refusal
    is now sent to every process, which refuses alike (main.py prints it once, from rank 0)."""
    from utils.distributed import DistributedContext

    (tmp_path / "afile").write_text("in the way")
    folder = tmp_path / "afile" / "out"
    flag = "--save_folder" if mode == "training" else "--eval_dir"
    args = parse("--dataset", "shapes", "--data_root", str(tmp_path / "never_read"), flag, str(folder))
    fill_dataset_defaults(args)
    if mode == "training":
        start = lambda ctx: training_run.run_training(args, torch.device("cpu"), ctx)  # noqa: E731
    else:
        start = lambda ctx: cli.run_evaluation_only(args, torch.device("cpu"), ctx, {"config": {}})  # noqa: E731
    sent = []
    refusal = rf"^{flag} {folder}: cannot write there \({tmp_path / 'afile'} is a file\); give a writable folder$"
    for rank in (0, 1):
        exchange_as_rank(monkeypatch, rank, sent)
        with pytest.raises(ValueError, match=refusal):
            start(DistributedContext(rank=rank, world_size=2))
    assert not (tmp_path / "never_read").exists()


# what gloo raises in this process's collective when another process was killed (SIGKILL, the out-of-memory killer)
LOST_PEER = RuntimeError("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error "
                         "[127.0.0.1]:33694: Connection reset by peer. This is typically caused by a remote worker "
                         "hanging or bugs in the application. Check the logs of the remote worker before reporting an "
                         "error. GLHF!")


def test_a_process_killed_under_torchrun_is_one_line_on_the_others(monkeypatch, capsys):
    """Another process killed without a word (kill -9, the out-of-memory killer) during the final evaluation: this
    one's collective fails with gloo's closed connection, which used to be a 20-line traceback on every other
    process; it is one line saying what happened and where to look."""
    def run_training(*_):
        raise LOST_PEER

    monkeypatch.setattr(cli, "run_training", run_training)
    assert cli.main(parse("--dataset", "shapes", "--device", "cpu")) == EXIT_REFUSED_BY_SYSTEM
    assert capsys.readouterr().err == (
        "stopped: another process has gone (its connection closed): its line says why, or, if it was killed, "
        "torchrun's summary gives its exit code (-9: SIGKILL, which the out-of-memory killer sends)\n")


@pytest.mark.parametrize("flags,advice", [
    ((), "continue with the same command plus --resume"),
    (("--resume",), "continue with the same command"),
    (("--resume", "weights/run.pth"), "continue with the same command"),
    (("--resume", "weights/run.earlier-1.pth"),
     "continue with the same command, --resume weights/run.earlier-1.pth replaced by --resume weights/run.pth"),
    (("--init_from", "voc model.pth"), "continue with the same command, --init_from 'voc model.pth' replaced by "
                                       "--resume weights/run.pth"),
])
def test_how_to_continue_names_the_run_s_own_checkpoint(flags, advice):
    assert how_to_continue(parse(*flags), Path("weights/run.pth")) == advice
    assert stopped_run_advice(parse(*flags), Path("weights/run.pth"), 500) == f"{advice} (from iteration 500)"
    assert stopped_run_advice(parse(*flags), Path("weights/run.pth"), None) == "run the same command again"


def test_other_runtime_errors_keep_their_traceback(monkeypatch):
    def run_training(*_):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "run_training", run_training)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(parse("--dataset", "shapes", "--device", "cpu"))


def test_fp16_on_the_cpu_gets_a_warning_naming_the_faster_choice(monkeypatch, capsys):
    monkeypatch.setattr(cli, "run_training", lambda *_: 0)
    assert cli.main(parse("--dataset", "shapes", "--device", "cpu", "--amp", "fp16")) == 0
    assert "warning: --amp fp16 on the CPU runs many times slower than bf16" in capsys.readouterr().out
    assert cli.main(parse("--dataset", "shapes", "--device", "cpu", "--amp", "bf16")) == 0
    assert "warning" not in capsys.readouterr().out


@pytest.mark.parametrize("flag, value, problem", [
    ("--dataset", "foo", "not one of voc, coco, shapes, custom"),
    ("--dataset", 5, "not one of voc, coco, shapes, custom"),
    ("--amp", "fp8", "not one of auto, bf16, fp16"),
    ("--data_root", 7, "not a path"),
    ("--nms_thresh", "0.6", "not an IoU in (0, 1]"),
    ("--nms_thresh", 0.0, "not an IoU in (0, 1]"),
    ("--nms_thresh", True, "not an IoU in (0, 1]"),
])
def test_trained_model_refuses_evaluation_settings_main_py_never_writes(flag, value, problem):
    """Without --dataset an unknown dataset fell back to voc ("datasets/VOCdevkit/VOC2007 not found: download it"),
    a data_root that is no path to the dataset's default root (generating a fresh shapes set there), and an unknown
    --amp stopped with a traceback (KeyError: 'fp8')."""
    config = {"dataset": "shapes", "data_root": "/data/shapes", "amp": None, flag[2:]: value}
    with pytest.raises(CheckpointError) as error:
        take_evaluation_settings_from_checkpoint(parse("--trained_model", "w.pth"), config)
    assert str(error.value) == (f"w.pth records {flag} {value!r}, {problem}; it was edited or damaged: give {flag} "
                                "to evaluate with, or use a checkpoint as main.py saved it")
    given = {"--dataset": "shapes", "--amp": "bf16", "--data_root": "/data/shapes", "--nms_thresh": "0.4"}[flag]
    args = parse("--trained_model", "w.pth", flag, given)
    take_evaluation_settings_from_checkpoint(args, config)  # the flag given replaces the file's value
    assert str(getattr(args, flag[2:])) == given


def test_trained_model_evaluates_at_the_nms_threshold_of_its_run():
    """A run trained with --nms_thresh 0.6 evaluated at 0.6; --trained_model of its checkpoint evaluated at 0.5, so it
    did not print the run's final scores again. It takes the run's threshold, naming it unless it is the default."""
    config = {"dataset": "shapes", "data_root": "/data/shapes", "amp": None}
    for saved, expected, named in ((0.6, 0.6, "--nms_thresh 0.6"), (0.5, 0.5, ""), (None, None, ""),
                                   (0.123456789, 0.123456789, "--nms_thresh 0.123456789")):  # exact, not :g's 0.123457
        args = parse("--trained_model", "w.pth")
        taken = take_evaluation_settings_from_checkpoint(args, config | {"nms_thresh": saved})
        data = "--dataset shapes, --data_root /data/shapes"
        assert args.nms_thresh == expected and taken == ", ".join(filter(None, [data, named]))
    args = parse("--trained_model", "w.pth", "--nms_thresh", "0.5")  # given: the flag wins
    assert take_evaluation_settings_from_checkpoint(args, config | {"nms_thresh": 0.6}) == (
        "--dataset shapes, --data_root /data/shapes")
    assert args.nms_thresh == 0.5
    fill_dataset_defaults(no_record := parse("--trained_model", "w.pth"))  # a checkpoint without it: the default
    assert no_record.nms_thresh == 0.5


def test_trained_model_evaluates_with_the_batch_size_of_its_run():
    """A run trained with --batch_size 4 evaluated 4 images at a time; --trained_model of its checkpoint 32 at a time.
    The CPU convolutions round an image's outputs differently in batches of other sizes (by 1.5e-5 here on a
    2-iteration shapes run), enough to move a diverged model's boxes and change its AP50 (0.0007 vs 0.0008), so it
    did not print the run's final scores again. It takes the run's batch size, naming it unless it is the default."""
    config = {"dataset": "shapes", "data_root": "/data/shapes", "amp": None}
    data = "--dataset shapes, --data_root /data/shapes"
    for saved, expected, named in ((4, 4, "--batch_size 4"), (32, 32, ""), (None, None, "")):
        args = parse("--trained_model", "w.pth")
        taken = take_evaluation_settings_from_checkpoint(args, config | {"batch_size": saved})
        assert args.batch_size == expected and taken == ", ".join(filter(None, [data, named]))
    args = parse("--trained_model", "w.pth", "--batch_size", "8")  # given: the flag wins
    assert take_evaluation_settings_from_checkpoint(args, config | {"batch_size": 4}) == data
    assert args.batch_size == 8
    for edited in (0, 2.5, "4", True):
        with pytest.raises(CheckpointError) as error:
            take_evaluation_settings_from_checkpoint(parse("--trained_model", "w.pth"), config | {"batch_size": edited})
        assert str(error.value) == (f"w.pth records --batch_size {edited!r}, not a positive integer; it was edited or "
                                    "damaged: give --batch_size to evaluate with, or use a checkpoint as main.py "
                                    "saved it")


def test_a_run_too_long_for_the_data_loader_names_the_flag_that_sets_its_length(tmp_path, monkeypatch, capsys):
    """A run of 2**63 iterations or more stopped with a traceback once the data was read: the batch sampler's len()
    is an index-sized integer ("OverflowError: cannot fit 'int' into an index-sized integer")."""
    for flags, length, length_flag in ((["--max_iter", str(2**63)], 2**63, "--max_iter"),
                                       (["--epochs", str(2**62)], 2**63, "--epochs")):
        args = parse("--dataset", "shapes", *flags)
        fill_dataset_defaults(args)
        with pytest.raises(ValueError) as error:
            check_run_length(args, length)  # --epochs: 2 iterations per epoch
        assert str(error.value) == (f"the run's {length} iterations are more than the {2**63 - 1} the data loader "
                                    f"counts; lower {length_flag}")
    check_run_length(parse("--warm_iter", "0"), 2**63 - 1)
    monkeypatch.setattr(training_run, "build_training", lambda *_: pytest.fail("the data was read"))
    folders = ["--save_folder", str(tmp_path / "w"), "--run_dir", str(tmp_path / "r"),
               "--eval_dir", str(tmp_path / "e")]
    assert cli.main(parse("--dataset", "shapes", "--device", "cpu", "--max_iter", str(2**63), *folders)) == 2
    assert capsys.readouterr().err == (f"error: the run's {2**63} iterations are more than the {2**63 - 1} the data "
                                       "loader counts; lower --max_iter\n")


def test_a_run_too_short_for_its_warm_up_names_the_flag_that_sets_its_length():
    # beside --max_iter the advice was "raise --epochs/--max_iter", and raising --epochs changes nothing there
    for flags, length_flag in ((["--max_iter", "10"], "--max_iter"), (["--epochs", "1"], "--epochs"), ([], "--epochs")):
        args = parse("--dataset", "shapes", "--warm_iter", "20", *flags)
        fill_dataset_defaults(args)
        with pytest.raises(ValueError) as error:
            check_run_length(args, 10)
        assert str(error.value) == ("--warm_iter 20 must be shorter than the run (10 iterations); lower --warm_iter "
                                    f"or raise {length_flag}")


@pytest.mark.parametrize("mode", [[], ["--trained_model", "w.pth"]])
def test_ctrl_c_while_a_run_starts_is_one_line_and_exit_130(mode, tmp_path, monkeypatch, capsys):
    """Ctrl-C while the data was read (generating the shapes set, 30 s on first use; reading VOC's XML files or COCO's
    json) or the model built printed a KeyboardInterrupt traceback from wherever it landed: the run's own handlers only
    start with its first iteration, or with the evaluation."""
    import data.shapes

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(data.shapes, "ensure_shapes_dataset", interrupted)
    if mode:
        from tests.tiny_checkpoint import write_tiny_checkpoint

        mode = ["--trained_model", str(write_tiny_checkpoint(tmp_path / "w.pth"))]
    folders = ["--save_folder", str(tmp_path / "w"), "--run_dir", str(tmp_path / "r"),
               "--eval_dir", str(tmp_path / "e")]
    argv = ["--dataset", "shapes", "--data_root", str(tmp_path / "shapes"), "--device", "cpu", "--workers", "0"]
    assert cli.main(parse(*argv, *folders, *mode)) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert err == "interrupted (Ctrl-C) before it had anything to save; run the same command again\n"


@pytest.fixture
def data_not_read(monkeypatch):
    """main.py must refuse before it reads (or generates) the shapes set: reading it fails the test."""
    import data.shapes

    def data_read(*args, **kwargs):
        raise AssertionError("the data was read")

    monkeypatch.setattr(data.shapes, "ensure_shapes_dataset", data_read)


def shapes_run_flags(tmp_path) -> list[str]:
    """A CPU run on a shapes set under ``tmp_path`` (never made: see ``data_not_read``), writing only there."""
    return ["--dataset", "shapes", "--data_root", str(tmp_path / "shapes"), "--device", "cpu", "--workers", "0",
            "--save_folder", str(tmp_path / "w"), "--run_dir", str(tmp_path / "r"), "--eval_dir", str(tmp_path / "e")]


@pytest.mark.parametrize("flag", ["--trained_model", "--init_from", "--resume"])
def test_a_checkpoint_of_a_ddp_wrapped_model_is_refused_before_the_data_is_read(flag, tmp_path, data_not_read, capsys):
    """A checkpoint in main.py's format whose weights carry DDP's 'module.' prefix (saved from the wrapper by another
    script) was refused only after the dataset was read (slow on VOC or COCO), as weights that do not fit."""
    from tests.tiny_checkpoint import write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path / "w.pth")
    state = torch.load(checkpoint, weights_only=True)
    state["model"] = {f"module.{key}": value for key, value in state["model"].items()}
    torch.save(state, checkpoint)
    assert cli.main(parse(*shapes_run_flags(tmp_path), flag, str(checkpoint))) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith(f"error: {checkpoint} holds the weights of a model wrapped by DistributedDataParallel (or "
                          "DataParallel): every key of 'model' starts with 'module.' (e.g. "
                          "'module.backbone.conv1.weight'), which main.py never saves; ")


def test_resume_of_a_best_checkpoint_is_refused_before_the_data_is_read(tmp_path, data_not_read, capsys):
    """--resume of a run's <name>_best.pth (weights of one evaluation, no training state) was refused only after both
    splits were read and the model built (its ImageNet weights fetched)."""
    from tests.tiny_checkpoint import write_tiny_checkpoint

    best = write_tiny_checkpoint(tmp_path / "w_best.pth")
    torch.save(torch.load(best, weights_only=True) | {"best_metrics": {"mAP": 0.5}}, best)
    assert cli.main(parse(*shapes_run_flags(tmp_path), "--resume", str(best))) == EXIT_BAD_INPUT
    assert capsys.readouterr().err == (
        f"error: {best} holds the weights of its run's best evaluation (after iteration 1), not a training state to "
        f"resume: --resume the run's own checkpoint, or start a new run from these weights with --init_from {best}\n")


def test_resume_of_weights_without_an_optimizer_is_refused_before_the_data_is_read(tmp_path, data_not_read, capsys):
    """--resume of a checkpoint whose optimizer state was stripped (to share a smaller file) was refused only after
    both splits were read and the model built."""
    from tests.tiny_checkpoint import write_tiny_checkpoint

    weights = write_tiny_checkpoint(tmp_path / "w.pth")  # model, config, classes, iteration: no training state
    assert cli.main(parse(*shapes_run_flags(tmp_path), "--resume", str(weights))) == EXIT_BAD_INPUT
    assert capsys.readouterr().err == (
        f"error: {weights} cannot be resumed: it has no 'optimizer' entry (a damaged or edited file); resume an "
        f"earlier checkpoint with --resume PATH, or start a new run from its weights with --init_from {weights}\n")


def test_resume_with_another_precision_is_refused_before_the_data_is_read(tmp_path, data_not_read, capsys):
    """--resume of a run trained with --amp bf16 with another --amp (or, bare --resume, with --amp forgotten) was
    refused only after both splits were read and the model built: --amp's precision depends on the device alone."""
    from tests.tiny_checkpoint import write_tiny_checkpoint
    from utils.checkpoint import capture_rng_state

    checkpoint = write_tiny_checkpoint(tmp_path / "w.pth")
    state = torch.load(checkpoint, weights_only=True)
    state["config"] |= {"amp": "bf16", "amp_dtype": "bf16"}
    torch.save(state | {"optimizer": {}, "scaler": {}, "rng": capture_rng_state()}, checkpoint)
    assert cli.main(parse(*shapes_run_flags(tmp_path), "--resume", str(checkpoint), "--amp", "fp16")) == EXIT_BAD_INPUT
    assert capsys.readouterr().err.startswith(
        f"error: {checkpoint} was saved by a run with mixed precision (--amp) bf16, this run has fp16; resume with the "
        "same flags")


def test_resume_of_a_sync_bn_run_in_one_process_names_the_checkpoint_not_a_flag_to_drop(tmp_path, data_not_read,
                                                                                        capsys):
    """--resume PATH of a torchrun --sync_bn run in a single CPU process said '--sync_bn needs CUDA devices ...; drop
    --sync_bn': a flag the user never typed (taken from the checkpoint), and one that resuming may not drop."""
    from tests.tiny_checkpoint import write_tiny_checkpoint
    from utils.checkpoint import capture_rng_state
    from utils.distributed import DistributedContext

    checkpoint = write_tiny_checkpoint(tmp_path / "w.pth")
    state = torch.load(checkpoint, weights_only=True)
    state["config"] |= {"sync_bn": True, "world_size": 2}
    torch.save(state | {"optimizer": {}, "scaler": {}, "rng": capture_rng_state()}, checkpoint)
    advice = (f"{checkpoint}'s run used --sync_bn (BatchNorm synchronised across the processes of torchrun on CUDA "
              f"devices), taken by --resume PATH, and can only be resumed that way: torchrun --nproc_per_node=N "
              f"main.py --resume {checkpoint} on N GPUs, as many as its run; or start a new run from its weights "
              f"with --init_from {checkpoint}")
    assert cli.main(parse(*shapes_run_flags(tmp_path), "--resume", str(checkpoint))) == EXIT_BAD_INPUT
    assert capsys.readouterr().err == f"error: {advice}\n"
    args = parse("--dataset", "shapes", "--sync_bn")
    fill_dataset_defaults(args)
    with pytest.raises(ValueError, match=r"^r\.pth's run used --sync_bn .* as many as its run; or start a new run"):
        check_training_flags(args, torch.device("cuda", 0), DistributedContext(), sync_bn_from="r.pth")  # one GPU


@pytest.mark.parametrize("mode", ["training", "evaluation"])
def test_a_run_ends_counting_the_images_of_a_kind_it_did_not_name(mode, tmp_path, data_not_read, monkeypatch,
                                                                   capsys):
    """Past the first 10 images of a kind (corrupt JPEG data here) a run named none and counted none: only --check_data
    told how many. A training or evaluation run now ends with one line counting them, each image once however often
    it was read."""
    def run(*_):
        for epoch in range(2):  # every image read again: counted once
            for number in range(13):
                warnings.warn(f"{tmp_path}/{number}.jpg: corrupt JPEG data", CorruptImageWarning)
        return 0

    monkeypatch.setattr(cli, "run_training" if mode == "training" else "run_evaluation_only", run)
    monkeypatch.setattr(cli, "load_checkpoint", lambda *_, **__: {"config": {}})
    monkeypatch.setattr(cli, "check_architecture", lambda *_: None)
    monkeypatch.setattr(cli, "take_evaluation_settings_from_checkpoint", lambda *_: "")
    trained = ["--trained_model", str(tmp_path / "w.pth")] if mode == "evaluation" else []
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = cli.one_line_data_warnings(warnings.showwarning)
        assert cli.main(parse(*shapes_run_flags(tmp_path), *trained)) == 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 12 and lines[-1] == ("warning: 13 images with corrupt JPEG data in this run, of which the "
                                              "first 10 were named (--check_data counts them in each split)")


@pytest.mark.parametrize("stop", ["data error", "Ctrl-C", "diverged"])
def test_a_run_stopped_on_an_error_still_counts_the_images_of_a_kind_it_did_not_name(stop, tmp_path, data_not_read,
                                                                                    monkeypatch, capsys):
    """A run that read 13 images with corrupt JPEG data, naming 10, then stopped on an error raised past its own
    handling (an undecodable image in an evaluation, Ctrl-C before training took it) said the error and nothing of
    the 3 it did not name, which may explain the error. It now counts them below the error line, once; so does a run
    that returns its stop (a diverged loss: its own line said why)."""
    def run(*_):
        for number in range(13):
            warnings.warn(f"{tmp_path}/{number}.jpg: corrupt JPEG data", CorruptImageWarning)
        if stop == "data error":
            raise DataError(f"{tmp_path}/13.jpg: OpenCV cannot decode the file as an image; re-download or re-encode "
                            "the file")
        if stop == "Ctrl-C":
            raise KeyboardInterrupt
        return EXIT_DIVERGED

    evaluation = stop == "data error"  # training takes the data errors of its batches itself
    monkeypatch.setattr(cli, "run_evaluation_only" if evaluation else "run_training", run)
    monkeypatch.setattr(cli, "load_checkpoint", lambda *_, **__: {"config": {}})
    monkeypatch.setattr(cli, "take_evaluation_settings_from_checkpoint", lambda *_: "")
    trained = ["--trained_model", str(tmp_path / "w.pth")] if evaluation else []
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = cli.one_line_data_warnings(warnings.showwarning)
        code = cli.main(parse(*shapes_run_flags(tmp_path), *trained))
    assert code == {"data error": EXIT_BAD_INPUT, "Ctrl-C": EXIT_INTERRUPTED, "diverged": EXIT_DIVERGED}[stop]
    error_line = {
        "data error": f"error: {tmp_path}/13.jpg: OpenCV cannot decode the file as an image; re-download or re-encode "
                      "the file",
        "Ctrl-C": "interrupted (Ctrl-C) before it had anything to save; run the same command again",
    }
    lines = capsys.readouterr().err.splitlines()
    assert lines[11:] == [*([error_line[stop]] if stop in error_line else []), (
        "warning: 13 images with corrupt JPEG data in this run, of which the first 10 were named (--check_data counts "
        "them in each split)")]


class _Killed(Exception):
    """What SIGTERM's default action (the process ends at once, without a word) stands for in a test."""


@pytest.mark.parametrize("mode", [[], ["--trained_model"], ["--check_data"]])
def test_sigterm_while_a_run_starts_is_one_line_and_exit_130(mode, tmp_path, monkeypatch, capsys):
    """A scheduler's SIGTERM while the data was read or generated or the model built ended the process without a
    word (exit 143): SIGTERM was taken as Ctrl-C only from training's first iteration, or in the evaluation. Now it
    stops as Ctrl-C does there, naming the signal, and the caller's SIGTERM handler is back afterwards."""
    import data.shapes

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends

    def default_action(signum, frame):
        raise _Killed

    monkeypatch.setattr(data.shapes, "ensure_shapes_dataset", terminated)
    if mode == ["--trained_model"]:
        from tests.tiny_checkpoint import write_tiny_checkpoint

        mode = ["--trained_model", str(write_tiny_checkpoint(tmp_path / "w.pth"))]
    folders = [] if "--check_data" in mode else ["--save_folder", str(tmp_path / "w"), "--run_dir",
                                                 str(tmp_path / "r"), "--eval_dir", str(tmp_path / "e")]
    argv = ["--dataset", "shapes", "--data_root", str(tmp_path / "shapes"), "--device", "cpu", "--workers", "0"]
    previous = signal.signal(signal.SIGTERM, default_action)
    try:
        assert cli.main(parse(*argv, *folders, *mode)) == EXIT_INTERRUPTED
        assert signal.getsignal(signal.SIGTERM) is default_action
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert capsys.readouterr().err == ("interrupted (SIGTERM) before it had anything to save; run the same command "
                                       "again\n")


STOPPED_WHILE_LOADING = """
import os, runpy, signal, sys

STOP = getattr(signal, sys.argv[1])

class StopAtTorch:
    \"\"\"The signal arrives as main.py imports torch, the first of the modules it takes seconds to load.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            os.kill(os.getpid(), STOP)
        return None


sys.meta_path.insert(0, StopAtTorch())
sys.argv = ["main.py", "--dataset", "shapes"]
runpy.run_path("main.py", run_name="__main__")
"""


@pytest.mark.parametrize("signame, said", [("SIGINT", "Ctrl-C"), ("SIGTERM", "SIGTERM")])
def test_a_stop_while_main_py_loads_its_modules_is_one_line_and_exit_130(signame, said):
    """Ctrl-C in the seconds main.py spends importing torch, torchvision and the project's modules printed a
    KeyboardInterrupt traceback, and SIGTERM there ended it without a word: both now stop as they do while the data
    is read, with one line."""
    result = subprocess.run([sys.executable, "-c", STOPPED_WHILE_LOADING, signame], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert (result.returncode, result.stdout) == (EXIT_INTERRUPTED, ""), result.stderr
    assert result.stderr == (f"interrupted ({said}) before the run started (main.py was loading its modules); run the "
                             "same command again\n")


HANDLERS_WHILE_LOADING = """
import os, runpy, signal, sys


class ReportAtTorch:
    \"\"\"As main.py imports torch: a Ctrl-C arrives, then the handlers main.py holds are printed (and it ends).\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            os.kill(os.getpid(), signal.SIGINT)
            print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN, signal.getsignal(signal.SIGTERM).__name__,
                  flush=True)
            os._exit(0)
        return None


sys.meta_path.insert(0, ReportAtTorch())
sys.argv = ["main.py", "--help"]
runpy.run_path("main.py", run_name="__main__")
"""


def test_a_ctrl_c_that_the_process_was_started_ignoring_stays_ignored():
    """A background job of a shell script starts with Ctrl-C ignored: main.py's handler for the seconds it loads its
    modules made it stop on one (and main() then got Python's default_int_handler); SIGTERM's is still installed."""
    result = subprocess.run([sys.executable, "-c", HANDLERS_WHILE_LOADING], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert (result.returncode, result.stdout, result.stderr) == (0, "True stop_before_the_run\n", "")


def resnet18_keys(prefix: str = "") -> dict[str, torch.Tensor]:
    """torchvision resnet18's state dict keys, each with a 1-value tensor (the keys are what is checked first)."""
    import torchvision

    return {prefix + key: torch.zeros(1) for key in torchvision.models.resnet18().state_dict()}


@pytest.mark.parametrize("content, backbone, problem", [
    (lambda: {"model": {}, "config": {}, "class_names": ["dog"], "iteration": 3}, "resnet18",
     "is a detector checkpoint (main.py saves these), not a backbone's ImageNet weights: start from its weights with "
     "--init_from {path}, or continue its run with --resume {path}"),
    (resnet18_keys, "vgg16", "does not fit the VGG16BN backbone: missing keys ['features.0.bias'"),
    (lambda: resnet18_keys("module."), "resnet18",
     "(its keys, prefix 'module.' removed) does not fit the ResNet18 backbone: size mismatch for conv1.weight: it "
     "holds shape (1,), the backbone takes shape (64, 3, 7, 7)"),
    (dict, "resnet18", "holds no weights (an empty state dict); give a torchvision state dict (e.g. "
                     "resnet18-f37072fd.pth), or pass --no_pretrained"),
    (lambda: [torch.zeros(1)], "resnet18", "holds a list, not a state dict (torch.save(model.state_dict())); give a "
                                   "torchvision state dict (e.g. resnet18-f37072fd.pth), or pass --no_pretrained"),
])
def test_pretrained_weights_that_do_not_fit_stop_before_the_data_is_read(content, backbone, problem, tmp_path,
                                                                         monkeypatch, capsys):
    """The file's content was read when the model was built, after both splits were read (minutes on VOC or COCO):
    only a missing file or a folder was refused before."""
    monkeypatch.setattr(training_run, "build_training", lambda *_: pytest.fail("the data was read"))
    weights = tmp_path / "weights.pth"
    torch.save(content(), weights)
    folders = ["--save_folder", str(tmp_path / "w"), "--run_dir", str(tmp_path / "r"),
               "--eval_dir", str(tmp_path / "e")]
    assert cli.main(parse("--dataset", "shapes", "--data_root", str(tmp_path / "shapes"), "--device", "cpu",
                          "--backbone", backbone, "--pretrained", str(weights), *folders)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --pretrained {weights} ") and err.count("\n") == 1
    assert problem.format(path=weights) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.pth"]


def test_pretrained_weights_are_read_once_and_given_to_the_model(tmp_path, monkeypatch):
    """check_training_flags reads and checks the file before the data; the model is built from what it read."""
    import torchvision

    from models.pretrained import read_backbone_weights
    from utils.distributed import DistributedContext

    state = torchvision.models.resnet18().state_dict()
    weights = tmp_path / "resnet18.pth"
    torch.save(state, weights)
    args = parse("--dataset", "shapes", "--pretrained", str(weights), "--save_folder", str(tmp_path / "w"),
                 "--run_dir", str(tmp_path / "r"), "--eval_dir", str(tmp_path / "e"))
    fill_dataset_defaults(args)
    read = check_training_flags(args, torch.device("cpu"), DistributedContext())
    assert read.keys() == read_backbone_weights(weights, ResNet18).keys() == state.keys() - {"fc.weight", "fc.bias"}
    weights.unlink()  # not read again
    from utils.training_setup import build_detector_fetching_once

    model = build_detector_fetching_once(args, 3, DistributedContext(), read)
    assert all(torch.equal(value, state[key]) for key, value in model.backbone.state_dict().items())


def test_eval_results_of_an_assigner_study_regime_folder_names_its_runs_evaluations(tmp_path, monkeypatch, capsys):
    """benchmarks/assigners.py keeps each run's detections in work/<regime>/seed<N>/<arm>/eval, three levels below
    the regime folder: `--eval_results` of that folder asked for --dataset (then found no results) instead of naming
    the evaluations inside it, as it does one or two levels up."""
    monkeypatch.setattr(cli, "make_dataset", lambda *_, **__: pytest.fail("the dataset was read"))
    regime = tmp_path / "work" / "switch_retinanet-resnet18-128"
    for arm in ("IoU", "MG"):
        (regime / "seed0" / arm / "eval").mkdir(parents=True)
        (regime / "seed0" / arm / "eval" / "summary.json").write_text('{"evaluated_with": {"dataset": "shapes"}}')
    assert cli.main(parse("--eval_results", str(regime))) == 2
    inside = [Path("seed0") / arm / "eval" for arm in ("IoU", "MG")]
    assert capsys.readouterr().err == (
        f"error: --eval_results {regime}: no evaluation wrote its results there, but one did in each of its folders "
        f"{inside[0]}, {inside[1]} (an evaluation writes to eval/<DATASET>, or to eval/<DATASET>/<name> for a run "
        f"given --name): give one of them, e.g. --eval_results {regime / inside[0]}\n")
