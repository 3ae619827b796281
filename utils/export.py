"""Export a trained detector to ONNX: ``main.py --trained_model W --export onnx [--export_path F] [--opset N]``.

Two graphs, both with a dynamic batch axis and the input ``images`` float32 ``[B, 3, S, S]`` (BGR minus
``PIXEL_MEAN_BGR`` = (104, 117, 123), no scaling; resize the picture to S x S first):

- default (:class:`DecodedDetector`): network + box decoding. Outputs ``boxes`` ``[B, A, 4]`` x1y1x2y2 normalised
  to [0, 1] (multiply by the original width/height for pixels) and ``scores`` ``[B, A, C]`` sigmoid
  probabilities; as in ``PostProcessor``, a box that is not finite after decoding is all zeros, scoring 0.
  Threshold and per-class NMS run after it, e.g. ``torchvision.ops.batched_nms`` or
  ``utils.postprocess.PostProcessor`` (which takes the raw outputs) - as most deployment runtimes prefer.
- ``include_nms`` (:class:`DetectorWithNMS`): adds the pre-NMS top-k, the score threshold and per-class NMS
  (ONNX ``NonMaxSuppression``, from torchvision's exportable ``batched_nms``). Outputs ``detections`` ``[N, 6]``
  (x1, y1, x2, y2 normalised, score, label as float) over the whole batch, highest scores first, and
  ``batch_index`` int64 ``[N]``. Unlike ``PostProcessor`` there is no per-image cap after NMS (at most
  ``pre_nms_topk`` per image); thresholds are fixed at export time.

The exporter is PyTorch's TorchScript-based one (``dynamo=False``): it needs no ``onnxscript`` and exports
torchvision's NMS, but it imports the ``onnx`` package to write the file (without it, a ValueError says what to
install). Opset 17 by default; 11 is the lowest with ``NonMaxSuppression`` and dynamic ``TopK``.
"""
from __future__ import annotations

import os
import sys
import warnings
import importlib
import io
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from utils.box import BoxCoder
from utils.checkpoint import check_writable_folder, size_suffix_of
from utils.environment import installed_version, release
from utils.files import naming_file
from utils.messages import first_line
from utils.postprocess import PRE_NMS_TOPK, check_thresholds, decoded_boxes_and_scores, top_candidates
from utils.trained_model import detector_from_state, load_trained_detector

DEFAULT_OPSET = 17
MIN_OPSET = 11
MAX_OPSET = 20  # the newest opset PyTorch's TorchScript exporter writes
ONNXRUNTIME_FOR_NUMPY_2 = (1, 19)  # older onnxruntime releases were built for NumPy 1 and fail to import beside 2


