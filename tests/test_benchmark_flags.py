"""The benchmark scripts refuse bad flags with argparse's one-line error naming the flag, before any work starts."""
import re
import sys
import types

import pytest
import torch

from data.shapes import ensure_shapes_dataset

from benchmarks import (assignment_loss, coco_build, data_loading, data_scale, evaluation, inference_speed,
                        loader_workers, shapes_generation, training_speed, voc_results_files)
from benchmarks.common import cpu_model

SCRIPTS = {
    "assignment_loss": assignment_loss.main,
    "coco_build": coco_build.main,
    "data_loading": data_loading.main,
    "data_scale": data_scale.main,
    "evaluation": evaluation.main,
    "inference_speed": lambda: inference_speed.main(inference_speed.get_args_parser().parse_args()),
    "loader_workers": lambda: loader_workers.main(loader_workers.get_args_parser().parse_args()),
    "shapes_generation": shapes_generation.main,
    "training_speed": training_speed.main,
    "voc_results_files": voc_results_files.main,
}
NO_CUDA = "CUDA is not available on this machine; use --device cpu"
UTC_STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d UTC"  # benchmarks.common.utc_stamp: every script's date


def run_script(name: str, flags: list[str], monkeypatch) -> None:
    if name == "demo_export":  # imports without onnx and onnxruntime: it names them when it needs them
        from benchmarks import demo_export
        main = demo_export.main
    else:
        main = SCRIPTS[name]
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *flags])
    main()


