"""The IoU-vs-MG study (benchmarks/assigners.py, utils/study.py) and its main.py hooks, on a tiny CPU config."""
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import main as cli
import utils.engine as engine
import utils.training_run as training_run
from benchmarks import assigners
from data.shapes import SHAPES_CLASSES, generate_shapes_dataset
from utils.run_exit import (
    EXIT_BAD_INPUT,
    continued_by,
    divergence_advice,
    how_to_continue,
    how_to_evaluate,
    outer_command,
    stopped_run_advice,
)
from utils.run_flags import fill_dataset_defaults
from utils.study import (
    ASSIGN_STATS,
    format_table,
    make_subset_root,
    mean_std,
    read_eval_metrics,
    read_switch_phase_stats,
    regime_plan,
    summarise,
    table_statistics,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    return generate_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", num_trainval=12, num_test=6)


@pytest.fixture
def recorded_steps(monkeypatch):
    """Every training step main.py takes: (whether MG was on, hash of the images and targets it saw)."""
    steps: list[tuple[bool, str]] = []
    original = engine._train_step

    def recording_step(model, loss_fn, priors, optimizer, scaler, images, targets, *rest):
        digest = hashlib.sha256(images.numpy().tobytes())
        for target in targets:
            digest.update(target.numpy().tobytes())
        steps.append((bool(loss_fn.mutual_guide), digest.hexdigest()))
        return original(model, loss_fn, priors, optimizer, scaler, images, targets, *rest)

    monkeypatch.setattr(engine, "_train_step", recording_step)
    return steps


def study_argv(root: Path, out_dir: Path, *extra: str) -> list[str]:
    return [
        "--preset", "tiny", "--version", "fssd", "--backbone", "resnet18", "--dataset", "custom",
        "--data_root", str(root), "--classes", ",".join(SHAPES_CLASSES), "--num_train", "8", "--num_test", "3",
        "--seeds", "0", "1", "--iters", "4", "--warm_iters", "2", "--out_dir", str(out_dir), *extra,
    ]  # fmt: skip


def study_args(root: Path, out_dir: Path, *extra: str):
    return assigners.get_args_parser().parse_args(study_argv(root, out_dir, *extra))


def test_study_runs_both_arms_on_identical_batches(shapes_root, tmp_path, recorded_steps, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (record,) = assigners.main(study_args(shapes_root, tmp_path / "out", "--regime", "switch"))

    # 2 seeds x 2 arms x 4 iterations, in the order seed 0 IoU, seed 0 MG, seed 1 IoU, seed 1 MG
    assert len(recorded_steps) == 16
    runs = [recorded_steps[i : i + 4] for i in range(0, 16, 4)]
    for iou_run, mg_run in ((runs[0], runs[1]), (runs[2], runs[3])):
        assert [h for _, h in iou_run] == [h for _, h in mg_run]  # the same batches, iteration by iteration
        assert [mg for mg, _ in iou_run] == [False] * 4
        assert [mg for mg, _ in mg_run] == [False, False, True, True]  # switch: IoU for 2 warm-up iterations
    assert [h for _, h in runs[0]] != [h for _, h in runs[2]]  # another seed, another data stream

    summary = record["summary"]
    assert set(summary["metrics"]) == {"mAP", "AP50", "AP75"} | {f"AP@{t / 100:.2f}" for t in range(50, 100, 5)}
    for entry in summary["metrics"].values():
        assert entry["diff"] == [mg - iou for mg, iou in zip(entry["MG"], entry["IoU"])]
    assert summary["stats"]["disagree_with_iou"]["IoU"] == [0.0, 0.0]
    table = (tmp_path / "out" / "switch_fssd-resnet18-128.md").read_text()
    assert table == record["table"] and "| AP@0.95 |" in table and "| disagree_with_iou |" in table
    # the heading counts iterations as the logs do (from 1): MG was first used in iteration 3 (it once said "MG from
    # iteration 2", while the run's log said "IoU for iterations 1-2")
    assert table.startswith("### switch: fssd-resnet18 128 px, 4 iterations of batch 2, IoU for iterations 1-2 then "
                            "MG, seeds 0 1\n")
    assert "| cls_pos_per_image |" in table and "| reg_pos_per_image |" in table  # positives per image, both arms
    env = record["environment"]  # the results file says when, where and with which torch it was measured
    assert table.splitlines()[-1] == (f"Measured {env['date']} on {env['cpu']} (cpu, {torch.get_num_threads()} "
                                      f"threads), torch {torch.__version__}.")
    saved = json.loads((tmp_path / "out" / "switch_fssd-resnet18-128.json").read_text(),
                       parse_constant=lambda name: pytest.fail(f"{name} in the JSON: strict readers reject it"))
    assert sorted(saved["per_seed"]) == ["0", "1"]

    # each run's log names its assignment; the switch arm's says when MG takes over
    work = tmp_path / "out" / "work" / "switch_fssd-resnet18-128" / "seed1"
    iou_line = "assignment: IoU (anchor IoU >= 0.5 positive, [0.4, 0.5) ignored, each object's best anchor positive)"
    assert iou_line in (work / "IoU" / "log.txt").read_text()
    assert (f"{iou_line} for iterations 1-2, then Mutual Guidance (sigma 2): per object, as many positives (and "
            "ignored anchors) as IoU assignment would make, chosen by their predicted box's IoU for classification "
            "and by anchor IoU ** ((2 - p) / 2) for regression, p the predicted probability of the object's class"
            ) in (work / "MG" / "log.txt").read_text()
    # the run's assign_summary row is the mean of the statistics logged at its log intervals (iterations 2 and 4)
    rows = [json.loads(line) for line in (tmp_path / "out" / "work" / "switch_fssd-resnet18-128" / "seed1" / "MG" /
                                          "metrics.jsonl").read_text().splitlines()]
    logged = [row for row in rows if row["kind"] == "train"]
    (summary_row,) = [row for row in rows if row["kind"] == "assign_summary"]
    assert [row["iteration"] for row in logged] == [2, 4] and logged[0]["disagree_with_iou"] == 0.0  # IoU until 2
    for name in ("pos_per_object", "cls_pos_pred_iou", "disagree_with_iou"):
        assert summary_row[name] == pytest.approx((logged[0][name] + logged[1][name]) / 2)
    assert record["per_seed"][1]["MG"]["stats"]["disagree_with_iou"] == pytest.approx(summary_row["disagree_with_iou"])
    # the table's statistics are MG's phase (iteration 4, after the switch), both arms: the MG arm's own row
    (phase_row,) = [row for row in rows if row["kind"] == "assign_summary_mg"]
    assert record["per_seed"][1]["MG"]["stats_mg_phase"] == {name: phase_row[name] for name in ASSIGN_STATS}
    iou_logged = [row for row in map(json.loads, (work / "IoU" / "metrics.jsonl").read_text().splitlines())
                  if row["kind"] == "train"]
    assert [row["iteration"] for row in iou_logged] == [2, 4]  # the IoU arm's same iteration
    assert record["per_seed"][1]["IoU"]["stats_mg_phase"] == pytest.approx(
        {name: iou_logged[1][name] for name in ASSIGN_STATS})
    assert summary["stats"]["disagree_with_iou"]["MG"][1] == phase_row["disagree_with_iou"] == logged[1][
        "disagree_with_iou"]
    assert ("| assignment statistic (mean over the log intervals after the switch to MG, iterations 3-4, both arms) |"
            in table)


def test_warm_regime_forks_both_arms_from_one_checkpoint(shapes_root, tmp_path, recorded_steps, monkeypatch):
    monkeypatch.chdir(tmp_path)
    forks = []
    original_load = cli.load_checkpoint

    def recording_load(path, *a, **kw):
        forks.append(Path(path).name)
        return original_load(path, *a, **kw)

    monkeypatch.setattr(cli, "load_checkpoint", recording_load)
    args = study_args(shapes_root, tmp_path / "out", "--regime", "warm", "--seeds", "3", "--iters", "3")
    (record,) = assigners.main(args)

    # warm-up (2 iterations, IoU), then IoU arm and MG arm (3 iterations each) from its checkpoint
    assert [len(recorded_steps)] == [2 + 3 + 3]
    assert [mg for mg, _ in recorded_steps] == [False] * 5 + [True] * 3
    assert [h for _, h in recorded_steps[2:5]] == [h for _, h in recorded_steps[5:8]]
    assert forks == ["CUSTOM_fssd_resnet18_size128_anchor24.0.pth"] * 2  # per arm, read once: architecture and weights
    assert "mAP" in record["warm_checkpoint"]["metrics"] and list(record["per_seed"]) == [3]


def test_mutual_guide_from_needs_mutual_guide():
    args = cli.get_args_parser().parse_args(["--dataset", "shapes", "--mutual_guide_from", "5"])
    with pytest.raises(ValueError, match="--mutual_guide_from 5 needs --mutual_guide"):
        fill_dataset_defaults(args)


def test_regime_plan():
    scratch = regime_plan("scratch", 100, 30, 4)
    assert [(p.arm, p.max_iter, p.flags, p.fork) for p in scratch] == [
        ("IoU", 100, (), False), ("MG", 100, ("--mutual_guide",), False)]
    assert [p.fork for p in regime_plan("warm", 100, 30, 4)] == [True, True]
    assert regime_plan("switch", 100, 30, 4)[1].flags == ("--mutual_guide", "--mutual_guide_from", "30")
    assert [p.max_iter for p in regime_plan("long", 100, 30, 4)] == [400, 400]
    with pytest.raises(ValueError, match="0 < --warm_iters"):
        regime_plan("switch", 100, 100, 4)


def test_subset_root_keeps_the_first_ids(shapes_root, tmp_path):
    subset = make_subset_root(shapes_root, tmp_path / "subset", 5, 2)
    assert (subset / "ImageSets" / "Main" / "trainval.txt").read_text().split() == [
        "000001", "000002", "000003", "000004", "000005"]
    assert len((subset / "ImageSets" / "Main" / "test.txt").read_text().split()) == 2
    assert (subset / "JPEGImages").resolve() == (shapes_root / "JPEGImages").resolve()
    with pytest.raises(ValueError, match="--num_train 13: .* lists 12 trainval images; give at most 12"):
        make_subset_root(shapes_root, tmp_path / "too_many", 13, 2)


def test_subset_of_a_folder_without_test_list_trains_on_train_not_trainval(shapes_root, tmp_path):
    # VOC2012-style lists: trainval = train + val, no test.txt; the subset must not train on its test images
    source = tmp_path / "voc2012_like"
    (source / "ImageSets" / "Main").mkdir(parents=True)
    for folder in ("Annotations", "JPEGImages"):
        (source / folder).symlink_to(shapes_root / folder, target_is_directory=True)
    ids = (shapes_root / "ImageSets" / "Main" / "trainval.txt").read_text().split()
    lists = {"trainval": ids, "train": ids[:8], "val": ids[8:]}
    for name, listed in lists.items():
        (source / "ImageSets" / "Main" / f"{name}.txt").write_text("\n".join(listed) + "\n")
    subset = make_subset_root(source, tmp_path / "subset", 4, 2)
    written = sorted(path.stem for path in (subset / "ImageSets" / "Main").glob("*.txt"))
    assert written == ["train", "val"]
    assert (subset / "ImageSets" / "Main" / "train.txt").read_text().split() == ids[:4]
    assert (subset / "ImageSets" / "Main" / "val.txt").read_text().split() == ids[8:10]


def test_read_eval_metrics_averages_classes_per_threshold(tmp_path):
    summary = {"metrics": {"mAP": 0.3, "AP50": 0.5, "AP75": 0.25, "iou_thresholds": [0.5, 0.75],
                           "per_threshold_AP": [[0.4, 0.6, None], [0.2, 0.3, None]]}}  # fmt: skip
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    metrics = read_eval_metrics(tmp_path / "summary.json")
    assert metrics["mAP"] == 0.3
    assert metrics["AP@0.50"] == pytest.approx(0.5) and metrics["AP@0.75"] == pytest.approx(0.25)
    coco = {"metrics": {"mAP": 0.2, "AP50": 0.4, "AP75": 0.1, "AP_small": 0.05}}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    assert read_eval_metrics(tmp_path / "coco.json") == {"mAP": 0.2, "AP50": 0.4, "AP75": 0.1}


def test_summary_and_table_numbers():
    per_seed = {
        seed: {arm: {"metrics": {"mAP": value}, "stats": {"disagree_with_iou": 0.1 * (arm == "MG")}, "seconds": 10.0}
               for arm, value in (("IoU", iou), ("MG", mg))}
        for seed, (iou, mg) in {0: (0.10, 0.13), 1: (0.20, 0.21), 2: (0.30, 0.35)}.items()
    }
    summary = summarise(per_seed)
    assert summary["metrics"]["mAP"]["diff"] == pytest.approx([0.03, 0.01, 0.05])
    mean, std = mean_std([0.03, 0.01, 0.05])
    assert (mean, std) == (pytest.approx(0.03), pytest.approx(0.02))
    assert math.isnan(mean_std([0.5])[1])
    table = format_table("t", [0, 1, 2], summary)  # seeds where MG scored higher: 3 of 3
    assert "| mAP | 20.0 ± 10.0 | 23.0 ± 11.1 | 3.0 ± 2.0 | 3/3 | +3.0 | +1.0 | +5.0 |" in table
    assert "| disagree_with_iou | 0.000 ± 0.000 | 0.100 ± 0.000 | 0.100 ± 0.000 |" in table


def tiny_switch_results(with_mg_phase: bool) -> dict:
    """``per_seed`` results as the tiny preset's switch regime saves them (seeds 0 and 1, 4 iterations, IoU for 1-2,
    statistics logged at 2 and 4): whole-run ``stats``; with ``with_mg_phase``, ``stats_mg_phase`` over iteration 4,
    as runs save them now (the MG arm's ``assign_summary_mg`` row, the IoU arm's same iterations)."""
    per_seed = {}
    for seed in (0, 1):
        per_seed[seed] = {}
        for arm in ("IoU", "MG"):
            phase = dict.fromkeys(ASSIGN_STATS, 0.5) | {"disagree_with_iou": 0.4 * (arm == "MG") + 0.01 * seed}
            whole = phase | {"disagree_with_iou": phase["disagree_with_iou"] / 2}  # iteration 2's IoU: 0 disagreement
            per_seed[seed][arm] = {"metrics": {"mAP": 0.01}, "stats": whole, "seconds": 3.0}
            if with_mg_phase:
                per_seed[seed][arm]["stats_mg_phase"] = phase
    return per_seed


def test_switch_table_reports_the_mg_phase_statistics_when_the_runs_saved_them():
    """The switch table's statistics averaged the whole run, so MG's disagreement with IoU assignment was halved by the
    IoU phase (0 by definition) of the tiny run: it reports the intervals after the switch, for both arms, when the
    results have them, and says so; results saved before that fall back to the whole run, and the heading says it."""
    table_for = {}
    for with_mg_phase in (True, False):
        per_seed, caption = table_statistics("switch", tiny_switch_results(with_mg_phase), warm_iters=2, iters=4)
        table_for[with_mg_phase] = format_table("t", [0, 1], summarise(per_seed), caption)
    assert ("| assignment statistic (mean over the log intervals after the switch to MG, iterations 3-4, both arms) "
            "| IoU | MG | MG − IoU |") in table_for[True]
    assert "| disagree_with_iou | 0.005 ± 0.007 | 0.405 ± 0.007 | 0.400 ± 0.000 |" in table_for[True]
    assert ("| assignment statistic (mean over the whole run's log intervals, the IoU phase of iterations 1-2 "
            "included: these results were saved before runs kept the MG phase's) | IoU | MG | MG − IoU |"
            ) in table_for[False]
    assert "| disagree_with_iou | 0.003 ± 0.004 | 0.203 ± 0.004 | 0.200 ± 0.000 |" in table_for[False]
    mixed = tiny_switch_results(True)
    del mixed[1]["IoU"]["stats_mg_phase"]  # one run reused from before: the whole run for every run
    assert table_statistics("switch", mixed, 2, 4)[1].startswith("mean over the whole run's log intervals")
    scratch = tiny_switch_results(False)
    assert table_statistics("scratch", scratch, 2, 4) == (scratch, "mean over log intervals")


def test_switch_phase_statistics_are_the_mg_row_or_the_same_iterations_of_the_iou_arm(tmp_path):
    """The MG arm's statistics after the switch are its assign_summary_mg row; the IoU arm, which has none, is
    averaged over the same log intervals as main.py averages them (a ratio over the rows where its count is not 0)."""
    def row(iteration, disagree, positives):  # a batch without positives logs their ratios as 0
        return {"kind": "train", "iteration": iteration, "num_pos_cls": positives, "pos_per_object": 1.0 * iteration,
                **{name: 0.5 * (positives > 0) for name in ASSIGN_STATS if name != "pos_per_object"},
                "disagree_with_iou": disagree}

    mg_row = {"kind": "assign_summary_mg", "iteration": 6, **dict.fromkeys(ASSIGN_STATS, 0.25)}
    (tmp_path / "mg.jsonl").write_text("\n".join(json.dumps(r) for r in (
        row(2, 0.0, 9), row(4, 0.4, 9), row(6, 0.3, 9), {"kind": "assign_summary", **dict.fromkeys(ASSIGN_STATS, 0.1)},
        mg_row)) + "\n")
    assert read_switch_phase_stats(tmp_path / "mg.jsonl", 2) == dict.fromkeys(ASSIGN_STATS, 0.25)
    (tmp_path / "iou.jsonl").write_text("\n".join(json.dumps(r) for r in (
        row(2, 0.0, 9), row(4, 0.0, 0), row(6, 0.0, 7), {"kind": "assign_summary", **dict.fromkeys(ASSIGN_STATS, 0.1)},
        )) + "\n")
    stats = read_switch_phase_stats(tmp_path / "iou.jsonl", 2)
    assert stats["pos_per_object"] == 5.0 and stats["cls_pos_pred_iou"] == 0.5  # (4 + 6) / 2; iteration 4's excluded
    assert stats["disagree_with_iou"] == 0.0


def test_table_columns_follow_the_seeds_as_given():
    # --seeds 2 0: the column headed "seed 2" holds seed 2's difference (summarise kept --seeds' order)
    per_seed = {seed: {arm: {"metrics": {"mAP": value}, "stats": {}, "seconds": 1.0}
                       for arm, value in (("IoU", 0.1), ("MG", mg))}
                for seed, mg in ((2, 0.3), (0, 0.05))}  # fmt: skip
    table = format_table("t", [2, 0], summarise(per_seed))
    assert "| metric (%) | IoU | MG | MG − IoU | seeds MG > IoU | seed 2 | seed 0 |" in table
    assert table.splitlines()[4].endswith("| 1/2 | +20.0 | -5.0 |")


def test_repeated_seed_is_refused(shapes_root, tmp_path):
    with pytest.raises(ValueError, match="--seeds 0 1 0: give every seed once"):
        assigners.fill_preset(study_args(shapes_root, tmp_path, "--seeds", "0", "1", "0"))


@pytest.mark.parametrize("flags, message", [
    (("--regime", "scratch", "switch", "--warm_iters", "4"), r"--regime switch needs 0 < --warm_iters \(4\) < --iters"),
    (("--regime", "warm", "--warm_iters", "2", "--lr_warmup", "2"), "--lr_warmup 2 must be shorter than --warm_iters"),
    (("--regime", "long", "--long_factor", "0"), "--regime long needs --long_factor >= 1, got 0"),
    (("--seeds", "-1"), "every seed must be from 0 to"),
    (("--device", "gpu"), "--device gpu is not a device this program runs on; use auto, cpu, cuda or cuda:N"),
    (("--threads", "-1"), "--threads must be >= 1, got -1"),
    (("--threads", "0"), "--threads must be >= 1, got 0"),
    (("--lr_warmup", "-1"), "--lr_warmup must be >= 0, got -1"),
    (("--num_train", "0"), "--num_train must be >= 1, got 0"),
    (("--num_test", "99"), r"--num_test 99: .* lists 6 test images; give at most 6, or --full_data"),
    # a traceback (FileExistsError) when the study made its folder
    (("--out_dir", "{tmp}/afile"), r"^--out_dir .*/afile is a file; give a folder for the results$"),
    # taken for the flag left out: the current folder, the default data folder
    (("--out_dir", ""), r"^--out_dir '' is empty: give a folder for the results, or leave --out_dir out$"),
    (("--data_root", ""), r"^--data_root '' is empty: give the dataset folder, or leave --data_root out$"),
    (("--classes", ""), r"^--classes '' is empty: give class names \(cat,dog\) or a file of them, or leave --classes "
                        "out$"),
])  # fmt: skip
def test_bad_flags_are_refused_before_any_run(shapes_root, tmp_path, flags, message, monkeypatch):
    monkeypatch.setattr(assigners, "run_main", lambda *run: pytest.fail(f"a run started: {run}"))
    (tmp_path / "afile").write_text("in the way")
    argv = study_argv(shapes_root, tmp_path, *(flag.format(tmp=tmp_path) for flag in flags))
    with pytest.raises(ValueError, match=message):
        assigners.main(assigners.get_args_parser().parse_args(argv))


@pytest.mark.parametrize("flags, message", [
    # the cpu preset's --warm_iters is the warm regime's shared checkpoint (240), longer than its --iters (60)
    (("--preset", "cpu"), r"^--regime switch needs 0 < --warm_iters \(240\) < --iters \(60\): --preset cpu sets "
                          r"--warm_iters 240 \(the warm regime's shared checkpoint\) and --iters 60; give --warm_iters "
                          r"below --iters, e\.g\. --warm_iters 30 \(IoU for 30 of the 60 iterations, then MG\)$"),
    (("--preset", "tiny", "--iters", "2", "--lr_warmup", "0"),
     r": --preset tiny sets --warm_iters 2 \(the warm regime's shared checkpoint\); give --warm_iters below --iters, "
     r"e\.g\. --warm_iters 1 \(IoU for 1 of the 2 iterations, then MG\)$"),
    (("--preset", "tiny", "--warm_iters", "6"),
     r": --preset tiny sets --iters 4; give --iters above --warm_iters, e\.g\. --iters 12 \(IoU for 6 of the 12 "
     r"iterations, then MG\)$"),
])  # fmt: skip
def test_switch_with_a_presets_iterations_that_do_not_fit_it_names_the_preset_and_values_that_fit(flags, message,
                                                                                               tmp_path):
    """`--regime switch` alone with the cpu (or cuda) preset was refused with values the user never gave."""
    argv = ["--regime", "switch", "--device", "cpu", "--out_dir", str(tmp_path), *flags]
    with pytest.raises(ValueError, match=message):
        assigners.fill_preset(assigners.get_args_parser().parse_args(argv))


def test_device_auto_which_the_device_error_suggests_runs_on_the_machine_s_device(shapes_root, tmp_path, monkeypatch,
                                                                                    capsys):
    # the study once passed "auto" to torch.device for its heading: a RuntimeError traceback before any run
    machine = "cuda" if torch.cuda.is_available() else "cpu"
    devices = []
    monkeypatch.setattr(assigners, "run_regime", lambda args, *rest: devices.append(args.device) or {"table": ""})
    assigners.main(study_args(shapes_root, tmp_path, "--device", "AUTO"))
    out = capsys.readouterr().out
    assert devices == [machine] and out.startswith("# IoU vs MG study, ") and f", device {machine} (" in out


@pytest.mark.parametrize("flag, value, choices", [("--version", "fsd", "'fssd', 'retinanet', 'rfbnet', 'pafpn'"),
                                                  ("--backbone", "resnet19", "'vgg16', 'resnet18'")])
def test_an_unknown_detector_is_refused_by_the_study_s_parser(flag, value, choices, capsys):
    # main.py's parser refused it in the first run, exiting the study with main.py's usage error (see main.py --help)
    with pytest.raises(SystemExit) as stop:
        assigners.get_args_parser().parse_args([flag, value])
    assert stop.value.code == 2
    assert f"argument {flag}: invalid choice: '{value}' (choose from {choices})" in capsys.readouterr().err


def test_warm_checkpoint_is_found_when_an_earlier_run_set_its_own_aside(tmp_path):
    # a rerun into the same --out_dir: main.py kept the first run's checkpoint as *.earlier-<time>.pth
    (tmp_path / "CUSTOM_fssd.earlier-20260101-000000.pth").write_bytes(b"")
    (tmp_path / "CUSTOM_fssd.pth").write_bytes(b"")
    assert assigners.checkpoint_in(tmp_path) == tmp_path / "CUSTOM_fssd.pth"


def test_failed_run_is_reported_and_the_same_command_continues_with_it(
        shapes_root, tmp_path, recorded_steps, monkeypatch):
    monkeypatch.chdir(tmp_path)
    original_main = cli.main
    # MG stops as after a full disk (exit code 1; a diverged run, exit code 3, is not continued: test below)
    monkeypatch.setattr(cli, "main", lambda args: 1 if args.mutual_guide else original_main(args))
    flags = ("--regime", "scratch", "--seeds", "0", "--iters", "2", "--lr_warmup", "0")
    with pytest.raises(assigners.RunFailed, match=r"seed0/MG stopped \(main.py exit code 1, .*; main.py's --warm_iter "
                                                  r"there is this script's --lr_warmup\); .*same command continues"):
        assigners.main(study_args(shapes_root, tmp_path / "out", *flags))
    assert len(recorded_steps) == 2  # the IoU arm finished

    monkeypatch.setattr(cli, "main", original_main)
    (record,) = assigners.main(study_args(shapes_root, tmp_path / "out", *flags))
    assert [mg for mg, _ in recorded_steps] == [False, False, True, True]  # only the MG arm trained again
    assert set(record["per_seed"][0]) == {"IoU", "MG"}

    # other settings: nothing is reused, so the table never mixes them
    assigners.main(study_args(shapes_root, tmp_path / "out", *flags, "--lr", "0.02"))
    assert len(recorded_steps) == 4 + 4


def test_subset_of_another_set_under_the_same_name_links_the_new_images(shapes_root, tmp_path):
    # --out_dir reused with another --data_root and the same --num_train/--num_test: one subset folder name
    other = generate_shapes_dataset(tmp_path / "other", num_trainval=6, num_test=3, seed=1)
    make_subset_root(shapes_root, tmp_path / "subset", 4, 2)
    subset = make_subset_root(other, tmp_path / "subset", 4, 2)
    for folder in ("Annotations", "JPEGImages"):
        assert (subset / folder).resolve() == (other / folder).resolve()


def test_subsets_of_different_sets_get_different_folders(shapes_root, tmp_path):
    # so a finished run on one set is never reused for the other (main.py's flags name the subset folder)
    args = study_args(shapes_root, tmp_path)
    assigners.fill_preset(args)
    flags = assigners.data_flags(args, tmp_path)
    args.data_root = str(tmp_path / "other")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "ImageSets").symlink_to(shapes_root / "ImageSets", target_is_directory=True)
    for folder in ("Annotations", "JPEGImages"):
        (tmp_path / "other" / folder).symlink_to(shapes_root / folder, target_is_directory=True)
    assert assigners.data_flags(args, tmp_path) != flags


@pytest.mark.parametrize("flags, message", [
    (("--size", "100"), r"^--size 100 is not a multiple of 64 from 128; use e.g. 320 or 512$"),
    (("--batch_size", "0"), r"^--batch_size must be >= 1, got 0$"),
    (("--lr", "-1"), r"^--lr must be a number > 0 and at most"),
    (("--log_interval", "0"), r"^--log_interval must be >= 1, got 0$"),
])  # fmt: skip
def test_flags_main_py_would_refuse_are_refused_with_its_message_before_the_data_is_made(tmp_path, flags, message,
                                                                                         monkeypatch):
    # --size 100 passes the study's own parser; main.py refused it only in the first run, after the shapes set (minutes
    # to generate) or a subset was made; now main.py's own checks read every run's flags first
    monkeypatch.setattr(assigners, "run_main", lambda *run: pytest.fail(f"a run started: {run}"))
    argv = ["--preset", "tiny", "--dataset", "shapes", "--data_root", str(tmp_path / "shapes"),
            "--out_dir", str(tmp_path / "out"), *flags]
    with pytest.raises(ValueError, match=message):
        assigners.main(assigners.get_args_parser().parse_args(argv))
    assert not (tmp_path / "shapes").exists() and not (tmp_path / "out").exists()


def test_flags_main_py_refuses_are_reported_as_such_not_as_a_run_to_continue(shapes_root, tmp_path, monkeypatch):
    # main.py refused the run (exit code 2: a flag or the data; here stood in for) after the study's checks passed
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "main", lambda args: cli.EXIT_BAD_INPUT)
    with pytest.raises(assigners.RunFailed) as failure:
        assigners.main(study_args(shapes_root, tmp_path / "out", "--regime", "scratch"))
    message = str(failure.value)
    assert message.startswith("main.py refused the flags or data of the run in ")
    assert "seed0/IoU (exit code 2, its error is above): fix what it names" in message
    assert "continues" not in message  # the same command would stop at the same place
    assert failure.value.exit_code == 2


