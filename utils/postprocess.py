"""Batched post-processing: raw head outputs -> per-image detections in original-image pixels (facts §7).

Steps, for the whole batch at once:

1. decode ``loc`` against the anchors (float32), clamp the corners to [0, 1] and scale by each image's
   original (width, height, width, height): 0-based continuous pixels, inside the image;
2. ``scores = sigmoid(conf)``, one score per (anchor, class) pair;
3. **pre-NMS top-k** (not in the authors' code): keep the ``pre_nms_topk`` highest (anchor, class) scores
   of each image, then those strictly above ``score_thresh`` (0.005, as the authors); a box or a logit that is not
   finite (a diverged model's NaN, or an offset so large that the decoded box overflows before step 1's clamp) is
   no candidate;
4. per-class NMS at ``nms_thresh``, one group per (image, class): on CUDA :func:`utils.nms.dense_batched_nms`
   (every image at once, no per-group loop), on CPU ``torchvision.ops.batched_nms`` (16 images per call: its cost
   grows with candidates x groups, so one call over a whole batch grows as the batch squared); both are exact greedy NMS
   and give the same detections (``tests/test_postprocess.py``);
5. at most ``max_per_image`` (300) detections per image, the highest scores first; tied scores (a diverged model's
   1.0) in the top-k's order on every path, so an image's detections do not depend on the rest of its batch;
6. images whose result the top-k may have changed are run again with 4x the candidates (see below), with
   ``torchvision.ops.batched_nms`` (the dense NMS's ``[B, k, k]`` matrix grows with k^2).

``PostProcessor.padded`` runs the dense path into fixed-size tensors (:class:`PaddedDetections`) with no host
sync when given a fixed number of NMS steps: what a CUDA graph can capture (``utils/cuda_graph.py``). A flag per
image says whether those steps settled NMS; where they did not, the caller re-runs the exact path.

When the top-k is exact: greedy NMS decides a box only from boxes that score higher, so dropping the
candidates ranked below k changes nothing above them. An image's detections equal the exact ones (NMS over
every candidate, as the authors) when it keeps at least ``max_per_image`` detections from its top k, or has
at most k candidates above the threshold. Where neither holds (e.g. many overlapping high scores around
large objects push a small object's box below rank k), the image is post-processed again with 4x the
candidates, until one of the two holds or k reaches ``max_pre_nms_topk`` (16,000; None: all candidates).
So ``__call__`` is exact for every image with at most 16,000 candidates above the threshold. Beyond that, an image
that keeps fewer than ``max_per_image`` detections from its best 16,000 candidates (heavy suppression among them,
e.g. an untrained or diverged model) gets those detections, which are the exact result's best ones, but may miss
lower-scoring ones (NMS over every candidate could take minutes). ``PostProcessor.inexact_images`` counts such
images and an evaluation prints their number (``utils/run_evaluation.py``). The first pass with k = 1000 (detectron2
and mmdetection keep 1000 per pyramid level) keeps the common case fast: with no top-k at all, an untrained or weak
model passes all A * C pairs (1,020,000 per image on COCO at 320) to NMS, which then takes minutes.
``PaddedDetections.complete`` tells which images the first pass already got exactly.

Differences from the authors, on purpose: torchvision's NMS measures IoU on continuous coordinates (the
authors' NumPy NMS added 1 pixel to widths and heights), and the per-image cap keeps exactly 300 boxes
(the authors kept every box scoring at least the 300th score, so ties could keep a few more).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import batched_nms

from utils.box import BoxCoder
from utils.integers import as_int
from utils.nms import nms_steps, settle_nms, suppression_matrix

PRE_NMS_TOPK = 1000
MAX_PRE_NMS_TOPK = 16_000  # the re-runs' largest top-k (step 6)
MAX_PER_IMAGE = 300  # the authors' max_per_image (step 5), which an evaluation keeps
TOPK_GROWTH = 4
DENSE_NMS_MAX_CANDIDATES = 4096  # per image; the dense NMS holds a [B, k, k] matrix
NMS_IMAGES_PER_CALL = 16  # images per torchvision batched_nms call (see nms_by_image_chunks)


class PaddedDetections(NamedTuple):
    """Detections of a batch in fixed-size tensors, M = min(max_per_image, pre-NMS candidates) rows per image.

    boxes: ``[B, M, 4]`` float32 x1y1x2y2, 0-based continuous pixels of the original image;
    scores: ``[B, M]`` float32, descending within an image; labels: ``[B, M]`` int64 0..C-1;
    counts: ``[B]`` int64, detections per image: rows from ``counts[b]`` on are padding (boxes and scores 0, label -1);
    settled: ``[B]`` bool, False where a fixed number of NMS steps did not finish an image's NMS (its rows are
    then not greedy NMS's; see :meth:`PostProcessor.padded`);
    complete: ``[B]`` bool, False where candidates below the pre-NMS top-k could change the image's detections
    (``PostProcessor.__call__`` runs those images again with more candidates).
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    counts: Tensor
    settled: Tensor
    complete: Tensor

    def to_list(self) -> list[dict[str, Tensor]]:
        """The ``PostProcessor.__call__`` form: B dicts of ``boxes [n, 4]``, ``scores [n]``, ``labels [n]`` (one host
        sync)."""
        return [
            {"boxes": self.boxes[i, :n], "scores": self.scores[i, :n], "labels": self.labels[i, :n]}
            for i, n in enumerate(self.counts.tolist())
        ]


