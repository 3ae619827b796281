"""ImageNet backbone weights: torchvision cache, local files, and the one-line errors when they are missing."""

import argparse
import os
import urllib.error

import numpy as np
import pytest
import torch
import torchvision

from models import PretrainedWeightsError, build_detector
from models.backbones import ResNet18, VGG16BN
from models.pretrained import load_backbone_weights, read_backbone_weights


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """An empty torch.hub directory: torchvision's weights API caches under <hub_dir>/checkpoints."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert torch.hub.get_dir() == str(tmp_path / "hub")
    return tmp_path / "hub"


def small_vgg16_bn_state_dict() -> dict[str, torch.Tensor]:
    """A randomly initialised torchvision vgg16_bn state dict, its classifier (dropped on load) cut to 1 value per
    tensor so the file stays small; every `features.*` tensor is the real one."""
    state = torchvision.models.vgg16_bn().state_dict()
    return {k: (v.flatten()[:1].clone() if k.startswith("classifier.") else v) for k, v in state.items()}


def assert_backbone_equals(backbone: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_resnet18_from_torchvision_cache(hub_dir):
    """pretrained=True goes through torchvision's weights API and finds the file already in its cache."""
    state = torchvision.models.resnet18().state_dict()
    (hub_dir / "checkpoints").mkdir(parents=True)
    torch.save(state, hub_dir / "checkpoints" / "resnet18-f37072fd.pth")
    model = build_detector("fssd", "resnet18", 320, num_classes=20, pretrained=True)
    assert len(model.backbone.state_dict()) == len(state) - 2  # every key but fc.weight and fc.bias
    assert_backbone_equals(model.backbone, state)


def test_vgg16_from_local_file(tmp_path):
    state = small_vgg16_bn_state_dict()
    path = tmp_path / "vgg16_bn.pth"
    torch.save(state, path)
    model = build_detector("pafpn", "vgg16", 320, num_classes=20, pretrained=str(path))
    kept = {k for k in state if not k.startswith("classifier.")}
    assert set(model.backbone.state_dict()) == kept  # every feature key up to conv5_3, unchanged names
    assert_backbone_equals(model.backbone, state)


