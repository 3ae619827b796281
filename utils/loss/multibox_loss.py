"""The training criterion: assignment, then focal and balanced-L1 losses (facts §4).

    loss_c = sum of focal loss over positive and negative anchors / max(N_pos_cls, 1)
    loss_l = sum of balanced L1 over the 4 offsets of regression positives / (4 * max(N_pos_reg, 1))

Positive counts are summed over the batch; with ``sync_positives`` under ``torchrun`` over the global batch (every
process's images), so N processes of B images train like one process of N x B images. With the IoU assigner the
same anchors are classification and regression positives; with Mutual Guidance they differ. Assignment and losses
run in float32, outside any autocast region, whatever the dtype of the predictions.
"""
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from utils.assign import (
    IGNORE,
    POSITIVE,
    Assignment,
    IoUAssigner,
    MutualGuidanceAssigner,
    PaddedTargets,
    QuotaPrefetcher,
    Quotas,
    default_max_elements,
    image_chunks,
    pad_targets,
)
from utils.assign.assignment import assigner_inputs, concat_assignments
from utils.box import BoxCoder, corner_form, elementwise_box_iou
from utils.environment import compiled_criterion_problem
from utils.integers import as_int

from .balanced_l1_loss import balanced_l1_loss
from .focal_loss import BACKGROUND, sigmoid_focal_loss

FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 1.0
BALANCED_L1_ALPHA, BALANCED_L1_GAMMA, BALANCED_L1_BETA = 0.5, 1.5, 0.11


def gather_per_anchor(per_object: Tensor, gt_index: Tensor) -> Tensor:
    """Pick each anchor's object: ``[B, G, ...]`` and ``[B, A]`` int64 -> ``[B, A, ...]``."""
    index = gt_index.view(*gt_index.shape, *([1] * (per_object.dim() - 2))).expand(-1, -1, *per_object.shape[2:])
    return per_object.gather(1, index)


class ChunkTerms(NamedTuple):
    """The criterion on one run of images, before normalisation.

    focal, box: 0-d float32 sums of the focal loss (kept anchors, all classes) and of the balanced L1 loss
    (regression positives, 4 offsets); num_pos_cls, num_pos_reg: 0-d int64 positive counts;
    cls, reg, iou_baseline: the ``[b, A]`` assignments (iou_baseline only with Mutual Guidance and when asked for).
    """

    focal: Tensor
    num_pos_cls: Tensor
    box: Tensor
    num_pos_reg: Tensor
    cls: Assignment
    reg: Assignment
    iou_baseline: Assignment | None