class DecodedDetector(nn.Module):
    """``images [B, 3, S, S]`` -> ``(boxes [B, A, 4] x1y1x2y2 normalised clamped to [0, 1], scores [B, A, C] sigmoid)``.

    The same decode and clamp as ``PostProcessor`` steps 1-2, before the scaling to pixels
    (:func:`utils.postprocess.decoded_boxes_and_scores`): a box that is not finite after decoding (NaN, or an offset
    that overflows ``exp``) is all zeros with every score 0, and a NaN logit scores 0.
    """

    def __init__(self, model: nn.Module, priors: Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("priors", priors.float(), persistent=False)  # [A, 4] cxcywh normalised
        self.box_coder = BoxCoder()

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        loc, conf = self.model(images)
        return decoded_boxes_and_scores(self.box_coder, loc, conf, self.priors)


class DetectorWithNMS(DecodedDetector):
    """``images [B, 3, S, S]`` -> ``(detections [N, 6], batch_index int64 [N])``; see the module docstring.

    Per image: the ``pre_nms_topk`` best (anchor, class) scores, those strictly above ``score_thresh``, then NMS at
    ``nms_thresh`` within each (image, class) group. Rows are ordered by score over the whole batch.
    """

    def __init__(self, model: nn.Module, priors: Tensor, score_thresh: float = 0.005, nms_thresh: float = 0.5,
                 pre_nms_topk: int = PRE_NMS_TOPK) -> None:
        super().__init__(model, priors)
        check_thresholds("DetectorWithNMS", score_thresh, nms_thresh)
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.pre_nms_topk = pre_nms_topk

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        boxes, scores = super().forward(images)  # [B, A, 4], [B, A, C]
        num_classes = scores.shape[2]
        candidate_boxes, candidate_scores, labels, batch_index = top_candidates(
            boxes, scores, self.score_thresh, self.pre_nms_topk
        )
        kept = batched_nms(candidate_boxes, candidate_scores, batch_index * num_classes + labels, self.nms_thresh)
        detections = torch.cat([candidate_boxes[kept], candidate_scores[kept, None], labels[kept, None].float()], 1)
        return detections, batch_index[kept]


def export_onnx(
    checkpoint_path: str | os.PathLike,
    output_path: str | os.PathLike | None = None,
    *,
    opset: int | None = None,
    include_nms: bool = False,
    score_thresh: float = 0.005,
    nms_thresh: float = 0.5,
    state: dict | None = None,
    size: int | None = None,
) -> Path:
    """Write the checkpoint's detector as ONNX (see the module docstring) and return the file's path.

    ``output_path`` (a name ending in ``.onnx``, checked before the checkpoint is read) defaults to the checkpoint
    path with ``.onnx``; ``opset`` to :data:`DEFAULT_OPSET`.
    ``score_thresh``/``nms_thresh`` are baked into the graph with ``include_nms`` (a probability in [0, 1) and an
    IoU in (0, 1], as for ``PostProcessor``: a ValueError otherwise, before any work). The ``onnx`` package is required
    (PyTorch's exporter imports it; a ValueError names the requirements file when it is missing, before any work) and
    the file is checked with ``onnx.checker``; when ``onnxruntime`` is installed, the outputs of the graph without NMS
    are compared with PyTorch's on two random images and the largest absolute difference is printed.
    ``state``: the checkpoint already read from ``checkpoint_path`` with ``load_checkpoint`` (``main.py`` reads it
    first when it needs its flags); None: read it here, once ``output_path`` is checked. ``size``: the graph's input
    side S, of as many pyramid levels as the checkpoint's (the same layers, the anchors laid out for S; a
    ``CheckpointError`` otherwise); None: the checkpoint's. At another side the default ``output_path`` ends in
    ``_size<S>.onnx``, keeping the export at the trained size.
    """
    check_thresholds("export_onnx", score_thresh, nms_thresh)
    opset = DEFAULT_OPSET if opset is None else opset
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"--opset {opset} is not supported; use {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")
    if not _installed("onnx"):  # PyTorch's TorchScript exporter imports it to assemble the file
        raise ValueError("--export onnx needs the 'onnx' package, which PyTorch's exporter imports to write the file; "
                         "install it with `pip install -r requirements-export.txt`")
    state, suffix = size_suffix_of(checkpoint_path, state, size)
    path = (Path(output_path) if output_path is not None
            else Path(checkpoint_path).with_name(f"{Path(checkpoint_path).stem}{suffix}.onnx"))
    if path.resolve() == Path(checkpoint_path).resolve():
        raise ValueError(f"--export_path {path} is the checkpoint itself; give a file name ending in .onnx")
    if path.is_dir():
        raise ValueError(f"--export_path {path} is a folder; give a file name ending in .onnx")
    if path.suffix.lower() != ".onnx":  # e.g. another checkpoint, which the graph would replace
        raise ValueError(f"--export_path {path} does not end in .onnx; give a file name ending in .onnx")
    check_writable_folder(path.parent, "the folder of --export_path")
    detector = (load_trained_detector(checkpoint_path, "cpu") if state is None
                else detector_from_state(state, checkpoint_path, "cpu", size))
    if include_nms:
        graph = DetectorWithNMS(detector.model, detector.priors, score_thresh, nms_thresh).eval()
        output_names = ["detections", "batch_index"]
        dynamic_axes = {"images": {0: "batch"}, "detections": {0: "detections"}, "batch_index": {0: "detections"}}
    else:
        graph = DecodedDetector(detector.model, detector.priors).eval()
        output_names = ["boxes", "scores"]
        dynamic_axes = {"images": {0: "batch"}, "boxes": {0: "batch"}, "scores": {0: "batch"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    # written and checked under a temporary name, then renamed: a failure or Ctrl-C before the rename leaves no
    # partial or unchecked file at ``path`` (an earlier export there stays)
    unchecked = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        _write_graph(graph, unchecked, path, detector.size, opset, output_names, dynamic_axes)
        notes = _check_graph(unchecked, graph, detector.size, opset, include_nms)
        os.replace(unchecked, path)
    finally:
        unchecked.unlink(missing_ok=True)
    print(f"export: wrote {path} ({', '.join(notes)})", file=sys.stderr)
    return path


def _write_graph(graph: DecodedDetector, file: Path, path: Path, size: int, opset: int, output_names: list[str],
                 dynamic_axes: dict[str, dict[int, str]]) -> None:
    """Write ``graph`` (input ``images [B, 3, size, size]``) as ONNX to ``file``; an ``OSError`` without a file
    name (a full disk) names ``path``, the file the user asked for. The graph is assembled in memory and written by
    Python: PyTorch's exporter takes a path as UTF-8, which a name in another encoding's bytes is not."""
    example = torch.zeros(2, 3, size, size)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # batched_nms's empty-input branch
        warnings.filterwarnings("ignore", message=".*torch.jit.script. is deprecated.*")  # torchvision's NMS export
        warnings.filterwarnings("ignore", message=".*aten::index operator of advanced indexing.*")  # indices are >= 0
        buffer = io.BytesIO()
        torch.onnx.export(graph, (example,), buffer, dynamo=False, opset_version=opset, input_names=["images"],
                          output_names=output_names, dynamic_axes=dynamic_axes)
    with naming_file(path):  # a full disk: one line naming the file, not a traceback
        file.write_bytes(buffer.getvalue())


def _check_graph(file: Path, graph: DecodedDetector, size: int, opset: int, include_nms: bool) -> list[str]:
    """Check the ONNX ``file`` written from ``graph`` with ``onnx.checker`` and, without NMS and with onnxruntime
    installed, compare its outputs with PyTorch's on two random images; returns the notes of the export's line."""
    import onnx

    onnx.checker.check_model(onnx.load_model_from_string(file.read_bytes()))  # read by Python: any file name
    notes = [f"opset {opset}", f"input images [B, 3, {size}, {size}]", "onnx.checker passed"]
    if include_nms:
        notes.append("not compared with PyTorch (the NMS graph's output sizes depend on the scores)")
    elif (unusable := onnxruntime_unusable()) is None:
        images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)) * 60
        notes.append(f"max abs diff vs PyTorch {onnx_max_abs_diff(file, graph, images):.2e} on 2 random images")
    else:
        notes.append(f"not compared with PyTorch: {unusable}")
    return notes