def without_batch_counters(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` as torchvision's ImageNet files written before PyTorch 0.4 hold it (vgg16_bn-6c64b313.pth,
    resnet18-5c106cde.pth): no BatchNorm ``num_batches_tracked`` counters."""
    return {key: value for key, value in state.items() if not key.endswith("num_batches_tracked")}


@pytest.mark.parametrize("backbone, torchvision_state", [(VGG16BN, small_vgg16_bn_state_dict),
                                                         (ResNet18, lambda: torchvision.models.resnet18().state_dict())])
def test_a_file_without_batchnorm_counters_loads_with_zero_counters(tmp_path, backbone, torchvision_state):
    """PyTorch's own BatchNorm loading fills the counters such files lack; a strict key check must too. Every other
    key stays required."""
    state = without_batch_counters(torchvision_state())
    path = tmp_path / "imagenet.pth"
    torch.save(state, path)
    model = backbone()
    load_backbone_weights(model, str(path))
    counters = {key: value for key, value in model.state_dict().items() if key.endswith("num_batches_tracked")}
    assert len(counters) == {VGG16BN: 13, ResNet18: 20}[backbone]
    assert all(value.dtype == torch.long and value.item() == 0 for value in counters.values())
    for key, value in model.state_dict().items():
        assert key in counters or torch.equal(value, state[key]), key
    del state[next(key for key in state if key.endswith("running_var"))]
    torch.save(state, path)
    with pytest.raises(PretrainedWeightsError, match="missing keys \\['[a-z0-9.]*running_var'\\]"):
        load_backbone_weights(backbone(), str(path))


def test_the_cached_imagenet_file_without_batchnorm_counters_loads(hub_dir):
    """pretrained=True reads torchvision's vgg16_bn-6c64b313.pth (saved in 2017, before the counters existed)."""
    state = without_batch_counters(small_vgg16_bn_state_dict())
    (hub_dir / "checkpoints").mkdir(parents=True)
    torch.save(state, hub_dir / "checkpoints" / "vgg16_bn-6c64b313.pth")
    model = build_detector("fssd", "vgg16", 320, num_classes=20, pretrained=True)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, state[key]) if key in state else value.item() == 0, key


def test_wrapped_weights_without_batchnorm_counters_load(tmp_path, resnet18_state):
    state = without_batch_counters(resnet18_state)
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": prefixed(state, "backbone."), "epoch": 3}, path)
    weights = read_backbone_weights(str(path), ResNet18)
    assert weights.where == "its 'state_dict' entry, prefix 'backbone.' removed"
    assert all(torch.equal(weights[key], value) for key, value in state.items() if not key.startswith("fc."))


def test_resnet18_from_a_file_in_the_legacy_format(tmp_path):
    """The authors' resnet18-5c106cde.pth predates PyTorch's zip format; --pretrained reads such a file."""
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path / "resnet18-5c106cde.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert not path.read_bytes().startswith(b"PK")  # not a zip archive
    model = build_detector("fssd", "resnet18", 320, num_classes=20, pretrained=str(path))
    assert_backbone_equals(model.backbone, state)


def test_offline_download_raises_one_line_instruction(hub_dir, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(PretrainedWeightsError) as error:
        build_detector("retinanet", "vgg16", 320, num_classes=20, pretrained=True)
    message = str(error.value)
    assert "\n" not in message
    assert "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth" in message
    assert f"place that file at {hub_dir / 'checkpoints' / 'vgg16_bn-6c64b313.pth'}" in message
    assert "--pretrained PATH" in message and "--no_pretrained" in message
    assert isinstance(error.value, RuntimeError)


@pytest.mark.parametrize("damage", ["truncated", "not torch"])
def test_a_damaged_file_in_the_cache_is_one_line_naming_it(hub_dir, damage):
    """A file placed in the cache by hand (as the offline message asks) or damaged on disk is read by torchvision
    without a download; its RuntimeError or UnpicklingError escaped as a traceback."""
    cached = hub_dir / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), cached)
    data = cached.read_bytes()
    cached.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"<html>not found</html>")
    with pytest.raises(PretrainedWeightsError) as error:
        load_backbone_weights(ResNet18(), True)
    message = str(error.value)
    assert message.startswith(f"the cached ImageNet weights {cached} cannot be read (") and "\n" not in message
    assert message.endswith("): the file is damaged; delete it so that it is downloaded again, or pass --pretrained "
                            "PATH to a local state dict, or --no_pretrained to start from random weights")


def test_missing_local_file(tmp_path):
    with pytest.raises(PretrainedWeightsError, match=r"--pretrained .*missing\.pth: no such file"):
        build_detector("fssd", "resnet18", 320, num_classes=20, pretrained=tmp_path / "missing.pth")
    with pytest.raises(PretrainedWeightsError, match=rf"--pretrained {tmp_path}: a folder; give the path of a "):
        build_detector("fssd", "resnet18", 320, num_classes=20, pretrained=tmp_path)


def test_a_detector_checkpoint_is_pointed_to_init_from(tmp_path):
    path = tmp_path / "VOC_fssd.pth"
    torch.save({"model": {}, "config": {"version": "fssd"}, "class_names": ["dog"], "iteration": 10}, path)
    with pytest.raises(PretrainedWeightsError) as error:
        build_detector("fssd", "resnet18", 320, num_classes=20, pretrained=str(path))
    assert str(error.value) == (f"--pretrained {path} is a detector checkpoint (main.py saves these), not a "
                                f"backbone's ImageNet weights: start from its weights with --init_from {path}, or "
                                f"continue its run with --resume {path}")


def test_a_training_scripts_checkpoint_with_a_config_entry_is_not_called_a_detector_checkpoint(tmp_path,
                                                                                               resnet18_state):
    """{'model': weights, 'config': its settings} (as many training scripts save them) was refused as one of main.py's
    checkpoints, the user sent to --init_from, which refuses it: main.py's also name the classes ('class_names')."""
    path = tmp_path / "classifier.pth"
    torch.save({"model": resnet18_state, "config": {"arch": "resnet18", "lr": 0.1}, "epoch": 90}, path)
    read = read_backbone_weights(path, ResNet18)
    assert read.where == "its 'model' entry"
    assert all(torch.equal(read[key], resnet18_state[key]) for key in read)


@pytest.mark.parametrize("content", [b"hello, these are not weights\n", b""])
def test_a_file_that_torch_cannot_read_is_one_line_naming_it(tmp_path, content):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(PretrainedWeightsError) as error:
        build_detector("fssd", "resnet18", 320, num_classes=20, pretrained=str(path))
    message = str(error.value)
    assert message.startswith(f"--pretrained {path} is not a file saved by torch.save (")
    assert message.endswith("); give a torchvision state dict, or pass --no_pretrained") and "\n" not in message


def test_wrong_architecture_names_the_missing_keys(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    message = r"does not fit the VGG16BN backbone: missing keys \['features\.0\.bias'"
    with pytest.raises(PretrainedWeightsError, match=message):
        build_detector("fssd", "vgg16", 320, num_classes=20, pretrained=str(path))


def test_wrong_shape_is_reported(tmp_path):
    state = torchvision.models.resnet18().state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    with pytest.raises(PretrainedWeightsError, match=r"size mismatch for conv1\.weight"):
        build_detector("fssd", "resnet18", 320, num_classes=20, pretrained=str(path))


def test_no_pretrained_keeps_random_init():
    torch.manual_seed(0)
    first = ResNet18().state_dict()
    torch.manual_seed(0)
    model = build_detector("fssd", "resnet18", 320, num_classes=20, pretrained=False)
    assert_backbone_equals(model.backbone, first)


def test_backbone_urls_are_the_papers_checkpoints():
    assert VGG16BN.imagenet_weights.url == "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth"
    assert ResNet18.imagenet_weights.url.startswith("https://download.pytorch.org/models/resnet18-")


@pytest.mark.parametrize("edit, named", [
    (lambda state: state["conv1.weight"].view(-1)[:1].fill_(float("nan")), "conv1.weight"),
    (lambda state: state["bn1.running_var"].fill_(float("inf")), "bn1.running_var"),
])
def test_non_finite_weights_are_refused_naming_them(tmp_path, edit, named):
    """They were loaded, and the first step stopped the run as a divergence of the schedule ("the loss became NaN/inf
    at iteration 1 ... Start again with a lower --lr", or "a BatchNorm running statistic overflowed")."""
    state = torchvision.models.resnet18().state_dict()
    edit(state)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    with pytest.raises(PretrainedWeightsError) as error:
        load_backbone_weights(ResNet18(), str(path))
    assert str(error.value) == (f"--pretrained {path} holds NaN/inf weights ({named}): the file is damaged; download "
                                "it again, or pass --no_pretrained")


def test_non_finite_weights_in_the_cache_name_the_cached_file_to_delete(hub_dir):
    """The message named the download URL and said "download it again", but torchvision reads the cached file
    again on every run: only deleting it gets a new download."""
    state = torchvision.models.resnet18().state_dict()
    state["conv1.weight"].view(-1)[:1].fill_(float("nan"))
    cached = hub_dir / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    with pytest.raises(PretrainedWeightsError) as error:
        load_backbone_weights(ResNet18(), True)
    assert str(error.value) == (f"the cached ImageNet weights {cached} hold NaN/inf weights (conv1.weight): the file "
                                "is damaged; delete it so that it is downloaded again, or pass --no_pretrained")


def test_weights_that_are_not_floating_point_are_refused(tmp_path):
    """load_state_dict copied integer tensors into the float weights without a word: training started from
    truncated weights."""
    state = {key: value.to(torch.int32) if value.is_floating_point() else value
             for key, value in torchvision.models.resnet18().state_dict().items()}
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    with pytest.raises(PretrainedWeightsError) as error:
        load_backbone_weights(ResNet18(), str(path))
    assert str(error.value) == (f"--pretrained {path} holds weights that are not floating point (conv1.weight "
                                "torch.int32, bn1.weight torch.int32, bn1.bias torch.int32, ...): the file is damaged "
                                "or was converted; give torchvision's float weights, or pass --no_pretrained")


@pytest.mark.parametrize("zip_format", [True, False])
def test_a_file_holding_objects_beyond_tensors_is_not_offered_weights_only_false(tmp_path, zip_format):
    """torch's first line ("Weights only load failed. This file can still be loaded, to do so you have two options,
    <bold>do those steps only if you trust the source of the checkpoint<reset>.") was the reason given: advice the
    CLI cannot follow, cut before the options, with terminal escape codes. The objects torch refused are named (an
    mmdetection checkpoint's NumPy values, its message hub's HistoryBuffer), not called "not a file saved by
    torch.save"."""
    path = tmp_path / "resnet18.pth"
    torch.save({"conv1.weight": torch.zeros(1), "optimizer": torch.optim.SGD}, path,  # a class: refused by weights_only
               _use_new_zipfile_serialization=zip_format)
    with pytest.raises(PretrainedWeightsError) as error:
        load_backbone_weights(ResNet18(), str(path))
    assert str(error.value) == (f"--pretrained {path} holds objects other than tensors and plain values "
                                "(torch.optim.sgd.SGD), which are not loaded (unpickling them could run code): save "
                                "the backbone's state dict alone with torch.save and pass that file, or pass "
                                "--no_pretrained")


# a torch with get_unsafe_globals_in_checkpoint (not 2.5) lists every object a file's pickle refers to; without it,
# the refusal names the first that torch's weights-only loading met
LISTS_UNSAFE_OBJECTS = hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint")


def test_a_whole_model_saved_is_refused_naming_a_few_of_its_classes(tmp_path):
    path = tmp_path / "resnet18_model.pth"
    torch.save(torchvision.models.resnet18(), path)  # torch.save(model), not its state dict: 9 classes
    with pytest.raises(PretrainedWeightsError) as error:
        read_backbone_weights(path, ResNet18)
    named = ("torch.nn.modules.activation.ReLU, torch.nn.modules.batchnorm.BatchNorm2d, "
             "torch.nn.modules.container.Sequential, ..." if LISTS_UNSAFE_OBJECTS
             else "torchvision.models.resnet.ResNet")  # the first that torch's refusal names
    assert str(error.value) == (f"--pretrained {path} holds objects other than tensors and plain values "
                                f"({named}), which are not loaded (unpickling them "
                                "could run code): save the backbone's state dict alone with torch.save and pass that "
                                "file, or pass --no_pretrained")


def test_a_training_scripts_checkpoint_with_its_argparse_arguments_loads(tmp_path, resnet18_state):
    """timm's train.py, torchvision's references and DINO save their argparse.Namespace beside the weights
    ({'state_dict': ..., 'args': Namespace(...)}): torch's weights-only loading refused the Namespace, and such a file
    was called "not a file saved by torch.save"; a Namespace of plain values holds no code to run."""
    path = tmp_path / "checkpoint.pth"
    arguments = argparse.Namespace(model="resnet18", lr=0.1, epochs=90, output_dir="out", sched=None)
    torch.save({"model": prefixed(resnet18_state, "module."), "optimizer": {"state": {}, "param_groups": []},
                "args": arguments, "epoch": 89}, path)
    read = read_backbone_weights(path, ResNet18)
    assert read.where == "its 'model' entry, prefix 'module.' removed"
    assert all(torch.equal(read[key], resnet18_state[key]) for key in read)


def test_only_the_objects_refused_are_named_beside_a_training_scripts_arguments(tmp_path):
    path = tmp_path / "mmdet.pth"
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=0.1), "meta": {"seed": np.int64(3)}}, path)
    scalar = r"numpy\._?core\.multiarray\.scalar"
    named = scalar + r", numpy\.dtype" if LISTS_UNSAFE_OBJECTS else scalar
    with pytest.raises(PretrainedWeightsError, match=r"holds objects other than tensors and plain values "
                                                     rf"\({named}\), which"):
        read_backbone_weights(path, ResNet18)


def test_the_line_saving_one_set_of_a_timm_checkpoint_reads_its_arguments(tmp_path, resnet18_state, monkeypatch):
    """timm saves 'state_dict', 'state_dict_ema' and its argparse arguments: the line offered to save one set alone
    called torch.load, which refuses the Namespace, so that the line itself failed."""
    average = {key: value + 1 if value.is_floating_point() else value for key, value in resnet18_state.items()}
    path = tmp_path / "timm.pth"
    torch.save({"state_dict": resnet18_state, "state_dict_ema": average, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(PretrainedWeightsError) as error:
        read_backbone_weights(path, ResNet18)
    line = str(error.value).split("save that one alone, e.g. ")[1].split(", and pass that file")[0]
    assert line.startswith("import argparse; torch.serialization.add_safe_globals([argparse.Namespace]); state = ")
    monkeypatch.chdir(tmp_path)
    exec(line, {"torch": torch})  # noqa: S102 - the line the user is told to run
    saved = torch.load("resnet18_backbone.pth")
    assert all(torch.equal(saved[key], resnet18_state[key]) for key in resnet18_state)


def test_a_file_the_system_refuses_to_read_is_not_called_damaged(tmp_path, monkeypatch):
    """A file without read permission was reported as 'not a file saved by torch.save (PermissionError: ...)',
    sending the user for another copy of a file that is fine."""
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)

    def refused(file, *args, **kwargs):  # chmod 000 has no effect on root, who runs some test machines
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(torch, "load", refused)
    with pytest.raises(PretrainedWeightsError) as error:
        load_backbone_weights(ResNet18(), str(path))
    assert str(error.value) == (f"--pretrained {path}: cannot read it (Permission denied); check that the file is "
                                "readable (its permissions, the disk)")


def test_a_path_that_is_not_a_regular_file_is_not_called_missing(tmp_path):
    pipe = tmp_path / "resnet18.pth"
    os.mkfifo(pipe)
    with pytest.raises(PretrainedWeightsError) as error:
        load_backbone_weights(ResNet18(), str(pipe))
    assert str(error.value) == (f"--pretrained {pipe}: not a regular file (a pipe, a device or a socket); give the "
                                "path of a torchvision state dict (e.g. resnet18-f37072fd.pth) or pass --no_pretrained")


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + key: value for key, value in state.items()}


@pytest.fixture(scope="module")
def resnet18_state() -> dict[str, torch.Tensor]:
    """A randomly initialised torchvision resnet18 state dict, the same for every test of the module."""
    torch.manual_seed(0)
    return torchvision.models.resnet18().state_dict()


@pytest.mark.parametrize("wrap, where", [
    (lambda state: {"state_dict": state, "epoch": 90, "optimizer": {"state": {}, "param_groups": []}},
     "its 'state_dict' entry"),
    (lambda state: {"model": state, "args": {"lr": 0.1}}, "its 'model' entry"),
    (lambda state: prefixed(state, "module."), "its keys, prefix 'module.' removed"),
    (lambda state: prefixed(state, "_orig_mod."), "its keys, prefix '_orig_mod.' removed"),
    (lambda state: prefixed(state, "backbone.") | {"neck.conv.weight": torch.zeros(1)},
     "its keys, prefix 'backbone.' removed"),
    (lambda state: {"model": prefixed(state, "module.")}, "its 'model' entry, prefix 'module.' removed"),
    (lambda state: {"state_dict": prefixed(state, "module.backbone.") | {"module.neck.conv.weight": torch.zeros(1)},
                    "meta": {"epoch": 12}},
     "its 'state_dict' entry, prefix 'module.backbone.' removed"),
])
def test_weights_held_in_a_wrapper_or_under_a_prefix_load_as_the_plain_file(tmp_path, resnet18_state, wrap, where):
    """A training script's checkpoint ({'state_dict': ..., 'epoch': ...}, as torchvision's references, mmdetection
    and Lightning save it; {'model': ...}), DDP's or torch.compile's key prefix, or a larger model's state dict with
    the backbone under 'backbone.' was refused with the Python line that takes the weights out: they are now taken
    out, the same tensors as from the plain file, and the weights read say where they were."""
    plain, wrapped = tmp_path / "plain.pth", tmp_path / "wrapped.pth"
    torch.save(resnet18_state, plain)
    torch.save(wrap(resnet18_state), wrapped)
    read, read_plain = read_backbone_weights(wrapped, ResNet18), read_backbone_weights(plain, ResNet18)
    assert (read.where, read_plain.where) == (where, "")
    assert read.keys() == read_plain.keys() and all(torch.equal(read[key], read_plain[key]) for key in read)
    backbone = ResNet18()
    load_backbone_weights(backbone, str(wrapped))
    assert_backbone_equals(backbone, read_plain)


def test_a_file_holding_the_same_weights_twice_loads_them(tmp_path, resnet18_state):
    path = tmp_path / "twice.pth"
    torch.save({"state_dict": resnet18_state, "model": prefixed(resnet18_state, "module.")}, path)
    read = read_backbone_weights(path, ResNet18)
    assert read.where == "its 'state_dict' entry"
    assert all(torch.equal(read[key], resnet18_state[key]) for key in read)


def test_a_file_holding_two_different_sets_of_weights_is_refused_naming_both(tmp_path, resnet18_state):
    """A timm checkpoint holds the trained weights ('state_dict') and their moving average ('state_dict_ema'):
    which one to start from is not guessed."""
    average = {key: value + 1 if value.is_floating_point() else value for key, value in resnet18_state.items()}
    path = tmp_path / "timm.pth"
    torch.save({"epoch": 3, "state_dict": prefixed(resnet18_state, "module."), "state_dict_ema": average}, path)
    with pytest.raises(PretrainedWeightsError) as error:
        build_detector("fssd", "resnet18", 128, num_classes=2, pretrained=str(path))
    assert str(error.value) == (
        f"--pretrained {path} holds 2 different sets of the ResNet18 backbone's weights (its 'state_dict' entry, "
        "prefix 'module.' removed; its 'state_dict_ema' entry), and which one to start from is not known: save that "
        "one alone, e.g. state = {k.removeprefix('module.'): v for k, v in "
        f"torch.load('{path}')['state_dict'].items() if k.startswith('module.')}}; torch.save(state, "
        "'resnet18_backbone.pth'), and pass that file, or pass --no_pretrained")


@pytest.mark.parametrize("other", [lambda state: prefixed(state, "module."), lambda state: {"ema": state}])
def test_weights_at_the_top_level_beside_another_set_are_one_of_two_sets(tmp_path, resnet18_state, other):
    """The backbone's keys as they are beside a different set under 'module.' or in an entry: the set inside was
    loaded without a word, the top-level one passed over (the extra keys made it fail the plain file's check)."""
    average = {key: value + 1 if value.is_floating_point() else value for key, value in resnet18_state.items()}
    path = tmp_path / "two.pth"
    torch.save(resnet18_state | other(average), path)
    with pytest.raises(PretrainedWeightsError, match=r"holds 2 different sets of the ResNet18 backbone's weights "
                                                     r"\(its (keys, prefix 'module\.'|'ema' entry)[^;]*; its keys as "
                                                     r"they are\)"):
        read_backbone_weights(path, ResNet18)
    torch.save(resnet18_state | other(resnet18_state), path)  # the same tensors twice: loaded
    read = read_backbone_weights(path, ResNet18)
    assert all(torch.equal(read[key], resnet18_state[key]) for key in read)


def test_wrapped_weights_that_do_not_fit_are_refused_naming_where_they_are(tmp_path, resnet18_state):
    """A wrong shape, an extra layer or integer weights under the prefix are refused as in a plain file, the message
    naming where in the file the weights were."""
    path = tmp_path / "mmdet.pth"
    wrong_shape = resnet18_state | {"conv1.weight": torch.zeros(64, 3, 3, 3)}
    torch.save({"state_dict": prefixed(wrong_shape, "backbone.")}, path)
    with pytest.raises(PretrainedWeightsError) as error:
        load_backbone_weights(ResNet18(), str(path))
    assert str(error.value) == (
        f"--pretrained {path} (its 'state_dict' entry, prefix 'backbone.' removed) does not fit the ResNet18 backbone: "
        "size mismatch for conv1.weight: it holds shape (64, 3, 3, 3), the backbone takes shape (64, 3, 7, 7); "
        "expected the layout of torchvision's resnet18-f37072fd.pth, or pass --no_pretrained")
    torch.save({"state_dict": prefixed(resnet18_state | {"layer5.weight": torch.zeros(1)}, "backbone.")}, path)
    extra = r"\(its 'state_dict' entry, prefix 'backbone\.' removed\) does not fit the ResNet18 backbone: missing keys "
    with pytest.raises(PretrainedWeightsError, match=extra + r"\[\], unexpected keys \['layer5\.weight'\]"):
        load_backbone_weights(ResNet18(), str(path))
    integers = {key: value.to(torch.int32) for key, value in resnet18_state.items()}
    torch.save({"model": integers}, path)
    with pytest.raises(PretrainedWeightsError, match=r"^--pretrained \S+ \(its 'model' entry\) holds weights that are "
                                                     r"not floating point \(conv1\.weight torch\.int32"):
        load_backbone_weights(ResNet18(), str(path))


@pytest.mark.parametrize("content", [
    lambda state: {"state_dict": {"fc.weight": state["fc.weight"]}, "epoch": 1},
    lambda state: {"state_dict": {"features.0.weight": torch.zeros(64, 3, 3, 3), "features.0.bias": torch.zeros(64)}},
    lambda state: {"model": {key: value for key, value in state.items() if key != "bn1.bias"}},
])
def test_a_wrapper_without_the_backbones_weights_is_refused_as_before(tmp_path, resnet18_state, content):
    """No backbone weights, another architecture's, or a key missing: the weights are found nowhere, and the message
    names the file's own keys."""
    path = tmp_path / "wrapped.pth"
    saved = content(resnet18_state)
    torch.save(saved, path)
    with pytest.raises(PretrainedWeightsError) as error:
        load_backbone_weights(ResNet18(), str(path))
    assert str(error.value).startswith(f"--pretrained {path} does not fit the ResNet18 backbone: missing keys "
                                       "['bn1.bias', 'bn1.running_mean', 'bn1.running_var', ")
    assert f"unexpected keys {sorted(saved)}; expected the layout of torchvision's resnet18-f37072fd.pth" in str(
        error.value)


@pytest.mark.parametrize("zip_format", [True, False])
def test_a_torch_file_cut_short_is_called_incomplete_and_fetched_again(tmp_path, zip_format):
    """A download of resnet18-f37072fd.pth interrupted half-way was "not a file saved by torch.save", which sent the
    user looking for another format rather than downloading the file again."""
    whole, path = tmp_path / "whole.pth", tmp_path / "resnet18-f37072fd.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, whole, _use_new_zipfile_serialization=zip_format)
    path.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    with pytest.raises(PretrainedWeightsError) as error:
        build_detector("fssd", "resnet18", 128, num_classes=2, pretrained=str(path))
    message = str(error.value)
    assert message.startswith(f"--pretrained {path} is incomplete or damaged: it begins as a file torch.save wrote, "
                              "but torch cannot read it (")
    assert message.endswith("), as when a copy or download is cut short; download it again "
                            "(https://download.pytorch.org/models/resnet18-f37072fd.pth), or pass --no_pretrained")
    assert "\n" not in message
    path.write_bytes(b"PK\x03\x04 the first bytes of a zip")
    with pytest.raises(PretrainedWeightsError, match="is incomplete or damaged: it begins as a file torch.save wrote"):
        build_detector("fssd", "resnet18", 128, num_classes=2, pretrained=str(path))