def test_interrupted_run_is_resumed_from_its_checkpoint(shapes_root, tmp_path, recorded_steps, monkeypatch, capsys):
    # Ctrl-C in the MG arm's 2nd iteration: main.py saves it after 2 of 4 iterations and exits 130; the same command
    # continues that run from its checkpoint (main.py --resume: the same batches), not from iteration 0
    monkeypatch.chdir(tmp_path)
    original_step = engine._train_step  # recorded_steps' recording step
    interrupt = [True]

    def interrupting_step(model, loss_fn, *rest):
        result = original_step(model, loss_fn, *rest)
        if loss_fn.mutual_guide and interrupt[0] and sum(mg for mg, _ in recorded_steps) == 2:
            interrupt[0] = False
            os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(engine, "_train_step", interrupting_step)
    flags = ("--regime", "scratch", "--seeds", "0", "--iters", "4", "--lr_warmup", "0")
    with pytest.raises(assigners.RunFailed, match="main.py exit code 130") as failure:
        assigners.main(study_args(shapes_root, tmp_path / "out", *flags))
    assert failure.value.exit_code == 130
    # main.py's line names the study's command, as the study's own line does, not main.py's --resume
    printed = capsys.readouterr()
    checkpoint = tmp_path / "out" / "work" / "scratch_fssd-resnet18-128" / "seed0" / "MG" / (
        "CUSTOM_fssd_resnet18_size128_anchor24.0_MG.pth")
    assert (f"SIGINT received: stopped after iteration 2; checkpoint {checkpoint} saved, continue with the same "
            "benchmarks/assigners.py command (it goes on from this run's checkpoint)\n") in printed.out
    assert "--resume" not in printed.out + printed.err and "same command continues" in str(failure.value)
    assert outer_command() is None  # main.py run alone again gives its own advice
    (record,) = assigners.main(study_args(shapes_root, tmp_path / "out", *flags))

    iou, mg = recorded_steps[:4], recorded_steps[4:]
    assert [on for on, _ in mg] == [True] * 4  # 2 before the stop, 2 after it: iterations 3 and 4 alone trained again
    assert [h for _, h in mg] == [h for _, h in iou]  # the resumed run went on with the batches it had not seen
    work = tmp_path / "out" / "work" / "scratch_fssd-resnet18-128" / "seed0" / "MG"
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows if row["kind"] == "train"] == [2, 4]  # one run's logs, continued
    assert record["per_seed"][0]["MG"]["seconds"] > 0



