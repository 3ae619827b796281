"""The GPU speed suite (benchmarks/gpu_suite.py): its CPU dry run end to end, and its bookkeeping with hand-made
rows."""
import json
import math
import os
import subprocess
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import gpu_suite
from benchmarks.gpu_suite import Budget, PhaseClock, Report, Settings, check_targets, host_sync_sites, run_case
from utils.postprocess import detections_to_numpy


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_suite") / "gpu_suite.json"
    args = gpu_suite.get_args_parser().parse_args(["--dry_run", "--device", "cpu", "--out", str(out)])
    returned = gpu_suite.main(args)
    return returned, json.loads(out.read_text())


def test_dry_run_measures_every_section_without_errors(dry_run):
    returned, record = dry_run
    assert record == json.loads(json.dumps(returned, default=str))  # the file holds what main returned
    assert record["errors"] == [] and [case["section"] for case in record["skipped"]] == ["compile"]
    assert record["dry_run"] is True and record["environment"]["card"] is None
    assert record["environment"]["torch"] == torch.__version__

    train = {(row["assignment"], row["precision"]): row for row in record["train"]}
    assert set(train) == {("IoU", "bf16"), ("MG", "bf16")}
    for row in train.values():
        assert row["images_per_s"] == pytest.approx(2 / (row["step_ms"] / 1e3))  # batch 2
        assert row["peak_mem_mib"] is None and row["host_syncs_per_step"] is None  # CPU: no device memory, no syncs

    assert [row["rung"] for row in record["ladder"]] == [gpu_suite.LADDER[0][0], gpu_suite.LADDER[5][0]]
    assert "per-image loss loop" in record["ladder"][0]["options"] and "fused SGD" in record["ladder"][1]["options"]

    modes = {(row["batch"], row["mode"]) for row in record["inference"]}
    post_processing = [f"post-processing only{nms}" for nms in ("", ", torchvision NMS", ", dense NMS")]
    end_to_end = ["end to end", "end to end, BatchNorm not folded", "end to end, bf16 weights"]  # graph, compile: CUDA
    assert modes == {(b, m) for b in (1, 2) for m in [*end_to_end, "forward only", *post_processing]}
    assert all(row["images_per_s"] > 0 for row in record["inference"])

    (loader,) = record["loader"]
    assert loader["timed_iterations"] == 1 and loader["images_per_s"] > 0 and loader["loader_only_images_per_s"] > 0

    inference_profile, profile = record["profile"]  # the inference section runs first
    assert inference_profile["mode"] == "inference" and "batch 2" in inference_profile["config"]
    assert "inference batch" in inference_profile["table"] and "phase_ms" not in inference_profile
    assert list(profile["phase_ms"]) == ["forward", "loss", "backward", "optimizer"]
    assert "convolution" in profile["table"] and profile["sorted_by"] == "self_cpu_time_total"
    assert [t["target"] for t in record["targets"]][:3] == [
        "MG training, AMP, images/s >= 1000",
        "MG training, AMP, >= 5x the authors' 193 images/s",
        "MG costs <= 5 % of the step over IoU (AMP)",
    ]


def test_sections_choose_what_runs(tmp_path):
    args = gpu_suite.get_args_parser().parse_args(["--dry_run", "--device", "cpu", "--out", str(tmp_path / "r.json"),
                                                   "--sections", "train"])
    record = gpu_suite.main(args)
    assert [(row["assignment"], row["precision"]) for row in record["train"]] == [("IoU", "bf16"), ("MG", "bf16")]
    assert [len(record[key]) for key in ("inference", "profile", "ladder", "loader")] == [0, 0, 0, 0]
    assert [t["target"] for t in record["targets"]] == [
        "MG training, AMP, images/s >= 1000",
        "MG training, AMP, >= 5x the authors' 193 images/s",
        "MG costs <= 5 % of the step over IoU (AMP)",
    ]


