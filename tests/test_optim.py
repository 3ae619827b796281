import math

import pytest
import torch
from torch import nn

from utils.optim import build_optimizer, build_param_groups, set_lr, warmup_cosine_lr


def _tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1, bias=False))


def test_param_groups_exclude_biases_and_norm_weights_from_decay():
    net = _tiny_net()
    decay, no_decay = build_param_groups(net, weight_decay=5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(net[0].weight), id(net[2].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(net[0].bias), id(net[1].weight), id(net[1].bias)}


def test_a_parameter_named_bias_gets_no_decay_whatever_its_shape():
    """Facts §6, the authors' rule: 1-D parameters *and* every ``.bias`` are undecayed (a 2-D bias too)."""
    net = nn.Sequential(nn.Linear(3, 2))
    net[0].bias = nn.Parameter(torch.zeros(2, 1))  # named "0.bias"
    decay, no_decay = build_param_groups(net, weight_decay=5e-4)
    assert [id(p) for p in decay["params"]] == [id(net[0].weight)]
    assert [id(p) for p in no_decay["params"]] == [id(net[0].bias)]


@pytest.mark.parametrize("dataset, epochs", [("voc", 250), ("coco", 140)])
def test_the_paper_datasets_train_on_the_authors_schedule(dataset, epochs):
    """Facts §6: batch 32, lr 1e-2, 500 warm-up iterations, 250 epochs (VOC) / 140 (COCO), zoom-out probability 0.6."""
    import main as cli
    from utils.run_flags import fill_dataset_defaults

    args = cli.get_args_parser().parse_args(["--dataset", dataset])
    fill_dataset_defaults(args)
    assert (args.batch_size, args.lr, args.warm_iter, args.epochs, args.expand_prob) == (32, 1e-2, 500, epochs, 0.6)


def test_frozen_parameters_are_left_out():
    net = _tiny_net()
    net[0].weight.requires_grad_(False)
    decay, _ = build_param_groups(net, weight_decay=5e-4)
    assert [id(p) for p in decay["params"]] == [id(net[2].weight)]


def test_optimizer_is_paper_sgd():
    opt = build_optimizer(_tiny_net(), lr=0.01)
    assert isinstance(opt, torch.optim.SGD)
    assert [g["momentum"] for g in opt.param_groups] == [0.9, 0.9]
    assert [(g["nesterov"], g["dampening"]) for g in opt.param_groups] == [(False, 0), (False, 0)]  # plain momentum
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0]
    set_lr(opt, 0.123)
    assert [g["lr"] for g in opt.param_groups] == [0.123, 0.123]


@pytest.mark.parametrize(
    "iteration, expected",
    [
        (0, 1e-6),
        (250, 1e-6 + (0.01 - 1e-6) * 0.5),
        (500, 0.01),
        (5250, 1e-6 + (0.01 - 1e-6) * 0.5),  # cosine midpoint of (500, 10000)
        (10000, 1e-6),
    ],
)
def test_warmup_cosine_values(iteration, expected):
    assert warmup_cosine_lr(iteration, 0.01, 500, 10000) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_without_warm_up_the_run_starts_at_the_base_rate():
    assert warmup_cosine_lr(0, 0.01, 0, 100) == 0.01
    assert warmup_cosine_lr(50, 0.01, 0, 100) == pytest.approx(1e-6 + (0.01 - 1e-6) * 0.5)


def test_cosine_quarter_point():
    lr = warmup_cosine_lr(500 + 2375, 0.01, 500, 10000)
    assert lr == pytest.approx(1e-6 + (0.01 - 1e-6) * 0.5 * (1 + math.cos(math.pi / 4)))


def test_a_base_rate_below_the_floor_is_never_exceeded():
    """--lr 1e-8, below the schedule's 1e-6 floor: the warm-up fell from 1e-6 to 1e-8 and the cosine rose back, so
    most of the run trained at up to 100x --lr. The floor is --lr itself then: the rate stays at --lr."""
    rates = [warmup_cosine_lr(iteration, 1e-8, 10, 100) for iteration in range(100)]
    assert rates == [1e-8] * 100
    assert warmup_cosine_lr(0, 1e-6, 10, 100) == warmup_cosine_lr(99, 1e-6, 10, 100) == 1e-6


def test_warmup_longer_than_run_is_rejected_with_the_flag_name():
    with pytest.raises(ValueError, match="--warm_iter"):
        warmup_cosine_lr(0, 0.01, 500, 400)


def test_warmup_as_long_as_the_run_is_rejected():
    with pytest.raises(ValueError, match="--warm_iter"):
        warmup_cosine_lr(0, 0.01, 100, 100)
    assert warmup_cosine_lr(99, 0.01, 99, 100) == 0.01  # the last iteration of a run warmed up until then
