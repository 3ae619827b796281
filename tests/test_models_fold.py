"""BatchNorm folded into convolutions for inference (models.fold): same outputs, no BatchNorm left, input untouched."""
import copy
import itertools

import pytest
import torch
from torch import nn

from models import BACKBONES, NECKS, build_detector
from models.fold import fold_batchnorm
from models.memory_format import prefers_channels_last, stores_channels_last

SIZE = 128


def detector_with_trained_like_batchnorm(version: str, backbone: str) -> nn.Module:
    """A detector whose BatchNorm statistics and affine parameters are far from the identity, as after training."""
    torch.manual_seed(0)
    model = build_detector(version, backbone, SIZE, 3)
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(torch.rand(channels, generator=generator) * 2 - 1)
            module.running_var.copy_(torch.rand(channels, generator=generator) * 1.5 + 0.5)
            module.weight.data.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(channels, generator=generator) - 0.5)
    return model


def batchnorm_count(model: nn.Module) -> int:
    """BatchNorm layers of any kind (BatchNorm2d, SyncBatchNorm)."""
    return sum(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())


@pytest.mark.parametrize("version, backbone", list(itertools.product(NECKS, BACKBONES)))
def test_folded_detector_gives_the_same_outputs_without_batchnorm(version, backbone, one_torch_thread):
    model = detector_with_trained_like_batchnorm(version, backbone).train()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert batchnorm_count(model) > 0 and batchnorm_count(folded) == 0
    assert model.training and not folded.training  # the caller's mode is kept; the copy is for inference
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2)) * 50
    with torch.no_grad():
        expected = model.eval()(images)
        got = folded(images)
    for got_output, expected_output in zip(got, expected):
        assert got_output.shape == expected_output.shape
        scale = expected_output.abs().max()
        torch.testing.assert_close(got_output, expected_output, rtol=1e-4, atol=1e-5 * scale)


def test_folding_keeps_channels_last_weights(one_torch_thread):
    model = detector_with_trained_like_batchnorm("fssd", "resnet18").to(memory_format=torch.channels_last)
    folded = fold_batchnorm(model)
    assert stores_channels_last(folded)
    assert not stores_channels_last(fold_batchnorm(detector_with_trained_like_batchnorm("fssd", "resnet18")))


def test_folding_into_an_asked_memory_format_leaves_the_model_as_it_is(one_torch_thread):
    model = detector_with_trained_like_batchnorm("fssd", "resnet18").eval()
    folded = fold_batchnorm(model, channels_last=True)
    assert stores_channels_last(folded) and not stores_channels_last(model)
    channels_last_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    assert not stores_channels_last(fold_batchnorm(channels_last_model, channels_last=False))
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4)) * 50
    with torch.no_grad():
        for got, expected in zip(folded(images.contiguous(memory_format=torch.channels_last)), model(images)):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * expected.abs().max())


def test_a_model_without_batchnorm_is_returned_as_is_unless_another_format_is_asked():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    assert fold_batchnorm(model) is model and fold_batchnorm(model, channels_last=False) is model
    converted = fold_batchnorm(model, channels_last=True)
    assert converted is not model and stores_channels_last(converted) and not stores_channels_last(model)


def test_channels_last_is_preferred_on_the_cpu_and_under_autocast_on_cuda():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert prefers_channels_last(cpu, None) and prefers_channels_last(cpu, torch.bfloat16)
    assert prefers_channels_last(cuda, torch.bfloat16) and prefers_channels_last(cuda, torch.float16)
    assert not prefers_channels_last(cuda, None)


def test_sync_batchnorm_folds_too(one_torch_thread):
    """--sync_bn trains with SyncBatchNorm; its evaluation folds the same way (SyncBatchNorm evaluates on a CPU)."""
    model = nn.SyncBatchNorm.convert_sync_batchnorm(detector_with_trained_like_batchnorm("fssd", "resnet18")).eval()
    folded = fold_batchnorm(model)
    assert batchnorm_count(folded) == 0
    assert sum(isinstance(module, nn.SyncBatchNorm) for module in model.modules()) == batchnorm_count(model) > 0
    images = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3)) * 50
    with torch.no_grad():
        for got, expected in zip(folded(images), model(images)):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * expected.abs().max())


def test_a_wrapped_model_folds_as_the_module_it_wraps(tmp_path, one_torch_thread):
    """fold_batchnorm(torch.compile(model)) failed with 'Module [OptimizedModule] is missing the required "forward"
    function' and fold_batchnorm(nn.DataParallel(model)) with torch.fx's 'Proxy object cannot be iterated';
    run_inference unwrapped them first, a user calling fold_batchnorm did not."""
    import torch.distributed as dist

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    images = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model.eval()(images)
    model.train()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        wrappers = [torch.compile(model, backend="eager"), nn.DataParallel(model),
                    nn.parallel.DistributedDataParallel(model), nn.DataParallel(torch.compile(model, backend="eager"))]
        for wrapped in wrappers:
            folded = fold_batchnorm(wrapped)
            assert batchnorm_count(folded) == 0 and not folded.training and model.training
            with torch.no_grad():
                torch.testing.assert_close(folded(images), expected, rtol=1e-5, atol=1e-6)
    finally:
        dist.destroy_process_group()
