"""Fixed-size, sync-free post-processing (PostProcessor.padded) and the CUDA-graph detector built on it.

The CPU tests check what a capture needs: the padded path equals the exact one, flags the images a fixed number
of NMS steps left unfinished, and calls no operation that waits for the device. The CUDA tests capture a real
detector and compare with the eager path.
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from models import build_detector
from models.memory_format import stores_channels_last
from tests.test_postprocess import IMAGE_SIZES, assert_same_detections, distinct_logits
from utils.box import PriorBox
from utils.cuda_graph import CUDAGraphDetector
from utils.postprocess import PostProcessor

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

# aten operations whose result decides a shape or a Python value: on CUDA each waits for the device
HOST_SYNC_OPS = {"_local_scalar_dense", "nonzero", "equal", "is_nonzero", "masked_select", "_unique2",
                 "unique_consecutive", "unique_dim", "masked_scatter", "repeat_interleave"}


class HostSyncRecorder(TorchDispatchMode):
    """Records the aten calls that would wait for a CUDA device, including indexing with a boolean mask."""

    def __init__(self):
        super().__init__()
        self.syncs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        boolean_index = name in ("index", "index_put", "index_put_") and any(
            index is not None and index.dtype == torch.bool for index in args[1])
        if name in HOST_SYNC_OPS or boolean_index:
            self.syncs.append(name)
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def priors():
    return PriorBox(size=64).forward()  # [510, 4]


def chain_outputs(priors, length=40):
    """Head outputs whose top candidates form one suppression chain: box i overlaps box i+1 with IoU 0.54 and
    box i+2 with IoU 0.25, so greedy NMS keeps every other box and the fixed point needs the whole chain."""
    loc = torch.zeros(1, len(priors), 4)
    conf = torch.full((1, len(priors), 1), -10.0)
    x = torch.arange(length, dtype=torch.float32) * 3.0
    chain = torch.stack([x, torch.zeros(length), x + 10.0, torch.full((length,), 10.0)], dim=1) / 200  # normalised
    centres, sizes = (chain[:, :2] + chain[:, 2:]) / 2, chain[:, 2:] - chain[:, :2]
    anchors = priors[:length]
    loc[0, :length, :2] = (centres - anchors[:, :2]) / (0.1 * anchors[:, 2:])
    loc[0, :length, 2:] = torch.log(sizes / anchors[:, 2:]) / 0.2
    conf[0, :length, 0] = torch.linspace(5.0, 1.0, length)  # descending scores along the chain
    return loc, conf


def test_padded_equals_the_exact_detections_with_fixed_size_rows(priors):
    generator = torch.Generator().manual_seed(11)
    loc = torch.randn(3, len(priors), 4, generator=generator) * 0.7
    conf = distinct_logits(generator, 3, len(priors), 4)
    post = PostProcessor(priors, max_per_image=200)
    padded = post.padded(loc, conf, IMAGE_SIZES)
    assert padded.boxes.shape == (3, 200, 4) and padded.scores.shape == (3, 200) and padded.labels.shape == (3, 200)
    assert padded.settled.tolist() == [True] * 3
    assert_same_detections(padded.to_list(),
                           PostProcessor(priors, max_per_image=200, dense_nms=False)(loc, conf, IMAGE_SIZES), atol=0)
    counts = padded.counts.tolist()
    assert 0 < min(counts) and max(counts) <= 200
    for b, n in enumerate(counts):  # padding rows: zero boxes and scores, label -1
        assert torch.all(padded.boxes[b, n:] == 0) and torch.all(padded.scores[b, n:] == 0)
        assert torch.all(padded.labels[b, n:] == -1)


def test_padded_with_fewer_candidates_than_rows(priors):
    post = PostProcessor(priors, pre_nms_topk=50, max_per_image=300)
    loc, conf = chain_outputs(priors, length=40)
    padded = post.padded(loc, conf, IMAGE_SIZES[:1])
    assert padded.boxes.shape == (1, 50, 4)  # min(max_per_image, pre_nms_topk) rows
    assert padded.counts.tolist() == [20]  # every other box of the chain
    assert_same_detections(padded.to_list(),
                           PostProcessor(priors, pre_nms_topk=50, dense_nms=False)(loc, conf, IMAGE_SIZES[:1]), atol=0)


def test_fixed_nms_steps_flag_the_images_they_leave_unfinished(priors):
    chain_loc, chain_conf = chain_outputs(priors, length=40)
    generator = torch.Generator().manual_seed(12)
    loc = torch.cat([chain_loc, torch.randn(1, len(priors), 4, generator=generator) * 0.1])
    few = torch.full((1, len(priors), 1), -10.0)
    few[0, [0, 200, 400], 0] = torch.tensor([2.0, 1.0, 0.5])  # 3 candidates: settled within 4 steps
    conf = torch.cat([chain_conf, few])
    post = PostProcessor(priors)
    exact = post.padded(loc, conf, IMAGE_SIZES[:2])
    short = post.padded(loc, conf, IMAGE_SIZES[:2], nms_steps=4)
    assert short.settled.tolist() == [False, True]
    assert short.counts[0] != exact.counts[0]  # the unsettled chain image is not greedy NMS yet
    assert torch.equal(short.scores[1], exact.scores[1]) and torch.equal(short.boxes[1], exact.boxes[1])
    enough = post.padded(loc, conf, IMAGE_SIZES[:2], nms_steps=41)  # settled after at most K + 1 steps
    assert enough.settled.tolist() == [True, True]
    for got, want in zip(enough, exact):
        assert torch.equal(got, want)


def test_padded_with_fixed_steps_calls_nothing_that_waits_for_the_device(priors):
    generator = torch.Generator().manual_seed(13)
    loc = torch.randn(2, len(priors), 4, generator=generator) * 0.7
    conf = distinct_logits(generator, 2, len(priors), 3)
    post = PostProcessor(priors)
    sizes = IMAGE_SIZES[:2]
    with HostSyncRecorder() as fixed_steps:
        post.padded(loc, conf, sizes, nms_steps=16)
    assert fixed_steps.syncs == []
    with HostSyncRecorder() as settling:  # the recorder does see the exact path's convergence checks
        post.padded(loc, conf, sizes)
    assert "_local_scalar_dense" in settling.syncs


def test_graph_detector_needs_a_cuda_model(priors):
    model = build_detector("fssd", "resnet18", 128, 3)
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        CUDAGraphDetector(model, PostProcessor(priors), batch_size=1, image_size=128)


def test_stores_channels_last():
    model = build_detector("fssd", "resnet18", 128, 3)
    assert not stores_channels_last(model)
    assert stores_channels_last(model.to(memory_format=torch.channels_last))


def on_graph_outputs(graphed, post, sizes):
    """The eager post-processing of the network outputs the graph left in its static buffers (first len(sizes) rows)."""
    count = len(sizes)
    detections = post(graphed.loc[:count], graphed.conf[:count], sizes.cuda())
    return [{k: v.cpu() for k, v in d.items()} for d in detections]


def assert_network_outputs_match(graphed, model, images, amp_dtype=None, memory_format=torch.contiguous_format):
    """The graph's network outputs equal the eager model's, within the rounding of the precision in use.

    cuDNN may pick other kernels for the graph's padded batch than for ``images`` alone, and float32 convolutions
    run in TF32 by default (10-bit mantissa), so the tolerance is relative to the outputs' magnitude."""
    with torch.inference_mode(), torch.autocast("cuda", dtype=amp_dtype, enabled=amp_dtype is not None):
        loc, conf = model(images.cuda().contiguous(memory_format=memory_format))
    relative = 2e-2 if amp_dtype else 2e-3
    count = len(images)
    for graphed_output, eager_output in ((graphed.loc[:count], loc), (graphed.conf[:count], conf)):
        scale = eager_output.float().abs().max().item()
        torch.testing.assert_close(graphed_output.float(), eager_output.float(), rtol=relative, atol=relative * scale)


