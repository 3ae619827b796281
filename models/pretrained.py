"""Loading ImageNet weights into a backbone: torchvision's weights API (and its cache) or a local file."""

import argparse
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from utils.messages import first_line, preview_names


# the prefix a wrapper of a model adds to every key of its state dict, and the wrapper: torchvision's files and
# main.py's checkpoints hold the model's own keys
WRAPPER_PREFIXES = {"module.": "DistributedDataParallel (or DataParallel)", "_orig_mod.": "torch.compile"}


def wrapper_prefix(state_dict: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(prefix, wrapper)`` of :data:`WRAPPER_PREFIXES` when every key of a non-empty ``state_dict`` carries that
    prefix (weights saved from the wrapper, not from the model), else None."""
    for prefix, wrapper in WRAPPER_PREFIXES.items():
        if state_dict and all(str(key).startswith(prefix) for key in state_dict):
            return prefix, wrapper
    return None


# the first bytes of the files torch.save writes: a zip archive's local header, or (the legacy format, e.g.
# torchvision's resnet18-5c106cde.pth) pickle protocol 2 and torch's magic number 0x1950a86a20f9469cfc6c
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


# objects that training scripts save beside the weights and that weights-only loading may build: the argparse
# arguments of timm's train.py, torchvision's references and DINO ({'state_dict': ..., 'args': Namespace(...)}), a
# plain attribute container that runs no code
SAFE_OBJECTS = [argparse.Namespace]
_SAFE_OBJECT_NAMES = {f"{kind.__module__}.{kind.__qualname__}" for kind in SAFE_OBJECTS}

# BatchNorm's batch counter, one per layer: ImageNet files saved before PyTorch 0.4 (2018) do not hold it
_BATCH_COUNTER = "num_batches_tracked"


class PretrainedWeightsError(RuntimeError):
    """The backbone weights could not be obtained or do not fit; the message is one line meant for the user."""


class BackboneWeights(dict):
    """The backbone's state dict :func:`read_backbone_weights` read from a file, and ``where`` in the file it found
    them: "" at the top level (torchvision's files), else e.g. ``"its 'state_dict' entry, prefix 'backbone.'
    removed"``."""

    def __init__(self, weights: Mapping[str, torch.Tensor], where: str) -> None:
        super().__init__(weights)
        self.where = where


def cached_weights_path(url: str) -> Path:
    """Where torchvision's weights API looks for `url`: torch.hub.get_dir()/checkpoints/<file name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def check_pretrained_file(source: str | os.PathLike, backbone_class: type[nn.Module]) -> None:
    """Raise PretrainedWeightsError (one line naming ``--pretrained``) when ``source`` is not a regular file: missing,
    a folder, a pipe. ``backbone_class`` (e.g. ``ResNet18``) names its torchvision file in the advice."""
    source = os.fspath(source)
    if not os.path.isfile(source):
        problem = ("a folder" if os.path.isdir(source) else "no such file" if not os.path.exists(source)
                   else "not a regular file (a pipe, a device or a socket)")
        raise PretrainedWeightsError(
            f"--pretrained {source}: {problem}; give the path of a torchvision state dict "
            f"(e.g. {os.path.basename(backbone_class.imagenet_weights.url)}) or pass --no_pretrained"
        )


def read_backbone_weights(source: str | os.PathLike, backbone_class: type[nn.Module]) -> BackboneWeights:
    """Read the torchvision state dict ``source`` (``--pretrained PATH``, saved with torch.save) and check that it fits
    ``backbone_class`` (e.g. ``ResNet18``) without building the backbone: every key present, with its shape, float and
    finite values; only the keys under ``backbone_class.dropped_prefixes`` may be extra, and are left out of the
    weights returned. Weights held inside a training script's checkpoint (``{'state_dict': ...}``, ``{'model': ...}``)
    and/or under a prefix (DDP's ``module.``, a larger model's ``backbone.``) are taken out, and the weights returned
    say where (:class:`BackboneWeights`); the script's arguments saved beside them (:data:`SAFE_OBJECTS`) are read.
    main.py calls it before any data is read. Raises PretrainedWeightsError, one line naming the file and the fix, for
    a file that holds no such weights: missing, unreadable, holding other objects (named), not a dict, empty, a
    detector checkpoint of main.py, another backbone's, or several different sets of them (which one to start from
    is the user's choice)."""
    source = os.fspath(source)
    check_pretrained_file(source, backbone_class)
    try:
        with torch.serialization.safe_globals(SAFE_OBJECTS):
            state_dict = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # torch's text advises weights_only=False: never for a download
        if objects := _refused_objects(source, error):
            raise PretrainedWeightsError(
                f"--pretrained {source} holds objects other than tensors and plain values "
                f"({preview_names(objects, 3)}), which are not loaded (unpickling them could run code): save the "
                "backbone's state dict alone with torch.save and pass that file, or pass --no_pretrained") from error
        raise PretrainedWeightsError(f"--pretrained {source} is not a file saved by torch.save (or it holds "
                                     "objects other than tensors and plain values, which are not loaded); give "
                                     "a torchvision state dict, or pass --no_pretrained") from error
    except OSError as error:  # the system refused the read (no permission, a disk error): the file may be fine
        if not isinstance(error, PermissionError) and _cut_short(source):  # torch seeks past a zip's end: EINVAL
            raise _cut_short_error(source, error, backbone_class) from error
        reason = error.strerror or first_line(error)
        raise PretrainedWeightsError(f"--pretrained {source}: cannot read it ({reason}); check that the file is "
                                     "readable (its permissions, the disk)") from error
    except Exception as error:  # noqa: BLE001 - any unpickling failure means "not a torch file", or one cut short
        if _cut_short(source):
            raise _cut_short_error(source, error, backbone_class) from error
        raise PretrainedWeightsError(f"--pretrained {source} is not a file saved by torch.save "
                                     f"({type(error).__name__}: {first_line(error)}); give a torchvision state "
                                     "dict, or pass --no_pretrained") from error
    file_name = os.path.basename(backbone_class.imagenet_weights.url)
    give = f"give a torchvision state dict (e.g. {file_name}), or pass --no_pretrained"
    if not isinstance(state_dict, dict):
        raise PretrainedWeightsError(f"--pretrained {source} holds a {type(state_dict).__name__}, not a state dict "
                                     f"(torch.save(model.state_dict())); {give}")
    if not state_dict:
        raise PretrainedWeightsError(f"--pretrained {source} holds no weights (an empty state dict); {give}")
    if {"model", "config", "class_names"} <= state_dict.keys():  # main.py's (other scripts' may hold a config too)
        raise PretrainedWeightsError(f"--pretrained {source} is a detector checkpoint (main.py saves these), not "
                                     f"a backbone's ImageNet weights: start from its weights with --init_from "
                                     f"{source}, or continue its run with --resume {source}")
    with torch.device("meta"):  # the backbone's keys and shapes, without allocating or initialising its weights
        layout = backbone_class().state_dict()
    where: str | None = None  # where in the file the weights are: "" at its top level, as torchvision saves them
    try:
        kept, where = _fitting_weights(state_dict, layout, backbone_class, f"--pretrained {source}"), ""
    except PretrainedWeightsError:
        found = _weights_inside(state_dict, layout)
        if not found:
            raise
    if where is None:  # held inside the file (a checkpoint's entry, a prefix): taken out, as in the one place found
        if len(found) > 1:
            holds_arguments = any(isinstance(value, argparse.Namespace) for value in state_dict.values())
            raise PretrainedWeightsError(_ambiguity(source, backbone_class, found, holds_arguments))
        entry, prefix, weights = found[0]
        where = _place(entry, prefix)
        kept = _fitting_weights(weights, layout, backbone_class, f"--pretrained {source} ({where})")
    named = f"--pretrained {source}" + (f" ({where})" if where else "")
    _check_float_weights(kept, f"{named} holds", "download it again", "give torchvision's float weights")
    return BackboneWeights(kept, where)


def _refused_objects(path: str, error: pickle.UnpicklingError) -> list[str]:
    """The objects (``module.Class``) that torch's weights-only loading of the file ``path`` refused with ``error``:
    every one, read from a zip-format file without unpickling it, else the one ``error`` names (the legacy format,
    or a torch without ``get_unsafe_globals_in_checkpoint``: 2.5);
    [] when ``error`` is about no object (a file that is no pickle)."""
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - the legacy format (ValueError), or a damaged archive: the error's own object
        found = re.findall(r"Unsupported global: GLOBAL (\S+)", str(error))[:1]
    return sorted(name for name in found if name not in _SAFE_OBJECT_NAMES)  # torch lists them in no fixed order


def _cut_short(path: str) -> bool:
    """Whether the file ``path``, which torch could not read, is one torch.save wrote but cut short (a copy or
    download that stopped): it begins as a zip archive (torch's format since 1.6) that lacks the directory a zip ends
    with, or with the legacy format's pickled magic number. False when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_LEGACY_TORCH_MAGIC))
        return (head.startswith(_ZIP_MAGIC) and not zipfile.is_zipfile(path)) or head == _LEGACY_TORCH_MAGIC
    except OSError:
        return False


def _cut_short_error(source: str, error: Exception, backbone_class: type[nn.Module]) -> PretrainedWeightsError:
    """The refusal of ``--pretrained source``, a torch file cut short (:func:`_cut_short`) that torch refused with
    ``error``: download it again (``backbone_class``'s ImageNet weights' address)."""
    return PretrainedWeightsError(
        f"--pretrained {source} is incomplete or damaged: it begins as a file torch.save wrote, but torch cannot read "
        f"it ({type(error).__name__}: {first_line(error)}), as when a copy or download is cut short; download it "
        f"again ({backbone_class.imagenet_weights.url}), or pass --no_pretrained")


def load_backbone_weights(backbone: nn.Module,
                          pretrained: bool | str | os.PathLike | Mapping[str, torch.Tensor] | None) -> None:
    """Fill `backbone` with ImageNet weights, in place.

    pretrained: True = the backbone's torchvision ImageNet weights (downloaded once into torch.hub's cache);
    a path = a torchvision-format state dict saved with torch.save (:func:`read_backbone_weights`); a mapping = the
    weights :func:`read_backbone_weights` returned; False/None = keep the random init.
    Every backbone key must be present with its shape (strict); only the keys under `backbone.dropped_prefixes` may be
    extra. Raises PretrainedWeightsError with a one-line message on a failed download, a missing file or a mismatch.
    """
    if pretrained is None or pretrained is False:
        return
    if pretrained is True:
        weights = backbone.imagenet_weights
        instead = "--pretrained PATH to a local state dict, or --no_pretrained to start from random weights"
        try:
            state_dict = weights.get_state_dict(progress=True, map_location="cpu")
        except OSError as error:  # URLError, HTTPError, timeouts, no network
            raise PretrainedWeightsError(
                f"cannot download the ImageNet weights {weights.url} ({error}); place that file at "
                f"{cached_weights_path(weights.url)}, or pass {instead}"
            ) from error
        except Exception as error:  # noqa: BLE001 - a cached file (placed by hand, or damaged) torch cannot load
            raise PretrainedWeightsError(
                f"the cached ImageNet weights {cached_weights_path(weights.url)} cannot be read "
                f"({type(error).__name__}: {first_line(error)}): the file is damaged; delete it so that it is "
                f"downloaded again, or pass {instead}"
            ) from error
        kept = _fitting_weights(state_dict, backbone.state_dict(), type(backbone), weights.url)
        # torchvision reads the cached file again on every run: only deleting it downloads anew
        redownload = "delete it so that it is downloaded again"
        _check_float_weights(kept, f"the cached ImageNet weights {cached_weights_path(weights.url)} hold", redownload,
                             redownload)
    elif isinstance(pretrained, Mapping):
        kept = _fitting_weights(pretrained, backbone.state_dict(), type(backbone), "the backbone weights given")
    else:
        kept = read_backbone_weights(pretrained, type(backbone))
    backbone.load_state_dict(kept, strict=True)


def _fitting_weights(state_dict: Mapping[str, Any], layout: Mapping[str, torch.Tensor], backbone_class: type[nn.Module],
                     source: str) -> dict[str, Any]:
    """The entries of ``state_dict`` that ``backbone_class`` loads (those under its ``dropped_prefixes`` left out),
    checked against its ``layout`` (its state dict, on any device): the same keys, each a tensor of its shape.
    ``source`` names the weights in the PretrainedWeightsError."""
    kept = {k: v for k, v in state_dict.items() if not str(k).startswith(backbone_class.dropped_prefixes)}
    for key in layout.keys() - kept.keys():  # absent from files saved before PyTorch 0.4 (vgg16_bn-6c64b313.pth)
        if key.endswith(_BATCH_COUNTER):
            kept[key] = torch.tensor(0, dtype=torch.long)  # what BatchNorm's own loading fills in for them
    missing, unexpected = sorted(layout.keys() - kept.keys()), sorted(kept.keys() - layout.keys(), key=str)
    if missing or unexpected:
        raise PretrainedWeightsError(
            f"{source} does not fit the {backbone_class.__name__} backbone: missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]}; expected the layout of torchvision's "
            f"{os.path.basename(backbone_class.imagenet_weights.url)}, or pass --no_pretrained"
        )
    for key, expected in layout.items():
        found = kept[key]
        if not isinstance(found, torch.Tensor) or found.shape != expected.shape:
            held = f"shape {tuple(found.shape)}" if isinstance(found, torch.Tensor) else f"a {type(found).__name__}"
            raise PretrainedWeightsError(
                f"{source} does not fit the {backbone_class.__name__} backbone: size mismatch for {key}: it holds "
                f"{held}, the backbone takes shape {tuple(expected.shape)}; expected the layout of torchvision's "
                f"{os.path.basename(backbone_class.imagenet_weights.url)}, or pass --no_pretrained")
    return kept


def _weights_inside(state_dict: Mapping[str, Any],
                    layout: Mapping[str, Any]) -> list[tuple[str | None, str, dict[str, Any]]]:
    """Where ``state_dict`` holds every key of the backbone's ``layout`` other than as it is: ``(entry, prefix,
    weights)`` for each set found under the ``entry`` of a training script's checkpoint (``{"state_dict": ...,
    "epoch": ...}``; None: at the top level) and/or with each key starting with ``prefix`` (a wrapper's ``"module."``,
    a larger model's ``"backbone."``, both: ``"module.backbone."``; "" for none), ``weights`` holding the keys under
    ``prefix`` without it. Sets of the same tensors (a file that holds them twice) are listed once; [] when it holds
    them nowhere. Keys as they are at the top level (which failed the plain file's check for the keys beside them)
    are listed last, ``(None, "", state_dict)``, when they are a set other than one found: which to load is then not
    known."""
    anchor = next(iter(layout))  # e.g. "conv1.weight": each key ending with it gives a prefix to try
    held_in = [(None, state_dict)] + [(key, value) for key, value in state_dict.items() if isinstance(value, Mapping)]
    found: list[tuple[str | None, str, dict[str, Any]]] = []
    for entry, held in held_in:
        keys = [key for key in held if isinstance(key, str)]
        for prefix in dict.fromkeys(key.removesuffix(anchor) for key in keys if key.endswith(anchor)):
            if ((entry, prefix) == (None, "") or (prefix and not prefix.endswith("."))
                    or not all(prefix + key in held for key in layout if not key.endswith(_BATCH_COUNTER))):
                continue
            weights = {key.removeprefix(prefix): held[key] for key in keys if key.startswith(prefix)}
            if not any(_same_tensors(weights, other, layout) for _, _, other in found):
                found.append((entry, prefix, weights))
    top_level = all(key in state_dict for key in layout if not key.endswith(_BATCH_COUNTER))
    if found and top_level and not any(_same_tensors(state_dict, other, layout) for _, _, other in found):
        found.append((None, "", dict(state_dict)))
    return found


def _same_tensors(weights: Mapping[str, Any], other: Mapping[str, Any], layout: Mapping[str, Any]) -> bool:
    """Whether ``weights`` and ``other`` hold equal tensors (shape and values) at every key of ``layout`` (a BatchNorm
    counter that neither holds aside)."""
    return all(isinstance(weights.get(key), torch.Tensor) and isinstance(other.get(key), torch.Tensor)
               and torch.equal(weights[key], other[key]) for key in layout
               if not key.endswith(_BATCH_COUNTER) or key in weights or key in other)


def _place(entry: str | None, prefix: str) -> str:
    """Where :func:`_weights_inside` found weights, for the log and the errors: ``"its 'state_dict' entry, prefix
    'backbone.' removed"``."""
    if (entry, prefix) == (None, ""):
        return "its keys as they are"
    held = "its keys" if entry is None else f"its {entry!r} entry"
    return held + (f", prefix {prefix!r} removed" if prefix else "")


def _ambiguity(source: str, backbone_class: type[nn.Module], found: list[tuple[str | None, str, dict[str, Any]]],
               holds_arguments: bool) -> str:
    """The refusal of ``--pretrained source``, which holds several different sets of ``backbone_class``'s weights
    (:func:`_weights_inside`, e.g. a checkpoint's ``'state_dict'`` and its exponential moving average's
    ``'state_dict_ema'``): which to start from is the user's choice, with the Python line that saves the first alone
    (allowing the argparse.Namespace of a training script's arguments, ``holds_arguments``, which torch.load refuses
    by default)."""
    entry, prefix, _ = found[0]
    allow = "import argparse; torch.serialization.add_safe_globals([argparse.Namespace]); " if holds_arguments else ""
    loaded = f"torch.load({source!r})" + (f"[{entry!r}]" if entry is not None else "")
    state = (f"{{k.removeprefix({prefix!r}): v for k, v in {loaded}.items() if k.startswith({prefix!r})}}" if prefix
             else loaded)
    places = "; ".join(_place(entry, prefix) for entry, prefix, _ in found)
    name = backbone_class.__name__
    return (f"--pretrained {source} holds {len(found)} different sets of the {name} backbone's weights ({places}), "
            f"and which one to start from is not known: save that one alone, e.g. {allow}state = {state}; "
            f"torch.save(state, '{name.lower()}_backbone.pth'), and pass that file, or pass --no_pretrained")


def _check_float_weights(state_dict: dict[str, torch.Tensor], file_holds: str, fix_damaged: str,
                         fix_converted: str) -> None:
    """Refuse tensors that are not floating point (BatchNorm's batch counters aside), which load_state_dict would
    copy into the float weights without a word, and NaN/inf values, which the first training step would report as a
    divergence of the schedule. ``file_holds`` names the file (``"--pretrained W holds"``); ``fix_damaged`` and
    ``fix_converted`` say what to do about NaN/inf and about other types."""
    tensors = {key: value for key, value in state_dict.items() if isinstance(value, torch.Tensor)}
    not_float = [f"{key} {value.dtype}" for key, value in tensors.items()
                 if not value.is_floating_point() and not key.endswith(_BATCH_COUNTER)]
    if not_float:
        raise PretrainedWeightsError(f"{file_holds} weights that are not floating point "
                                     f"({preview_names(not_float, 3)}): the file is damaged or was converted; "
                                     f"{fix_converted}, or pass --no_pretrained")
    non_finite = [key for key, value in tensors.items() if value.is_floating_point() and not value.isfinite().all()]
    if non_finite:
        raise PretrainedWeightsError(f"{file_holds} NaN/inf weights ({preview_names(non_finite, 3)}): the file is "
                                     f"damaged; {fix_damaged}, or pass --no_pretrained")
