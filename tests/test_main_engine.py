import io
import json
import math
import os
import re
import signal
import sys

import contextlib
import traceback

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from data.errors import DataError
from models import build_detector
from tests.terminal_view import TerminalView
from utils import engine
from utils.assign import assignment
from utils.box import PriorBox
from utils.distributed import DistributedContext
from utils.engine import (
    NonFiniteGuard,
    NonFiniteLossError,
    StopSignal,
    TrainSettings,
    assignment_line,
    non_finite_weights,
    train,
)
from utils.logging import RunLog
from utils.loss import MultiBoxLoss
from utils.optim import build_optimizer


def test_non_finite_guard_names_the_first_bad_iteration():
    guard = NonFiniteGuard(torch.device("cpu"))
    ctx = DistributedContext()
    guard.update(torch.tensor(1.5), 0)
    guard.check(ctx)
    guard.update(torch.tensor(float("inf")), 1)
    guard.update(torch.tensor(float("nan")), 2)
    guard.update(torch.tensor(0.5), 3)
    with pytest.raises(NonFiniteLossError, match="at iteration 2") as info:  # the second, as the logs count
        guard.check(ctx)
    assert info.value.iteration == 1


def test_non_finite_guard_names_the_first_iteration_that_left_non_finite_buffers():
    """As CUDA runs check: updated every iteration without a sync, checked later. The earliest bad iteration wins;
    a NaN loss in the same iteration as the overflowed buffers is the loss's error."""
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    ctx, finite = DistributedContext(), torch.tensor(1.0)
    guard = NonFiniteGuard(torch.device("cpu"), model)
    guard.update(finite, 0)
    model[1].running_var[1] = float("inf")
    guard.update(finite, 1)
    guard.update(torch.tensor(float("nan")), 2)
    with pytest.raises(NonFiniteLossError) as info:
        guard.check(ctx)
    assert info.value.iteration == 1 and info.value.names == ["1.running_var"]
    assert str(info.value).startswith("the weights hold NaN/inf after iteration 2 although every loss was finite")
    same_iteration = NonFiniteGuard(torch.device("cpu"), model)
    same_iteration.update(torch.tensor(float("inf")), 0)
    with pytest.raises(NonFiniteLossError, match="^the loss became NaN/inf at iteration 1$"):
        same_iteration.check(ctx)


class _BatchNormAndGrid(nn.Module):
    """BatchNorm's 1-D buffers and a 2-D one stored transposed (not contiguous), as a model may register."""

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm2d(3)
        self.register_buffer("grid", torch.zeros(4, 2).t())


@pytest.mark.parametrize("bad", [float("inf"), -float("inf"), float("nan")])
@pytest.mark.parametrize("where", ["norm.running_var", "grid"])
def test_non_finite_guard_flags_exactly_the_non_finite_buffers_not_the_largest_finite_ones(bad, where):
    """The update's check sums x * 0 (NaN exactly for an infinite or NaN x): finite extremes, whose plain sum would
    overflow, pass; one bad value in a 1-D or a non-contiguous 2-D buffer is found, in the iteration it came in."""
    model, ctx, finite = _BatchNormAndGrid(), DistributedContext(), torch.tensor(1.0)
    largest, tiny = torch.finfo(torch.float32).max, torch.finfo(torch.float32).smallest_normal / 4  # a denormal
    model.norm.running_var.copy_(torch.tensor([largest, largest, -0.0]))
    model.grid.copy_(torch.tensor([[-largest, largest, tiny, -tiny], [largest, 0.0, -largest, 1.0]]))
    guard = NonFiniteGuard(torch.device("cpu"), model)
    guard.update(finite, 0)
    guard.check(ctx)
    buffer = model.get_buffer(where)
    buffer[(0,) * (buffer.dim() - 1) + (1,)] = bad
    guard.update(finite, 1)
    guard.update(finite, 2)
    with pytest.raises(NonFiniteLossError) as info:
        guard.check(ctx)
    assert info.value.iteration == 1 and info.value.names == [where]
    with pytest.raises(NonFiniteLossError, match="^the loss became NaN/inf at iteration 1$"):
        loss_guard = NonFiniteGuard(torch.device("cpu"))
        loss_guard.update(torch.tensor(bad), 0)
        loss_guard.check(ctx)


def test_stop_signal_turns_sigint_and_sigterm_into_a_flag_and_restores_handlers():
    previous = signal.getsignal(signal.SIGINT)
    with StopSignal() as stop:
        assert stop.received is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # a second signal stops at once
    assert signal.getsignal(signal.SIGINT) is previous


def test_a_first_stop_signal_says_at_once_what_the_run_will_do(capfd):
    """The first signal is acknowledged on stderr when it arrives (a long evaluation or save may run on for minutes
    before the run stops, and a user who sees nothing presses Ctrl-C again, which stops without saving)."""
    with StopSignal("the run stops once its checkpoint is saved") as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.received == "SIGINT"
        assert capfd.readouterr().err == (
            "\nSIGINT received: the run stops once its checkpoint is saved; a second Ctrl-C or SIGTERM stops it at "
            "once, without saving\n")
    with StopSignal() as quiet:  # the other processes of a torchrun job: rank 0 alone says it
        os.kill(os.getpid(), signal.SIGTERM)
        assert quiet.received == "SIGTERM" and capfd.readouterr().err == ""