def as_tensors(results):
    return [{k: torch.from_numpy(v) for k, v in d.items()} for d in results]


@pytest.fixture(scope="module")
def cuda_detector():
    torch.manual_seed(0)
    model = build_detector("fssd", "resnet18", 128, 5).cuda().eval()
    priors = PriorBox(size=128).forward().cuda()
    images = torch.randn(3, 3, 128, 128) * 60
    return model, priors, images


# Untrained detectors score every (anchor, class) pair about 0.01, so the order of near-equal scores follows the last
# bits of the logits: detections are compared exactly only on the same network outputs, the outputs with a tolerance.

@needs_cuda
@pytest.mark.parametrize("amp_dtype, channels_last", [(None, False), (torch.bfloat16, True)])
def test_graph_detector_equals_the_eager_path(cuda_detector, amp_dtype, channels_last):
    model, priors, images = cuda_detector
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    post = PostProcessor(priors)
    graphed = CUDAGraphDetector(model, post, batch_size=3, image_size=128, amp_dtype=amp_dtype)
    assert graphed.images.is_contiguous(memory_format=memory_format)
    full = as_tensors(graphed(images.pin_memory(), IMAGE_SIZES))
    assert_same_detections(full, on_graph_outputs(graphed, post, IMAGE_SIZES), atol=0)
    assert [len(d["scores"]) for d in full] == [300] * 3
    assert_network_outputs_match(graphed, model, images, amp_dtype, memory_format)
    partial = as_tensors(graphed(images[1:2], IMAGE_SIZES[1:2]))  # one image in the 3-image graph
    assert len(partial) == 1
    assert_same_detections(partial, on_graph_outputs(graphed, post, IMAGE_SIZES[1:2]), atol=0)
    assert_network_outputs_match(graphed, model, images[1:2], amp_dtype, memory_format)
    model.to(memory_format=torch.contiguous_format)


