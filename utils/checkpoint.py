"""Checkpoint naming, atomic saving, ``weights_only`` loading, RNG state capture and config checks.

A checkpoint is a plain dict (tensors, numbers, strings, lists, dicts only, so that
``torch.load(path, weights_only=True)`` reads it)::

    {"model": state_dict, "optimizer": state_dict, "scaler": state_dict or {},
     "iteration": completed iterations, "max_iter": int, "rng": capture_rng_state(),
     "config": dict of plain values (the run's flags), "class_names": list[str], "format": FORMAT,
     "best_checkpoint": path of the run's best checkpoint, once it has one}

A run's best checkpoint (``utils/best_checkpoint.py``, ``--eval_interval``) holds ``model``, ``iteration``,
``max_iter``, ``config``, ``class_names`` and ``format`` too, with ``best_metrics`` instead of the optimizer, scaler
and RNG states (``--resume`` refuses it).
"""
from __future__ import annotations

import errno
import math
import os
import pickle
import random
import shlex
import tempfile
import time
import warnings
from glob import escape as glob_escape
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from models.builder import BACKBONES, MIN_SIZE, NECKS
from models.detector import CLASSIFIER_PREFIX
from models.head import ANCHORS_PER_CELL
from models.pretrained import wrapper_prefix
from utils.box.prior_box import FIFTH_LEVEL_FROM, SIZE_MULTIPLE, level_strides, num_levels
from utils.messages import counted, exact_number, first_line, preview_names
from utils.names import folded_name, same_classes

_FORMAT_FAMILY = "mutual-guidance-checkpoint-"  # then the version of the format
FORMAT = f"{_FORMAT_FAMILY}v1"

# Flags that fix the network; a checkpoint only loads into a model built with the same values.
ARCHITECTURE_KEYS = ("version", "backbone", "size", "base_anchor_size")
# Flags that fix the data stream, the schedule and the arithmetic (``--sync_bn``: BatchNorm's statistics over the
# global batch, not each process's); ``--resume`` continues exactly only when they are unchanged. (Not ``--data_root``:
# the same data may have moved; not ``--workers``: augmentation is drawn per sample.)
RUN_KEYS = (
    "dataset", "train_images", "train_fingerprint", "mutual_guide", "mutual_guide_from", "batch_size", "world_size",
    "lr", "warm_iter", "seed", "expand_prob", "amp_dtype", "sync_bn",
)  # and the run's length in iterations, however given (--epochs or --max_iter): see check_same_length
# how check_same_run names a RUN_KEYS entry that is not a flag of its own
_RUN_KEY_NAMES = {"amp_dtype": "mixed precision (--amp)"}
# RUN_KEYS whose None reads as a value ("--amp none": float32), not as the flag left out
_VALUED_RUN_KEYS = ("amp_dtype", "amp")
# what evaluation, --demo and --export read from a checkpoint, with the type each must have
REQUIRED_ENTRIES = {"model": dict, "config": dict, "class_names": list, "iteration": int, "max_iter": int}
# BatchNorm's count of training batches: the one integer tensor of a model's state dict
_BATCH_COUNTER = "num_batches_tracked"
# the end of the message for a checkpoint whose content main.py never writes
_EDITED = "it was edited or damaged: use a checkpoint as main.py saved it"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message is one line naming the file and the fix."""


def checkpoint_name(
    dataset: str, version: str, backbone: str, size: int, base_anchor_size: float, mutual_guide: bool
) -> str:
    """The original repository's file name, e.g. ``VOC_pafpn_vgg16_size320_anchor24.0_MG.pth``."""
    suffix = "_MG" if mutual_guide else ""
    return f"{dataset.upper()}_{version}_{backbone}_size{size}_anchor{float(base_anchor_size)}{suffix}.pth"