def test_a_stop_signal_during_an_evaluation_is_acknowledged_before_it_ends(tmp_path, capfd):
    """Ctrl-C during the evaluation after iteration 3: the line comes while it runs; the run stops after iteration 4."""
    settings = TrainSettings(max_iter=9, epoch_size=3, base_lr=0.1, warm_iter=2, log_interval=100,
                             checkpoint_interval=100, eval_interval=3)
    model = _OneWeight()
    optimizer = torch.optim.SGD([model.w], lr=0.0)
    loss_fn = _ScriptedLoss()
    loss_fn.optimizer = optimizer
    batches = [(torch.ones(2, 3, 4, 4), [torch.zeros(0, 5)] * 2, [0, 1])] * 9
    said_during_evaluation, saves = [], []

    def evaluate(done):
        os.kill(os.getpid(), signal.SIGINT)
        said_during_evaluation.append(capfd.readouterr().err)

    with pytest.raises(engine.TrainingInterrupted, match="SIGINT received: stopped after iteration 4"):
        train(model, loss_fn, torch.zeros(1, 4), optimizer, torch.amp.GradScaler("cpu", enabled=False), batches, 0,
              settings, torch.device("cpu"), DistributedContext(), RunLog(tmp_path), saves.append, evaluate)
    assert saves == [4]
    assert said_during_evaluation[0].endswith(
        "\nSIGINT received: the run stops after this iteration or evaluation, once a checkpoint is saved; a second "
        "Ctrl-C or SIGTERM stops it at once, without saving\n")


@pytest.mark.parametrize("world_size, stopped_after", [(1, 2), (2, 4)])
def test_under_torchrun_a_signal_stops_the_run_at_the_end_of_its_log_interval(tmp_path, world_size, stopped_after):
    """Ctrl-C while the checkpoint of iteration 1 is saved: a lone process stops after the next iteration, 2; the
    processes of a torchrun job agree on stopping only at log intervals (a collective there, none each iteration), so
    they all stop after iteration 4. The job is this process in a gloo group of one, told it is one of two: the
    collectives run, over itself."""
    import torch.distributed as dist

    model = _OneWeight()
    optimizer = torch.optim.SGD([model.w], lr=0.0)
    loss_fn = _ScriptedLoss()
    loss_fn.optimizer = optimizer
    batches = [(torch.ones(2, 3, 4, 4), [torch.zeros(0, 5)] * 2, [0, 1])] * 9
    saves = []

    def save(done):
        saves.append(done)
        if done == 1:
            os.kill(os.getpid(), signal.SIGINT)

    settings = TrainSettings(max_iter=9, epoch_size=3, base_lr=0.1, warm_iter=2, log_interval=4,
                             checkpoint_interval=1)
    if world_size > 1:
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        with pytest.raises(engine.TrainingInterrupted, match=f"SIGINT received: stopped after iteration "
                                                             f"{stopped_after}$"):
            train(model, loss_fn, torch.zeros(1, 4), optimizer, torch.amp.GradScaler("cpu", enabled=False), batches,
                  0, settings, torch.device("cpu"), DistributedContext(world_size=world_size), RunLog(tmp_path), save)
    finally:
        if world_size > 1:
            dist.destroy_process_group()
    assert loss_fn.calls == stopped_after and saves == list(range(1, stopped_after + 1))