@needs_cuda
def test_graph_detector_falls_back_to_exact_nms_when_its_steps_do_not_settle(cuda_detector):
    model, priors, images = cuda_detector
    post = PostProcessor(priors)
    graphed = CUDAGraphDetector(model, post, batch_size=3, image_size=128, nms_steps=1)
    results = as_tensors(graphed(images, IMAGE_SIZES))
    assert not bool(graphed.outputs.settled.all())  # one step cannot settle 1,000 overlapping candidates
    assert_same_detections(results, on_graph_outputs(graphed, post, IMAGE_SIZES), atol=0)


@needs_cuda
def test_graph_detector_reads_weights_updated_in_place(cuda_detector):
    model, priors, images = cuda_detector
    post = PostProcessor(priors)
    graphed = CUDAGraphDetector(model, post, batch_size=1, image_size=128)
    graphed(images[:1], IMAGE_SIZES[:1])
    conf_before = graphed.conf.clone()
    head_bias = model.head.conf[-1].bias  # the class logits of the last head level
    with torch.no_grad():
        head_bias.add_(1.0)
    try:
        after = as_tensors(graphed(images[:1], IMAGE_SIZES[:1]))
        assert_network_outputs_match(graphed, model, images[:1])
        assert_same_detections(after, on_graph_outputs(graphed, post, IMAGE_SIZES[:1]), atol=0)
        moved = (graphed.conf - conf_before).float()
        last_level = moved.abs().amax(dim=(0, 2)) > 0.5  # [A]: the anchors whose logits the update moved
        assert 0 < int(last_level.sum()) < moved.shape[1]
        torch.testing.assert_close(moved[:, last_level], torch.ones_like(moved[:, last_level]), rtol=0, atol=1e-3)
    finally:
        with torch.no_grad():
            head_bias.sub_(1.0)


@needs_cuda
def test_graph_detector_refuses_image_sizes_that_are_not_one_pair_per_image(cuda_detector):
    """Heights and widths as two rows ([2, 3]) were reshaped into wrong (height, width) pairs without a word."""
    model, priors, images = cuda_detector
    graphed = CUDAGraphDetector(model, PostProcessor(priors), batch_size=3, image_size=128)
    with pytest.raises(ValueError, match=r"CUDAGraphDetector: image_sizes has shape \(2, 3\); expected \[B, 2\]"):
        graphed(images, IMAGE_SIZES.T)