def check_writable_folder(folder: Path, flag: str) -> None:
    """Check that ``folder`` can be written, or created, without creating it: a probe file is written (and removed)
    in the folder or, when it does not exist yet, in its nearest existing parent. Raises ``ValueError`` naming
    ``flag`` when that fails (a file in the way, no permission, a read-only disk) or when the folder or a parent is
    a symbolic link to a missing folder."""
    existing = Path(folder).absolute()
    while not os.path.lexists(existing):
        existing = existing.parent
    if not existing.exists():  # a link to a folder that is gone: creating the folder would fail at the first save
        raise ValueError(f"{flag} {folder}: cannot write there ({existing} is a symbolic link to "
                         f"{existing.parent / os.readlink(existing)}, which does not exist); create that folder or "
                         "give another one")
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ValueError(f"{flag} {folder}: cannot write there ({error.strerror or error}); "
                         "give a writable folder") from None


def set_aside_earlier_checkpoint(path: Path) -> Path | None:
    """Rename a checkpoint that an earlier run left at ``path`` to ``<stem>.earlier-<its save time><suffix>``, so that a
    new run never overwrites it. Returns the new name, or None when ``path`` does not exist."""
    if not path.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))
    target = path.with_name(f"{path.stem}.earlier-{stamp}{path.suffix}")
    copy = 1
    while target.exists():
        copy += 1
        target = path.with_name(f"{path.stem}.earlier-{stamp}-{copy}{path.suffix}")
    path.rename(target)
    return target


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsync, then rename.

    A crash during the write leaves the previous checkpoint at ``path`` untouched. A failed write (a full disk, a
    folder gone or made read-only) raises ``OSError`` with ``path`` as its file name and what is kept in its reason;
    a Ctrl-C during the write raises ``KeyboardInterrupt``, and the partial file is removed.
    """
    path = Path(path)
    tmp = path.with_name(f"{_partial_prefix(path)}{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            torch.save(dict(state), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as failure:
        if isinstance(interrupt := _first_in_chain(failure, KeyboardInterrupt), KeyboardInterrupt):
            raise interrupt from None  # a Ctrl-C inside torch's zip writer, which its closing turns into a RuntimeError
        error = _first_in_chain(failure, OSError)
        if not isinstance(error, OSError):
            raise
        kept = f"the checkpoint already at {path} is untouched" if path.is_file() else "no checkpoint is there yet"
        raise OSError(error.errno, f"{error.strerror or error}; {kept}", str(path)) from error
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_partial_checkpoints(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files :func:`save_checkpoint` left next to ``path`` when a process writing it was killed
    (``.<name>.tmp<pid>``); call it only while holding the run's lock (no other process writes them). Returns them."""
    partial = partial_checkpoints(path)
    for leftover in partial:
        leftover.unlink(missing_ok=True)
    return partial


def partial_checkpoints(path: str | os.PathLike) -> list[Path]:
    """The temporary files that :func:`save_checkpoint` of ``path`` left when a process writing it was killed, sorted
    (in a run that holds the lock of ``path``, no save of it is under way)."""
    path = Path(path)
    return sorted(path.parent.glob(f"{glob_escape(_partial_prefix(path))}[0-9]*"))


def _partial_prefix(path: Path) -> str:
    """The name of :func:`save_checkpoint`'s temporary file for ``path``, without the writing process's id."""
    return f".{path.name}.tmp"


