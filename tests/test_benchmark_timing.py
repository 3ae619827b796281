"""The benchmarks' timers wait for the device before reading the clock (README, fixes to the authors' code, item 12:
the authors timed CUDA work unsynchronised, so their figures covered the kernel launches, not the work)."""
import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from benchmarks import common

CUDA = torch.device("cuda", 0)  # a device object only: synchronize is replaced, so no GPU is needed


def recorded_timer(monkeypatch) -> list[str]:
    """Replace the device synchronisation and the clock that ``benchmarks.common`` reads by recorders; the clock
    reads 0, 1, 2, ... Returns the list the events are appended to, in order."""
    events: list[str] = []
    ticks = iter(range(100))

    def clock() -> float:
        events.append("clock")
        return float(next(ticks))

    monkeypatch.setattr(common, "synchronize", lambda device: events.append(f"sync {device}"))
    monkeypatch.setattr(common, "time", SimpleNamespace(perf_counter=clock))
    return events


def test_throughput_timer_synchronises_before_each_clock_reading(monkeypatch):
    events = recorded_timer(monkeypatch)
    seconds = common.seconds_per_call(lambda: events.append("call"), CUDA, warmup=1, iters=2)
    assert events == ["call", "sync cuda:0", "clock", "call", "call", "sync cuda:0", "clock"]
    assert seconds == 0.5  # clock 0 -> 1 over two calls


def test_latency_timer_synchronises_around_every_call(monkeypatch):
    events = recorded_timer(monkeypatch)
    latencies = common.call_latencies(lambda: events.append("call"), CUDA, warmup=1, iters=2)
    assert events == ["call"] + ["sync cuda:0", "clock", "call", "sync cuda:0", "clock"] * 2
    assert latencies == [1.0, 1.0]


def test_synchronize_waits_for_a_cuda_device_and_is_a_no_op_on_cpu(monkeypatch):
    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", waited.append)
    common.synchronize(torch.device("cpu"))
    assert waited == []
    common.synchronize(CUDA)
    assert waited == [CUDA]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_training_speed_hands_the_loss_host_targets_as_main_py_s_loop_does(device, monkeypatch):
    # on CUDA, targets already on the device make the MG criterion's quota prefetch wait for the forward pass
    # (utils/assign/prefetch.py), a stall main.py's loop, which passes the loader's host targets, does not have
    from benchmarks import training_speed

    seen: list[str] = []

    class RecordingLoss(training_speed.MultiBoxLoss):
        def forward(self, predictions, priors, targets, with_stats=False):
            seen.extend(target.device.type for target in targets)
            return super().forward(predictions, priors, targets, with_stats)

    monkeypatch.setattr(training_speed, "MultiBoxLoss", RecordingLoss)
    rate = training_speed.images_per_second("fssd", "resnet18", 128, True, None, torch.device(device), 2, 1, 0, 3)
    assert rate > 0 and seen == ["cpu", "cpu"]


class EveningInBerlin(datetime.datetime):
    """A clock that reads 2031-01-02 23:59:30 UTC: 2031-01-03 on a machine an hour east of UTC."""

    @classmethod
    def now(cls, tz=None):
        moment = datetime.datetime(2031, 1, 2, 23, 59, 30, tzinfo=datetime.timezone.utc)
        return moment.astimezone(tz or datetime.timezone(datetime.timedelta(hours=1)))


def test_benchmark_dates_are_utc_to_the_minute_whatever_the_machine_s_time_zone(monkeypatch):
    monkeypatch.setattr(common, "datetime", SimpleNamespace(datetime=EveningInBerlin, timezone=datetime.timezone))
    assert common.utc_stamp() == "2031-01-02 23:59 UTC"
    assert common.environment(torch.device("cpu"))["date"] == "2031-01-02 23:59 UTC"  # the JSON records' date too


def test_every_benchmark_prints_its_date_through_the_one_helper():
    # a script reading the clock itself printed the machine's local date (datetime.date.today()) or an ISO stamp
    scripts = sorted(Path(common.__file__).parent.glob("*.py"))
    readers = [script.name for script in scripts if script.name != "common.py" and "datetime" in script.read_text()]
    assert len(scripts) > 10 and readers == []