class _OneWeight(nn.Module):
    """The smallest "detector": one weight, ``(loc [1, 1, 4], conf [1, 1, 2])`` that depend on it."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, images):
        return torch.zeros(1, 1, 4) + self.w * images.mean(), torch.zeros(1, 1, 2) + self.w


class _ScriptedLoss(nn.Module):
    """Call k (0-based) returns loss_l = k + 1 and loss_c = 10 (k + 1), or NaN from call ``nan_from`` on; records the
    learning rate the optimizer holds and the ``mutual_guide`` switch at each call. At call ``overflow_at`` (or each
    call of a tuple of them) the loss stays finite but its gradient overflows float32 (4 x 3e38 on the weight), so an
    unscaled step makes it -inf."""

    def __init__(self, nan_from: int | None = None, overflow_at: int | tuple[int, ...] = ()):
        super().__init__()
        overflow_at = (overflow_at,) if isinstance(overflow_at, int) else overflow_at
        self.calls, self.nan_from, self.overflow_at, self.optimizer = 0, nan_from, overflow_at, None
        self.lrs, self.guides = [], []
        self.mutual_guide = False

    def forward(self, outputs, priors, targets):
        loc, conf = outputs
        self.lrs.append([group["lr"] for group in self.optimizer.param_groups])
        self.guides.append(self.mutual_guide)
        k, self.calls = self.calls, self.calls + 1
        value = float("nan") if self.nan_from is not None and k >= self.nan_from else float(k + 1)
        slope = 3e38 if k in self.overflow_at else 0.0  # the weight is 0 there, so the loss is unchanged
        return loc.sum() * slope + value, conf.sum() * 0 + 10 * value


def _run_loop(tmp_path, settings: TrainSettings, loss_fn: _ScriptedLoss, start_iter: int = 0,
              scaler: torch.amp.GradScaler | None = None, model: _OneWeight | None = None):
    model = model or _OneWeight()
    scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)
    optimizer = torch.optim.SGD([{"params": [model.w]}, {"params": [], "weight_decay": 0.0}], lr=0.0, momentum=0.9)
    loss_fn.optimizer = optimizer
    batches = [(torch.ones(2, 3, 4, 4), [torch.zeros(0, 5)] * 2, [0, 1])] * (settings.max_iter - start_iter)
    saves, evaluations = [], []
    error = None
    try:
        train(model, loss_fn, torch.zeros(1, 4), optimizer, scaler, batches,
              start_iter, settings, torch.device("cpu"), DistributedContext(), RunLog(tmp_path), saves.append,
              evaluations.append)
    except NonFiniteLossError as raised:
        error = raised
    jsonl = tmp_path / "metrics.jsonl"
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.is_file() else []
    return rows, saves, evaluations, error


def _paper_lr(iteration: int, base_lr: float, warm_iter: int, max_iter: int) -> float:
    """facts §6, written out here: linear warm-up from 1e-6, then a cosine down to 1e-6."""
    if iteration < warm_iter:
        return 1e-6 + (base_lr - 1e-6) * iteration / warm_iter
    return 1e-6 + (base_lr - 1e-6) * 0.5 * (1 + math.cos(math.pi * (iteration - warm_iter) / (max_iter - warm_iter)))


def test_train_loop_sets_the_lr_logs_interval_means_and_saves_and_evaluates_at_their_intervals(tmp_path):
    """9 iterations of 3 per epoch: logs after 4, 8 and the last (9); saves and evaluations after 3 and 6, not 9
    (main.py saves and evaluates the finished run itself)."""
    settings = TrainSettings(max_iter=9, epoch_size=3, base_lr=0.1, warm_iter=2, log_interval=4,
                             checkpoint_interval=3, eval_interval=3)
    loss_fn = _ScriptedLoss()
    rows, saves, evaluations, error = _run_loop(tmp_path, settings, loss_fn)
    assert error is None
    expected_lrs = [_paper_lr(it, 0.1, 2, 9) for it in range(9)]
    assert expected_lrs[:3] == pytest.approx([1e-6, 0.0500005, 0.1], rel=1e-12)
    assert [lrs for lrs in loss_fn.lrs] == [pytest.approx([lr, lr], rel=1e-12) for lr in expected_lrs]
    assert saves == [3, 6] and evaluations == [3, 6]
    assert [row["kind"] for row in rows] == ["train"] * 3
    assert [row["iteration"] for row in rows] == [4, 8, 9]
    assert [row["epoch"] for row in rows] == [1, 2, 2]  # the epoch of the interval's last iteration (0-based)
    # losses averaged over the interval: iterations 0-3 give 1..4, 4-7 give 5..8, 8 gives 9
    assert [row["loss_l"] for row in rows] == pytest.approx([2.5, 6.5, 9.0])
    assert [row["loss_c"] for row in rows] == pytest.approx([25.0, 65.0, 90.0])
    assert [row["lr"] for row in rows] == pytest.approx([expected_lrs[3], expected_lrs[7], expected_lrs[8]], rel=1e-12)
    assert all(row["images_per_s"] > 0 for row in rows)
    csv_rows = (tmp_path / "train.csv").read_text().splitlines()
    assert csv_rows[0].split(",")[:4] == ["iteration", "epoch", "loss_l", "loss_c"] and len(csv_rows) == 4


PROGRESS_LINE = re.compile(r"iteration (\d+)/9: loss_l ([\d.]+) loss_c ([\d.]+) lr ([\d.e+-]+), [\d.]+ images/s, "
                           r"ETA \d+:\d\d:\d\d")


def _progress_lines(text: str) -> list[tuple[int, float, float, float]]:
    return [(int(it), float(l), float(c), float(lr)) for it, l, c, lr in PROGRESS_LINE.findall(text)]


def test_without_a_terminal_the_loop_prints_a_line_per_log_interval_not_a_bar(tmp_path, capsys):
    """Redirected to a file, piped to tee or run under nohup, tqdm's bar wrote a carriage-return redraw every 0.1 s: a
    long run's output file held megabytes on one line, its losses only in the bar. Each log interval is one line
    now, printed and in log.txt."""
    settings = TrainSettings(max_iter=9, epoch_size=3, base_lr=0.1, warm_iter=2, log_interval=4, checkpoint_interval=9)
    _run_loop(tmp_path, settings, _ScriptedLoss())
    out, err = capsys.readouterr()
    expected = [(4, 2.5, 25.0, pytest.approx(_paper_lr(3, 0.1, 2, 9), rel=1e-2)),
                (8, 6.5, 65.0, pytest.approx(_paper_lr(7, 0.1, 2, 9), rel=1e-2)),
                (9, 9.0, 90.0, pytest.approx(_paper_lr(8, 0.1, 2, 9), rel=1e-2))]
    assert _progress_lines(out) == expected and len(out.splitlines()) == 3
    assert "\r" not in err and "it/s" not in err
    assert _progress_lines((tmp_path / "log.txt").read_text()) == expected


def test_on_a_terminal_the_bar_shows_the_losses_and_log_txt_still_records_each_interval(tmp_path, capsys, monkeypatch):
    """The log's lines do not depend on whether the run had a terminal."""
    terminal = TerminalView(io.StringIO())
    monkeypatch.setattr(sys, "stderr", terminal)
    settings = TrainSettings(max_iter=9, epoch_size=3, base_lr=0.1, warm_iter=2, log_interval=4, checkpoint_interval=9)
    _run_loop(tmp_path, settings, _ScriptedLoss())
    assert "9/9" in terminal.getvalue() and "loss_l=9.0000" in terminal.getvalue()
    assert capsys.readouterr().out == ""
    assert [line[0] for line in _progress_lines((tmp_path / "log.txt").read_text())] == [4, 8, 9]