class MultiBoxLoss(nn.Module):
    """Focal + balanced-L1 loss with IoU or Mutual-Guidance assignment (the authors' name is kept).

    Args:
        num_classes: C, the number of foreground classes (no background column).
        mutual_guide: use Mutual Guidance instead of the IoU baseline. A plain attribute: it may be switched
            during training (e.g. MG after a warm-up).
        compile: run the assignment and losses of each run of images as one ``torch.compile`` graph (dynamic
            shapes, so a new object count or batch size does not recompile). Fewer, fused kernels; the first call
            compiles for a while (about 30 s on a CPU), and so does the first call in each new mode (MG on/off,
            with stats). Results equal the eager criterion's up to float rounding. The quotas' host sync and the
            target padding stay outside the graph. A RuntimeError on a torch older than
            ``utils.environment.COMPILED_CRITERION_MIN_TORCH`` (2.14): 2.5-2.6 and 2.8-2.9 miscompile it on the
            CPU, and the others were not checked.
        sync_positives: when a ``torch.distributed`` process group is initialised, normalise by the positive counts
            of the global batch: the counts are summed over the processes (one all-reduce of two numbers, on the
            device, no host sync) and each process's loss is its sums divided by ``max(N_global, 1) / world_size``.
            DistributedDataParallel averages the gradients over the processes, so the update is that of one
            process holding the whole global batch (the paper trains on one GPU with the batch's counts, facts §4
            and §6). Without it each process normalises by its own positives. No effect without a process group.

    Call ``loss_fn((loc, conf), priors, targets)`` with
        loc: ``[B, A, 4]`` predicted offsets; conf: ``[B, A, C]`` logits (any float dtype);
        priors: ``[A, 4]`` anchors cxcywh normalised (:class:`utils.box.PriorBox`);
        targets: B float tensors ``[n_i, 5]`` = x1, y1, x2, y2 normalised, class 0..C-1 (``[0, 5]`` if no object);
            constants of the loss: detached, so no gradient flows into targets that require grad.
    It returns ``(loss_l, loss_c)`` 0-d float32 tensors, or ``(loss_l, loss_c, stats)`` with ``with_stats=True``;
    ``stats`` holds 0-d float32 device tensors (no host sync): num_objects, num_pos_cls, num_pos_reg,
    pos_per_object (classification positives per object), num_images, cls_pos_per_image, reg_pos_per_image
    (classification / regression positives per image, images without objects included), cls_pos_anchor_iou,
    cls_pos_pred_iou, reg_pos_anchor_iou, reg_pos_pred_iou (mean IoU of the anchor / the decoded prediction with the
    assigned object over the positives) and disagree_with_iou (share of classification positives the IoU assigner
    would not make positive; 0 without MG).

    The batch is processed in runs of images whose ``[b, G, A]`` quality matrices and ``[b, A, C]`` logits hold at
    most the active assigner's ``max_elements`` entries (one run on CUDA at the usual sizes; see
    :func:`utils.assign.assignment.default_max_elements`); sums and positive counts are added over the runs.
    """

    def __init__(
        self, num_classes: int, mutual_guide: bool = False, compile: bool = False, sync_positives: bool = False
    ) -> None:
        super().__init__()
        classes = as_int(num_classes)
        if classes is None or classes < 1:
            raise ValueError(
                f"MultiBoxLoss: num_classes={num_classes!r} must be an int >= 1 (foreground classes only)."
            )
        self.num_classes = classes
        self.mutual_guide = mutual_guide
        self.box_coder = BoxCoder()
        self.iou_assigner = IoUAssigner()
        self.mg_assigner = MutualGuidanceAssigner()
        self.quota_prefetcher = QuotaPrefetcher()
        problem = compiled_criterion_problem(torch.__version__) if compile else None
        if problem is not None:
            raise RuntimeError(f"MultiBoxLoss(compile=True): {problem}")
        self.compiled = compile
        self.sync_positives = sync_positives
        self._chunk_terms = torch.compile(self._terms, dynamic=True, fullgraph=True) if compile else self._terms

    def forward(
        self,
        predictions: tuple[Tensor, Tensor],
        priors: Tensor,
        targets: list[Tensor],
        with_stats: bool = False,
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, dict[str, Tensor]]:
        """``(loss_l, loss_c)`` (and ``stats`` with ``with_stats``) of one batch, as the class docstring states."""
        loc, conf = predictions
        self._check_shapes(loc, conf, priors, targets)
        with torch.autocast(device_type=loc.device.type, enabled=False):
            loc, conf = loc.float(), conf.float()
            anchors = priors.to(device=loc.device, dtype=torch.float32)
            if self.mutual_guide and loc.device.type == "cuda":  # the quotas' host sync skips the forward pass
                gt, quotas = self.quota_prefetcher(self.mg_assigner, anchors, targets, self.num_classes)
            else:
                gt, quotas = pad_targets(targets, num_classes=self.num_classes, device=loc.device), None
            anchors_xyxy, gt_boxes = assigner_inputs(anchors, gt.boxes, gt.mask)
            num_images, num_anchors, num_classes = conf.shape
            per_image = num_anchors * max(gt_boxes.shape[1], num_classes)
            chunks = image_chunks(num_images, per_image, self._max_elements(loc))
            parts = [
                self._chunk_terms(
                    anchors,
                    anchors_xyxy,
                    gt_boxes[chunk],
                    gt.labels[chunk],
                    loc[chunk],
                    conf[chunk],
                    self._chunk_quotas(anchors, gt, quotas, chunk),
                    with_stats,
                )
                for chunk in chunks
            ]
            cls_normalizer, reg_normalizer = self._normalizers(
                sum(part.num_pos_cls for part in parts), sum(part.num_pos_reg for part in parts)
            )
            loss_c = sum(part.focal for part in parts) / cls_normalizer
            loss_l = sum(part.box for part in parts) / (4 * reg_normalizer)
            if not with_stats:
                return loss_l, loss_c
            cls = concat_assignments([part.cls for part in parts])
            reg = concat_assignments([part.reg for part in parts])
            baseline = concat_assignments([part.iou_baseline for part in parts]) if self.mutual_guide else None
            stats = self._assignment_stats(loc, anchors, gt.boxes, gt.mask, cls, reg, baseline)
            return loss_l, loss_c, stats

    def _normalizers(self, num_pos_cls: Tensor, num_pos_reg: Tensor) -> Tensor:
        """``[2]`` float32: ``max(N_pos_cls, 1)`` and ``max(N_pos_reg, 1)`` of this batch, or with
        ``sync_positives`` in a process group, the global batch's counts over the number of processes."""
        counts = torch.stack([num_pos_cls, num_pos_reg]).float()
        if not (self.sync_positives and dist.is_available() and dist.is_initialized()):
            return counts.clamp(min=1)
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        return counts.clamp(min=1) / dist.get_world_size()

    def _max_elements(self, loc: Tensor) -> int:
        assigner = self.mg_assigner if self.mutual_guide else self.iou_assigner
        return assigner.max_elements or default_max_elements(loc.device)

    def _chunk_quotas(self, anchors: Tensor, gt: PaddedTargets, quotas: Quotas | None, chunk: slice) -> Quotas | None:
        """The Mutual-Guidance quotas of one run of images, computed ahead of its assignment (None for IoU)."""
        if not self.mutual_guide:
            return None
        if quotas is None:
            return self.mg_assigner.quotas(anchors, gt.boxes[chunk], gt.mask[chunk])
        return quotas.of_images(chunk)

    def _terms(
        self,
        anchors: Tensor,
        anchors_xyxy: Tensor,
        gt_boxes: Tensor,
        gt_labels: Tensor,
        loc: Tensor,
        conf: Tensor,
        quotas: Quotas | None,
        with_iou_baseline: bool,
    ) -> ChunkTerms:
        """Assignment and loss sums of one run of b images (the part ``compile=True`` compiles).

        anchors, anchors_xyxy: ``[A, 4]`` cxcywh and xyxy; gt_boxes ``[b, G, 4]`` xyxy, padded slots zeroed;
        gt_labels ``[b, G]``; loc ``[b, A, 4]``, conf ``[b, A, C]`` float32; quotas as :meth:`_chunk_quotas`.
        """
        baseline = None
        with torch.no_grad():
            if self.mutual_guide:
                cls, reg, baseline = self.mg_assigner.assign_chunk(
                    anchors, anchors_xyxy, gt_boxes, gt_labels, loc.detach(), conf.detach(), with_iou_baseline, quotas
                )
            else:
                cls = reg = self.iou_assigner.assign_chunk(anchors_xyxy, gt_boxes)
        cls_positive, reg_positive = cls.state == POSITIVE, reg.state == POSITIVE

        labels = torch.where(cls_positive, gather_per_anchor(gt_labels, cls.gt_index), BACKGROUND)
        focal = sigmoid_focal_loss(conf, labels, cls.state != IGNORE, FOCAL_ALPHA, FOCAL_GAMMA)

        # A non-positive anchor takes its own anchor as target (finite offsets) and that target as prediction: loss 0
        # and gradient 0 whatever it predicted. Masking the loss afterwards gave NaN gradients (0 * inf) where a
        # prediction was inf, e.g. after an fp16 overflow; the authors' code indexes the positives and gives 0 there.
        is_positive = reg_positive.unsqueeze(2)
        matched = torch.where(is_positive, gather_per_anchor(gt_boxes, reg.gt_index), anchors_xyxy)
        target = self.box_coder.encode(matched, anchors)
        prediction = torch.where(is_positive, loc, target)
        box = balanced_l1_loss(prediction, target, BALANCED_L1_ALPHA, BALANCED_L1_GAMMA, BALANCED_L1_BETA).sum()
        return ChunkTerms(focal, cls_positive.sum(), box, reg_positive.sum(), cls, reg, baseline)

    @torch.no_grad()
    def _assignment_stats(
        self,
        loc: Tensor,
        anchors: Tensor,
        gt_boxes: Tensor,
        gt_mask: Tensor,
        cls: Assignment,
        reg: Assignment,
        baseline: Assignment | None,
    ) -> dict[str, Tensor]:
        anchors_xyxy = corner_form(anchors)
        pred_boxes = self.box_coder.decode(loc, anchors)

        def mean_over(mask: Tensor, values: Tensor) -> Tensor:
            return torch.where(mask, values, 0.0).sum() / mask.sum().clamp(min=1)

        stats = {"num_objects": gt_mask.sum().float()}
        for name, assignment in (("cls", cls), ("reg", reg)):
            positive = assignment.state == POSITIVE
            matched = gather_per_anchor(gt_boxes, assignment.gt_index)
            stats[f"num_pos_{name}"] = positive.sum().float()
            stats[f"{name}_pos_anchor_iou"] = mean_over(positive, elementwise_box_iou(anchors_xyxy, matched))
            stats[f"{name}_pos_pred_iou"] = mean_over(positive, elementwise_box_iou(pred_boxes, matched))
        stats["pos_per_object"] = stats["num_pos_cls"] / stats["num_objects"].clamp(min=1)
        stats["num_images"] = torch.full((), float(loc.shape[0]), device=loc.device)  # a fill: no blocking copy
        stats["cls_pos_per_image"] = stats["num_pos_cls"] / stats["num_images"]
        stats["reg_pos_per_image"] = stats["num_pos_reg"] / stats["num_images"]
        cls_positive = cls.state == POSITIVE
        if baseline is None:
            stats["disagree_with_iou"] = torch.zeros((), device=loc.device)
        else:
            stats["disagree_with_iou"] = mean_over(cls_positive, baseline.state != POSITIVE)
        return stats

    def _check_shapes(self, loc: Tensor, conf: Tensor, priors: Tensor, targets: list[Tensor]) -> None:
        if loc.dim() != 3 or loc.shape[2] != 4:
            raise ValueError(f"MultiBoxLoss: loc has shape {tuple(loc.shape)}; expected [B, A, 4] offsets.")
        if conf.shape != (*loc.shape[:2], self.num_classes):
            raise ValueError(
                f"MultiBoxLoss: conf has shape {tuple(conf.shape)}; expected [B, A, C] = "
                f"{(*loc.shape[:2], self.num_classes)} (num_classes={self.num_classes}, no background column)."
            )
        if priors.shape != (loc.shape[1], 4):
            raise ValueError(
                f"MultiBoxLoss: priors has shape {tuple(priors.shape)} but the model predicts {loc.shape[1]} anchors; "
                f"build PriorBox with the model's input size."
            )
        if isinstance(targets, Tensor) and targets.dim() != 3:
            raise ValueError(
                f"MultiBoxLoss: targets is one tensor of shape {tuple(targets.shape)}; pass a list of "
                f"B = {loc.shape[0]} tensors [n_i, 5], one per image (e.g. [target] for a batch of one)."
            )
        if len(targets) != loc.shape[0]:
            raise ValueError(f"MultiBoxLoss: got {len(targets)} targets for a batch of {loc.shape[0]} images.")