def detections_to_numpy(results: list[dict[str, Tensor]]) -> list[dict[str, np.ndarray]]:
    """``PostProcessor`` detections (tensors on any device) -> the same dicts of NumPy arrays.

    One device-to-host copy per key for the whole batch instead of one per image and key: on CUDA each copy
    waits for the device, so a batch of 64 costs 3 waits instead of 192.
    """
    if not results:
        return []
    bounds = np.cumsum([len(result["scores"]) for result in results])[:-1]  # shapes are known on the host
    parts = {key: np.split(torch.cat([result[key] for result in results]).cpu().numpy(), bounds) for key in results[0]}
    return [{key: parts[key][i] for key in parts} for i in range(len(results))]


def image_size_pairs(image_sizes: Tensor, batch: int, owner: str) -> Tensor:
    """``[batch, 2]`` (height, width) pairs from ``image_sizes`` of that shape, or of shape ``[2]`` when ``batch`` is 1;
    any other shape (``[2, batch]`` heights and widths as rows, one pair for a whole batch) is a ValueError naming
    ``owner``, and so is, in a CPU tensor, a height or width that is not a positive number (0, negative, NaN, inf:
    boxes scaled to nothing or mirrored). A CUDA tensor's values are not checked: that would wait for the device
    (a host sync), which a CUDA graph cannot capture."""
    if image_sizes.shape != (batch, 2) and not (batch == 1 and image_sizes.shape == (2,)):
        raise ValueError(
            f"{owner}: image_sizes has shape {tuple(image_sizes.shape)}; expected [B, 2] = {(batch, 2)}, "
            f"the (height, width) of each image in pixels (a single pair for one image)"
        )
    pairs = image_sizes.reshape(batch, 2)
    if pairs.device.type == "cpu":  # read on the host as NumPy: no tensor op
        values = pairs.detach().numpy()
        bad = ~(np.isfinite(values) & (values > 0)).all(axis=1)
        if bad.any():
            row = int(bad.argmax())
            raise ValueError(
                f"{owner}: image_sizes[{row}] = {tuple(values[row].tolist())}: a height or width that is not a "
                f"positive number of pixels; give each original image's (height, width), e.g. dataset.image_size(i)"
            )
    return pairs


def decoded_boxes_and_scores(box_coder: BoxCoder, loc: Tensor, conf: Tensor, priors: Tensor) -> tuple[Tensor, Tensor]:
    """Steps 1-2 before the scaling to pixels, for ``PostProcessor`` and the ONNX export's graphs (``utils/export.py``).

    Args:
        loc: ``[B, A, 4]`` raw offsets (decoded in float32); conf: ``[B, A, C]`` raw logits; priors: ``[A, 4]``
            cxcywh normalised, on ``loc``'s device.

    Returns:
        ``(boxes [B, A, 4] x1y1x2y2 normalised, clamped to [0, 1], scores [B, A, C] sigmoid)``, float32. A box that is
        not finite after decoding (a diverged model's NaN, or an offset so large that ``exp`` overflows: corners -inf
        and inf, which the clamp would turn into a whole-image box) is all zeros with every score 0, and a NaN logit
        (which would outrank every real score in a top-k) scores 0: neither is a candidate above any threshold.
    """
    boxes = box_coder.decode(loc.float(), priors)
    finite = torch.isfinite(boxes).all(dim=2, keepdim=True)  # [B, A, 1], before the clamp; NaN survives the clamp
    boxes = torch.where(finite, boxes.clamp_(0.0, 1.0), 0.0)
    return boxes, torch.where(finite, conf.float().sigmoid().nan_to_num(nan=0.0), 0.0)


