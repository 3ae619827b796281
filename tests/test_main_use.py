"""main.py wiring of --demo and --export (the modules themselves are tested in test_demo.py / test_export.py)."""
import json
import os

import cv2
import numpy as np
import pytest

from main import get_args_parser, main
from tests.tiny_checkpoint import CLASS_NAMES, write_tiny_checkpoint


def run_main(*argv: str) -> int:
    return main(get_args_parser().parse_args(list(argv)))


def test_demo_through_main_writes_images_and_json(tmp_path):
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pth")
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.png"):
        cv2.imwrite(str(images / name), np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8))
    out = tmp_path / "out"
    code = run_main("--trained_model", str(checkpoint), "--demo", str(images), "--demo_output", str(out),
                    "--score_thresh", "0.0", "--batch_size", "2", "--workers", "0", "--device", "cpu")
    assert code == 0
    assert sorted(p.name for p in out.glob("*.jpg")) == ["a.jpg", "b.jpg"]
    report = json.loads((out / "detections.json").read_text())
    assert [image["width"] for image in report["images"]] == [120, 120]
    assert {d["class_name"] for image in report["images"] for d in image["detections"]} <= set(CLASS_NAMES)


def test_demo_on_a_folder_without_images_is_one_line_and_exit_2(tmp_path, capsys):
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pth")
    (tmp_path / "empty").mkdir()
    code = run_main("--trained_model", str(checkpoint), "--demo", str(tmp_path / "empty"), "--workers", "0")
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty" in err[0]


def test_demo_and_export_need_a_trained_model(capsys):
    assert run_main("--demo", "x.jpg", "--workers", "0") == 2
    assert "--trained_model" in capsys.readouterr().err


def test_export_through_main_writes_an_onnx_file(tmp_path):
    pytest.importorskip("onnx", reason="onnx is a test/export dependency (requirements-export.txt)")
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pth")
    target = tmp_path / "tiny.onnx"
    assert run_main("--trained_model", str(checkpoint), "--export", "onnx", "--export_path", str(target),
                    "--workers", "0") == 0
    import onnx

    graph = onnx.load(str(target)).graph
    assert [i.name for i in graph.input] == ["images"] and [o.name for o in graph.output] == ["boxes", "scores"]
    weights = sum(int(np.prod(t.dims)) for t in graph.initializer)
    assert weights > 10_000_000  # the FSSD-ResNet18 weights are in the file (folded BatchNorm: slightly fewer)


def test_export_to_a_full_disk_is_one_line_and_exit_1(tmp_path, capsys):
    pytest.importorskip("onnx", reason="onnx is a test/export dependency (requirements-export.txt)")
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (always full)")
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pth")
    target = tmp_path / "tiny.onnx"
    target.symlink_to("/dev/full")
    assert run_main("--trained_model", str(checkpoint), "--export", "onnx", "--export_path", str(target),
                    "--workers", "0") == 1
    assert capsys.readouterr().err == (f"error: {target}: No space left on device; free space or fix the folder, "
                                       "then run again\n")
    assert not target.is_symlink()  # the partial file is removed


def test_architecture_flags_given_with_demo_or_export_must_match_the_checkpoint(tmp_path, capsys):
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pth")
    assert run_main("--trained_model", str(checkpoint), "--export", "onnx", "--base_anchor_size", "99",
                    "--export_path", str(tmp_path / "x.onnx")) == 2
    assert (f"{checkpoint} was trained with --base_anchor_size 24.0, but --base_anchor_size 99.0 was given"
            ) in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
    assert run_main("--trained_model", str(checkpoint), "--demo", str(tmp_path), "--size", "512") == 2
    assert "but --size 512 was given" in capsys.readouterr().err