def test_out_of_memory_in_a_final_evaluation_of_the_study_names_the_study_command(shapes_root, tmp_path, monkeypatch,
                                                                                 capsys):
    # main.py alone would give a main.py --trained_model command, which would not complete the study
    monkeypatch.chdir(tmp_path)

    def out_of_memory(*_):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB.")

    monkeypatch.setattr(training_run, "evaluate", out_of_memory)
    flags = ("--regime", "scratch", "--seeds", "0", "--iters", "2", "--lr_warmup", "0")
    with pytest.raises(assigners.RunFailed, match="main.py exit code 1,"):
        assigners.main(study_args(shapes_root, tmp_path / "out", *flags))
    err = capsys.readouterr().err
    assert err.endswith("but its evaluation stopped: free the memory, then continue with the same "
                        "benchmarks/assigners.py command (it goes on from this run's checkpoint)\n")
    assert "main.py --trained_model" not in err


def test_main_py_advice_names_the_command_of_the_program_it_runs_in():
    args = cli.get_args_parser().parse_args(["--dataset", "shapes", "--init_from", "a.pth"])
    checkpoint = Path("weights/run.pth")
    with continued_by("the same study command", "Run the study with a lower --study_lr"):
        assert how_to_continue(args, checkpoint) == "continue with the same study command"
        assert divergence_advice(args, torch.bfloat16) == "Run the study with a lower --study_lr"
        assert stopped_run_advice(args, checkpoint, 500) == "continue with the same study command (from iteration 500)"
        assert stopped_run_advice(args, checkpoint, None) == "run the same command again"
        assert how_to_evaluate(args, checkpoint) == "continue with the same study command"
    assert how_to_continue(args, checkpoint) == ("continue with the same command, --init_from a.pth replaced by "
                                                 "--resume weights/run.pth")
    assert how_to_evaluate(args, checkpoint) == "evaluate it with: python main.py --trained_model weights/run.pth"
    fill_dataset_defaults(args)
    assert divergence_advice(args, None) == ("Start again with a lower --lr (peak 0.06) or a longer --warm_iter (50), "
                                             "or check the data with --check_data")
    assert "MG_CONTINUE_COMMAND" not in os.environ and "MG_DIVERGED_ADVICE" not in os.environ


