"""Inference replayed from one CUDA graph: the forward pass and the post-processing of a fixed-size batch.

At small batches a detector is launch-bound on a GPU: RetinaNet-VGG16-320 needs 3.4 ms for its forward pass at
batch 1 on an H200 when eager PyTorch launches its few hundred kernels one by one, and 0.2 ms when a CUDA graph
replays them (docs/benchmarks.md). :class:`CUDAGraphDetector` captures the model and
:meth:`utils.postprocess.PostProcessor.padded` (fixed-size outputs, a fixed number of NMS steps, no host sync)
once, then each call copies the images in, replays the graph and copies the detections out: one host sync per
batch. When an image's NMS the fixed steps did not finish (rare: 12 steps settled every image of untrained
detectors, whose 1,000 candidates per image all pass the score threshold), or its pre-NMS top-k may have changed
its detections (``PaddedDetections.complete``), that image is post-processed again by
:class:`~utils.postprocess.PostProcessor` itself, so results always equal its own.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import Tensor, nn

from models.memory_format import memory_format, stores_channels_last
from utils.postprocess import PaddedDetections, PostProcessor, detections_to_numpy, image_size_pairs

# fixed-point NMS steps inside the graph; untrained detectors settled within 12 (20 and 80 classes)
GRAPH_NMS_STEPS = 16
WARMUP_CALLS = 3  # eager calls before the capture: cudnn autotuning and the allocator's first blocks


class CUDAGraphDetector:
    """``model`` + ``postprocessor`` for batches of up to ``batch_size`` images, captured in one CUDA graph.

    Args:
        model: ``images [B, 3, S, S] -> (loc [B, A, 4], conf [B, A, C])``, on a CUDA device; this sets it to eval mode.
        postprocessor: its ``pre_nms_topk`` must be at most ``DENSE_NMS_MAX_CANDIDATES`` (the default 1000 is).
        batch_size: the captured batch; smaller batches are padded (the padding's outputs are dropped).
        image_size: S, the square input side.
        amp_dtype: ``torch.bfloat16`` / ``torch.float16`` to run the model under autocast; None for float32.
        channels_last: feed the model channels-last images; None follows how the model stores its convolution
            weights (``model.to(memory_format=torch.channels_last)``, as ``main.py`` does under ``--amp`` on CUDA).
        nms_steps: fixed NMS steps inside the graph (:data:`GRAPH_NMS_STEPS`).

    Call it with ``images [b, 3, S, S]`` (b <= batch_size, any device; pinned host memory copies asynchronously)
    and ``image_sizes [b, 2]`` (height, width) of the original images; it returns b dicts of NumPy arrays
    ``boxes [n, 4]`` x1y1x2y2 pixels, ``scores [n]``, ``labels [n]``, as ``utils.postprocess.detections_to_numpy``.
    The graph owns its input, output and work memory for the object's lifetime. It reads the model's weights where
    they are, so it stays valid while they are updated in place (e.g. by an optimizer between evaluations).
    """

    def __init__(
        self,
        model: nn.Module,
        postprocessor: PostProcessor,
        batch_size: int,
        image_size: int,
        *,
        amp_dtype: torch.dtype | None = None,
        channels_last: bool | None = None,
        nms_steps: int = GRAPH_NMS_STEPS,
    ) -> None:
        device = next(itertools.chain(model.parameters(), model.buffers())).device
        if device.type != "cuda":
            raise ValueError(f"CUDAGraphDetector: the model is on {device}; CUDA graphs need a CUDA device")
        if batch_size < 1:
            raise ValueError(f"CUDAGraphDetector: batch_size={batch_size} must be >= 1")
        self.model = model.eval()
        self.postprocessor = postprocessor
        self.batch_size = batch_size
        self.image_size = image_size
        self.device = device
        self.amp_dtype = amp_dtype
        if channels_last is None:
            channels_last = stores_channels_last(model)
        self.images = torch.zeros(batch_size, 3, image_size, image_size, device=device).contiguous(
            memory_format=memory_format(channels_last)
        )
        self.image_sizes = torch.full((batch_size, 2), image_size, dtype=torch.int64, device=device)
        self.nms_steps = nms_steps
        self.graph = torch.cuda.CUDAGraph()
        self._warm_up()
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):  # a DataLoader's pinning thread may run
            self.loc, self.conf, self.outputs = self._forward_and_postprocess()
        self.host_outputs = PaddedDetections(*(torch.empty_like(t, device="cpu").pin_memory() for t in self.outputs))

    @torch.inference_mode()
    def __call__(self, images: Tensor, image_sizes: Tensor) -> list[dict[str, np.ndarray]]:
        count = images.shape[0]
        if not 1 <= count <= self.batch_size or images.shape[1:] != self.images.shape[1:]:
            raise ValueError(
                f"CUDAGraphDetector: images {tuple(images.shape)}; "
                f"expected [b, 3, {self.image_size}, {self.image_size}] "
                f"with 1 <= b <= {self.batch_size} (the captured batch)"
            )
        self.images[:count].copy_(images, non_blocking=True)
        sizes = image_size_pairs(torch.as_tensor(image_sizes), count, "CUDAGraphDetector")
        self.image_sizes[:count].copy_(sizes, non_blocking=True)
        self.graph.replay()
        outputs = self._to_host(self.outputs)
        results = [
            {key: getattr(outputs, key)[i, :n].numpy().copy() for key in ("boxes", "scores", "labels")}
            for i, n in enumerate(outputs.counts[:count].tolist())
        ]
        # images the fixed NMS steps left unfinished, or whose top-k may have changed their detections: the exact path
        redo = torch.nonzero(~(outputs.settled[:count] & outputs.complete[:count])).squeeze(1)
        if len(redo):
            on_device = redo.to(self.device)
            exact = self.postprocessor(self.loc[on_device], self.conf[on_device], self.image_sizes[on_device])
            for image, detections in zip(redo.tolist(), detections_to_numpy(exact)):
                results[image] = detections
        return results

    def _forward_and_postprocess(self) -> tuple[Tensor, Tensor, PaddedDetections]:
        with torch.inference_mode(), torch.autocast(
            "cuda", dtype=self.amp_dtype, enabled=self.amp_dtype is not None, cache_enabled=False
        ):
            loc, conf = self.model(self.images)
        return loc, conf, self.postprocessor.padded(loc, conf, self.image_sizes, nms_steps=self.nms_steps)

    def _warm_up(self) -> None:
        """Eager calls on a side stream, as a capture requires: cudnn picks its kernels, the allocator its blocks."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                self._forward_and_postprocess()
        torch.cuda.current_stream(self.device).wait_stream(side)

    def _to_host(self, outputs: PaddedDetections) -> PaddedDetections:
        """Device outputs into the pinned host buffers, then one wait for the copies."""
        for host, source in zip(self.host_outputs, outputs):
            host.copy_(source, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return self.host_outputs