def test_weights_are_scanned_for_nan_once_per_iteration_that_saves_or_evaluates(tmp_path, monkeypatch):
    """The NaN/inf scan of the weights (one host sync) runs once for an iteration that both saves and evaluates:
    saves after 2, 4, 6, 8, evaluations after 4 and 8 (the last iteration, 9, is main.py's), then once at the end."""
    scanned = []
    monkeypatch.setattr(engine, "non_finite_weights", lambda model: scanned.append(1) or [])
    settings = TrainSettings(max_iter=9, epoch_size=4, base_lr=0.1, warm_iter=2, log_interval=100,
                             checkpoint_interval=2, eval_interval=4)
    _, saves, evaluations, error = _run_loop(tmp_path, settings, _ScriptedLoss())
    assert error is None and saves == [2, 4, 6, 8] and evaluations == [4, 8]
    assert len(scanned) == 4 + 1


def test_train_loop_resumed_mid_interval_continues_the_schedule(tmp_path):
    settings = TrainSettings(max_iter=9, epoch_size=3, base_lr=0.1, warm_iter=2, log_interval=4,
                             checkpoint_interval=3, eval_interval=3)
    loss_fn = _ScriptedLoss()
    rows, saves, evaluations, _ = _run_loop(tmp_path, settings, loss_fn, start_iter=5)
    assert [lrs[0] for lrs in loss_fn.lrs] == pytest.approx([_paper_lr(it, 0.1, 2, 9) for it in range(5, 9)], rel=1e-12)
    assert saves == [6] and evaluations == [6]
    assert [row["iteration"] for row in rows] == [8, 9]
    assert [row["loss_l"] for row in rows] == pytest.approx([2.0, 4.0])  # iterations 5-7 (calls 1-3), then 8


def test_train_loop_stops_at_the_first_nan_and_saves_nothing_after_it(tmp_path):
    settings = TrainSettings(max_iter=9, epoch_size=3, base_lr=0.1, warm_iter=2, log_interval=2,
                             checkpoint_interval=1, eval_interval=3)
    rows, saves, evaluations, error = _run_loop(tmp_path, settings, _ScriptedLoss(nan_from=4))
    assert error is not None and error.iteration == 4
    assert saves == [1, 2, 3, 4] and evaluations == [3]
    assert [row["iteration"] for row in rows] == [2, 4]


class _ClassificationNaN(_ScriptedLoss):
    """A :class:`_ScriptedLoss` whose loss_c alone turns NaN from call ``c_nan_from`` on (loss_l stays finite)."""

    def __init__(self, c_nan_from: int):
        super().__init__()
        self.c_nan_from = c_nan_from

    def forward(self, outputs, priors, targets):
        loss_l, loss_c = super().forward(outputs, priors, targets)
        return loss_l, loss_c * float("nan") if self.calls > self.c_nan_from else loss_c


def test_train_loop_stops_at_the_first_nan_classification_loss_too(tmp_path):
    """The guard watches loss_l + loss_c: a NaN focal loss with a finite box loss stops the run at that iteration
    (no save scans the weights here; watching loss_l alone, the NaN weights made loss_l NaN one iteration later)."""
    settings = TrainSettings(max_iter=9, epoch_size=3, base_lr=0.1, warm_iter=2, log_interval=2,
                             checkpoint_interval=8)
    rows, saves, evaluations, error = _run_loop(tmp_path, settings, _ClassificationNaN(c_nan_from=4))
    assert error is not None and error.iteration == 4
    assert saves == [] and evaluations == [] and [row["iteration"] for row in rows] == [2, 4]