def test_the_dry_run_says_it_leaves_out_the_compile_section(tmp_path, capsys):
    """``--dry_run --sections compile`` once ran nothing and said nothing: an empty record ("skipped": []) and no
    line, though docs/gpu_suite.md said the dry run runs every code path. The section is listed as skipped, with why."""
    args = gpu_suite.get_args_parser().parse_args(["--dry_run", "--device", "cpu", "--out", str(tmp_path / "r.json"),
                                                   "--sections", "compile"])
    record = gpu_suite.main(args)
    reason = "dry run: torch.compile takes minutes to compile even at its tiny sizes; run the section on a GPU"
    assert record["skipped"] == [{"section": "compile", "reason": reason}]
    assert f"[compile] skipped ({reason})" in capsys.readouterr().out.splitlines()


def test_bf16_weights_give_the_autocast_outputs_exactly():
    # The "bf16 weights" rows store the folded network in bf16 instead of casting its weights under autocast at every
    # call: the detectors use no operation that autocast keeps in float32, so the outputs are the same bits.
    cpu = torch.device("cpu")
    autocast = gpu_suite.Inference("pafpn", "resnet18", 128, 2, "bf16", True, cpu)
    cast = gpu_suite.Inference("pafpn", "resnet18", 128, 2, "bf16", True, cpu, cast_weights=True)
    assert {p.dtype for p in cast.model.parameters()} == {torch.bfloat16}
    images = autocast.to_device(autocast.host_images)
    for expected, actual in zip(autocast.forward(images), cast.forward(images)):
        assert actual.dtype == expected.dtype == torch.bfloat16 and torch.equal(actual, expected)
    with pytest.raises(ValueError, match="bf16"):
        gpu_suite.Inference("pafpn", "resnet18", 128, 2, "fp32", False, cpu, cast_weights=True)


def test_full_run_needs_a_gpu():
    args = gpu_suite.get_args_parser().parse_args(["--device", "cpu"])
    with pytest.raises(SystemExit, match="--dry_run"):
        gpu_suite.main(args)


def test_unknown_device_is_refused_in_one_line(tmp_path):
    args = gpu_suite.get_args_parser().parse_args(["--dry_run", "--device", "gpu", "--out", str(tmp_path / "r.json")])
    with pytest.raises(SystemExit, match="^--device gpu is not a device this program runs on; use auto, cpu, cuda"):
        gpu_suite.main(args)
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("where", ["folder", "under a file"])
def test_an_out_that_cannot_be_the_json_file_is_refused_in_one_line_before_any_case(where, tmp_path):
    # a folder (as `--out $OUT`, the folder gpu_check.sh takes) or a path under a file: an IsADirectoryError or
    # FileExistsError traceback when the record was first saved, and a stray <out>.partial beside the folder
    out = tmp_path if where == "folder" else tmp_path / "notes.txt" / "gpu_suite.json"
    (tmp_path / "notes.txt").write_text("mine")
    args = gpu_suite.get_args_parser().parse_args(["--dry_run", "--device", "cpu", "--out", str(out),
                                                   "--sections", "train"])
    message = (f"--out {out} is a folder; give a file name such as {out / 'gpu_suite.json'}" if where == "folder" else
               f"the folder of --out {out.parent}: cannot write there ({out.parent} is a file); give a writable folder")
    with pytest.raises(SystemExit) as exit_info:
        gpu_suite.main(args)
    assert exit_info.value.code == message
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]
    assert not tmp_path.with_name(tmp_path.name + ".partial").exists()


def test_budget_fits_only_what_is_left():
    budget = Budget(60.0)
    assert budget.fits(50.0)
    assert not budget.fits(61.0)
    assert not Budget(0.0).fits(0.001)


def test_run_case_records_rows_skips_and_errors(tmp_path):
    report = Report(tmp_path / "r.json", {"environment": {}})
    cpu = torch.device("cpu")

    def broken() -> dict:
        raise RuntimeError("out of memory in case 2")

    assert run_case(report, Budget(100.0), "train", {"case": 1}, 10.0, lambda: {"images_per_s": 5.0}, cpu) == {
        "case": 1, "images_per_s": 5.0}
    assert run_case(report, Budget(100.0), "train", {"case": 2}, 10.0, broken, cpu) is None
    assert run_case(report, Budget(5.0), "train", {"case": 3}, 10.0, lambda: {"images_per_s": 1.0}, cpu) is None

    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["train"] == [{"case": 1, "images_per_s": 5.0}]
    assert saved["errors"][0]["case"] == 2 and saved["errors"][0]["error"] == "RuntimeError: out of memory in case 2"
    assert saved["skipped"][0]["case"] == 3 and saved["skipped"][0]["reason"].startswith("budget")


