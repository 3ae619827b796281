"""How a main.py run that stops says so: its exit code, the error as one line on stderr, and the advice that goes on
from what it kept (the same command with ``--resume``, the command that evaluates the saved checkpoint, what to
change after a diverged loss)."""
from __future__ import annotations

import argparse
import errno
import os
import re
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from utils.distributed import DistributedContext
from utils.logging import STANDARD_OUTPUT, RunLog
from utils.messages import exact_number

# Exit codes: 2 = bad input (flags, data, checkpoint), 3 = the loss diverged, 130 = stopped by a signal.
EXIT_REFUSED_BY_SYSTEM, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 1, 2, 3, 130
# Set (by :func:`continued_by`) while a program that runs main.py in-process and goes on from its stopped runs itself
# runs it: the command that continues, which main.py's advice names in place of its own (main.py --resume,
# --trained_model), and what to change after a diverged loss, in that program's flags (main.py's --warm_iter or
# --check_data may be none of its own). Not user settings.
CONTINUE_COMMAND_ENV = "MG_CONTINUE_COMMAND"
DIVERGED_ADVICE_ENV = "MG_DIVERGED_ADVICE"


@contextmanager
def continued_by(command: str, diverged: str) -> Iterator[None]:
    """Inside the block, main.py's advice to go on from a stopped run is "continue with ``command``" (e.g. "the same
    benchmarks/assigners.py command"), the caller's, which resumes the run itself, instead of a main.py command; and
    its advice after a diverged loss is ``diverged``, which names the caller's flags to change, not main.py's."""
    previous = {name: os.environ.get(name) for name in (CONTINUE_COMMAND_ENV, DIVERGED_ADVICE_ENV)}
    os.environ[CONTINUE_COMMAND_ENV], os.environ[DIVERGED_ADVICE_ENV] = command, diverged
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def outer_command() -> str | None:
    """The command of the program that runs main.py and continues its runs (see :func:`continued_by`), or None."""
    return os.environ.get(CONTINUE_COMMAND_ENV) or None


def how_to_continue(args: argparse.Namespace, checkpoint_path: Path) -> str:
    """The advice that continues a stopped training run from ``checkpoint_path``, its own checkpoint: the same command
    with ``--resume`` in place of ``--init_from`` or ``--resume`` of another file, or added; the same command when it
    already resumes that file; the outer program's command when main.py runs inside one (:func:`continued_by`)."""
    if (outer := outer_command()) is not None:
        return f"continue with {outer}"
    quoted = shlex.quote(str(checkpoint_path))
    if args.init_from:
        return (f"continue with the same command, --init_from {shlex.quote(str(args.init_from))} replaced by "
                f"--resume {quoted}")
    if args.resume is None:
        return "continue with the same command plus --resume"
    if not args.resume or Path(args.resume).resolve() == checkpoint_path.resolve():
        return "continue with the same command"
    return f"continue with the same command, --resume {shlex.quote(args.resume)} replaced by --resume {quoted}"


def stopped_run_advice(args: argparse.Namespace, checkpoint_path: Path, last_saved: int | None) -> str:
    """How a training run stopped by the system (a full disk, no memory) goes on: from its checkpoint of iteration
    ``last_saved``, or from the start when it has saved none (``None``)."""
    if last_saved is None:
        return "run the same command again"
    return f"{how_to_continue(args, checkpoint_path)} (from iteration {last_saved})"


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation that failed: a CUDA out-of-memory error, Python's MemoryError, or the
    CPU allocator's RuntimeError."""
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in str(error)


_WORKER_KILLED = re.compile(r"DataLoader worker \(pid \d+\) is killed by signal: ([^.]+)\.")
_WORKER_GONE = "DataLoader worker (pid"  # ... exited unexpectedly (with exit code N), or is killed by signal: NAME
# PyTorch's shared memory files are /torch_<pid>_...; "unable to mmap" alone may be a checkpoint read with mmap=True
_SHARED_MEMORY = ("shared memory object </torch_", "to file </torch_", "from file </torch_")
_TOO_MANY_FILES = "Too many open files"
_WORKERS_TIMED_OUT = re.compile(r"DataLoader timed out after ([\d.]+) seconds")  # data.loader.WORKER_TIMEOUT_S
_WORKERS_RUN_OUT = ("Caught MemoryError in DataLoader worker", "Caught OutOfMemoryError in DataLoader worker")
# where this process takes a tensor from the worker that made it (its file descriptor, through a socket)
_FROM_A_WORKER = tuple(os.path.join("multiprocessing", name) for name in ("resource_sharer.py", "reductions.py"))


