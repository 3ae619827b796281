"""ONNX export: graph validity, dynamic batch, parity with PyTorch (onnxruntime, CPU), NMS graph == PostProcessor."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.tiny_checkpoint import CLASS_NAMES, SIZE, write_tiny_checkpoint
from utils.export import DecodedDetector, DetectorWithNMS, export_onnx, onnx_max_abs_diff, run_onnx
from utils.postprocess import PostProcessor
from utils.trained_model import load_trained_detector

onnx = pytest.importorskip("onnx", reason="ONNX tests need the optional 'onnx' package (requirements-export.txt)")
pytest.importorskip("onnxruntime", reason="ONNX tests need the optional onnxruntime package (requirements-export.txt)")

NUM_ANCHORS = 6 * (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2)  # PriorBox at 128: strides 8..64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "SHAPES_tiny.pth")


@pytest.fixture(scope="module")
def detector(checkpoint):
    return load_trained_detector(checkpoint)


def random_images(batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 60


def test_decode_graph_matches_pytorch_for_any_batch(checkpoint, detector, tmp_path, capsys):
    path = export_onnx(checkpoint, tmp_path / "model.onnx", opset=17)
    assert path == tmp_path / "model.onnx" and list(tmp_path.iterdir()) == [path]  # no temporary file left
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 17
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["boxes", "scores"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    graph = DecodedDetector(detector.model, detector.priors).eval()
    for batch in (1, 3):
        images = random_images(batch, seed=batch)
        boxes, scores = run_onnx(path, images)
        assert boxes.shape == (batch, NUM_ANCHORS, 4) and scores.shape == (batch, NUM_ANCHORS, len(CLASS_NAMES))
        diff = onnx_max_abs_diff(path, graph, images)
        print(f"ONNX vs PyTorch, batch {batch}: max abs diff {diff:.2e}")
        assert diff < 1e-4
    assert "onnx.checker passed, max abs diff vs PyTorch" in capsys.readouterr().err


def test_decoded_outputs_are_postprocessor_inputs(detector):
    """boxes = decode(loc) clamped to [0, 1] (PostProcessor step 1 before pixels), scores = sigmoid(conf)."""
    images = random_images(2, seed=7)
    with torch.no_grad():
        loc, conf = detector.model(images)
        boxes, scores = DecodedDetector(detector.model, detector.priors).eval()(images)
    anchors = detector.priors
    centres = anchors[:, :2] + loc[..., :2] * 0.1 * anchors[:, 2:]
    sides = anchors[:, 2:] * torch.exp(loc[..., 2:] * 0.2)
    expected = torch.cat([centres - sides / 2, centres + sides / 2], -1).clamp(0, 1)
    torch.testing.assert_close(boxes, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(scores, torch.sigmoid(conf), rtol=0, atol=0)


def test_a_folder_whose_name_is_not_utf8_takes_the_export(checkpoint, detector, tmp_path, capsys):
    """A folder named in another encoding's bytes (caf\\xe9, Latin-1: 'caf\\udce9' in Python): PyTorch's exporter,
    onnx.checker and onnxruntime take the path as UTF-8 in C++, and the export stopped with a TypeError and a
    traceback of the whole weight dictionary."""
    folder = tmp_path / os.fsdecode(b"caf\xe9")
    folder.mkdir()
    sys.stderr.reconfigure(errors="backslashreplace")  # as Python's own stderr, which prints the name as caf\\udce9
    path = export_onnx(checkpoint, folder / "model.onnx", opset=17)
    assert list(folder.iterdir()) == [path] and "onnx.checker passed" in capsys.readouterr().err
    images = random_images(1, seed=0)
    diff = onnx_max_abs_diff(path, DecodedDetector(detector.model, detector.priors).eval(), images)
    assert diff < 1e-4


def test_the_exported_graph_drops_overflowing_boxes_as_postprocessor_does(tmp_path):
    """An offset whose exp overflows (corners -inf and inf) came out of the ONNX graph as a whole-image box with its
    full score; PostProcessor drops it (no candidate), and so does the graph now: the box and its scores are 0."""
    from tests.test_postprocess import FixedOutputs
    from utils.box import PriorBox
    from utils.export import _write_graph

    priors = PriorBox(size=64).forward()  # [510, 4]
    generator = torch.Generator().manual_seed(2)
    loc = torch.randn(1, len(priors), 4, generator=generator) * 0.5
    conf = torch.randn(1, len(priors), 3, generator=generator)
    loc[0, 5, 2:] = 1000.0  # exp(0.2 * 1000) overflows float32
    loc[0, 9] = float("nan")
    graph = DecodedDetector(FixedOutputs(loc, conf), priors).eval()
    path = tmp_path / "fixed.onnx"
    _write_graph(graph, path, path, 64, 17, ["boxes", "scores"], {"images": {0: "batch"}, "boxes": {0: "batch"},
                                                                   "scores": {0: "batch"}})
    boxes, scores = run_onnx(path, torch.zeros(2, 3, 64, 64))
    assert np.isfinite(boxes).all()
    assert (boxes[:, [5, 9]] == 0).all() and (scores[:, [5, 9]] == 0).all()
    pixels = PostProcessor(priors)._boxes_and_scores(loc, conf, torch.tensor([[1, 1]]))
    for got, expected in zip((boxes, scores), pixels):
        np.testing.assert_allclose(got, expected.expand(2, -1, -1).numpy(), rtol=0, atol=1e-6)


def per_image(detections: np.ndarray, batch_index: np.ndarray, image: int) -> np.ndarray:
    """The rows of one image, highest score first ([n, 6]); ties across images may interleave in the raw output."""
    rows = detections[batch_index == image]
    return rows[np.argsort(-rows[:, 4], kind="stable")]


def test_nms_graph_equals_postprocessor(checkpoint, detector, tmp_path):
    path = export_onnx(checkpoint, tmp_path / "nms.onnx", opset=11, include_nms=True, score_thresh=0.02,
                       nms_thresh=0.45)
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["detections", "batch_index"]
    images = random_images(3, seed=11)
    onnx_outputs = run_onnx(path, images)
    postprocessor = PostProcessor(detector.priors, score_thresh=0.02, nms_thresh=0.45, max_per_image=10_000)
    with torch.no_grad():
        expected = postprocessor(*detector.model(images), torch.tensor([[1, 1]] * 3))  # (h, w) = 1: normalised boxes
        torch_outputs = [t.numpy() for t in DetectorWithNMS(detector.model, detector.priors, 0.02, 0.45).eval()(images)]
    assert min(len(e["scores"]) for e in expected) > 0
    for image, reference in enumerate(expected):
        reference_rows = np.concatenate([reference["boxes"].numpy(), reference["scores"].numpy()[:, None],
                                         reference["labels"].numpy()[:, None].astype(np.float32)], 1)
        for name, (detections, batch_index) in (("onnx", onnx_outputs), ("torch", torch_outputs)):
            rows = per_image(detections, batch_index, image)
            assert rows.shape == reference_rows.shape, name
            np.testing.assert_array_equal(rows[:, 5], reference_rows[:, 5])
            assert np.abs(rows - reference_rows).max() < 1e-4, name


def test_nms_graph_keeps_its_top_1000_where_postprocessor_looks_further(checkpoint, detector, tmp_path):
    """With more than PRE_NMS_TOPK candidates above the threshold, the graph runs NMS on its top 1000 (docs/demo.md):
    PostProcessor with that plain top-k gives the same detections, the exact PostProcessor (which widens its top-k)
    finds more."""
    from utils.postprocess import PRE_NMS_TOPK

    path = export_onnx(checkpoint, tmp_path / "nms0.onnx", include_nms=True, score_thresh=0.0)
    images = random_images(1, seed=5)
    detections, _ = run_onnx(path, images)
    with torch.no_grad():
        loc, conf = detector.model(images)
    assert int((conf.sigmoid() > 0.0).sum()) > PRE_NMS_TOPK
    size = torch.tensor([[1, 1]])
    plain = PostProcessor(detector.priors, score_thresh=0.0, max_per_image=10_000, max_pre_nms_topk=PRE_NMS_TOPK)
    exact = PostProcessor(detector.priors, score_thresh=0.0, max_per_image=10_000)
    expected, widened = plain(loc, conf, size)[0], exact(loc, conf, size)[0]
    assert len(detections) == len(expected["scores"]) < len(widened["scores"])
    np.testing.assert_allclose(np.sort(detections[:, 4]), np.sort(expected["scores"].numpy()), atol=1e-5)
    assert np.bincount(detections[:, 5].astype(int), minlength=3).tolist() == np.bincount(
        expected["labels"].numpy(), minlength=3).tolist()


def test_nms_graph_with_no_candidate_returns_empty(checkpoint, tmp_path):
    path = export_onnx(checkpoint, tmp_path / "strict.onnx", include_nms=True, score_thresh=0.999)
    detections, batch_index = run_onnx(path, random_images(2, seed=3))
    assert detections.shape == (0, 6) and batch_index.shape == (0,)


@pytest.mark.parametrize("name", ["SHAPES_other.pth", "model", "model.ONNX.txt"])
def test_an_export_path_not_ending_in_onnx_is_refused_and_left_alone(checkpoint, tmp_path, name):
    # another checkpoint given as --export_path (a slip between flags) was replaced by the ONNX graph
    target = tmp_path / name
    target.write_bytes(b"an earlier run's checkpoint")
    with pytest.raises(ValueError, match=rf"^--export_path {target} does not end in \.onnx; give a file name ending "
                                         r"in \.onnx$"):
        export_onnx(checkpoint, target)
    assert target.read_bytes() == b"an earlier run's checkpoint"
    assert export_onnx(checkpoint, tmp_path / "upper.ONNX") == tmp_path / "upper.ONNX"  # any letter case


def test_export_defaults_and_bad_opset(checkpoint, tmp_path):
    copy = tmp_path / "SHAPES_copy.pth"
    copy.write_bytes(checkpoint.read_bytes())
    assert export_onnx(copy) == tmp_path / "SHAPES_copy.onnx"
    assert onnx.load(str(tmp_path / "SHAPES_copy.onnx")).opset_import[0].version == 17
    with pytest.raises(ValueError, match="is the checkpoint itself"):
        export_onnx(copy, copy)
    with pytest.raises(ValueError, match=rf"--export_path {tmp_path} is a folder; give a file name ending in \.onnx"):
        export_onnx(copy, tmp_path)
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match=rf"the folder of --export_path {tmp_path}/afile: cannot write there "
                                         rf"\({tmp_path}/afile is a file\); give a writable folder"):
        export_onnx(copy, tmp_path / "afile" / "x.onnx")
    if os.geteuid() != 0:  # root writes anywhere
        read_only = tmp_path / "read_only"
        read_only.mkdir(mode=0o555)
        with pytest.raises(ValueError, match=r"the folder of --export_path .*read_only: cannot write there"):
            export_onnx(copy, read_only / "x.onnx")
    for opset in (10, 21):
        with pytest.raises(ValueError, match=rf"--opset {opset} is not supported; use 11..20"):
            export_onnx(checkpoint, tmp_path / "x.onnx", opset=opset)


@pytest.mark.parametrize("thresholds, message", [
    ({"score_thresh": 30}, r"score_thresh=30 must be a probability in \[0, 1\)"),  # a percentage: finds nothing
    ({"score_thresh": -0.1}, r"score_thresh=-0.1 must be a probability"),  # kept the zero-score boxes
    ({"nms_thresh": 45}, r"nms_thresh=45 must be an IoU in \(0, 1\]"),  # suppressed nothing
    ({"nms_thresh": float("nan")}, r"nms_thresh=nan must be an IoU"),
])
def test_thresholds_out_of_range_are_refused_before_the_checkpoint_is_read(thresholds, message, detector, tmp_path):
    """export_onnx(..., include_nms=True, score_thresh=30) wrote a graph that never detects anything, without a word
    (main.py checks --score_thresh, the API did not; PostProcessor refuses such values)."""
    with pytest.raises(ValueError, match=rf"^export_onnx: {message}"):
        export_onnx(tmp_path / "missing.pth", tmp_path / "x.onnx", include_nms=True, **thresholds)
    with pytest.raises(ValueError, match=rf"^DetectorWithNMS: {message}"):
        DetectorWithNMS(detector.model, detector.priors, **thresholds)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("step", ["onnx.checker", "onnxruntime"])
def test_ctrl_c_during_the_checks_leaves_no_unchecked_file(step, checkpoint, tmp_path, monkeypatch, capsys):
    """Ctrl-C in onnx.checker or the onnxruntime comparison, after the graph was written to --export_path: main.py
    said the export stopped 'before it had anything to save' beside a complete, unchecked .onnx file (and one cut in
    its write was left as it was). The file is now checked before it takes its name; an earlier export stays."""
    import main as cli
    import utils.export

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    if step == "onnx.checker":
        monkeypatch.setattr(onnx.checker, "check_model", interrupted)
    else:
        monkeypatch.setattr(utils.export, "onnx_max_abs_diff", interrupted)
    target = tmp_path / "model.onnx"
    target.write_bytes(b"an earlier export")
    argv = ["--trained_model", str(checkpoint), "--export", "onnx", "--device", "cpu", "--export_path", str(target)]
    assert cli.main(cli.get_args_parser().parse_args(argv)) == 130
    assert capsys.readouterr().err.endswith("interrupted (Ctrl-C) before it had anything to save; run the same "
                                            "command again\n")
    assert [path.name for path in tmp_path.iterdir()] == ["model.onnx"]
    assert target.read_bytes() == b"an earlier export"