def check_thresholds(owner: str, score_thresh: float, nms_thresh: float) -> None:
    """ValueError naming ``owner`` unless ``score_thresh`` is a probability in [0, 1) and ``nms_thresh`` an IoU in
    (0, 1] (a percentage such as 30 finds nothing; NaN fails both)."""
    if not 0.0 <= score_thresh < 1.0:  # NaN too
        raise ValueError(f"{owner}: score_thresh={score_thresh!r} must be a probability in [0, 1)")
    if not 0.0 < nms_thresh <= 1.0:
        raise ValueError(f"{owner}: nms_thresh={nms_thresh!r} must be an IoU in (0, 1]")


def top_candidates(boxes: Tensor, scores: Tensor, score_thresh: float,
                   pre_nms_topk: int | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Step 3 of the module docstring, for a batch: per image the ``pre_nms_topk`` highest (anchor, class) scores
    (all when ``None``), then those strictly above ``score_thresh``.

    Args:
        boxes: ``[B, A, 4]`` x1y1x2y2 (any scale); scores: ``[B, A, C]`` probabilities.

    Returns:
        ``(boxes [N, 4], scores [N], labels int64 [N] 0..C-1, image_index int64 [N])``, image by image, each
        image's candidates by descending score. NMS groups are ``image_index * C + labels``.
    """
    batch = scores.shape[0]
    top_scores, top_anchors, top_labels = ranked_pairs(scores, pre_nms_topk)
    k = top_scores.shape[1]
    passed = top_scores > score_thresh  # [B, k]
    image_index = torch.arange(batch, device=scores.device)[:, None].expand(batch, k)[passed]  # [N]
    return boxes[image_index, top_anchors[passed]], top_scores[passed], top_labels[passed], image_index


def ranked_pairs(scores: Tensor, pre_nms_topk: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """Per image, the ``pre_nms_topk`` highest (anchor, class) scores (all when ``None``), by descending score.

    Args:
        scores: ``[B, A, C]`` probabilities.

    Returns:
        ``(scores [B, k], anchor index int64 [B, k], class int64 [B, k])``.
    """
    num_classes = scores.shape[2]
    flat = scores.flatten(1)  # [B, A*C]; column = anchor * C + class
    k = flat.shape[1] if pre_nms_topk is None else min(pre_nms_topk, flat.shape[1])
    top_scores, top_columns = flat.topk(k, dim=1)  # [B, k], descending
    anchors = torch.div(top_columns, num_classes, rounding_mode="floor")  # exportable floor division
    return top_scores, anchors, top_columns % num_classes


def nms_by_image_chunks(boxes: Tensor, ranks: Tensor, groups: Tensor, image_index: Tensor, batch: int,
                        iou_threshold: float) -> Tensor:
    """``torchvision.ops.batched_nms`` over ``NMS_IMAGES_PER_CALL`` images at a time.

    Args:
        boxes ``[N, 4]``, ranks ``[N]`` (higher first), groups ``[N]``: as ``batched_nms`` takes them, the candidates
            of ``batch`` images one image after the other; image_index ``[N]``: each candidate's image.

    Returns:
        int64 ``[K]`` indices of the kept candidates, image by image, each image's by descending rank. On the CPU,
        ``batched_nms`` scans every candidate once per group, so one call over a whole batch grows as batch^2.
    """
    per_image = torch.bincount(image_index, minlength=batch)
    starts = torch.cat([per_image.new_zeros(1), per_image.cumsum(0)]).tolist()  # [B + 1] candidate offsets
    bounds = starts[::NMS_IMAGES_PER_CALL] + ([starts[-1]] if batch % NMS_IMAGES_PER_CALL else [])
    kept = [start + batched_nms(boxes[start:end], ranks[start:end], groups[start:end], iou_threshold)
            for start, end in zip(bounds, bounds[1:]) if end > start]
    return torch.cat(kept) if kept else image_index.new_zeros(0)


class PostProcessor:
    """Turns ``(loc, conf)`` of a batch into detections; see the module docstring for the steps.

    Args:
        priors: ``[A, 4]`` anchors, cxcywh normalised (``PriorBox().forward()``).
        score_thresh: keep scores strictly above this, a probability in [0, 1).
        nms_thresh: IoU above which a lower-scoring box of the same class is suppressed, in (0, 1].
        pre_nms_topk: candidates kept per image before NMS in the first pass; ``None`` keeps all (exact, slow).
        max_per_image: detections kept per image after NMS (>= 1).
        max_pre_nms_topk: the largest top-k of the re-runs that make ``__call__`` exact (module docstring, step 6);
            ``None``: up to every candidate; ``pre_nms_topk`` itself: no re-run (a plain top-k).
        dense_nms: run NMS with :func:`utils.nms.dense_batched_nms` (True) or ``torchvision.ops.batched_nms``
            (False); None picks dense on CUDA when ``pre_nms_topk`` is at most ``DENSE_NMS_MAX_CANDIDATES``.

    A threshold or count out of its range (a percentage, NaN) is a ValueError.

    Attributes:
        inexact_images: how many images ``__call__`` has returned whose detections may lack lower-scoring ones
            because even the largest top-k (``max_pre_nms_topk``) left their result inexact (module docstring).
    """

    def __init__(
        self,
        priors: Tensor,
        score_thresh: float = 0.005,
        nms_thresh: float = 0.5,
        pre_nms_topk: int | None = PRE_NMS_TOPK,
        max_per_image: int = MAX_PER_IMAGE,
        dense_nms: bool | None = None,
        max_pre_nms_topk: int | None = MAX_PRE_NMS_TOPK,
    ) -> None:
        if priors.dim() != 2 or priors.shape[1] != 4:
            raise ValueError(f"PostProcessor: priors must be [A, 4] cxcywh, got shape {tuple(priors.shape)}")
        for name, value in (("pre_nms_topk", pre_nms_topk), ("max_pre_nms_topk", max_pre_nms_topk)):
            if value is not None and (as_int(value) is None or value < 1):
                raise ValueError(f"PostProcessor: {name}={value!r} must be a positive count or None")
        check_thresholds("PostProcessor", score_thresh, nms_thresh)
        if as_int(max_per_image) is None or max_per_image < 1:
            raise ValueError(f"PostProcessor: max_per_image={max_per_image!r} must be an int >= 1")
        self.priors = priors.float()
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.pre_nms_topk = pre_nms_topk
        self.max_per_image = max_per_image
        self.max_pre_nms_topk = max_pre_nms_topk
        self.box_coder = BoxCoder()  # variances (0.1, 0.2)
        self.dense_nms = dense_nms
        self.inexact_images = 0
        if dense_nms:
            self._check_fits_dense_nms("dense_nms")

    @torch.no_grad()
    def __call__(self, loc: Tensor, conf: Tensor, image_sizes: Tensor) -> list[dict[str, Tensor]]:
        """Detections of every image of the batch.

        Args:
            loc: ``[B, A, 4]`` raw box offsets (any float dtype; decoded in float32).
            conf: ``[B, A, C]`` raw class logits, no background column.
            image_sizes: ``[B, 2]`` (height, width) of each original image, in pixels (a tensor, array or list;
                one pair ``(height, width)`` when B = 1). Any other shape is a ValueError, and so is a height or
                width that is not a positive number in a list, an array or a CPU tensor; a CUDA tensor's values are
                taken as they are, so that nothing waits for the device (no host sync: what ``padded`` needs).

        Returns:
            ``B`` dicts on ``loc``'s device: ``"boxes"`` float32 ``[n, 4]`` x1y1x2y2 0-based continuous pixels
            of the original image, ``"scores"`` float32 ``[n]`` (descending), ``"labels"`` int64 ``[n]`` 0..C-1.
            Images whose result the largest top-k leaves inexact are added to ``inexact_images``.
        """
        boxes, scores = self._boxes_and_scores(loc, conf, image_sizes)
        k = self.pre_nms_topk
        detections, complete = self._first_pass(boxes, scores)
        while not bool(complete.all()):
            if (k := self._wider_topk(k, scores)) is None:
                self.inexact_images += int((~complete).sum())
                break
            redo = torch.nonzero(~complete).squeeze(1)  # torchvision's NMS: the dense one's memory grows with k^2
            again, complete[redo] = self._torchvision_detections(boxes[redo], scores[redo], k)
            for image, result in zip(redo.tolist(), again):
                detections[image] = result
        return detections

    def _wider_topk(self, k: int | None, scores: Tensor) -> int | None:
        """The next re-run's top-k (step 6), or None when no re-run may go further."""
        largest = self.max_pre_nms_topk or scores.shape[1] * scores.shape[2]
        if k is None or k >= largest:
            return None
        return min(k * TOPK_GROWTH, largest)

    def _first_pass(self, boxes: Tensor, scores: Tensor) -> tuple[list[dict[str, Tensor]], Tensor]:
        """Steps 3-5 with ``pre_nms_topk``: the detections of each image and its ``[B]`` bool ``complete`` flag."""
        if self._use_dense_nms(boxes.device):
            padded = self._dense_nms_detections(boxes, scores, steps=None)
            return padded.to_list(), padded.complete
        return self._torchvision_detections(boxes, scores, self.pre_nms_topk)

    def _torchvision_detections(
        self, boxes: Tensor, scores: Tensor, k: int | None
    ) -> tuple[list[dict[str, Tensor]], Tensor]:
        """Steps 3-5 with top-k ``k`` and ``torchvision.ops.batched_nms``, as :meth:`_first_pass` returns them."""
        batch, _, num_classes = scores.shape
        candidate_boxes, candidate_scores, labels, image_index = top_candidates(boxes, scores, self.score_thresh, k)
        # float64: torchvision may separate the groups by shifting boxes (group * (largest coordinate + 1)), which in
        # float32 would round a large batch's pixel coordinates by up to a quarter pixel
        groups = image_index * num_classes + labels
        # NMS ranks each image's candidates by their position (already by descending score, ties in the top-k's
        # order, as the dense NMS does): with the scores, tied ones (a diverged model's 1.0) would be ordered by
        # torchvision's sorts, which are not stable, so an image's detections would depend on the rest of its batch
        position = torch.arange(len(candidate_scores), 0, -1, dtype=torch.float64, device=boxes.device)
        kept = nms_by_image_chunks(candidate_boxes.double(), position, groups, image_index, batch, self.nms_thresh)
        kept_image = image_index[kept]
        counts = torch.bincount(kept_image, minlength=batch)  # [B]
        rank = torch.arange(len(kept), device=boxes.device) - (counts.cumsum(0) - counts)[kept_image]
        kept = kept[rank < self.max_per_image]

        per_image = counts.clamp(max=self.max_per_image).tolist()
        detections = [
            {"boxes": b, "scores": s, "labels": l}
            for b, s, l in zip(
                candidate_boxes[kept].split(per_image),
                candidate_scores[kept].split(per_image),
                labels[kept].split(per_image),
            )
        ]
        return detections, self._complete(scores, k, counts)

    def _complete(self, scores: Tensor, k: int | None, counts: Tensor) -> Tensor:
        """``[B]`` bool: the top-k result is exact (at most k candidates above the threshold, or a full image)."""
        if k is None:
            return torch.ones_like(counts, dtype=torch.bool)
        above = (scores > self.score_thresh).sum(dim=(1, 2))
        return (above <= k) | (counts >= self.max_per_image)

    @torch.no_grad()
    def padded(self, loc: Tensor, conf: Tensor, image_sizes: Tensor, nms_steps: int | None = None) -> PaddedDetections:
        """The dense-NMS detections of every image in fixed-size tensors.

        Args:
            loc, conf, image_sizes: as for ``__call__``; ``image_sizes`` a ``[B, 2]`` tensor on ``loc``'s device
                (on CUDA its values are not checked: nothing here waits for the device).
            nms_steps: None runs NMS to its end (exact; a host sync every few steps on CUDA). A number runs that
                many fixed-point steps and nothing else syncs with the host, so the call can be captured in a
                CUDA graph; ``settled`` then says which images finished, and only those are exact.

        Returns:
            :class:`PaddedDetections`; with ``nms_steps=None`` every image is settled and the rows equal ``__call__``'s.
        """
        self._check_fits_dense_nms("padded")
        boxes, scores = self._boxes_and_scores(loc, conf, image_sizes)
        return self._dense_nms_detections(boxes, scores, steps=nms_steps)

    def _boxes_and_scores(self, loc: Tensor, conf: Tensor, image_sizes: Tensor) -> tuple[Tensor, Tensor]:
        """Steps 1-2: ``boxes [B, A, 4]`` float32 pixels of the original images and ``scores [B, A, C]``."""
        batch, num_anchors, num_classes = conf.shape
        if loc.shape != (batch, num_anchors, 4) or num_anchors != len(self.priors):
            raise ValueError(
                f"PostProcessor: loc {tuple(loc.shape)} and conf {tuple(conf.shape)} must be [B, A, 4] and [B, A, C] "
                f"with A = {len(self.priors)} anchors; build the priors with the model's --size"
            )
        device = loc.device
        if self.priors.device != device:
            self.priors = self.priors.to(device)  # moved once: a CUDA graph must not capture a host copy
        # checked on the host when given there (a list, an array, a CPU tensor), then moved
        image_sizes = image_size_pairs(torch.as_tensor(image_sizes), batch, "PostProcessor").to(device)
        boxes, scores = decoded_boxes_and_scores(self.box_coder, loc, conf, self.priors)
        scale = image_sizes.flip(-1).repeat(1, 2).float()  # [B, 4] (w, h, w, h)
        return boxes * scale[:, None, :], scores

    def _use_dense_nms(self, device: torch.device) -> bool:
        if self.dense_nms is not None:
            return self.dense_nms
        return device.type == "cuda" and self._fits_dense_nms()

    def _fits_dense_nms(self) -> bool:
        """Whether the dense NMS can take the pre-NMS candidates: it holds a ``[B, k, k]`` matrix."""
        return self.pre_nms_topk is not None and self.pre_nms_topk <= DENSE_NMS_MAX_CANDIDATES

    def _check_fits_dense_nms(self, what: str) -> None:
        if not self._fits_dense_nms():
            raise ValueError(
                f"PostProcessor: {what} needs pre_nms_topk <= {DENSE_NMS_MAX_CANDIDATES} (a [B, k, k] matrix), "
                f"got {self.pre_nms_topk}"
            )

    def _dense_nms_detections(self, boxes: Tensor, scores: Tensor, steps: int | None) -> PaddedDetections:
        """Steps 3-5 with the dense NMS of :mod:`utils.nms`: ``boxes [B, A, 4]`` pixels, ``scores [B, A, C]``;
        ``steps`` fixed NMS steps, or None to settle (see :meth:`padded`)."""
        top_scores, top_anchors, top_labels = ranked_pairs(scores, self.pre_nms_topk)
        top_boxes = boxes.gather(1, top_anchors.unsqueeze(2).expand(-1, -1, 4))  # [B, k, 4]
        valid = top_scores > self.score_thresh
        suppresses = suppression_matrix(top_boxes, top_labels, valid, self.nms_thresh)
        if steps is None:
            kept, settled = settle_nms(suppresses, valid), valid.new_ones(valid.shape[0])
        else:
            kept, settled = nms_steps(valid, suppresses, valid, steps)
        kept &= kept.cumsum(dim=1) <= self.max_per_image  # candidates are by descending score already
        rows = min(self.max_per_image, kept.shape[1])
        # kept candidates first, each group in score order (a stable sort), then the first `rows` of them
        order = torch.sort(kept.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :rows]  # [B, M]
        counts = kept.sum(dim=1)
        is_row = torch.arange(rows, device=kept.device) < counts.unsqueeze(1)  # [B, M]
        return PaddedDetections(
            boxes=torch.where(is_row.unsqueeze(2), top_boxes.gather(1, order.unsqueeze(2).expand(-1, -1, 4)), 0.0),
            scores=torch.where(is_row, top_scores.gather(1, order), 0.0),
            labels=torch.where(is_row, top_labels.gather(1, order), -1),
            counts=counts,
            settled=settled,
            complete=self._complete(scores, self.pre_nms_topk, counts),
        )
