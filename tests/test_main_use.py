"""main.py wiring of --demo and --export (the modules themselves are tested in test_demo.py / test_export.py)."""
import json
import os
import signal

import cv2
import numpy as np
import pytest

from main import get_args_parser, main
from tests.test_data_voc import write_voc_folder
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


@pytest.mark.parametrize("argv, score_thresh", [
    ([], 0.3), (["--score_thresh", "0.05"], 0.05),
])
def test_demo_and_the_nms_export_take_score_thresh_0_3_unless_given(argv, score_thresh, tmp_path, monkeypatch):
    """--score_thresh is left None by the parser when not given (so that one given to a mode that does not read it is
    refused whatever its value); --demo and --export_nms then use 0.3."""
    import main as cli

    calls = []
    monkeypatch.setattr(cli, "run_demo", lambda *args, **kwargs: calls.append(kwargs["score_thresh"]))
    monkeypatch.setattr(cli, "export_onnx", lambda *args, **kwargs: calls.append(kwargs["score_thresh"]))
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pth")
    assert run_main("--trained_model", str(checkpoint), "--demo", "a.jpg", "--workers", "0", *argv) == 0
    assert run_main("--trained_model", str(checkpoint), "--export", "onnx", "--export_nms", *argv) == 0
    assert calls == [score_thresh, score_thresh]


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
    target.write_bytes(b"an earlier export")
    # the graph is written to a temporary file beside it, then renamed: that file is the one on the full disk here
    (tmp_path / f".tiny.onnx.tmp{os.getpid()}").symlink_to("/dev/full")
    assert run_main("--trained_model", str(checkpoint), "--export", "onnx", "--export_path", str(target),
                    "--workers", "0") == 1
    assert capsys.readouterr().err == (f"error: {target}: No space left on device; free space or fix the folder, "
                                       "then run again\n")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tiny.onnx", "tiny.pth"]  # the partial file removed
    assert target.read_bytes() == b"an earlier export"


def test_architecture_flags_given_with_demo_or_export_must_match_the_checkpoint(tmp_path, capsys):
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pth")
    assert run_main("--trained_model", str(checkpoint), "--export", "onnx", "--base_anchor_size", "99",
                    "--export_path", str(tmp_path / "x.onnx")) == 2
    assert (f"{checkpoint} was trained with --base_anchor_size 24.0, but --base_anchor_size 99.0 was given"
            ) in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
    assert run_main("--trained_model", str(checkpoint), "--demo", str(tmp_path), "--size", "512") == 2
    assert capsys.readouterr().err == (
        f"error: {checkpoint} was trained with --size 128, whose model has 4 pyramid levels (strides 8 to 64), but "
        "--size 512 builds 5 (strides 8 to 128): the layers of the fifth level would have no weights; run the demo at "
        "a --size from 128 to 448 (4 levels: any multiple of 64 below 512), or drop --size\n")


def test_demo_and_export_at_another_size_of_as_many_pyramid_levels_run_there_and_keep_the_trained_sizes_files(
        tmp_path, monkeypatch, capsys):
    """--demo and --export of a 128-px checkpoint at --size 192 were refused as trained at another size; they run
    the same weights on 192-px inputs (the export's input shape 192, its anchors those of 192), into
    eval/demo/<stem>_size192 and <stem>_size192.onnx beside the trained size's, each saying so in a line."""
    onnx = pytest.importorskip("onnx", reason="onnx is a test/export dependency (requirements-export.txt)")
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pth")
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.jpg"), np.random.default_rng(0).integers(0, 255, (90, 120, 3), np.uint8))
    monkeypatch.chdir(tmp_path)
    note = (f"{checkpoint} at --size 192, not the --size 128 it was trained at (the same weights on a 192 x 192 input; "
            "the anchors keep their side in pixels)\n")
    assert run_main("--trained_model", str(checkpoint), "--demo", "in", "--size", "192", "--workers", "0") == 0
    assert f"detecting with {note}" in capsys.readouterr().out
    demo = json.loads((tmp_path / "eval" / "demo" / "tiny_size192" / "detections.json").read_text())
    assert demo["input_size"] == 192 and demo["images"][0]["file"].endswith("a.jpg")

    assert run_main("--trained_model", str(checkpoint), "--export", "onnx", "--size", "192") == 0
    assert f"exporting {note}" in capsys.readouterr().out
    graph = onnx.load(str(tmp_path / "tiny_size192.onnx")).graph
    assert [dim.dim_value for dim in graph.input[0].type.tensor_type.shape.dim][1:] == [3, 192, 192]
    anchors = 6 * sum(side * side for side in (24, 12, 6, 3))  # strides 8 to 64 at 192
    assert [dim.dim_value for dim in graph.output[0].type.tensor_type.shape.dim][1:] == [anchors, 4]
    assert not (tmp_path / "tiny.onnx").exists()


