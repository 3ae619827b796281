"""The single-stage detector: backbone -> neck -> head."""

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from models.head import ANCHORS_PER_CELL

CLASSIFIER_PREFIX = "head.conf."  # the head's per-class layers: their output channels depend on the class count


class Detector(nn.Module):
    """images [B, 3, S, S] -> (loc [B, A, 4], conf [B, A, C]), the same pair in train and eval mode.

    images: float32, BGR minus (104, 117, 123), no scaling (`data/transforms.py` normalize_image); a NumPy array or
    an integer tensor (a raw image batch), or float images of another dtype than the weights outside autocast
    (float64 from NumPy arithmetic), is a ValueError naming the conversion, and so is any shape other than
    [B, 3, S, S] with S = `size` (another side would give another anchor count, or the same count on shifted cells).
    The checks read attributes and static shapes, so `torch.compile` traces them and the ValueError comes out as it
    is; under `torch.compile(fullgraph=True)` Dynamo lets no exception out of the graph and raises its own error
    ("Observed exception"), whose text holds this message (torch 2.14). `run_inference` checks the image size
    before it calls the model, compiled or not.
    loc: offsets encoded against PriorBox(size=S) anchors with variances (0.1, 0.2); conf: per-class logits, no
    background column. A follows PriorBox's order (level, row, column, anchor): 12,750 at 320 and 32,736 at 512.
    `version`, `backbone_name`, `size` and `num_classes` record the build, for checkpoints.
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: nn.Module, *, version: str, backbone_name: str,
                 size: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.version = version
        self.backbone_name = backbone_name
        self.size = size
        self.num_classes = num_classes

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        _check_images(images)
        self._check_shape(images)
        self._check_dtype(images)
        return self.head(self.neck(self.backbone(images)))

    def _check_dtype(self, images: object) -> None:
        """ValueError when float ``images`` are of another dtype than the weights and autocast does not run the model
        (a float64 batch from NumPy arithmetic with a float mean, which torch refuses with "expected scalar type
        Double but found Float"). Under autocast float16, bfloat16 and float32 images are taken; float64 is not."""
        weights = next(self.parameters(), None)
        if not isinstance(images, Tensor) or weights is None or images.dtype == weights.dtype:
            return
        device = images.device.type
        autocast = torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)
        if autocast and images.dtype != torch.float64:
            return
        conversion = "images.float()" if weights.dtype == torch.float32 else f"images.to({weights.dtype})"
        raise ValueError(
            f"Detector: images are {images.dtype} but the model's weights are {weights.dtype}: convert them with "
            f"{conversion} (data.transforms.normalize_image gives float32), or run the model under torch.autocast"
        )

    def _check_shape(self, images: object) -> None:
        """ValueError unless ``images`` is [B, 3, size, size]; shapes only, no host sync (a ``torch.fx`` proxy
        passes)."""
        if not isinstance(images, Tensor):
            return
        if images.dim() == 4 and tuple(images.shape[1:]) == (3, self.size, self.size):
            return
        raise ValueError(
            f"Detector: images are [{', '.join(map(str, images.shape))}]; this {self.version}-{self.backbone_name} "
            f"was built for [B, 3, {self.size}, {self.size}] (size={self.size}): resize each image to {self.size} x "
            f"{self.size} (data.transforms), or build the detector with the images' size"
        )

    def load_all_but_classifier(self, state_dict: Mapping[str, Tensor]) -> list[str]:
        """Load every weight of ``state_dict`` (a detector of the same architecture, any class count) except the
        classification layers (``head.conf``), which keep their initialisation: fine-tuning on another class list.
        Returns the keys left at their initialisation; raises RuntimeError when any other key is missing or extra."""
        kept = {key: value for key, value in state_dict.items() if not key.startswith(CLASSIFIER_PREFIX)}
        missing, unexpected = self.load_state_dict(kept, strict=False)
        other = [key for key in missing if not key.startswith(CLASSIFIER_PREFIX)] + list(unexpected)
        if other:
            raise RuntimeError(f"the weights do not fit this detector outside its classifier: {sorted(other)[:5]}")
        return sorted(missing)


def reorder_classes(state_dict: Mapping[str, Tensor], order: Sequence[int | None],
                    initial: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """A detector's ``state_dict`` whose classification layers score ``len(order)`` classes: class ``i`` of the result
    scores what class ``order[i]`` of ``state_dict`` scored (fine-tuning on the same classes listed in another order,
    on some of them, or on some of them and new ones), and a class whose ``order[i]`` is None (a new class) takes
    its channels from ``initial``, the state dict of the detector to load it into (its classification layers'
    initialisation), a ValueError when it is not given. Each ``head.conf.*`` weight ``[ANCHORS_PER_CELL x C, ...]``
    and bias ``[ANCHORS_PER_CELL x C]`` is read as ``[ANCHORS_PER_CELL, C, ...]`` (channel ``a x C + c`` is anchor
    ``a``'s class ``c``, as the head flattens them) and indexed on ``C``; every other entry is ``state_dict``'s own."""
    new = [label for label, source in enumerate(order) if source is None]
    if new and initial is None:
        raise ValueError(f"reorder_classes: class {', '.join(map(str, new))} {'has' if len(new) == 1 else 'have'} no "
                         "source in state_dict (None in order): give initial, the state dict of the detector to load "
                         "(its classification layers' initialisation)")
    labels = torch.as_tensor([label for label, source in enumerate(order) if source is not None], dtype=torch.long)
    sources = torch.as_tensor([source for source in order if source is not None], dtype=torch.long)
    reordered = dict(state_dict)
    for key, value in state_dict.items():
        if key.startswith(CLASSIFIER_PREFIX):
            per_class = value.reshape(ANCHORS_PER_CELL, -1, *value.shape[1:])
            kept = per_class.index_select(1, sources.to(value.device))
            if new:
                kept = initial[key].to(value).reshape(ANCHORS_PER_CELL, len(order), *value.shape[1:]).index_copy(
                    1, labels.to(value.device), kept)
            reordered[key] = kept.reshape(ANCHORS_PER_CELL * len(order), *value.shape[1:])
    return reordered


def _check_images(images: object) -> None:
    """ValueError for a NumPy array or an integer tensor (a raw uint8 image batch), which torch's convolution refuses
    with messages that name neither the input nor the conversion. Attributes only: no host sync; a tracer's proxy
    (``torch.fx``, which folds BatchNorm) is no Tensor and passes."""
    if isinstance(images, np.ndarray):
        kind = "a NumPy array"
    elif isinstance(images, Tensor) and not images.is_floating_point():
        kind = str(images.dtype)
    else:
        return
    raise ValueError(
        f"Detector: images are {kind}; the model takes a float tensor [B, 3, S, S] = BGR minus (104, 117, 123) "
        "(data.transforms.normalize_image of each uint8 BGR [H, W, 3] image, resized to S x S)"
    )