def _first_in_chain(error: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``error`` itself or the first exception of type ``kind`` it was raised from or during: torch's zip writer turns
    what stopped a write (an ``OSError`` of a full disk, the ``KeyboardInterrupt`` of a Ctrl-C) into a
    ``RuntimeError`` ("unexpected pos ...") when it closes, with that exception as its context."""
    seen = error
    while seen is not None and not isinstance(seen, kind):
        seen = seen.__cause__ or seen.__context__
    return seen


def load_checkpoint(path: str | os.PathLike, source: str = "the checkpoint path given") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` onto the CPU with ``weights_only=True``; ``source`` says
    where ``path`` came from (e.g. ``--trained_model``), for the message when it does not exist.

    Raises :class:`CheckpointError`, one line naming the file and what to do, for a path that is missing or not a
    regular file, an empty file, a file that cannot be read or is not one main.py wrote (a bare state dict, another
    format version), and content main.py never writes: a missing or mistyped entry, an iteration outside
    0..max_iter, architecture flags it would refuse, class names that are not distinct text or not as many as the
    classifier scores, model entries that all carry a wrapper's prefix (DDP's ``module.``), that are not
    floating-point tensors (BatchNorm's batch counters aside) or hold NaN/inf.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; pass the .pth file inside it (e.g. from weights/)")
    if path.exists() and not path.is_file():  # never read: a pipe would wait for a writer, a device never end
        raise CheckpointError(f"checkpoint {path} is not a regular file (a pipe, a device or a socket); pass the .pth "
                              "file main.py saved")
    if not path.is_file() and (partial := partial_checkpoints(path)):  # a run killed in its first save (SIGKILL)
        raise CheckpointError(f"checkpoint {path} does not exist, only the partial file of a save that was cut short "
                              f"({partial[0]}): there is no checkpoint of its run to read; train it again with the "
                              "run's command without --resume (which removes that file)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check {source}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): a copy or download of it that did not complete, "
                              "not a file main.py saved (it writes its checkpoints whole); pass the .pth file main.py "
                              "saved")
    try:
        with warnings.catch_warnings():  # torch warns of a file it then refuses (a plain pickle): one line says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # torch's text advises weights_only=False: never for a checkpoint
        raise CheckpointError(f"cannot read checkpoint {path}: it is not a file torch.save wrote, or holds objects "
                              "other than tensors and plain values; pass a .pth file saved by main.py") from error
    except OSError as error:  # the system refused the read (no permission, a disk error): the file may be fine
        raise CheckpointError(f"cannot read checkpoint {path} ({error.strerror or first_line(error)}); "
                              "check that the file is readable (its permissions, the disk)") from error
    except Exception as error:  # noqa: BLE001 - any other failure means "not a usable checkpoint"
        raise CheckpointError(f"cannot read checkpoint {path} ({first_line(error)}); "
                              "it is damaged or not a torch file") from error
    written_as = state.get("format") if isinstance(state, dict) else None
    if isinstance(written_as, str) and written_as != FORMAT and written_as.startswith(_FORMAT_FAMILY):
        raise CheckpointError(f"{path} was written by another version of this project (format {written_as!r}; this one "
                              f"reads {FORMAT!r}); read it with the version that wrote it, or pass a checkpoint saved "
                              "by this one")
    if isinstance(state, dict) and state and all(isinstance(value, torch.Tensor) for value in state.values()):
        raise CheckpointError(f"{path} is a bare state dict ({len(state)} tensors), not a checkpoint written by "
                              "main.py: it records no architecture or class names to rebuild the model from; pass a "
                              "file from weights/ saved by this project (ImageNet backbone weights go to "
                              "--pretrained PATH)")
    if written_as != FORMAT:
        raise CheckpointError(
            f"{path} is not a checkpoint written by main.py (no '{FORMAT}' marker); "
            "pass a file from weights/ saved by this project"
        )
    broken = [f"{key!r} ({kind.__name__})" for key, kind in REQUIRED_ENTRIES.items()
              if not isinstance(state.get(key), kind)]
    if broken:
        raise CheckpointError(f"{path} lacks {', '.join(broken)} or holds another type there; {_EDITED}")
    iteration, max_iter = state["iteration"], state["max_iter"]
    if type(iteration) is not int or type(max_iter) is not int or not 0 <= iteration <= max_iter or max_iter < 1:
        raise CheckpointError(f"{path} records iteration {iteration!r} of a run of {max_iter!r} (whole numbers, "
                              f"0 <= iteration <= max_iter, max_iter >= 1); {_EDITED}")
    _check_architecture_config(path, state["config"])
    _check_unwrapped(path, state["model"])
    _check_class_names(path, state["class_names"], state["model"])
    _check_weight_types(path, state["model"])
    _check_finite_weights(path, state["model"])
    return state


def _check_architecture_config(path: Path, config: Mapping[str, Any]) -> None:
    """Refuse a checkpoint whose architecture flags (:data:`ARCHITECTURE_KEYS`, which every reader builds the model
    from) are missing or hold a value ``main.py`` refuses: an unknown version or backbone, a size that is not an
    integer multiple of ``SIZE_MULTIPLE`` (64) from ``MIN_SIZE``, an anchor size that is not a number from 1 to below
    the size."""
    version, backbone, size, anchor = (config.get(key) for key in ARCHITECTURE_KEYS)
    size_ok = type(size) is int and size >= MIN_SIZE and size % SIZE_MULTIPLE == 0
    anchor_ok = type(anchor) in (int, float) and math.isfinite(anchor) and (not size_ok or 1 <= anchor < size)
    problems = {
        "version": None if version in NECKS else f"--version {version!r}, not one of {', '.join(NECKS)}",
        "backbone": None if backbone in BACKBONES else f"--backbone {backbone!r}, not one of {', '.join(BACKBONES)}",
        "size": None if size_ok else f"--size {size!r}, not a multiple of {SIZE_MULTIPLE} from {MIN_SIZE}",
        "base_anchor_size": None if anchor_ok else (f"--base_anchor_size {anchor!r}, not from 1 to below its "
                                                    f"--size {size}"),
    }
    for key, problem in problems.items():
        if key not in config:
            raise CheckpointError(f"{path} records no --{key}; {_EDITED}")
        if problem:
            raise CheckpointError(f"{path} records {problem}; {_EDITED}")


def _check_unwrapped(path: Path, model_state: Mapping[str, Any]) -> None:
    """Refuse the weights of a wrapped model (every key with the prefix of a wrapper, :func:`wrapper_prefix`, e.g. DDP's
    ``module.``), which another script saved from the wrapper: every reader would find none of the model's keys,
    only after reading the dataset; the message says how to remove the prefix."""
    if wrapped := wrapper_prefix(model_state):
        prefix, wrapper = wrapped
        raise CheckpointError(
            f"{path} holds the weights of a model wrapped by {wrapper}: every key of 'model' starts with "
            f"{prefix!r} (e.g. {next(iter(model_state))!r}), which main.py never saves; save the unwrapped "
            f"model's state dict instead, or remove the prefix from every key: state['model'] = "
            f"{{k.removeprefix({prefix!r}): v for k, v in state['model'].items()}}")


def _check_class_names(path: Path, class_names: list, model_state: Mapping[str, Any]) -> None:
    """Refuse a class list main.py never writes (empty, a name that is not text or is blank, a name twice ignoring
    letter case, as the loaders refuse them) or of another length than the classes the classification layers
    (``head.conf.*``, ``ANCHORS_PER_CELL`` x C outputs) score."""
    not_text = [repr(name) for name in class_names if not isinstance(name, str)]
    folded = [folded_name(str(name).strip()) for name in class_names]
    twice = [name for index, name in enumerate(class_names) if folded[index] in folded[:index]]
    problem = ("an empty class list" if not class_names
               else f"class names that are not text ({preview_names(not_text, 3)})" if not_text
               else "an empty class name" if "" in folded
               else f"the class name {twice[0]!r} twice" if twice else None)
    if problem:
        raise CheckpointError(f"{path} holds {problem} in 'class_names'; {_EDITED}")
    classifier = next((key for key in sorted(model_state) if key.startswith(CLASSIFIER_PREFIX)
                       and key.endswith(".weight") and isinstance(model_state[key], torch.Tensor)), None)
    if classifier is None:
        return
    outputs = model_state[classifier].shape[0]
    if outputs != ANCHORS_PER_CELL * len(class_names):
        raise CheckpointError(
            f"{path} names {counted(len(class_names), 'class')} ({preview_names(class_names)}), but its classification "
            f"layers score {outputs / ANCHORS_PER_CELL:g} ({classifier}: {outputs} outputs, {ANCHORS_PER_CELL} anchors "
            f"per cell); {_EDITED}")


def non_finite_entries(model_state: Mapping[str, Any]) -> list[str]:
    """Names of a state dict's floating-point tensors (weights, BatchNorm statistics) that hold a NaN or an infinity;
    one host sync for all of them."""
    floats = {name: value for name, value in model_state.items()
              if isinstance(value, torch.Tensor) and value.is_floating_point()}
    if not floats:
        return []
    finite = torch.stack([value.isfinite().all() for value in floats.values()]).tolist()
    return [name for name, ok in zip(floats, finite) if not ok]


def _check_weight_types(path: Path, model_state: Mapping[str, Any]) -> None:
    """Refuse model entries that are not tensors, or not floating point (but BatchNorm's integer batch counters):
    ``load_state_dict`` would copy an integer or boolean tensor into a float weight without a word."""
    not_tensors = [name for name, value in model_state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path} holds entries in 'model' that are not tensors "
                              f"({preview_names(not_tensors, 3)}); {_EDITED}")
    not_float = [f"{name} {value.dtype}" for name, value in model_state.items()
                 if not value.is_floating_point() and not name.endswith(_BATCH_COUNTER)]
    if not_float:
        raise CheckpointError(f"{path} holds weights that are not floating point ({preview_names(not_float, 3)}); "
                              f"{_EDITED}")


def _check_finite_weights(path: Path, model_state: Mapping[str, Any]) -> None:
    """Refuse a checkpoint whose model weights or BatchNorm statistics hold NaN/inf (saved by a diverged run before
    training checked them before each save): evaluating, resuming or forking it gives no usable model."""
    bad = non_finite_entries(model_state)
    if bad:
        raise CheckpointError(f"{path} holds NaN/inf weights ({preview_names(bad, 3)}): its run had diverged when it "
                              "was saved; use an earlier checkpoint, or train again with a lower --lr or a longer "
                              "--warm_iter")


def check_optimizer_state(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """``--resume``, after ``optimizer.load_state_dict``: refuse per-parameter state (SGD's momentum buffers) of
    another shape than its parameter, or holding NaN/inf, which torch loads without a check; the first training step
    would stop with a traceback, or its loss become NaN as if the schedule diverged. Raises :class:`CheckpointError`."""
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    buffers = {f"{key} of {names.get(id(parameter), '?')}": (value, parameter)
               for parameter, state in optimizer.state.items() for key, value in state.items()
               if isinstance(value, torch.Tensor) and value.dim() > 0}
    advice = f"a damaged or edited file: resume an earlier checkpoint with --resume PATH, or {init_from_advice(path)}"
    for what, (value, parameter) in buffers.items():
        if value.shape != parameter.shape:
            raise CheckpointError(f"{path} cannot be resumed: its optimizer state does not fit the model ({what} has "
                                  f"shape {list(value.shape)}, the parameter {list(parameter.shape)}); {advice}")
    bad = non_finite_entries({what: value for what, (value, _) in buffers.items()})
    if bad:
        raise CheckpointError(f"{path} cannot be resumed: its optimizer state holds NaN/inf ({preview_names(bad, 3)}); "
                              f"{advice}")


def _flag_value(value: Any) -> str:
    """A flag's value as a user reads it: ``None`` (not given) as "none"."""
    return "none" if value is None else str(value)


def capture_rng_state() -> dict:
    """The Python, NumPy, torch CPU and CUDA generator states, as tensors and plain numbers."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python_version": py_version,
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_gauss": [] if py_gauss is None else [py_gauss],
        "numpy_name": np_name,
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`; CUDA states are restored when the device count matches."""
    gauss = state["python_gauss"][0] if state["python_gauss"] else None
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"].tolist()), gauss))
    np.random.set_state(
        (
            state["numpy_name"],
            state["numpy"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_gauss"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state["cuda"]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def check_compatible(
    path: str | os.PathLike,
    saved_config: Mapping[str, Any],
    saved_classes: list[str],
    requested: Mapping[str, Any],
    class_names: list[str],
    advice: str = "use it with the classes it was trained on",
) -> None:
    """Refuse a checkpoint whose architecture or classes differ from the requested run.

    ``requested`` maps the keys of :data:`ARCHITECTURE_KEYS` to the values given on the command line
    (``None`` = not given, which always matches); ``advice`` ends the message for other classes (what to do about
    the dataset, :func:`utils.run_data.other_classes_advice`). Raises :class:`CheckpointError` with one line.
    """
    check_architecture(path, saved_config, requested)
    if not same_classes(saved_classes, class_names):
        raise CheckpointError(
            f"{path} was trained on {counted(len(saved_classes), 'class')} ({preview_names(saved_classes)}), "
            f"but the dataset has {counted(len(class_names), 'class')} ({preview_names(class_names)}); {advice}"
        )


def check_architecture(path: str | os.PathLike, saved_config: Mapping[str, Any], requested: Mapping[str, Any]) -> None:
    """The architecture half of :func:`check_compatible`: refuse a requested architecture flag that differs from the
    checkpoint's (``None`` = not given, which always matches)."""
    for key in ARCHITECTURE_KEYS:
        wanted = requested.get(key)
        have = saved_config.get(key)
        if wanted is not None and have is not None and _differs(wanted, have):
            raise CheckpointError(
                f"{path} was trained with --{key} {have}, but --{key} {wanted} was given; "
                f"drop --{key} or pass a checkpoint trained with --{key} {wanted}"
            )


def check_init_architecture(path: str | os.PathLike, saved_config: Mapping[str, Any],
                            requested: Mapping[str, Any]) -> None:
    """``--init_from``: :func:`check_architecture` for ``--version`` and ``--backbone``; another ``--size`` fits the
    checkpoint's weights when its model has as many pyramid levels (:func:`check_pyramid_levels`); another
    ``--base_anchor_size`` changes the anchors alone, no layer, and is taken (the fine-tuning learns them); the
    checkpoint's, taken when none is given, must be below the ``--size`` given."""
    check_architecture(path, saved_config, {key: requested.get(key) for key in ("version", "backbone")})
    check_pyramid_levels(path, saved_config, requested.get("size"), "fine-tune it")
    if requested.get("base_anchor_size") is None:
        _check_anchors_below(path, saved_config, requested.get("size"), "fine-tune it",
                             f"give a --base_anchor_size below {requested.get('size')}")


def check_trained_architecture(path: str | os.PathLike, saved_config: Mapping[str, Any],
                               requested: Mapping[str, Any], use: str) -> None:
    """``--trained_model`` (its evaluation, ``--demo``, ``--export``; ``use`` says which in the message, e.g.
    "evaluate it"): :func:`check_architecture` for ``--version`` and ``--backbone``; another ``--size`` of as many
    pyramid levels runs the same weights on a larger or smaller input (:func:`check_pyramid_levels`), the anchors
    keeping their side in pixels (refused when not above the checkpoint's ``--base_anchor_size``); another
    ``--base_anchor_size`` is refused: the box offsets the model predicts are relative to the anchors it was trained
    with, so other anchors would stretch every box."""
    wanted, have = requested.get("base_anchor_size"), saved_config.get("base_anchor_size")
    if wanted is not None and have is not None and _differs(wanted, have):
        raise CheckpointError(
            f"{path} was trained with --base_anchor_size {have}, but --base_anchor_size {wanted} was given: the box "
            "offsets it predicts are relative to the anchors it was trained with, so other anchors would stretch every "
            "box (another --size keeps them: their side is in pixels); drop --base_anchor_size, or fine-tune it on "
            f"these anchors with --init_from {path} --base_anchor_size {exact_number(wanted)}")
    check_architecture(path, saved_config, {key: requested.get(key) for key in ("version", "backbone")})
    check_pyramid_levels(path, saved_config, requested.get("size"), use)
    _check_anchors_below(path, saved_config, requested.get("size"), use, "drop --size")


def _check_anchors_below(path: str | os.PathLike, saved_config: Mapping[str, Any], size: int | None, use: str,
                         other_fix: str) -> None:
    """Refuse a ``--size`` not above the ``--base_anchor_size`` the checkpoint ``path`` was trained with (taken with
    it): every anchor would cover the whole image. ``use`` and ``other_fix`` end the message."""
    have = saved_config.get("base_anchor_size")
    if size is not None and type(have) in (int, float) and not have < size:
        raise CheckpointError(f"{path} was trained with --base_anchor_size {exact_number(have)}, not below --size "
                              f"{size}: every anchor would cover the whole image; {use} at a --size above "
                              f"{exact_number(have)}, or {other_fix}")


def check_pyramid_levels(path: str | os.PathLike, saved_config: Mapping[str, Any], size: int | None,
                         use: str) -> None:
    """Refuse a ``--size`` whose model has another number of pyramid levels than the one the checkpoint ``path``
    (``saved_config``) was trained at, with that reason and the sizes that fit (``use``: what they fit for, e.g.
    "fine-tune it"); one of as many levels fits its weights: every layer's shape is the same (the head has
    :data:`models.head.ANCHORS_PER_CELL` anchors per location whatever the size). ``size`` None: not given."""
    have = saved_config.get("size")
    if size is None or type(have) is not int or num_levels(size) == num_levels(have):
        return
    gap = ("the layers of the fifth level would have no weights" if num_levels(size) > num_levels(have)
           else "its fifth level's layers would have no place")
    sizes = (f"from {MIN_SIZE} to {FIFTH_LEVEL_FROM - SIZE_MULTIPLE} (4 levels: any multiple of {SIZE_MULTIPLE} below "
             f"{FIFTH_LEVEL_FROM})" if num_levels(have) == 4
             else f"of {FIFTH_LEVEL_FROM} or more (5 levels: any multiple of {SIZE_MULTIPLE} from {FIFTH_LEVEL_FROM})")
    raise CheckpointError(f"{path} was trained with --size {have}, whose model has {num_levels(have)} pyramid levels "
                          f"(strides 8 to {level_strides(have)[-1]}), but --size {size} builds {num_levels(size)} "
                          f"(strides 8 to {level_strides(size)[-1]}): {gap}; {use} at a --size {sizes}, or "
                          "drop --size")


def other_size_note(saved_config: Mapping[str, Any], size: int) -> str:
    """For ``--trained_model``'s log lines: ``" at --size 448, not the --size 320 it was trained at (...)"`` when the
    input side ``size`` (allowed by :func:`check_trained_architecture`) differs from the checkpoint's, else ""."""
    have = saved_config.get("size")
    if have is None or not _differs(size, have):
        return ""
    return (f" at --size {size}, not the --size {have} it was trained at (the same weights on a {size} x {size} input; "
            "the anchors keep their side in pixels)")


def other_size_suffix(saved_config: Mapping[str, Any], size: int | None) -> str:
    """``"_size448"`` when the input side ``size`` differs from the one the checkpoint (``saved_config``) was trained
    at, else "" (``size`` None: not given): what ends the names of the evaluation folder, demo folder and ONNX file of
    ``--trained_model`` at another ``--size``, which then keep those at the trained size."""
    return f"_size{size}" if size is not None and other_size_note(saved_config, size) else ""


def size_suffix_of(checkpoint_path: str | os.PathLike, state: dict | None,
                   size: int | None) -> tuple[dict | None, str]:
    """``(state, suffix)`` for ``--demo`` and ``--export`` of ``--trained_model checkpoint_path``: the
    :func:`other_size_suffix` that ends their default output names at ``size``, and the checkpoint's ``state``, read
    here when a ``size`` is given and ``state`` is None (not read yet: the size it was trained at decides the
    suffix), else as given. Without ``size``, ``""``."""
    if size is not None and state is None:
        state = load_checkpoint(checkpoint_path, source="--trained_model")
    return state, "" if state is None else other_size_suffix(state["config"], size)


def changed_anchor_flags(saved_config: Mapping[str, Any], size: int, base_anchor_size: float) -> str:
    """For ``--init_from``'s log line: ``, trained with --size 320, here 512 (...)`` when this run's ``size`` or
    ``base_anchor_size`` (allowed by :func:`check_init_architecture`) differs from the checkpoint's ``saved_config``,
    else ""."""
    changed = [(flag, saved_config.get(key), now) for flag, key, now in (
        ("--size", "size", size), ("--base_anchor_size", "base_anchor_size", base_anchor_size))
        if saved_config.get(key) is not None and _differs(now, saved_config.get(key))]
    if not changed:
        return ""
    flags = " and ".join(f"{flag} {exact_number(saved)}" for flag, saved, _ in changed)
    values = " and ".join(exact_number(now) for _, _, now in changed)
    return f", trained with {flags}, here {values} (the layers are the same; the anchors are this run's)"


def check_same_run(path: str | os.PathLike, saved_config: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Refuse to resume with a schedule or data stream (:data:`RUN_KEYS`) other than the checkpoint's."""
    for key in RUN_KEYS:
        if key == "amp_dtype" and key not in saved_config:  # saved before amp_dtype was recorded: its --amp as given
            key = "amp"
        if key not in saved_config or not _differs(config.get(key), saved_config[key]):
            continue
        if key in ("train_images", "train_fingerprint"):
            change = (f"a run on {saved_config[key]} training images, this run has {config.get(key)}"
                      if key == "train_images" else "a run on other training annotations (images, boxes or labels)")
            raise CheckpointError(
                f"{path} was saved by {change}: the training set changed, so the run cannot continue exactly; "
                f"restore that set, or {init_from_advice(path)}"
            )
        if key == "world_size":
            raise CheckpointError(_other_process_count(path, saved_config[key], config.get(key)))
        saved, now = saved_config[key], config.get(key)
        flag = _RUN_KEY_NAMES.get(key, f"--{key}")
        presence = key not in _VALUED_RUN_KEYS and any(value is None or isinstance(value, bool)
                                                       for value in (saved, now))
        change = (_presence_change(key, saved, now) if presence
                  else f"with {flag} {_flag_value(saved)}, this run has {_flag_value(now)}")
        if (key == "mutual_guide" and now) or (key == "mutual_guide_from" and saved is None):
            change += "; to switch to Mutual Guidance partway, start a run with --mutual_guide --mutual_guide_from ITER"
        raise CheckpointError(
            f"{path} was saved by a run {change}; "
            f"resume with the same flags (an exact resume needs the same schedule and data order), or {_fork(path)}"
        )


def _presence_change(key: str, saved: Any, now: Any) -> str:
    """A change of a flag given or not (``--mutual_guide``, ``--mutual_guide_from``: False or None when not), as the
    flags read: "without --mutual_guide (IoU assignment), this run has --mutual_guide"."""
    def given(value: Any) -> str:
        return f"--{key}" if value is True else f"--{key} {value}"

    iou = " (IoU assignment)" if key == "mutual_guide" else ""
    if saved is None or saved is False:
        return f"without --{key}{iou}, this run has {given(now)}"
    return f"with {given(saved)}, this run has no --{key}{iou}"


def _other_process_count(path: str | os.PathLike, saved: int, now: int) -> str:
    """The refusal of a checkpoint of ``saved`` processes resumed by ``now``: the launch command that resumes it."""
    launch = "python main.py" if saved == 1 else f"torchrun --nproc_per_node={saved} main.py"
    return (f"{path} was saved by a run of {saved} process(es), this run has {now}; resume it with `{launch} ...` and "
            f"the same flags (the global batch and the data order depend on the number of processes), or "
            f"{_fork(path)}")


def check_same_length(path: str | os.PathLike, saved_max_iter: int, max_iter: int) -> None:
    """Refuse to resume a run of ``saved_max_iter`` iterations as one of ``max_iter``: the learning rate's cosine
    spans the whole run. The same length given another way (``--epochs`` instead of ``--max_iter``) continues."""
    if saved_max_iter != max_iter:
        raise CheckpointError(
            f"{path} was saved by a run of {counted(saved_max_iter, 'iteration')}, this run has {max_iter} "
            f"(--epochs or --max_iter); resume with the same run length (the learning rate's schedule spans the "
            f"run), or {_fork(path)}"
        )


def _fork(path: str | os.PathLike) -> str:
    """The advice for a checkpoint that cannot be resumed with this run's flags."""
    return f"{init_from_advice(path)} (a fresh optimizer and schedule, to train longer, say)"


def init_from_advice(path: str | os.PathLike, weights: str = "its weights") -> str:
    """The advice to start a new run from the ``weights`` of the checkpoint ``path``, the path quoted for the shell
    (one with a space, say), as in the other commands the messages give."""
    return f"start a new run from {weights} with --init_from {shlex.quote(str(path))}"


def _differs(wanted: Any, have: Any) -> bool:
    if isinstance(wanted, (int, float)) and isinstance(have, (int, float)):
        return float(wanted) != float(have)
    return str(wanted).lower() != str(have).lower()