def test_demo_and_export_nms_use_the_nms_threshold_the_checkpoint_was_trained_with(tmp_path, capsys):
    """--nms_thresh defaults, with --trained_model, to the run's threshold (--help), as evaluation takes it: --demo
    and --export_nms ran NMS at 0.5 whatever the run's, so the demo's boxes were not those of its evaluation."""
    import torch

    onnx = pytest.importorskip("onnx", reason="onnx is a test/export dependency (requirements-export.txt)")
    state = torch.load(write_tiny_checkpoint(tmp_path / "tiny.pth"), weights_only=True)
    checkpoint = tmp_path / "trained_at_0.3.pth"
    torch.save(state | {"config": state["config"] | {"nms_thresh": 0.3}}, checkpoint)
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.jpg"), np.random.default_rng(0).integers(0, 255, (90, 120, 3), np.uint8))

    def demo_nms_thresh(*flags: str) -> float:
        out = tmp_path / "out"
        assert run_main("--trained_model", str(checkpoint), "--demo", str(tmp_path / "in"), "--demo_output", str(out),
                        "--workers", "0", *flags) == 0
        return json.loads((out / "detections.json").read_text())["nms_thresh"]

    def exported_nms_thresh(*flags: str) -> float:
        path = tmp_path / "nms.onnx"
        assert run_main("--trained_model", str(checkpoint), "--export", "onnx", "--export_nms", "--export_path",
                        str(path), *flags) == 0
        graphs, nodes = [onnx.load(str(path)).graph], []
        while graphs:  # the NMS sits in a sub-graph (the If of batched_nms's empty-input branch)
            graph = graphs.pop()
            nodes += graph.node
            graphs += [a.g for node in graph.node for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
        nms = next(node for node in nodes if node.op_type == "NonMaxSuppression")
        constants = {node.output[0]: node.attribute[0].t for node in nodes if node.op_type == "Constant"}
        return float(onnx.numpy_helper.to_array(constants[nms.input[3]]).item())  # input 3: iou_threshold

    assert demo_nms_thresh() == 0.3
    assert "detecting as the checkpoint was trained: --nms_thresh 0.3\n" in capsys.readouterr().out
    assert demo_nms_thresh("--nms_thresh", "0.5") == 0.5  # given, it applies
    assert exported_nms_thresh() == pytest.approx(0.3)
    assert "exporting as the checkpoint was trained: --nms_thresh 0.3\n" in capsys.readouterr().out
    assert exported_nms_thresh("--nms_thresh", "0.6") == pytest.approx(0.6)


@pytest.mark.parametrize("mode", ["demo", "export"])
def test_demo_and_export_read_the_checkpoint_once(tmp_path, monkeypatch, mode):
    """main read --trained_model's checkpoint for the run's NMS threshold, then run_demo / export_onnx read it again
    from its path: the file was loaded twice (once with an architecture flag given too, as read after it)."""
    import torch

    if mode == "export":
        pytest.importorskip("onnx", reason="onnx is a test/export dependency (requirements-export.txt)")
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pth")
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.jpg"), np.random.default_rng(0).integers(0, 255, (90, 120, 3), np.uint8))
    real_load, loaded = torch.load, []

    def counted_load(f, *args, **kwargs):
        loaded.append(str(f))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counted_load)
    use = (["--demo", str(tmp_path / "in"), "--demo_output", str(tmp_path / "out"), "--workers", "0"]
           if mode == "demo" else ["--export", "onnx", "--export_nms", "--export_path", str(tmp_path / "t.onnx")])
    for flags in ([], ["--size", "128"], ["--nms_thresh", "0.4"]):  # main reads it; reads it to check; does not
        loaded.clear()
        assert run_main("--trained_model", str(checkpoint), *use, *flags) == 0
        assert loaded == [str(checkpoint)], flags


def stop_there(signum: int):
    """A stand-in for the work of --demo / --trained_model that receives ``signum`` as a terminal or a scheduler
    sends it: the handler the process holds then is called as Python calls it (Ctrl-C without one raises
    KeyboardInterrupt; SIGTERM without one would kill the test process, so a missing handler fails the test)."""
    def stopped(*args, **kwargs):
        handler = signal.getsignal(signum)
        if handler is signal.default_int_handler or not callable(handler):
            assert signum == signal.SIGINT, f"{signal.Signals(signum).name} would kill the process without a word"
            raise KeyboardInterrupt
        handler(signum, None)
        raise AssertionError("the handler returned: the work would go on")
    return stopped


def run_main_interrupted(*argv: str) -> int:
    try:
        return run_main(*argv)
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped main(): the user sees a traceback")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_demo_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch, signum):
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pth")
    monkeypatch.setattr("main.run_demo", stop_there(signum))
    code = run_main_interrupted("--trained_model", str(checkpoint), "--demo", str(tmp_path), "--workers", "0")
    assert code == 130
    err = capsys.readouterr().err.strip()  # where the demo's final line goes
    assert err == (f"--demo interrupted: {os.path.join('eval', 'demo', 'tiny')} holds the drawn copies written so "
                   "far, without this run's detections.json; run the same command again (it replaces them)")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_evaluation_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch, signum):
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pth")
    samples = {"a": [(CLASS_NAMES[0], (1, 1, 30, 30), 0)], "b": [(CLASS_NAMES[1], (3, 3, 25, 25), 0)]}
    root = write_voc_folder(tmp_path / "data", samples, {"trainval": ["a"], "test": ["b"]})
    monkeypatch.setattr("utils.run_evaluation.run_inference", stop_there(signum))
    code = run_main_interrupted("--trained_model", str(checkpoint), "--dataset", "custom", "--data_root", str(root),
                                "--eval_dir", str(tmp_path / "eval"), "--workers", "0")
    assert code == 130
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        f"evaluation of {checkpoint} interrupted before its results were written; run the same command again")
    assert not (tmp_path / "eval").exists() or not any((tmp_path / "eval").iterdir())