def _raised_in(error: BaseException, files: tuple[str, ...]) -> bool:
    """Whether ``error``'s traceback passes through a file whose path ends with one of ``files``."""
    frame = error.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_filename.endswith(files):
            return True
        frame = frame.tb_next
    return False


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error``, then the error it was raised from or during, and so on."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def worker_failure(error: BaseException, workers: int) -> str | None:
    """What stopped the DataLoader's worker processes (``workers``: ``--workers``) and what to change, in one line
    to follow ``error: ``; None when ``error`` is not theirs. PyTorch reports them as RuntimeErrors without a word
    of the fix: a worker killed by SIGKILL (the out-of-memory killer, a container's memory limit), one killed by
    SIGBUS or an allocation refused in shared memory (``/dev/shm`` full: Docker gives 64 MB unless told more), no
    file descriptor left (each tensor a worker hands over holds one until this process takes it), a worker that ran
    out of memory, one that ended while this process took a batch from it (a ConnectionError), workers that sent no
    batch within the loader's timeout (hung), or one that exited or died of another signal. The fixes leave the data
    stream unchanged, so ``--resume`` takes them."""
    if workers == 0:
        return None
    fewer = f"lower --workers ({workers} here; 0 loads the data in this process)"
    if isinstance(error, ConnectionError) and _raised_in(error, _FROM_A_WORKER):
        return ("a DataLoader worker process ended while it handed over a batch (killed, often by the out-of-memory "
                f"killer or a container's memory limit): {fewer}")
    if not isinstance(error, (RuntimeError, MemoryError)):
        return None
    # the death PyTorch's SIGCHLD handler reports, raised while this process waited for a batch, is the cause of its
    # "DataLoader worker (pid(s) N) exited unexpectedly"
    text = "\n".join(str(link) for link in _chain(error))
    if killed := _WORKER_KILLED.search(text):
        signal_name = killed.group(1)
        if signal_name == "Killed":
            return ("a DataLoader worker process was killed (SIGKILL), most often by the system's out-of-memory killer "
                    f"or a container's memory limit: {fewer}")
        if signal_name == "Bus error":
            return ("a DataLoader worker process died of a bus error: the shared memory (/dev/shm) through which the "
                    "workers hand over their batches is full; give the container more (docker run --shm-size 8g, or "
                    f"--ipc=host) or {fewer}")
        return (f"a DataLoader worker process died of a signal ({signal_name}): run with --workers 0 to see where, in "
                "this process")
    if timed_out := _WORKERS_TIMED_OUT.search(text):
        return (f"no batch came from the DataLoader workers in {timed_out.group(1)} s: one is stuck (reading from a "
                "stalled file system, say) or lost its batch (its error above says why); fix what holds it, or "
                f"{fewer}")
    if _TOO_MANY_FILES in text:
        return ("no file descriptor left for the batches the DataLoader workers hand over (each tensor holds one until "
                f"this process takes it): raise the limit (ulimit -n 65536 in the shell that starts main.py) or "
                f"{fewer}")
    if reason := next((line.strip() for line in text.splitlines() if any(m in line for m in _SHARED_MEMORY)), None):
        return (f"the DataLoader workers ran out of shared memory (/dev/shm: {reason}); give the container more "
                f"(docker run --shm-size 8g, or --ipc=host) or {fewer}")
    if text.startswith(_WORKERS_RUN_OUT):
        return f"a DataLoader worker process ran out of memory: {fewer}"
    if _WORKER_GONE in text:
        return ("a DataLoader worker process exited unexpectedly (killed, often by the out-of-memory killer, or ended "
                f"by an error): {fewer}; --workers 0 shows an error where it happens")
    return None


def refused_file_operation(error: OSError) -> str:
    """``runs/x/train.csv: No space left on device``: the file and the system's reason, in one line."""
    return f"{error.filename}: {error.strerror or error}"


def refused_file_advice(error: OSError) -> str:
    """What to do about ``error``, a file operation the system refused: free space or fix the folder, or, when the
    printed lines could not be written because the program reading them ended or their terminal closed, send them to
    a file."""
    if error.filename == STANDARD_OUTPUT and error.errno in (errno.EPIPE, errno.EIO):
        return ("the program reading main.py's output ended (head or less, say) or its terminal closed: send the "
                "output to a file (> train.out 2>&1, or run under nohup)")
    return "free space or fix the folder"


def log_error(ctx: DistributedContext, message: str, every_process: bool = False, log: RunLog | None = None) -> None:
    """Print ``message`` on stderr from the main process, or from every process (prefixed with its rank under
    ``torchrun``) for an error that one process may meet alone, such as an unreadable image in its share of a batch;
    with ``log`` (a training run's), record it in its ``log.txt`` too, so the run's log says why it stopped (a log
    that cannot be written, a full disk, leaves the line on stderr alone: what the run does next is unchanged)."""
    if ctx.is_main or every_process:
        prefix = f"[rank {ctx.rank}] " if ctx.is_distributed else ""
        try:
            print(prefix + message, file=sys.stderr, flush=True)
        except OSError:  # standard error piped to a program that ended, as standard output: log.txt is left to say it
            pass
    if log is not None:
        try:
            log.record(message)  # the main process's RunLog alone writes
        except OSError:
            pass


def how_to_evaluate(args: argparse.Namespace, checkpoint_path: Path) -> str:
    """The advice that evaluates a finished run whose final evaluation stopped: :func:`evaluation_command`, or the
    outer program's command, which resumes the finished run and so evaluates it, when main.py runs inside one."""
    if (outer := outer_command()) is not None:
        return f"continue with {outer}"
    return f"evaluate it with: {shlex.join(evaluation_command(args, checkpoint_path))}"


def evaluation_command(args: argparse.Namespace, checkpoint_path: Path) -> list[str]:
    """The command that evaluates the run's checkpoint ``checkpoint_path`` as the run's end does."""
    # --trained_model alone evaluates on the checkpoint's dataset, data folder, classes and NMS threshold
    command = ["python", "main.py", "--trained_model", str(checkpoint_path)]
    return command + (["--eval_dir", args.eval_dir] if args.eval_dir else [])


def divergence_advice(args: argparse.Namespace, amp_dtype: torch.dtype | None) -> str:
    """What to change after a NaN/inf loss or weights: the learning rate, the warm-up, the precision, the data; the
    outer program's advice, in its own flags, when main.py runs inside one (:func:`continued_by`)."""
    if outer := os.environ.get(DIVERGED_ADVICE_ENV):
        return outer
    precision = {
        torch.float16: ", use --amp bf16 (float16 overflows above 65504) or float32 (no --amp)",
        torch.bfloat16: ", train in float32 (no --amp)",
    }.get(amp_dtype, "")
    return (f"Start again with a lower --lr (peak {exact_number(args.lr)}) or a longer --warm_iter "
            f"({args.warm_iter}){precision}, or check the data with --check_data")