def test_check_targets_against_hand_made_rows(tmp_path):
    report = Report(None, {"environment": {}})
    common = {"version": "retinanet", "size": 320, "precision": "bf16"}
    report.data["train"] = [common | {"assignment": "IoU", "step_ms": 25.6, "images_per_s": 1250.0},
                            common | {"assignment": "MG", "step_ms": 26.67, "images_per_s": 1200.0}]
    report.data["ladder"] = [common | {"assignment": "MG", "rung": gpu_suite.COMPILED[0], "images_per_s": 950.0}]
    report.data["inference"] = [
        {"version": "retinanet", "size": 320, "batch": 1, "mode": "end to end", "precision": "bf16, channels_last",
         "images_per_s": 900.0},
        {"version": "retinanet", "size": 320, "batch": 1, "mode": "end to end, CUDA graph",
         "precision": "bf16, channels_last", "images_per_s": 1100.0},
        {"version": "retinanet", "size": 320, "batch": 64, "mode": "end to end", "precision": "bf16, channels_last",
         "images_per_s": 6000.0},
    ]
    check_targets(report, gpu_suite.FULL)
    measured = {t["target"]: (t["measured"], t["met"]) for t in report.data["targets"]}
    authors = 32 / 0.166  # 192.8 images/s: the authors' MG step, 166 ms per batch of 32
    assert measured["MG training, AMP, images/s >= 1000"] == (1200.0, True)
    assert measured["MG training, AMP, >= 5x the authors' 193 images/s"] == (pytest.approx(1200.0 / authors), True)
    assert measured["MG training, AMP + torch.compile, images/s >= 1000"] == (950.0, False)
    assert measured["MG training, AMP + torch.compile, >= 5x the authors' 193 images/s"] == (
        pytest.approx(950.0 / authors), False)
    share, met = measured["MG costs <= 5 % of the step over IoU (AMP)"]
    assert share == pytest.approx(1 - 25.6 / 26.67) and met  # 4.0 %
    assert measured["inference, batch 1, end to end incl. NMS, AMP, images/s >= 1000"] == (900.0, False)
    assert measured["inference, batch 1, end to end, CUDA graph incl. NMS, AMP, images/s >= 1000"] == (1100.0, True)
    assert measured["inference, batch 64, end to end incl. NMS, AMP, images/s >= 5000"] == (6000.0, True)
    assert "inference, batch 64, end to end, CUDA graph incl. NMS, AMP, images/s >= 5000" not in measured  # no row


def test_phase_clock_reports_each_phase_in_order():
    clock = PhaseClock(torch.device("cpu"))
    for name in ("forward", "loss", "backward"):
        sum(range(20_000))
        clock.mark(name)
    durations = clock.durations_ms()
    assert list(durations) == ["forward", "loss", "backward"]
    assert all(ms > 0 and math.isfinite(ms) for ms in durations.values())


def test_settings_of_the_full_run_match_the_issue():
    full: Settings = gpu_suite.FULL
    assert (full.backbone, full.headline_size, full.batch) == ("vgg16", 320, 32)
    assert full.sizes == (320, 512) and full.infer_batches == (1, 32, 64)
    assert (set(full.grid_versions) == {"fssd", "retinanet", "rfbnet", "pafpn"}
            and full.grid_precisions == ("fp32", "bf16"))
    assert full.ladder_rungs == tuple(range(len(gpu_suite.LADDER)))


def test_sync_sites_are_named_by_the_innermost_repository_frame():
    line = traceback.extract_stack()[-1].lineno
    assert gpu_suite._innermost_repo_frame(traceback.extract_stack()) == f"tests/test_gpu_suite.py:{line + 1}"
    assert gpu_suite._innermost_repo_frame(traceback.StackSummary.from_list([("/usr/lib/x.py", 3, "f", "")])) == (
        "outside the repository")