def test_a_nan_loss_before_an_unreadable_image_is_reported_as_the_divergence(tmp_path, monkeypatch):
    """Checking at log intervals only (as on CUDA): the loss goes NaN at iteration 3 (0-based 2), then the batch of
    iteration 5 cannot be read. The run reports the NaN at iteration 3 (so main.py saves no checkpoint past it for the
    data error), not the data error."""
    monkeypatch.setattr(engine, "checks_every_iteration", lambda device: False)
    settings = TrainSettings(max_iter=9, epoch_size=3, base_lr=0.1, warm_iter=2, log_interval=100,
                             checkpoint_interval=100)
    model = _OneWeight()
    optimizer = torch.optim.SGD([model.w], lr=0.0)
    loss_fn = _ScriptedLoss(nan_from=2)
    loss_fn.optimizer = optimizer

    def batches():
        for _ in range(4):
            yield torch.ones(2, 3, 4, 4), [torch.zeros(0, 5)] * 2, [0, 1]
        raise DataError("img5.jpg: cannot be read")

    with pytest.raises(NonFiniteLossError) as info:
        train(model, loss_fn, torch.zeros(1, 4), optimizer, torch.amp.GradScaler("cpu", enabled=False), batches(), 0,
              settings, torch.device("cpu"), DistributedContext(), RunLog(tmp_path), lambda done: None)
    assert loss_fn.calls == 4 and info.value.iteration == 2
    assert isinstance(info.value.__context__, DataError)
    finite = _ScriptedLoss()  # no NaN before it: the data error itself
    finite.optimizer = optimizer
    with pytest.raises(DataError, match="img5.jpg"):
        train(model, finite, torch.zeros(1, 4), optimizer, torch.amp.GradScaler("cpu", enabled=False), batches(), 0,
              settings, torch.device("cpu"), DistributedContext(), RunLog(tmp_path / "b"), lambda done: None)


@pytest.mark.parametrize("overflow_at, expected_saves", [(2, [1, 2]), (8, [1, 2, 3, 4, 5, 6, 7, 8])])
def test_weights_an_overflowing_gradient_made_non_finite_are_never_saved(tmp_path, overflow_at, expected_saves):
    """A finite loss whose gradient overflows makes the weights -inf: the loop stops before the save after it (at
    iteration 3), or before returning to main.py's final save (at the last iteration, 9), naming the weights."""
    settings = TrainSettings(max_iter=9, epoch_size=3, base_lr=0.1, warm_iter=2, log_interval=100,
                             checkpoint_interval=1)
    _, saves, _, error = _run_loop(tmp_path, settings, _ScriptedLoss(overflow_at=overflow_at))
    assert saves == expected_saves
    assert error is not None and error.iteration == overflow_at
    assert str(error) == (f"the weights hold NaN/inf after iteration {overflow_at + 1} although every loss was finite "
                          "(w): a gradient, the update or a BatchNorm running statistic overflowed float32")


class _OneWeightAfterBatchNorm(_OneWeight):
    """:class:`_OneWeight` fed through a BatchNorm: in training its output, normalised by the batch's own statistics,
    stays finite when the running variance it updates overflows float32."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)

    def forward(self, images):
        return super().forward(self.bn(images))


def test_a_batchnorm_statistic_that_overflows_stops_the_run_at_that_iteration(tmp_path):
    """Iteration 3 (0-based 2) feeds values of 1e21: the running variance overflows to inf while every loss stays
    finite. The run stops after that iteration, naming it and the tensor, not at the next save (after 8) with its
    iteration, having trained on a model that can no longer be evaluated."""
    settings = TrainSettings(max_iter=9, epoch_size=3, base_lr=0.1, warm_iter=2, log_interval=100,
                             checkpoint_interval=8)
    model, loss_fn = _OneWeightAfterBatchNorm(), _ScriptedLoss()
    optimizer = torch.optim.SGD([model.w], lr=0.0)
    loss_fn.optimizer = optimizer
    ramp = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    batches = [(ramp * (1e21 if iteration == 2 else 1.0), [torch.zeros(0, 5)] * 2, [0, 1]) for iteration in range(9)]
    saves = []
    with pytest.raises(NonFiniteLossError) as info:
        train(model, loss_fn, torch.zeros(1, 4), optimizer, torch.amp.GradScaler("cpu", enabled=False), batches, 0,
              settings, torch.device("cpu"), DistributedContext(), RunLog(tmp_path), saves.append)
    assert loss_fn.calls == 3 and saves == []
    assert info.value.iteration == 2
    assert str(info.value) == ("the weights hold NaN/inf after iteration 3 although every loss was finite "
                               "(bn.running_var): a gradient, the update or a BatchNorm running statistic overflowed "
                               "float32")


def test_non_finite_weights_names_parameters_and_buffers_through_wrappers():
    """A BatchNorm running variance overflows in the forward pass without touching the training loss (it uses the
    batch statistics): the check reads buffers too, and names them as the checkpoint's state dict does."""
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    assert non_finite_weights(model) == []
    model[1].running_var[1] = float("inf")
    model[0].weight.data[0] = float("nan")
    assert non_finite_weights(torch.compile(model)) == ["0.weight", "1.running_var"]


def test_an_fp16_gradient_overflow_skips_the_step_and_training_goes_on(tmp_path):
    """Under --amp fp16 the GradScaler skips the step of an overflowing gradient and halves its scale: the weights
    stay finite, nothing is mistaken for divergence, every checkpoint is saved."""
    settings = TrainSettings(max_iter=9, epoch_size=3, base_lr=0.1, warm_iter=2, log_interval=100,
                             checkpoint_interval=1)
    scaler, model = torch.amp.GradScaler("cpu", init_scale=2.0**16), _OneWeight()
    _, saves, _, error = _run_loop(tmp_path, settings, _ScriptedLoss(overflow_at=2), scaler=scaler, model=model)
    assert error is None and saves == list(range(1, 9))
    assert model.w.item() == 0.0 and scaler.get_scale() == 2.0**15