# the study in a process of its own that SIGKILLs itself (no handler runs, as under the OOM killer) after the MG arm's
# third iteration
KILLED_STUDY = """
import os, signal, sys
import torch
import utils.engine as engine
from benchmarks import assigners

original_step, mg_steps = engine._train_step, []

def killing_step(model, loss_fn, *rest):
    result = original_step(model, loss_fn, *rest)
    mg_steps.append(loss_fn.mutual_guide)
    if sum(mg_steps) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return result

engine._train_step = killing_step
torch.set_num_threads(1)
assigners.main(assigners.get_args_parser().parse_args(sys.argv[1:]))
"""


def test_killed_run_resumes_from_its_last_periodic_checkpoint(shapes_root, tmp_path, recorded_steps, monkeypatch):
    # a run killed with no chance to save (SIGKILL) in its 3rd of 4 iterations continues from the checkpoint main.py
    # saved after iteration 2 (--checkpoint_interval 2), not from iteration 0
    monkeypatch.chdir(tmp_path)
    flags = ("--regime", "scratch", "--seeds", "0", "--iters", "4", "--lr_warmup", "0", "--checkpoint_interval", "2")
    argv = study_argv(shapes_root, tmp_path / "out", *flags)
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, "-c", KILLED_STUDY, *argv], env=env, capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    work = tmp_path / "out" / "work" / "scratch_fssd-resnet18-128" / "seed0"
    checkpoint = work / "MG" / "CUSTOM_fssd_resnet18_size128_anchor24.0_MG.pth"
    assert torch.load(checkpoint, weights_only=True)["iteration"] == 2
    attempt = json.loads((work / "MG" / assigners.ATTEMPT_FILE).read_text())
    ran_before_the_save = checkpoint.stat().st_mtime - attempt["started"]

    (record,) = assigners.main(study_args(shapes_root, tmp_path / "out", *flags))
    assert recorded_steps == [(True, h) for _, h in recorded_steps]  # the IoU arm's result was reused
    assert len(recorded_steps) == 2  # iterations 3 and 4 alone trained again
    rows = [json.loads(line) for line in (work / "MG" / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows if row["kind"] == "train"] == [2, 4]  # one run's logs, continued
    assert f"resumed from {checkpoint} at iteration 2/4" in (work / "MG" / "log.txt").read_text()
    assert record["per_seed"][0]["MG"]["seconds"] > ran_before_the_save > 0  # the killed attempt's time counts
    assert not (work / "MG" / assigners.ATTEMPT_FILE).exists()


def test_finished_runs_are_reused_whatever_their_checkpoint_interval(tmp_path):
    # when a run saves does not change its result: earlier versions recorded the run's length as its interval
    key = {"argv": ["--max_iter", "60", "--log_interval", "10"], "fork_of": None}
    result = {"metrics": {"mAP": 0.25}, "stats": dict.fromkeys(assigners.ASSIGN_STATS, 0.5), "seconds": 9.0}
    earlier = {"argv": ["--max_iter", "60", "--log_interval", "10", "--checkpoint_interval", "60"], "fork_of": None}
    (tmp_path / assigners.RESULT_FILE).write_text(json.dumps({"key": earlier, "result": result}))
    assert assigners.finished_result(tmp_path, key) == result
    assert assigners.finished_result(tmp_path, key | {"argv": ["--max_iter", "80", "--log_interval", "10"]}) is None


def test_whole_shapes_splits_are_trained_as_shapes(shapes_root, tmp_path, monkeypatch):
    # --full_data (and the cuda preset, which sets no subset) hands main.py the shapes set itself, which takes no
    # --classes (main.py refuses them: the set has its own)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(assigners, "ensure_shapes_dataset", lambda root, **arguments: shapes_root)
    args = assigners.get_args_parser().parse_args([
        "--preset", "tiny", "--version", "fssd", "--backbone", "resnet18", "--dataset", "shapes", "--full_data",
        "--seeds", "0", "--iters", "2", "--lr_warmup", "0", "--regime", "scratch", "--out_dir", str(tmp_path / "out"),
    ])  # fmt: skip
    (record,) = assigners.main(args)
    assert set(record["per_seed"][0]) == {"IoU", "MG"}
    for arm in ("IoU", "MG"):
        summary = tmp_path / "out" / "work" / "scratch_fssd-resnet18-128" / "seed0" / arm / "eval" / "summary.json"
        config = json.loads(summary.read_text())["config"]
        assert (config["dataset"], config["data_root"], config["train_images"]) == ("shapes", str(shapes_root), 12)


def test_shapes_subsets_train_with_the_shapes_augmentation(shapes_root, tmp_path, monkeypatch):
    # a subset (--num_train/--num_test; the cpu preset's 100 test images) is read as a custom VOC-layout folder, whose
    # main.py default is zoom-out with p 0.6; a study of shapes trains as main.py trains shapes: without zoom-out
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(assigners, "ensure_shapes_dataset", lambda root, **arguments: shapes_root)
    args = assigners.get_args_parser().parse_args([
        "--preset", "tiny", "--version", "fssd", "--backbone", "resnet18", "--dataset", "shapes", "--num_train", "8",
        "--num_test", "3", "--seeds", "0", "--iters", "2", "--lr_warmup", "0", "--out_dir", str(tmp_path / "out"),
    ])  # fmt: skip
    assigners.main(args)
    for arm in ("IoU", "MG"):
        summary = tmp_path / "out" / "work" / "scratch_fssd-resnet18-128" / "seed0" / arm / "eval" / "summary.json"
        config = json.loads(summary.read_text())["config"]
        assert (config["dataset"], config["train_images"], config["expand_prob"]) == ("custom", 8, 0.0)


def test_expand_prob_goes_to_every_run_where_it_differs_from_main_py_default(shapes_root, tmp_path, monkeypatch):
    monkeypatch.setattr(assigners, "ensure_shapes_dataset", lambda root, **arguments: shapes_root)
    args = study_args(shapes_root, tmp_path, "--dataset", "shapes")  # a subset: custom data, main.py's default 0.6
    assigners.fill_preset(args)
    assert assigners.data_flags(args, tmp_path)[-4:] == ["--classes", ",".join(SHAPES_CLASSES), "--expand_prob", "0.0"]
    args.expand_prob = 0.6  # as docs/assigner_study.md's tables ran: the flags (and so the finished runs) of before
    assert assigners.data_flags(args, tmp_path)[-2:] == ["--classes", ",".join(SHAPES_CLASSES)]
    args = study_args(shapes_root, tmp_path, "--expand_prob", "0.3")  # custom data, main.py's default 0.6
    assigners.fill_preset(args)
    assert assigners.data_flags(args, tmp_path)[-2:] == ["--expand_prob", "0.3"]
    args = study_args(shapes_root, tmp_path)  # custom data at main.py's default: the flags (and results) of before
    assigners.fill_preset(args)
    assert "--expand_prob" not in assigners.data_flags(args, tmp_path)
    with pytest.raises(ValueError, match=r"--expand_prob 1.5 must be a probability in \[0, 1\]"):
        assigners.fill_preset(study_args(shapes_root, tmp_path, "--expand_prob", "1.5"))


def test_table_says_what_its_numbers_are():
    per_seed = {seed: {arm: {"metrics": {"mAP": value}, "stats": {}, "seconds": 1.0}
                       for arm, value in (("IoU", 0.1), ("MG", mg))}
                for seed, mg in ((0, 0.3), (1, 0.1000001))}  # fmt: skip
    table = format_table("t", [0, 1], summarise(per_seed))
    assert ("IoU, MG: mean ± sample std (ddof 1) over the 2 seeds; MG − IoU: mean ± sample std of the per-seed "
            "paired differences MG − IoU; seeds MG > IoU: seeds whose unrounded MG value is higher (a difference "
            "shown as +0.0 may count)") in table
    assert "| 2/2 | +20.0 | +0.0 |" in table
    one_seed = format_table("t", [0], summarise({0: per_seed[0]}))
    assert "IoU, MG and MG − IoU: the values of the one seed (no std)" in one_seed


def test_diverged_run_is_not_resumed_by_the_same_command_and_a_lower_lr_trains_it_afresh(shapes_root, tmp_path,
                                                                                        monkeypatch, capsys):
    # the MG arm's loss becomes NaN in its 3rd iteration, after main.py saved iteration 2 (--checkpoint_interval 2):
    # resuming that checkpoint with the same flags repeats the same batches and learning rates, so diverges again
    monkeypatch.chdir(tmp_path)
    steps: list[bool] = []
    diverging = [True]
    original = engine._train_step

    def nan_in_the_third_mg_step(model, loss_fn, *rest):
        loss_l, loss_c, stats = original(model, loss_fn, *rest)
        steps.append(bool(loss_fn.mutual_guide))
        if diverging[0] and loss_fn.mutual_guide and steps.count(True) == 3:
            loss_l = loss_l * float("nan")
        return loss_l, loss_c, stats

    monkeypatch.setattr(engine, "_train_step", nan_in_the_third_mg_step)
    flags = ("--regime", "scratch", "--seeds", "0", "--iters", "4", "--lr_warmup", "0", "--checkpoint_interval", "2")
    work = tmp_path / "out" / "work" / "scratch_fssd-resnet18-128" / "seed0" / "MG"
    advice = (f"its log {work / 'log.txt'}): with the same flags it would diverge again on the same batches, so the "
              "same command will not resume it; run the command again with a lower --lr (now 0.02) or a longer "
              "--lr_warmup (now 0), which trains every run of the study afresh with the new flags (both arms must "
              f"share them), or delete {work} to train this run again with the same flags")
    diverged = f"the run in {work} diverged (a NaN/inf loss, main.py exit code 3, "
    with pytest.raises(assigners.RunFailed) as failure:
        assigners.main(study_args(shapes_root, tmp_path / "out", *flags, "--lr", "0.02"))
    assert (failure.value.exit_code, str(failure.value)) == (3, diverged + "its error is above, " + advice)
    assert (work / "CUSTOM_fssd_resnet18_size128_anchor24.0_MG.pth").is_file()  # iteration 2, finite
    # main.py's own line names the study's flags, not main.py's --warm_iter or --check_data, which the study lacks
    err = capsys.readouterr().err
    assert err.splitlines()[-1].endswith(
        "is kept (finite weights). Run the same benchmarks/assigners.py command again with a lower --lr (now 0.02) "
        "or a longer --lr_warmup (now 0), which trains every run of the study afresh")
    assert "--warm_iter" not in err and "--check_data" not in err

    # the same command: refused at once with the same advice, nothing trained (the IoU arm's result is reused)
    steps.clear()
    with pytest.raises(assigners.RunFailed) as failure:
        assigners.main(study_args(shapes_root, tmp_path / "out", *flags, "--lr", "0.02"))
    assert (failure.value.exit_code, str(failure.value)) == (3, diverged + "in an earlier call of this command, "
                                                             + advice)
    assert steps == [] and "it continues from" not in capsys.readouterr().out

    # a lower --lr: every run trains again from iteration 0, the diverged checkpoint set aside, not resumed
    diverging[0] = False
    (record,) = assigners.main(study_args(shapes_root, tmp_path / "out", *flags, "--lr", "0.01"))
    assert steps == [False] * 4 + [True] * 4
    assert "resumed from" not in (work / "log.txt").read_text()
    assert len(list(work.glob("*.earlier-*.pth"))) == 1
    assert not (work / assigners.ATTEMPT_FILE).exists() and record["per_seed"][0]["MG"]["metrics"]["mAP"] >= 0


def test_shapes_data_root_holding_a_set_of_other_arguments_is_used_as_it_is(tmp_path):
    """``--dataset shapes --data_root DIR`` of a small set (docs/shapes.md: ``generate_shapes_dataset(DIR, seed=1,
    num_trainval=30, num_test=10)``), which main.py trains on as it is: the study replaced it with seed 0's
    2,000 + 500 images without a word, deleting the user's set."""
    root = generate_shapes_dataset(tmp_path / "tiny", seed=1, num_trainval=8, num_test=4)  # the tiny preset's subset
    manifest = (root / "shapes_manifest.json").read_text()
    args = assigners.get_args_parser().parse_args(["--preset", "tiny", "--dataset", "shapes", "--data_root", str(root)])
    assigners.fill_preset(args)
    subset = assigners.data_flags(args, tmp_path)[3]
    assert (Path(subset) / "JPEGImages").resolve() == (root / "JPEGImages").resolve()
    args.full_data = True
    args.num_train = args.num_test = None
    assert assigners.data_flags(args, tmp_path) == ["--dataset", "shapes", "--data_root", str(root)]
    assert (root / "shapes_manifest.json").read_text() == manifest


def test_a_shapes_data_root_the_generator_did_not_make_is_one_error_line(tmp_path, capsys):
    """``--dataset shapes --data_root DIR`` of a folder of other files: the study stopped with a DataError traceback
    where main.py says in one line to move the folder away or pass another --data_root."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"")
    with pytest.raises(SystemExit) as stopped:
        assigners.run_from_command_line(["--preset", "tiny", "--dataset", "shapes", "--data_root",
                                         str(tmp_path / "photos"), "--out_dir", str(tmp_path / "out")])
    assert stopped.value.code == EXIT_BAD_INPUT
    assert capsys.readouterr().err == (f"error: {tmp_path / 'photos'} exists but has no shapes_manifest.json, so it "
                                       "was not made by the shapes generator; move it away or pass another "
                                       "--data_root\n")


def test_flags_main_py_refuses_stop_the_study_with_main_py_s_exit_code(tmp_path, capsys):
    """docs/assigner_study.md: flags main.py refuses before training (a --size no multiple of 64) stop the study with
    exit code 2, as main.py's refusal does; the study's own check of them exited 1 (``sys.exit`` of the message)."""
    with pytest.raises(SystemExit) as stopped:
        assigners.run_from_command_line(["--preset", "tiny", "--size", "100", "--out_dir", str(tmp_path / "out")])
    assert stopped.value.code == EXIT_BAD_INPUT
    assert capsys.readouterr().err == "error: --size 100 is not a multiple of 64 from 128; use e.g. 320 or 512\n"
    assert not (tmp_path / "out").exists()