@pytest.mark.parametrize("name, flags, message", [
    ("shapes_generation", ["--num_trainval", "1"], "argument --num_trainval: must be at least 2, got 1"),
    ("shapes_generation", ["--seed", "-1"], "argument --seed: must be at least 0, got -1"),
    ("data_loading", ["--images", "0"], "argument --images: must be at least 2, got 0"),
    ("data_loading", ["--seconds", "0"], "argument --seconds: must be above 0, got 0"),
    ("evaluation", ["--batches", "0"], "argument --batches: must be at least 1, got 0"),
    ("evaluation", ["--images", "x"], "argument --images: 'x' is not a whole number"),
    ("evaluation", ["--device", "gpu"],
     "error: --device gpu is not a device this program runs on; use auto, cpu, cuda or cuda:N"),
    ("inference_speed", ["--modes", "fp33"], "argument --modes: 'fp33' is not a mode; use fp32, bf16 or fp16"),
    ("inference_speed", ["--modes", "bf16-nhwc"], "argument --modes: 'bf16-nhwc' is not a mode"),
    ("inference_speed", ["--iters", "0"], "argument --iters: must be at least 1, got 0"),
    ("inference_speed", ["--sizes", "200"], "argument --sizes: 200 is not an input size"),
    ("training_speed", ["--versions", "fsd"], "argument --versions: invalid choice: 'fsd'"),
    ("training_speed", ["--sizes", "320", "200"], "argument --sizes: 200 is not an input size; use 320 or 512"),
    ("training_speed", ["--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
    # bare --amp timed fp32 alone on a CPU, the opposite of main.py's bare --amp (bf16 autocast)
    ("training_speed", ["--amp"], "argument --amp: expected at least one argument"),
    ("demo_export", ["--size", "64"], "argument --size: 64 is not an input size"),
    ("demo_export", ["--backbone", "resnet19"], "argument --backbone: invalid choice: 'resnet19'"),
    ("assignment_loss", ["--devices", "cpu", "gpu"], "error: --devices gpu is not a device this program runs on"),
    ("assignment_loss", ["--reference_repeats", "0"],
     "argument --reference_repeats/--reference-repeats: must be at least 1, got 0"),
    ("loader_workers", ["--workers", "4", "0"], "argument --workers: must be at least 1, got 0"),
    ("loader_workers", ["--size", "200"], "argument --size: 200 is not an input size"),
    ("loader_workers", ["--dataset", "coco"], "argument --dataset: invalid choice: 'coco'"),
    ("data_scale", ["--root", "x", "--scale", "0"], "argument --scale: must be above 0, got 0"),
    # an infinite scale crashed converting counts to integers, infinite seconds never ended the measurement
    ("data_scale", ["--root", "x", "--scale", "inf"], "argument --scale: must be a finite number, got inf"),
    ("coco_build", ["--root", "x", "--scale", "Infinity"], "argument --scale: must be a finite number, got Infinity"),
    ("data_loading", ["--seconds", "inf"], "argument --seconds: must be a finite number, got inf"),
    ("data_scale", ["--scale", "0.1"], "the following arguments are required: --root"),
    ("coco_build", ["--root", "x", "--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
    ("coco_build", ["--root", "x", "--profile", "-1"], "argument --profile: must be at least 0, got -1"),
    ("voc_results_files", ["--images", "0"], "argument --images: must be at least 1, got 0"),
    ("voc_results_files", ["--repeats", "x"], "argument --repeats: 'x' is not a whole number"),
])  # fmt: skip
def test_bad_flag_is_one_line_naming_it(name, flags, message, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_script(name, flags, monkeypatch)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing ran: no header, no table
    *usage, error = captured.err.strip().splitlines()
    assert error.startswith(f"{name}.py: error: ") and message in error
    assert "Traceback" not in captured.err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("name", ["evaluation", "inference_speed", "training_speed", "demo_export"])
def test_cuda_without_cuda_is_refused_in_one_line(name, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_script(name, ["--device", "cuda"], monkeypatch)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"{name}.py: error: --device cuda: {NO_CUDA}"


@pytest.mark.parametrize("name", ["assignment_loss", "coco_build", "data_loading", "data_scale", "evaluation",
                                  "inference_speed", "loader_workers", "shapes_generation", "training_speed",
                                  "demo_export", "voc_results_files"])
def test_help_shows_the_whole_description_with_its_commands(name, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_script(name, ["--help"], monkeypatch)
    assert exit_info.value.code == 0
    module = sys.modules[f"benchmarks.{name}"]
    doc_lines = [line.strip() for line in module.__doc__.strip().splitlines() if line.strip()]
    shown = [line.strip() for line in capsys.readouterr().out.splitlines()]
    assert [line for line in doc_lines if line not in shown] == []  # every line, the example commands included
    assert any(line.startswith(f"python benchmarks/{name}.py") for line in doc_lines)


def test_loader_workers_times_each_worker_count(tmp_path, monkeypatch, capsys):
    root = ensure_shapes_dataset(tmp_path / "shapes", seed=0, num_trainval=8, num_test=2)
    capsys.readouterr()  # the generator's lines
    flags = ["--data_root", str(root), "--workers", "1", "2", "--batches", "2", "--batch_size", "4"]
    run_script("loader_workers", flags, monkeypatch)
    header, columns, rule, *rows = capsys.readouterr().out.splitlines()
    assert header.startswith("# training loader alone: shapes (8 images) at 192 px, batch 4; ")
    assert re.search(f", {UTC_STAMP}, torch ", header)
    assert [row.split("|")[1].strip() for row in rows] == ["1", "2"]
    assert all(float(row.split("|")[2]) > 0 for row in rows)


def test_loader_workers_names_a_missing_set_and_a_set_smaller_than_a_batch(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "VOCdevkit"
    with pytest.raises(SystemExit) as exit_info:
        run_script("loader_workers", ["--dataset", "voc", "--data_root", str(missing)], monkeypatch)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("loader_workers.py: error: ") and str(missing) in error and "\n" not in error
    root = ensure_shapes_dataset(tmp_path / "shapes", seed=0, num_trainval=8, num_test=2)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_script("loader_workers", ["--data_root", str(root)], monkeypatch)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "loader_workers.py: error: the set has 8 training images, fewer than --batch_size 32")


@pytest.mark.parametrize("name", ["coco_build", "data_scale"])
def test_a_root_under_a_file_is_refused_in_one_line_before_any_work(name, tmp_path, monkeypatch, capsys):
    # a NotADirectoryError traceback once the synthetic set was being written (data_scale after its first figure)
    (tmp_path / "notes.txt").write_text("mine")
    root = tmp_path / "notes.txt" / "scale"
    with pytest.raises(SystemExit) as exit_info:
        run_script(name, ["--root", str(root), "--scale", "0.0001"], monkeypatch)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err.strip().splitlines()[-1] == (
        f"{name}.py: error: --root {root}: cannot write there ({tmp_path / 'notes.txt'} is a file); "
        "give a writable folder")


def test_coco_build_times_a_small_set_and_prints_its_digest(tmp_path, monkeypatch, capsys):
    run_script("coco_build", ["--root", str(tmp_path), "--scale", "0.0005", "--profile", "3"], monkeypatch)
    out = capsys.readouterr().out
    assert "build_dataset('coco', 'train'), 58 images, 411 boxes: " in out and "json.loads of the file alone" in out
    assert "dataset SHA-256: " in out and "Ordered by: cumulative time" in out
    assert (tmp_path / "coco_scale0.0005" / "complete").exists()  # written once, reused by the next run


def test_device_and_precision_flags_take_any_letter_case_as_main_py_does(monkeypatch, capsys):
    import argparse

    from benchmarks import assigners
    from benchmarks.common import device_flag

    assert device_flag(argparse.ArgumentParser(), "CPU") == torch.device("cpu")
    args = assigners.get_args_parser().parse_args(["--amp", "BF16", "--device", "CPU"])
    assert (args.amp, args.device) == ("bf16", "cpu")
    with pytest.raises(SystemExit):  # --amp BF16 is read; the error is the next flag's
        run_script("training_speed", ["--amp", "BF16", "--repeats", "0"], monkeypatch)
    assert "argument --repeats: must be at least 1, got 0" in capsys.readouterr().err


def test_data_scale_measures_both_layouts_on_a_small_synthetic_set(tmp_path, monkeypatch, capsys):
    run_script("data_scale", ["--root", str(tmp_path), "--scale", "0.002"], monkeypatch)
    out = capsys.readouterr().out.splitlines()
    heading = out[out.index("| what | figure |") - 1]
    assert re.match(f"# data and evaluation at 0.002 x the real datasets' scale, {UTC_STAMP}, CPU ", heading)
    assert f"CPU {cpu_model()}" in heading and f"torch {torch.__version__}" in heading
    # the progress lines read as the table's rows do, "what: figure", not as Python tuples
    assert "voc train: pickled for a spawn worker: 0.0 MiB" in out and not any(line.startswith("(") for line in out)
    rows = [line for line in out if line.startswith("| ")][1:]
    figures = {what: figure for what, figure in (row.strip("| ").split(" | ") for row in rows)}
    # VOC2007 trainval 5,011 and VOC2012 11,540 images x 0.002: 10 + 23; COCO train2017 118,287 less 1,021 empty: 235
    names = "\n".join(figures)
    assert "voc train: build (33 images, " in names and "coco train: build (235 images, " in names
    assert figures["voc metric (paper protocol), 10 x 300 detections"].endswith(" s")
    assert figures["coco metric (pycocotools evaluate + accumulate + summarize)"].endswith(" s")
    assert (tmp_path / "voc_scale0.002" / "VOCdevkit" / "VOC2007" / "Annotations").is_dir()


def test_voc_results_files_times_both_ways_and_checks_the_round_trip(monkeypatch, capsys):
    run_script("voc_results_files", ["--images", "4", "--repeats", "1"], monkeypatch)
    heading, files, written, read, checked = capsys.readouterr().out.splitlines()
    assert re.match(UTC_STAMP + ", CPU ", heading)
    assert f"CPU {cpu_model()}, " in heading and heading.endswith(", best of 1")
    assert files.startswith("4 images x 300 = 1,200 lines in 20 files (0 MiB), sha256 ")
    assert len(files.split()[-1]) == 64
    assert written.startswith("written: ") and read.startswith("read back: ") and written.endswith(" s")
    assert checked == "read back = written detections: yes"


@pytest.mark.parametrize("missing", [["onnx", "onnxruntime"], ["onnxruntime"]])
def test_demo_export_without_the_export_packages_names_the_pip_command_before_any_work(missing, monkeypatch, capsys):
    for package in ("onnx", "onnxruntime"):  # None: `import onnxruntime` raises ImportError; a stub imports
        monkeypatch.setitem(sys.modules, package, None if package in missing else types.ModuleType(package))
    with pytest.raises(SystemExit) as exit_info:
        run_script("demo_export", ["--size", "128", "--images", "1", "--batch_sizes", "1", "--device", "cpu"],
                   monkeypatch)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err and "demo:" not in captured.err  # no demo ran
    names = " and ".join(f"'{package}'" for package in missing)
    assert captured.err.strip().splitlines()[-1] == (
        f"demo_export.py: error: the export benchmark needs the {names} "
        f"package{'s' if len(missing) > 1 else ''}; install with `pip install -r requirements-export.txt`")


def test_demo_export_runs_and_prints_its_table_with_the_machine_and_date(monkeypatch, capsys):
    for package in ("onnx", "onnxruntime"):
        pytest.importorskip(package, reason=f"the export benchmark needs {package} (requirements-export.txt)")
    flags = ["--size", "128", "--images", "1", "--batch_sizes", "1", "--repeats", "1", "--device", "cpu"]
    run_script("demo_export", flags, monkeypatch)
    out = capsys.readouterr().out
    heading = next(line for line in out.splitlines() if line.startswith("fssd-resnet18 at 128, 1 image; "))
    assert re.search(f"; {UTC_STAMP}; ", heading) and f"CPU {cpu_model()}" in heading
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [(what.strip(), where.strip(), batch.strip()) for what, where, batch, _, _ in rows] == [
        ("demo (end to end)", "cpu", "1"), ("load checkpoint + build model (once per run)", "cpu", "-"),
        ("pytorch decode graph", "cpu", "1"), ("onnxruntime decode graph", "cpu", "1")]
    assert all(float(ms) > 0 for _, _, _, ms, _ in rows)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("devices", [["cuda"], ["CUDA"], ["cuda:0"], ["cpu", "cuda:0"]])
def test_assignment_loss_names_its_devices_flag_when_cuda_is_asked_for_without_cuda(devices, monkeypatch, capsys):
    # plain cuda is left out when other devices remain (the default: cpu cuda); alone it would leave an empty table
    with pytest.raises(SystemExit) as exit_info:
        run_script("assignment_loss", ["--devices", *devices], monkeypatch)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines()[-1] == (
        f"assignment_loss.py: error: --devices {devices[-1].lower()}: CUDA is not available on this machine; "
        "use --devices cpu")


def test_inference_speed_times_any_input_size_and_reads_modes_in_any_letter_case(monkeypatch, capsys):
    # --sizes took 320 and 512 alone ("invalid choice: 192"), not the 192 of the shapes model, which every other
    # script (and main.py) takes; --modes refused BF16-CL, unlike the other scripts' precision flags
    flags = ["--device", "cpu", "--versions", "fssd", "--backbones", "resnet18", "--sizes", "128", "--batch_sizes", "1",
             "--modes", "FP32", "BF16-CL", "--warmup", "0", "--iters", "1", "--num_classes", "2"]
    run_script("inference_speed", flags, monkeypatch)
    heading, columns, rule, *rows = capsys.readouterr().out.splitlines()
    assert re.match(f"# {UTC_STAMP} [|] {re.escape(cpu_model())}, ", heading)
    cells = [[cell.strip() for cell in row.split("|")[1:-1]] for row in rows]
    assert [(row[0], row[3], row[4]) for row in cells] == [("fssd-resnet18-128", "1", "fp32"),
                                                           ("fssd-resnet18-128", "1", "bf16-cl")]
    assert all(float(row[5]) > 0 for row in cells)


def test_assignment_loss_prints_its_table_with_the_cpu_and_the_utc_date(monkeypatch, capsys):
    flags = ["--devices", "cpu", "--sizes", "128", "--classes", "2", "--batch", "1", "--repeats", "1",
             "--reference_repeats", "1"]
    run_script("assignment_loss", flags, monkeypatch)
    heading, *lines = capsys.readouterr().out.splitlines()
    assert re.match(f"date {UTC_STAMP}, torch ", heading) and f"CPU {cpu_model()} (" in heading
    rows = [line.split("|")[1:5] for line in lines if line.startswith("| cpu ")]
    assert [[cell.strip() for cell in row] for row in rows] == [["cpu", "128", "2", "IoU"], ["cpu", "128", "2", "MG"]]