def test_fp16_train_rows_count_the_steps_the_grad_scaler_skipped_and_warn_when_most_were(tmp_path):
    """Steps 0, 1, 2 and 5 overflow: the GradScaler skips them, halving its scale from 2^16 each time. The rows after
    iterations 4, 8 and 9 say 3, 1 and 0 skipped steps and the scale then (2^13, 2^12, 2^12); the first interval,
    3 of its 4 steps skipped, gets a warning line, the others none."""
    settings = TrainSettings(max_iter=9, epoch_size=3, base_lr=0.1, warm_iter=2, log_interval=4,
                             checkpoint_interval=100)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    rows, _, _, error = _run_loop(tmp_path, settings, _ScriptedLoss(overflow_at=(0, 1, 2, 5)), scaler=scaler)
    assert error is None
    assert [(row["iteration"], row["skipped_steps"], row["loss_scale"]) for row in rows] == [
        (4, 3, 2.0**13), (8, 1, 2.0**12), (9, 0, 2.0**12)]
    header, *lines = (tmp_path / "train.csv").read_text().splitlines()
    assert header.split(",")[-2:] == ["skipped_steps", "loss_scale"]
    assert [line.split(",")[-2:] for line in lines] == [["3", "8192.0"], ["1", "4096.0"], ["0", "4096.0"]]
    warnings = [line.split(" ", 2)[2] for line in (tmp_path / "log.txt").read_text().splitlines() if "warning" in line]
    assert warnings == [
        "warning: --amp fp16: the GradScaler skipped 3 of 4 optimizer steps in iterations 1-4 (their loss-scaled "
        "gradients overflowed; a skipped step changes no weight and halves the loss scale, now 8192): the model is "
        "barely training. A few skips at the start, while the scale settles, are normal; many mean the gradients are "
        "too large: lower --lr, or use --amp bf16 where the GPU supports it (no loss scale to overflow)"]


def test_counting_a_skipped_step_reads_nothing_on_the_host(monkeypatch):
    """SkippedSteps.record runs every iteration: it must not sync (on CUDA, item/bool/tolist would wait for the GPU);
    the count comes to the host only in take(), at log intervals."""
    weight = nn.Parameter(torch.zeros(()))
    optimizer, scaler = torch.optim.SGD([weight], lr=0.1), torch.amp.GradScaler("cpu", init_scale=4.0)
    skipped = engine.SkippedSteps(scaler, torch.device("cpu"))
    for slope in (3e38, 1.0):  # the first step's gradient overflows, the second's does not
        scaler.scale(weight * slope * 4).backward()
        scaler.step(optimizer)

        def host_read(*args, **kwargs):
            raise AssertionError("a host read in SkippedSteps.record")
        with monkeypatch.context() as patch:
            for name in ("item", "tolist", "__bool__", "__int__", "__float__"):
                patch.setattr(torch.Tensor, name, host_read)
            skipped.record(optimizer)
        scaler.update()
        optimizer.zero_grad()
    assert skipped.take() == (1, 2.0) and skipped.take() == (0, 2.0)


class _BlockingCopies(TorchFunctionMode):
    """Records, as ``(function, file:line of its caller)``, the copies from host memory to another device that wait
    for that device on CUDA: ``torch.tensor``/``as_tensor``/``new_tensor`` onto it, and ``.to``/``.copy_`` of a host
    tensor without ``non_blocking`` (from pageable memory, a stream synchronisation)."""

    def __init__(self):
        super().__init__()
        self.copies = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        from_host = name in ("to", "copy_") and any(isinstance(arg, torch.Tensor) and arg.device.type == "cpu"
                                                    for arg in args)
        on_device = isinstance(result, torch.Tensor) and result.device.type != "cpu"
        if on_device and not kwargs.get("non_blocking") and (from_host or name in ("tensor", "as_tensor",
                                                                                   "new_tensor")):
            caller = traceback.extract_stack()[-2]
            self.copies.append((name, f"{os.path.relpath(caller.filename)}:{caller.lineno}"))
        return result


@pytest.mark.parametrize("assign_stats", [False, True])
def test_a_training_step_and_its_nan_check_never_wait_for_the_device(monkeypatch, assign_stats):
    """README: no per-iteration host sync of the project's own under fp32. The step (IoU assignment; Mutual Guidance's
    one sync runs on a side CUDA stream) and the NaN/inf guard's update run on the meta device, which holds no values,
    so a read of one on the host (item, bool, tolist, nonzero) raises; the host-to-device copies that would wait on
    CUDA are recorded. With --assign_stats the statistics' num_images was a torch.tensor made on the device: a
    blocking copy, so the host waited for the forward pass at every iteration."""
    # on CUDA the targets' one copy is pinned and non-blocking (test_losses checks it there); meta takes the same path
    monkeypatch.setattr(assignment, "_to_device", lambda tensor, device: tensor.to(device, non_blocking=True))
    monkeypatch.setattr(torch, "autocast", lambda *args, **kwargs: contextlib.nullcontext())  # none for meta
    device = torch.device("meta")
    with device:
        model = build_detector("fssd", "resnet18", 128, 3).train()
    priors = PriorBox(size=128).forward().to(device)
    optimizer, scaler = build_optimizer(model, lr=0.01), torch.amp.GradScaler("cpu", enabled=False)
    settings = TrainSettings(max_iter=2, epoch_size=2, base_lr=0.01, warm_iter=0, log_interval=1,
                             checkpoint_interval=2, assign_stats=assign_stats)
    guard, skipped = NonFiniteGuard(device, model), engine.SkippedSteps(scaler, device)
    images, targets = torch.zeros(2, 3, 128, 128), [torch.tensor([[0.1, 0.2, 0.5, 0.6, 2.0]]), torch.zeros(0, 5)]
    with _BlockingCopies() as recorder:
        loss_l, loss_c, stats = engine._train_step(model, MultiBoxLoss(3), priors, optimizer, scaler, images,
                                                   targets, settings, device, skipped, with_stats=assign_stats)
        guard.update(loss_l + loss_c, 0)
    assert recorder.copies == []
    assert (stats is not None) == assign_stats and loss_l.device == device