def onnxruntime_unusable() -> str | None:
    """Why onnxruntime cannot run the exported file here, with the command that fixes it; None when it can. A release
    built for NumPy 1 beside NumPy 2 is named from pip's metadata without being imported: the import printed NumPy's
    "compiled using NumPy 1.x" warning with a traceback."""
    version = installed_version("onnxruntime")
    if version is not None and (release(np.__version__) or (0,)) >= (2,):
        found = release(version)
        if found is not None and found[:2] < ONNXRUNTIME_FOR_NUMPY_2:
            return (f"onnxruntime {version} cannot run with NumPy {np.__version__} (onnxruntime "
                    f"{'.'.join(map(str, ONNXRUNTIME_FOR_NUMPY_2))} or newer can): install it with "
                    "`pip install -r requirements-export.txt`")
    try:
        importlib.import_module("onnxruntime")
    except ImportError as error:
        if version is None:
            return "pip install onnxruntime to check the file's outputs"
        return (f"onnxruntime {version} is installed but fails to import ({first_line(error)}): reinstall it with "
                "`pip install --force-reinstall -r requirements-export.txt`")
    return None


def run_onnx(path: str | os.PathLike, images: Tensor) -> list[np.ndarray]:
    """The ONNX file's outputs for ``images`` ``[B, 3, S, S]``, run by onnxruntime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(Path(path).read_bytes(), providers=["CPUExecutionProvider"])  # any name
    return session.run(None, {"images": images.detach().cpu().numpy().astype(np.float32)})


def onnx_max_abs_diff(path: str | os.PathLike, graph: DecodedDetector, images: Tensor) -> float:
    """Largest absolute difference between the ONNX file's outputs (onnxruntime, CPU) and ``graph``'s on ``images``.
    Outputs must have equal shapes (use it for the decode-only graph)."""
    with torch.inference_mode():
        expected = graph.eval()(images)
    got = run_onnx(path, images)
    return max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))


def _installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True