def test_host_syncs_are_not_counted_on_cpu():
    assert host_sync_sites(lambda: torch.ones(3).sum().item(), torch.device("cpu")) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_host_syncs_are_counted_at_their_source_line():
    x = torch.ones(3, device="cuda")
    sites = host_sync_sites(lambda: x.sum().item(), torch.device("cuda"))
    assert sum(sites.values()) == 1 and next(iter(sites)).startswith("tests/test_gpu_suite.py:")


def test_detections_to_numpy_matches_per_image_copies():
    results = [
        {"boxes": torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]), "scores": torch.tensor([0.9, 0.2]),
         "labels": torch.tensor([3, 0])},
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)},
        {"boxes": torch.tensor([[0.5, 0.5, 9.0, 9.5]]), "scores": torch.tensor([0.7]), "labels": torch.tensor([19])},
    ]
    converted = detections_to_numpy(results)
    assert len(converted) == 3
    for got, expected in zip(converted, results):
        assert set(got) == {"boxes", "scores", "labels"}
        for key, value in expected.items():
            assert got[key].dtype == value.numpy().dtype and got[key].shape == tuple(value.shape)
            np.testing.assert_array_equal(got[key], value.numpy())
    assert detections_to_numpy([]) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_is_read_in_any_letter_case_as_the_other_scripts_read_it():
    args = gpu_suite.get_args_parser().parse_args(["--device", "CUDA"])
    message = "^--device cuda: CUDA is not available here; run with --device cpu --dry_run$"
    with pytest.raises(SystemExit, match=message):
        gpu_suite.main(args)
    assert gpu_suite.get_args_parser().parse_args(["--device", "CPU"]).device == "cpu"


@pytest.mark.parametrize("flags, message", [
    (["--budget_s", "0"], "argument --budget_s/--budget-s: must be above 0, got 0"),
    (["--budget_s", "-60"], "argument --budget_s/--budget-s: must be above 0, got -60"),
    (["--workers", "-1"], "argument --workers: must be at least 0, got -1"),
])  # fmt: skip
def test_budget_and_workers_out_of_range_are_refused_by_the_parser(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_suite.get_args_parser().parse_args(flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("flags, code", [(["--help"], 0), (["-h"], 0), ([], 2), (["--sections", "train"], 2)])
def test_gpu_check_sh_prints_its_usage_instead_of_taking_a_flag_for_its_out_dir(flags, code, tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
    result = subprocess.run(["bash", str(script), *flags], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == code
    shown = result.stdout if code == 0 else result.stderr
    assert "bash benchmarks/gpu_check.sh OUT_DIR [gpu_suite.py arguments]" in shown
    assert "mkdir" not in shown and list(tmp_path.iterdir()) == []  # no folder named after the flag, nothing run


def test_check_only_checks_the_arguments_and_runs_nothing(tmp_path):
    out = tmp_path / "gpu_suite.json"
    args = gpu_suite.get_args_parser().parse_args(["--check_only", "--device", "cpu", "--dry_run", "--out", str(out)])
    assert gpu_suite.main(args) == {} and not out.exists()
    with pytest.raises(SystemExit, match="the full suite needs a GPU"):  # the same checks as a real run's
        gpu_suite.main(gpu_suite.get_args_parser().parse_args(["--check_only", "--device", "cpu"]))


def test_gpu_check_sh_refuses_gpu_suite_arguments_before_its_first_step(tmp_path):
    # a stand-in interpreter that refuses every call, as gpu_suite.py refuses `--sections trian`: the script must stop
    # there, before nvidia-smi, the CUDA tests and the benchmarks (minutes of a device's time)
    python = tmp_path / "python"
    python.write_text('#!/bin/sh\necho "$@" >> "$(dirname "$0")/calls.txt"\nexit 2\n')
    python.chmod(0o755)
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
    out = tmp_path / "out"
    result = subprocess.run(["bash", str(script), str(out), "--sections", "trian"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHON": str(python)})
    assert result.returncode == 2
    assert (tmp_path / "calls.txt").read_text().splitlines() == [
        f"benchmarks/gpu_suite.py --check_only --out {out}/gpu_suite.json --sections trian"]
    assert sorted(path.name for path in out.iterdir()) == []  # no step's output: nothing ran