class _TwoWeights(nn.Module):
    """``loc [1, 1, 4]`` all ``a``, ``conf [1, 1, 2]`` all ``b``: each loss reaches its own weight."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Parameter(torch.zeros(())), nn.Parameter(torch.zeros(()))

    def forward(self, images):
        return torch.zeros(1, 1, 4) + self.a, torch.zeros(1, 1, 2) + self.b


def test_a_training_step_back_propagates_loss_l_plus_loss_c_with_weight_1_each():
    """facts §4: loss = loss_l + loss_c, 1:1. loss_l = 3 sum(loc) gives a the gradient 4 x 3 = 12, loss_c = 5 sum(conf)
    gives b 2 x 5 = 10; one plain SGD step at lr 0.1 from 0 moves them to -1.2 and -1.0 (dropping a term, or weighting
    one, moves one of them elsewhere)."""
    model = _TwoWeights()
    optimizer, scaler = torch.optim.SGD(model.parameters(), lr=0.1), torch.amp.GradScaler("cpu", enabled=False)
    settings = TrainSettings(max_iter=1, epoch_size=1, base_lr=0.1, warm_iter=0, log_interval=1, checkpoint_interval=1)
    device = torch.device("cpu")

    def loss_fn(outputs, priors, targets):
        loc, conf = outputs
        return 3 * loc.sum(), 5 * conf.sum()

    loss_l, loss_c, stats = engine._train_step(model, loss_fn, torch.zeros(1, 4), optimizer, scaler,
                                               torch.ones(1, 3, 4, 4), [torch.zeros(0, 5)], settings, device,
                                               engine.SkippedSteps(scaler, device))
    assert (loss_l.item(), loss_c.item(), stats) == (0.0, 0.0, None)
    assert (model.a.item(), model.b.item()) == pytest.approx((-1.2, -1.0), rel=1e-6)


class _StatsLoss(_ScriptedLoss):
    """A :class:`_ScriptedLoss` with assignment statistics (call k's ``num_pos_cls`` is k + 1) that records the
    ``with_stats`` of each call."""

    def __init__(self):
        super().__init__()
        self.with_stats = []

    def forward(self, outputs, priors, targets, with_stats=False):
        self.with_stats.append(with_stats)
        loss_l, loss_c = super().forward(outputs, priors, targets)
        return (loss_l, loss_c, {"num_pos_cls": torch.tensor(float(self.calls))}) if with_stats else (loss_l, loss_c)


def test_assignment_statistics_are_computed_only_for_the_iterations_that_log_them(tmp_path):
    """--assign_stats logs the statistics of each log interval's last iteration: the loss computed them at every
    iteration (IoUs of every decoded prediction, the IoU baseline under MG) and the loop dropped all but one in 20."""
    settings = TrainSettings(max_iter=7, epoch_size=7, base_lr=0.1, warm_iter=0, log_interval=3,
                             checkpoint_interval=100, assign_stats=True)
    loss_fn = _StatsLoss()
    rows, _, _, error = _run_loop(tmp_path, settings, loss_fn)
    assert error is None
    assert loss_fn.with_stats == [False, False, True, False, False, True, True]
    assert [(row["iteration"], row["num_pos_cls"]) for row in rows if row["kind"] == "train"] == [
        (3, 3.0), (6, 6.0), (7, 7.0)]


def test_train_rows_without_fp16_have_no_skipped_step_columns(tmp_path):
    """bf16 and float32 runs have no GradScaler (disabled): their rows stay as they were."""
    settings = TrainSettings(max_iter=2, epoch_size=2, base_lr=0.1, warm_iter=0, log_interval=1,
                             checkpoint_interval=100)
    rows, _, _, error = _run_loop(tmp_path, settings, _ScriptedLoss())
    assert error is None
    assert [list(row) for row in rows] == [["kind", "iteration", "epoch", "loss_l", "loss_c", "lr", "images_per_s"]] * 2


def test_train_loop_switches_to_mutual_guidance_at_the_given_iteration(tmp_path):
    settings = TrainSettings(max_iter=5, epoch_size=5, base_lr=0.1, warm_iter=0, log_interval=5,
                             checkpoint_interval=10, mutual_guide_from=2)
    loss_fn = _ScriptedLoss()
    _run_loop(tmp_path, settings, loss_fn)
    assert loss_fn.guides == [False, False, True, True, True]


@pytest.mark.parametrize("intervals, said", [(1, "mean over 1 log interval: "), (2, "mean over 2 log intervals: ")])
def test_assignment_summary_counts_its_log_intervals(tmp_path, capsys, intervals, said):
    log = RunLog(tmp_path)
    for i in range(intervals):
        log.metrics("train", {"iteration": 10 * (i + 1), "positives": 4.0 + i})
    engine._log_stats_summary(["positives"], 10 * intervals, log)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line == f"assignment statistics, {said}positives={4.0 + (intervals - 1) / 2:.3f}"


def test_a_switched_runs_assignment_summary_gives_the_mean_after_the_switch_too(tmp_path, capsys):
    """A run given --mutual_guide_from 4 logs at iterations 2, 4 (IoU: iterations 1-4) and 6, 8 (Mutual Guidance):
    the run's mean mixes both assignments and says so, and a second line and an assign_summary_mg row give the mean
    of the log intervals after the switch, MG's alone (a researcher once had to work it out from metrics.jsonl)."""
    log = RunLog(tmp_path)
    for iteration, disagree in ((2, 0.0), (4, 0.0), (6, 0.25), (8, 0.5)):
        log.metrics("train", {"iteration": iteration, "disagree_with_iou": disagree})
    engine._log_stats_summary(["disagree_with_iou"], 8, log, mutual_guide_from=4)
    assert capsys.readouterr().out.strip().splitlines()[-2:] == [
        "assignment statistics, mean over 4 log intervals (IoU assignment for iterations 1-4, then Mutual Guidance): "
        "disagree_with_iou=0.188",
        "assignment statistics after the switch to Mutual Guidance (iterations 5-8), mean over 2 log intervals: "
        "disagree_with_iou=0.375"]
    assert log.rows("assign_summary") == [{"iteration": 8, "log_intervals": 4, "disagree_with_iou": 0.1875}]
    assert log.rows("assign_summary_mg") == [{"iteration": 8, "log_intervals": 2, "disagree_with_iou": 0.375}]
    assert (tmp_path / "assign_summary_mg.csv").read_text().splitlines() == [
        "iteration,log_intervals,disagree_with_iou", "8,2,0.375"]


def test_a_switch_after_one_iteration_or_before_the_last_names_that_one_iteration(tmp_path, capsys):
    """--mutual_guide_from 1 of a 2-iteration run: the log said "for iterations 1-1" and "(iterations 2-2)"."""
    iou = "IoU (anchor IoU >= 0.5 positive, [0.4, 0.5) ignored, each object's best anchor positive)"
    assert assignment_line(True, 1).startswith(f"assignment: {iou} for iteration 1, then Mutual Guidance (sigma 2): ")
    assert assignment_line(True, 3).startswith(f"assignment: {iou} for iterations 1-3, then Mutual Guidance ")
    log = RunLog(tmp_path)
    for iteration, disagree in ((1, 0.0), (2, 0.5)):
        log.metrics("train", {"iteration": iteration, "disagree_with_iou": disagree})
    engine._log_stats_summary(["disagree_with_iou"], 2, log, mutual_guide_from=1)
    assert capsys.readouterr().out.strip().splitlines()[-2:] == [
        "assignment statistics, mean over 2 log intervals (IoU assignment for iteration 1, then Mutual Guidance): "
        "disagree_with_iou=0.250",
        "assignment statistics after the switch to Mutual Guidance (iteration 2), mean over 1 log interval: "
        "disagree_with_iou=0.500"]


def test_the_assignment_summary_leaves_a_ratio_out_of_its_mean_where_it_was_over_nothing(tmp_path, capsys):
    """A log interval whose last batch holds no object (a custom set with background images, a small batch) logs
    its ratios over no positive (no object) as 0: they were averaged in as if its positives overlapped their objects
    at IoU 0 (measured: 0.442 for a mean anchor IoU of 0.589). Each ratio's mean is over the rows where its count is
    not 0; the counts' over every row."""
    log = RunLog(tmp_path)
    names = ["num_objects", "num_pos_cls", "cls_pos_anchor_iou", "pos_per_object", "num_images", "cls_pos_per_image"]
    for iteration, objects, positives, iou in ((1, 1.0, 14.0, 0.6), (2, 0.0, 0.0, 0.0), (3, 2.0, 16.0, 0.5)):
        log.metrics("train", {"iteration": iteration, "num_objects": objects, "num_pos_cls": positives,
                              "cls_pos_anchor_iou": iou, "pos_per_object": positives / max(objects, 1.0),
                              "num_images": 1.0, "cls_pos_per_image": positives})
    engine._log_stats_summary(names, 3, log)
    (row,) = log.rows("assign_summary")
    assert row == pytest.approx({"iteration": 3, "log_intervals": 3, "num_objects": 1.0, "num_pos_cls": 10.0,
                                 "cls_pos_anchor_iou": 0.55, "pos_per_object": 11.0, "num_images": 1.0,
                                 "cls_pos_per_image": 10.0})
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        "assignment statistics, mean over 3 log intervals: num_objects=1.000 num_pos_cls=10.000 "
        "cls_pos_anchor_iou=0.550 pos_per_object=11.000 num_images=1.000 cls_pos_per_image=10.000")
