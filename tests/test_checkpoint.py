import errno
import os
import pickle
import random
import re
import time
import warnings

import numpy as np
import pytest
import torch

from utils import checkpoint as ckpt
from utils.checkpoint import (
    FORMAT,
    CheckpointError,
    capture_rng_state,
    check_compatible,
    check_init_architecture,
    check_optimizer_state,
    check_same_length,
    check_same_run,
    check_trained_architecture,
    check_writable_folder,
    checkpoint_name,
    load_checkpoint,
    remove_partial_checkpoints,
    restore_rng_state,
    save_checkpoint,
    set_aside_earlier_checkpoint,
)


def test_checkpoint_name_matches_the_original():
    assert checkpoint_name("voc", "pafpn", "vgg16", 320, 24, True) == "VOC_pafpn_vgg16_size320_anchor24.0_MG.pth"
    assert (checkpoint_name("Shapes", "fssd", "resnet18", 256, 24.0, False)
            == "SHAPES_fssd_resnet18_size256_anchor24.0.pth")


ARCHITECTURE = {"version": "fssd", "backbone": "resnet18", "size": 128, "base_anchor_size": 24.0}


def _state(value: float) -> dict:
    return {"format": FORMAT, "model": {"w": torch.full((2, 2), value)}, "iteration": 7, "max_iter": 9,
            "config": ARCHITECTURE | {"lr": 0.01}, "class_names": ["cat"]}


def test_save_and_load_roundtrip_with_weights_only(tmp_path):
    path = tmp_path / "sub" / "run.pth"
    save_checkpoint(_state(3.0) | {"rng": capture_rng_state()}, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.pth"]  # no temporary file left behind
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["model"]["w"], torch.full((2, 2), 3.0))
    state = load_checkpoint(path)
    assert sorted(state) == ["class_names", "config", "format", "iteration", "max_iter", "model", "rng"]
    assert {key: state[key] for key in ("format", "iteration", "max_iter", "config", "class_names")} == {
        "format": FORMAT, "iteration": 7, "max_iter": 9, "config": ARCHITECTURE | {"lr": 0.01}, "class_names": ["cat"]}
    assert torch.equal(state["model"]["w"], torch.full((2, 2), 3.0))


def test_a_full_disk_inside_torchs_zip_writer_is_the_os_error_naming_the_file(tmp_path, monkeypatch):
    """torch.save's zip writer meets ENOSPC while writing, then raises a RuntimeError when it closes."""
    path = tmp_path / "run.pth"

    def full_disk(obj, handle):
        try:
            handle.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        finally:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 77961728 vs 77961616")

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    with pytest.raises(OSError) as failed:
        save_checkpoint(_state(2.0), path)
    assert (failed.value.errno, failed.value.filename) == (errno.ENOSPC, str(path))
    assert failed.value.strerror == "No space left on device; no checkpoint is there yet"
    assert list(tmp_path.iterdir()) == []  # the partial temporary file is removed

    def other_failure(obj, handle):
        raise RuntimeError("a bug, not the disk")

    monkeypatch.setattr(ckpt.torch, "save", other_failure)
    with pytest.raises(RuntimeError, match="a bug, not the disk"):
        save_checkpoint(_state(2.0), path)


def test_a_second_ctrl_c_inside_torchs_zip_writer_stays_an_interrupt(tmp_path, monkeypatch):
    """Ctrl-C while torch.save writes: its zip writer, closing, raises a RuntimeError ("unexpected pos") with the
    KeyboardInterrupt as its context. The interrupt goes on as itself, the earlier checkpoint is untouched."""
    path = tmp_path / "run.pth"
    save_checkpoint(_state(1.0), path)
    real_save = torch.save

    class InterruptedFile:
        """The checkpoint's file, where a Ctrl-C arrives during the third write."""

        def __init__(self, handle):
            self.handle, self.writes = handle, 0

        def write(self, data):
            self.writes += 1
            if self.writes == 3:
                raise KeyboardInterrupt
            return self.handle.write(data)

        def flush(self):
            self.handle.flush()

    monkeypatch.setattr(ckpt.torch, "save", lambda obj, handle: real_save(obj, InterruptedFile(handle)))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_state(2.0) | {"big": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pth"]  # the partial temporary file is removed
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((2, 2), 1.0))


def test_partial_files_of_a_killed_save_are_removed_and_nothing_else(tmp_path):
    path = tmp_path / "run [seed 1].pth"  # glob characters in the name match only themselves
    save_checkpoint(_state(1.0), path)
    partial = [tmp_path / ".run [seed 1].pth.tmp4242", tmp_path / ".run [seed 1].pth.tmp7"]
    kept = [tmp_path / ".run [seed 1].pth.tmpfile", tmp_path / ".run s.pth.tmp5", tmp_path / ".other.pth.tmp5"]
    for leftover in partial + kept:
        leftover.write_bytes(b"partial")
    assert remove_partial_checkpoints(path) == sorted(partial)
    assert sorted(tmp_path.iterdir()) == sorted([path, *kept])
    assert remove_partial_checkpoints(tmp_path / "none.pth") == []


def test_a_missing_checkpoint_whose_first_save_was_cut_short_says_to_train_again(tmp_path):
    """A run killed (SIGKILL, the OOM killer) while writing its first checkpoint leaves only the partial file: its
    `--resume` was told to check the flags it gave, which were right; nothing can be resumed, the run starts again."""
    path = tmp_path / "run.pth"
    partial = tmp_path / ".run.pth.tmp4242"
    partial.write_bytes(b"PK half a checkpoint")
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path, source="--resume without PATH, which reads this run's checkpoint")
    assert str(refused.value) == (
        f"checkpoint {path} does not exist, only the partial file of a save that was cut short ({partial}): there is "
        "no checkpoint of its run to read; train it again with the run's command without --resume (which removes "
        "that file)")
    partial.unlink()
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {path} does not exist; check --trained_model")):
        load_checkpoint(path, source="--trained_model")


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "run.pth"
    save_checkpoint(_state(1.0), path)

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(OSError) as failed:
        save_checkpoint(_state(2.0), path)
    assert failed.value.errno == errno.ENOSPC and failed.value.filename == str(path)
    assert failed.value.strerror == f"No space left on device; the checkpoint already at {path} is untouched"
    first = tmp_path / "first.pth"
    with pytest.raises(OSError, match=re.escape("No space left on device; no checkpoint is there yet")):
        save_checkpoint(_state(2.0), first)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((2, 2), 1.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pth"]


def test_load_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pth does not exist; check --init_from$"):
        load_checkpoint(tmp_path / "nope.pth", source="--init_from")
    foreign = tmp_path / "foreign.pth"
    torch.save({"conv.weight": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match="not a checkpoint written by main.py"):
        load_checkpoint(foreign)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(garbage)
    text = tmp_path / "README.md"
    text.write_text("# not a checkpoint\n")
    with pytest.raises(CheckpointError) as error:  # torch.load refuses it (weights_only=True)
        load_checkpoint(text)
    assert str(error.value) == (f"cannot read checkpoint {text}: it is not a file torch.save wrote, or holds objects "
                                "other than tensors and plain values; pass a .pth file saved by main.py")
    pickled = tmp_path / "pickled.pth"
    torch.save({"format": "x", "optimizer": torch.optim.SGD}, pickled)  # a class: refused by weights_only
    with pytest.raises(CheckpointError, match="holds objects other than tensors"):
        load_checkpoint(pickled)


def test_an_empty_file_is_named_as_such(tmp_path):
    """A 0-byte file (an interrupted copy or download, a touch) was "cannot read checkpoint X (EOFError)"."""
    empty = tmp_path / "run.pth"
    empty.touch()
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(empty, source="--trained_model")
    assert str(error.value) == (f"checkpoint {empty} is empty (0 bytes): a copy or download of it that did not "
                                "complete, not a file main.py saved (it writes its checkpoints whole); pass the "
                                ".pth file main.py saved")


def test_a_plain_pickle_file_is_refused_in_one_line_without_torchs_warning(tmp_path):
    """pickle.dump's file (protocol 4, Python's default) made torch.load warn first, on stderr, that it "detected
    pickle protocol 4" and to "please file an issue", before the refusal: two lines of noise naming torch's code."""
    path = tmp_path / "stats.pth"
    path.write_bytes(pickle.dumps({"lr": 0.01}, protocol=4))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError) as error:
            load_checkpoint(path)
    assert [str(warning.message) for warning in seen] == []
    assert str(error.value) == (f"cannot read checkpoint {path}: it is not a file torch.save wrote, or holds objects "
                                "other than tensors and plain values; pass a .pth file saved by main.py")


def test_load_of_a_file_without_read_permission_names_the_permission(tmp_path, monkeypatch):
    path = tmp_path / "run.pth"
    save_checkpoint({"format": FORMAT, "model": {}}, path)

    def refused(file, *args, **kwargs):  # chmod 000 has no effect on root, who runs some test machines
        raise PermissionError(errno.EACCES, "Permission denied", str(file))

    monkeypatch.setattr(torch, "load", refused)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert str(error.value) == (f"cannot read checkpoint {path} (Permission denied); check that the file is readable "
                                "(its permissions, the disk)")


def test_load_names_a_folder_and_a_hand_edited_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder; pass the .pth file inside it"):
        load_checkpoint(tmp_path)
    for edit, named in ((lambda state: state.pop("config"), r"'config' \(dict\)"),
                        (lambda state: state.update(class_names="cat"), r"'class_names' \(list\)")):
        state = _state(1.0)
        edit(state)
        save_checkpoint(state, tmp_path / "edited.pth")
        with pytest.raises(CheckpointError, match=rf"edited\.pth lacks {named} or holds another type"):
            load_checkpoint(tmp_path / "edited.pth")


def test_load_refuses_a_checkpoint_with_non_finite_weights(tmp_path):
    """What a diverged run saved before training checked the weights (e.g. inf BatchNorm running variances at
    --lr 100) is refused by --trained_model, --resume and --init_from alike, naming the tensors."""
    state = _state(1.0)
    state["model"] |= {"bn.running_var": torch.tensor([1.0, float("inf")]), "bn.num_batches_tracked": torch.tensor(3),
                       "head.bias": torch.tensor([float("nan")])}
    save_checkpoint(state, tmp_path / "diverged.pth")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "diverged.pth")
    assert str(error.value) == (f"{tmp_path / 'diverged.pth'} holds NaN/inf weights (bn.running_var, head.bias): its "
                                "run had diverged when it was saved; use an earlier checkpoint, or train again with a "
                                "lower --lr or a longer --warm_iter")


def test_an_earlier_checkpoint_is_set_aside_under_its_save_time(tmp_path):
    path = tmp_path / "VOC_fssd_vgg16_size320_anchor24.0.pth"
    assert set_aside_earlier_checkpoint(path) is None
    saved_at = 1_790_000_000  # 2026-09-21 UTC
    for value in (1.0, 2.0):
        save_checkpoint(_state(value), path)
        os.utime(path, (saved_at, saved_at))
        kept = set_aside_earlier_checkpoint(path)
        assert not path.exists() and torch.equal(load_checkpoint(kept)["model"]["w"], torch.full((2, 2), value))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(saved_at))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"VOC_fssd_vgg16_size320_anchor24.0.earlier-{stamp}-2.pth",
        f"VOC_fssd_vgg16_size320_anchor24.0.earlier-{stamp}.pth",
    ]


def test_an_unwritable_folder_is_named_with_its_flag(tmp_path):
    check_writable_folder(tmp_path / "new" / "weights", "--save_folder")  # checked, not created (nor any probe left)
    check_writable_folder(tmp_path, "--save_folder")
    assert not any(tmp_path.iterdir())
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match=r"--save_folder .*afile/sub: cannot write there \(.*afile is a file\); "
                                         r"give a writable folder"):
        check_writable_folder(tmp_path / "afile" / "sub", "--save_folder")
    with pytest.raises(ValueError, match=r"--eval_dir .*afile: cannot write there"):
        check_writable_folder(tmp_path / "afile", "--eval_dir")


def test_a_folder_that_is_a_broken_symbolic_link_is_refused_at_the_check(tmp_path):
    """A link to a folder that is gone (a scratch disk cleaned or not mounted) passed the check, which walked up to
    the link's writable parent, and the final evaluation then failed to create it with 'File exists'."""
    (tmp_path / "eval").symlink_to(tmp_path / "scratch" / "eval")
    for folder in (tmp_path / "eval", tmp_path / "eval" / "CUSTOM"):
        with pytest.raises(ValueError, match=rf"--eval_dir {re.escape(str(folder))}: cannot write there \("
                                             rf"{re.escape(str(tmp_path / 'eval'))} is a symbolic link to "
                                             rf"{re.escape(str(tmp_path / 'scratch' / 'eval'))}, which does not exist"
                                             r"\); create that folder or give another one"):
            check_writable_folder(folder, "--eval_dir")
    (tmp_path / "scratch" / "eval").mkdir(parents=True)
    check_writable_folder(tmp_path / "eval" / "CUSTOM", "--eval_dir")


def test_rng_state_roundtrip_through_a_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached Gaussian in the NumPy state
    random.gauss(0.0, 1.0)  # and one in Python's (random.gauss draws two at a time)
    path = tmp_path / "rng.pth"
    save_checkpoint(_state(0.0) | {"rng": capture_rng_state()}, path)
    expected = (random.gauss(0.0, 1.0), random.random(), np.random.randn(), np.random.rand(), torch.rand(3))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    random.gauss(0.0, 1.0)  # another cached Gaussian, which the restore must replace
    restore_rng_state(load_checkpoint(path)["rng"])
    got = (random.gauss(0.0, 1.0), random.random(), np.random.randn(), np.random.rand(), torch.rand(3))
    assert got[:4] == expected[:4]
    assert torch.equal(got[4], expected[4])


def test_check_compatible_names_the_flag_and_the_fix():
    saved = {"version": "pafpn", "backbone": "vgg16", "size": 320, "base_anchor_size": 24.0}
    classes = ["circle", "square"]
    check_compatible("w.pth", saved, classes, {"version": None, "backbone": "VGG16", "size": 320}, classes)
    with pytest.raises(CheckpointError) as info:
        check_compatible("w.pth", saved, classes, {"backbone": "resnet18"}, classes)
    assert str(info.value) == (
        "w.pth was trained with --backbone vgg16, but --backbone resnet18 was given; "
        "drop --backbone or pass a checkpoint trained with --backbone resnet18"
    )
    with pytest.raises(CheckpointError, match="--size 320, but --size 512"):
        check_compatible("w.pth", saved, classes, {"size": 512}, classes)
    with pytest.raises(CheckpointError,
                       match=r"trained on 2 classes \(circle, square\), but the dataset has 1 class \("):
        check_compatible("w.pth", saved, classes, {}, ["circle"])
    check_compatible("w.pth", saved, classes, {}, ["Circle", "SQUARE"])  # the VOC loader ignores letter case
    with pytest.raises(CheckpointError, match=r"trained on 2 classes \(circle, square\), but the dataset has 2 "):
        check_compatible("w.pth", saved, classes, {}, ["square", "circle"])  # the order is the labels


def test_a_checkpoint_saved_with_a_decomposed_accent_has_the_composed_class(tmp_path):
    """The loaders read class names composed (NFC) since a name written with a combining accent (NFD, as a macOS file
    system keeps a class file's text) stopped matching its XML's; a checkpoint saved before holds the decomposed name,
    which --resume, --init_from and --trained_model compared by letter case only, refusing the run's own classes."""
    path = tmp_path / "nfd.pth"
    save_checkpoint(_state(1.0) | {"class_names": ["Cafe\u0301", "dog"]}, path)
    state = load_checkpoint(path)
    assert state["class_names"] == ["Cafe\u0301", "dog"]
    check_compatible(path, state["config"], state["class_names"], {}, ["caf\u00e9", "dog"])
    with pytest.raises(CheckpointError, match=r"trained on 2 classes \(Cafe\u0301, dog\), but the dataset has 2 "):
        check_compatible(path, state["config"], state["class_names"], {}, ["cafe", "dog"])  # no accent: another name


def test_check_same_run_refuses_a_changed_schedule():
    saved = {"dataset": "shapes", "batch_size": 8, "lr": 0.01, "world_size": 1, "mutual_guide": True}
    check_same_run("w.pth", saved, dict(saved))
    with pytest.raises(CheckpointError, match="with --batch_size 8, this run has 16; resume with the same flags"):
        check_same_run("w.pth", saved, saved | {"batch_size": 16})
    with pytest.raises(CheckpointError, match=r"or start a new run from its weights with --init_from w\.pth \(a fresh "
                                              r"optimizer and schedule, to train longer, say\)$"):
        check_same_run("w.pth", saved | {"lr": 0.01}, saved | {"lr": 0.02})
    with pytest.raises(CheckpointError, match=r"saved by a run of 1 process\(es\), this run has 2; resume it with "
                                              "`python main.py ...` and the same flags"):
        check_same_run("w.pth", saved, saved | {"world_size": 2})
    with pytest.raises(CheckpointError, match=r"run of 2 process\(es\), this run has 3; resume it with "
                                              "`torchrun --nproc_per_node=2 main.py ...`"):
        check_same_run("w.pth", saved | {"world_size": 2}, saved | {"world_size": 3})
    saved |= {"expand_prob": 0.6, "mutual_guide_from": None, "amp": None, "amp_dtype": None}
    with pytest.raises(CheckpointError, match="with --expand_prob 0.6, this run has 0.0; resume"):
        check_same_run("w.pth", saved, saved | {"expand_prob": 0.0})
    # a flag given or not reads as such ("--mutual_guide False, this run has True" and "--mutual_guide_from none" were
    # no flags to give), and the assignment's refusal says how a run switches to Mutual Guidance partway
    switch = "; to switch to Mutual Guidance partway, start a run with --mutual_guide --mutual_guide_from ITER"
    with pytest.raises(CheckpointError, match=r"^w\.pth was saved by a run without --mutual_guide_from, this run has "
                                              f"--mutual_guide_from 500{switch}; resume with the same flags"):
        check_same_run("w.pth", saved, saved | {"mutual_guide_from": 500})
    with pytest.raises(CheckpointError, match=r"with --mutual_guide_from 2, this run has 3; resume with"):
        check_same_run("w.pth", saved | {"mutual_guide_from": 2}, saved | {"mutual_guide_from": 3})
    with pytest.raises(CheckpointError, match=r"^w\.pth was saved by a run without --mutual_guide \(IoU assignment\), "
                                              f"this run has --mutual_guide{switch}; resume with the same flags"):
        check_same_run("w.pth", saved | {"mutual_guide": False}, saved)
    with pytest.raises(CheckpointError, match=r"^w\.pth was saved by a run with --mutual_guide, this run has no "
                                              r"--mutual_guide \(IoU assignment\); resume with the same flags"):
        check_same_run("w.pth", saved, saved | {"mutual_guide": False})
    with pytest.raises(CheckpointError, match=r"with mixed precision \(--amp\) none, this run has bf16"):  # not None
        check_same_run("w.pth", saved, saved | {"amp": "bf16", "amp_dtype": "bf16"})
    # the precision is compared, not the spelling: bare --amp ("auto") chose bf16 here, as --amp bf16 does
    check_same_run("w.pth", saved | {"amp": "auto", "amp_dtype": "bf16"}, saved | {"amp": "bf16", "amp_dtype": "bf16"})
    with pytest.raises(CheckpointError, match=r"with mixed precision \(--amp\) fp16, this run has bf16"):
        check_same_run("w.pth", saved | {"amp": "auto", "amp_dtype": "fp16"},
                       saved | {"amp": "auto", "amp_dtype": "bf16"})
    # a checkpoint from before amp_dtype was recorded: its --amp as given is compared, as it was then
    legacy = {key: value for key, value in saved.items() if key != "amp_dtype"}
    with pytest.raises(CheckpointError, match=r"with --amp fp16, this run has none"):
        check_same_run("w.pth", legacy | {"amp": "fp16"}, saved)
    check_same_run("w.pth", legacy | {"amp": "bf16"}, saved | {"amp": "bf16", "amp_dtype": "bf16"})
    check_same_run("w.pth", saved, saved | {"data_root": "/moved/datasets", "workers": 8})
    saved["train_images"] = 8
    with pytest.raises(CheckpointError, match=r"run on 8 training images, this run has 16: "
                                              r"the training set changed, .* "
                                              r"start a new run from its weights with --init_from w\.pth"):
        check_same_run("w.pth", saved, saved | {"train_images": 16})
    saved["train_fingerprint"] = "0123456789abcdef"
    with pytest.raises(CheckpointError, match=r"saved by a run on other training annotations "
                                              r"\(images, boxes or labels\): "
                                              "the training set changed"):
        check_same_run("w.pth", saved, saved | {"train_fingerprint": "fedcba9876543210"})


def test_three_earlier_checkpoints_of_one_second_keep_three_files(tmp_path):
    path = tmp_path / "VOC_fssd_vgg16_size320_anchor24.0.pth"
    saved_at = 1_790_000_000
    for value in (1.0, 2.0, 3.0):
        save_checkpoint(_state(value), path)
        os.utime(path, (saved_at, saved_at))
        set_aside_earlier_checkpoint(path)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(saved_at))
    kept = {suffix: load_checkpoint(tmp_path / f"VOC_fssd_vgg16_size320_anchor24.0.earlier-{stamp}{suffix}.pth")
            for suffix in ("", "-2", "-3")}
    assert ({suffix: state["model"]["w"][0, 0].item() for suffix, state in kept.items()}
            == {"": 1.0, "-2": 2.0, "-3": 3.0})
    assert len(list(tmp_path.iterdir())) == 3


@pytest.mark.parametrize("key, saved_value, new_value, change", [
    ("dataset", "shapes", "voc", "with --dataset shapes, this run has voc"),
    ("mutual_guide", True, False, r"with --mutual_guide, this run has no --mutual_guide \(IoU assignment\)"),
    ("lr", 0.01, 0.011, "with --lr 0.01, this run has 0.011"),
    ("warm_iter", 500, 50, "with --warm_iter 500, this run has 50"),
    ("seed", 0, 1, "with --seed 0, this run has 1"),  # 0 and 1 are no False and True
    ("expand_prob", 0.0, 1.0, "with --expand_prob 0.0, this run has 1.0"),
])  # fmt: skip
def test_check_same_run_refuses_each_changed_schedule_and_data_order_flag(key, saved_value, new_value, change):
    saved = {"dataset": "shapes", "mutual_guide": True, "lr": 0.01, "warm_iter": 500, "epochs": 250, "max_iter": 1000,
             "seed": 0, "batch_size": 8, "world_size": 1, "expand_prob": 0.0}
    check_same_run("w.pth", saved, dict(saved))
    with pytest.raises(CheckpointError, match=f"{change}; resume"):
        check_same_run("w.pth", saved, saved | {key: new_value})


def test_check_same_length_compares_iterations_however_given():
    check_same_length("w.pth", 1000, 1000)  # --epochs 2 of 500 iterations, resumed as --max_iter 1000
    with pytest.raises(CheckpointError, match=r"^w\.pth was saved by a run of 1000 iterations, this run has 2000 "
                                              r"\(--epochs or --max_iter\); resume with the same run length"):
        check_same_length("w.pth", 1000, 2000)


def test_the_init_from_advice_quotes_a_path_the_shell_would_split(tmp_path):
    """"--init_from my runs/w.pth" was given to copy: the shell reads it as --init_from my, then a stray runs/w.pth."""
    path = "my runs/wëights.pth"
    advice = "start a new run from its weights with --init_from 'my runs/wëights.pth'"
    with pytest.raises(CheckpointError, match=re.escape(advice)):
        check_same_length(path, 1000, 2000)
    with pytest.raises(CheckpointError, match=re.escape(advice)):
        check_same_run(path, {"train_images": 16}, {"train_images": 17})
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    optimizer.state[model.weight]["momentum_buffer"] = torch.full((1, 2), float("nan"))
    with pytest.raises(CheckpointError, match=re.escape(advice)):
        check_optimizer_state(path, model, optimizer)


def test_check_compatible_refuses_another_anchor_size_and_accepts_a_checkpoint_without_a_key():
    classes = ["circle", "square"]
    saved = {"version": "pafpn", "backbone": "vgg16", "size": 320, "base_anchor_size": 24.0}
    with pytest.raises(CheckpointError, match="--base_anchor_size 24.0, but --base_anchor_size 32"):
        check_compatible("w.pth", saved, classes, {"base_anchor_size": 32}, classes)
    check_compatible("w.pth", saved, classes, {"base_anchor_size": 24}, classes)  # 24 == 24.0
    older = {"version": "pafpn", "backbone": "vgg16", "size": 320}  # saved before a key existed: nothing to compare
    check_compatible("w.pth", older, classes, {"version": "pafpn", "base_anchor_size": 24.0}, classes)


@pytest.mark.parametrize("class_names, problem", [
    ([], "an empty class list"),
    ([1, 2], "class names that are not text (1, 2)"),
    (["cat", None], "class names that are not text (None)"),
    (["cat", " "], "an empty class name"),
    (["cat", "dog", "Cat"], "the class name 'Cat' twice"),  # the loaders match names ignoring letter case
    (["caf\u00e9", "dog", "Cafe\u0301"], "the class name 'Cafe\u0301' twice"),  # ... and the accents' Unicode form
])
def test_load_refuses_class_names_main_py_never_writes(tmp_path, class_names, problem):
    """Non-text names crashed evaluation (AttributeError: 'int' object has no attribute 'lower') and the demo; empty
    and repeated ones were drawn and exported as they were."""
    save_checkpoint(_state(1.0) | {"class_names": class_names}, tmp_path / "edited.pth")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "edited.pth")
    assert str(error.value) == (f"{tmp_path / 'edited.pth'} holds {problem} in 'class_names'; it was edited or "
                                "damaged: use a checkpoint as main.py saved it")


def test_load_refuses_class_names_of_another_count_than_the_classifier(tmp_path):
    """--trained_model blamed the dataset ("was trained on 3 classes, but the dataset has 6") and --init_from
    fine-tuned from such a file as if it were trained on other classes."""
    state = _state(1.0) | {"class_names": ["cat", "dog"]}
    state["model"] |= {"head.conf.0.weight": torch.zeros(6 * 3, 4, 3, 3), "head.conf.0.bias": torch.zeros(6 * 3)}
    save_checkpoint(state, tmp_path / "edited.pth")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "edited.pth")
    assert str(error.value) == (f"{tmp_path / 'edited.pth'} names 2 classes (cat, dog), but its classification layers "
                                "score 3 (head.conf.0.weight: 18 outputs, 6 anchors per cell); it was edited or "
                                "damaged: use a checkpoint as main.py saved it")
    state["class_names"] = ["cat", "dog", "bird"]
    save_checkpoint(state, tmp_path / "whole.pth")
    assert load_checkpoint(tmp_path / "whole.pth")["class_names"] == ["cat", "dog", "bird"]


@pytest.mark.parametrize("prefix, wrapper", [("module.", "DistributedDataParallel (or DataParallel)"),
                                             ("_orig_mod.", "torch.compile")])
def test_load_refuses_the_weights_of_a_wrapped_model_naming_the_prefix_to_remove(tmp_path, prefix, wrapper):
    """A checkpoint in main.py's format whose weights another script saved from the DDP (or torch.compile) wrapper
    of the model: --trained_model and --init_from refused it only after reading the dataset, as weights that "do not
    fit" with a list of missing keys and "the file is damaged"; now every reader refuses it on reading, naming the
    prefix and how to remove it."""
    state = _state(1.0)
    state["model"] = {f"{prefix}head.conf.0.weight": torch.zeros(6, 4, 3, 3),
                      f"{prefix}head.conf.0.bias": torch.zeros(6)}
    save_checkpoint(state, tmp_path / "wrapped.pth")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "wrapped.pth")
    assert str(error.value) == (
        f"{tmp_path / 'wrapped.pth'} holds the weights of a model wrapped by {wrapper}: every key of 'model' starts "
        f"with {prefix!r} (e.g. '{prefix}head.conf.0.weight'), which main.py never saves; save "
        f"the unwrapped model's state dict instead, or remove the prefix from every key: state['model'] = "
        f"{{k.removeprefix({prefix!r}): v for k, v in state['model'].items()}}")
    state["model"] = {key.removeprefix(prefix): value for key, value in state["model"].items()}
    save_checkpoint(state, tmp_path / "unwrapped.pth")
    assert sorted(load_checkpoint(tmp_path / "unwrapped.pth")["model"]) == ["head.conf.0.bias", "head.conf.0.weight"]


@pytest.mark.parametrize("key, value, problem", [
    ("version", None, "no --version"),
    ("version", "yolo", "--version 'yolo', not one of fssd, retinanet, rfbnet, pafpn"),
    ("backbone", "resnet50", "--backbone 'resnet50', not one of vgg16, resnet18"),
    ("size", 100, "--size 100, not a multiple of 64 from 128"),
    ("size", 128.7, "--size 128.7, not a multiple of 64 from 128"),
    ("size", "128", "--size '128', not a multiple of 64 from 128"),
    ("base_anchor_size", -5.0, "--base_anchor_size -5.0, not from 1 to below its --size 128"),
    ("base_anchor_size", 1000.0, "--base_anchor_size 1000.0, not from 1 to below its --size 128"),
    ("base_anchor_size", float("nan"), "--base_anchor_size nan, not from 1 to below its --size 128"),
    ("base_anchor_size", "abc", "--base_anchor_size 'abc', not from 1 to below its --size 128"),
])
def test_load_refuses_an_architecture_main_py_never_writes(tmp_path, key, value, problem):
    """Such values stopped the readers with build_detector's or PriorBox's words and no file ("unknown backbone
    'resnet50'; choose one of ..."), with a traceback (a string anchor size under --resume and --init_from, a float
    size in --trained_model's resize), blamed a flag the user did not give (--resume: "trained with --size 100, but
    --size 128 was given"), or evaluated anchors larger than the image."""
    state = _state(1.0)
    if value is None:
        del state["config"][key]
    else:
        state["config"][key] = value
    save_checkpoint(state, tmp_path / "edited.pth")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "edited.pth")
    assert str(error.value) == (f"{tmp_path / 'edited.pth'} records {problem}; it was edited or damaged: "
                                "use a checkpoint as main.py saved it")


def test_load_refuses_weights_that_are_not_floating_point_tensors(tmp_path):
    """load_state_dict copies an integer or boolean tensor into a float parameter without a word: every reader
    evaluated, demoed, exported and resumed such truncated weights (the export's parity check printed nan)."""
    state = _state(1.0)
    state["model"] |= {"conv.weight": torch.ones(2, dtype=torch.int32),
                       "bn.running_var": torch.ones(2, dtype=torch.bool), "bn.num_batches_tracked": torch.tensor(3),
                       "half.weight": torch.ones(2, dtype=torch.float16)}
    save_checkpoint(state, tmp_path / "edited.pth")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "edited.pth")
    assert str(error.value) == (f"{tmp_path / 'edited.pth'} holds weights that are not floating point (conv.weight "
                                "torch.int32, bn.running_var torch.bool); it was edited or damaged: use a checkpoint "
                                "as main.py saved it")
    state["model"] = {"w": torch.ones(2), "bn.num_batches_tracked": torch.tensor(3), "scale": 2.0}
    save_checkpoint(state, tmp_path / "edited.pth")
    with pytest.raises(CheckpointError, match=r"edited\.pth holds entries in 'model' that are not tensors \(scale\); "):
        load_checkpoint(tmp_path / "edited.pth")
    del state["model"]["scale"]  # BatchNorm's batch counters are integers, half precision converts on loading
    save_checkpoint(state, tmp_path / "whole.pth")
    assert load_checkpoint(tmp_path / "whole.pth")["model"]["bn.num_batches_tracked"].item() == 3


@pytest.mark.parametrize("iteration, max_iter", [(-3, 9), (10, 9), (True, 9), (0, 0)])
def test_load_refuses_an_iteration_count_main_py_never_writes(tmp_path, iteration, max_iter):
    """--resume crashed on a negative iteration (TypeError: 'NoneType' object is not subscriptable), took one past
    the run's end as a finished run and saved it as iteration max_iter, and read True as iteration 1."""
    save_checkpoint(_state(1.0) | {"iteration": iteration, "max_iter": max_iter}, tmp_path / "edited.pth")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "edited.pth")
    assert str(error.value) == (f"{tmp_path / 'edited.pth'} records iteration {iteration!r} of a run of {max_iter!r} "
                                "(whole numbers, 0 <= iteration <= max_iter, max_iter >= 1); it was edited or damaged: "
                                "use a checkpoint as main.py saved it")
    save_checkpoint(_state(1.0) | {"iteration": 0, "max_iter": 1}, tmp_path / "start.pth")  # Ctrl-C before a step
    assert load_checkpoint(tmp_path / "start.pth")["iteration"] == 0


def _sgd_after_loading(buffer: torch.Tensor) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A model and its SGD optimizer after load_state_dict of a state whose one momentum buffer is ``buffer``."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 2, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3, 5, 5)).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()
    state["state"][0]["momentum_buffer"] = buffer
    optimizer.load_state_dict(state)  # torch checks the parameter groups, not the buffers' shapes
    return model, optimizer


def test_an_optimizer_state_that_does_not_fit_its_model_is_refused():
    """--resume went on to the first step, which stopped with a traceback (RuntimeError: The size of tensor a (3)
    must match the size of tensor b (7)), or, for a NaN momentum buffer, blamed the schedule ("the loss became
    NaN/inf at iteration 4 ... Start again with a lower --lr")."""
    check_optimizer_state("w.pth", *_sgd_after_loading(torch.full((4, 3, 3, 3), 0.5)))
    with pytest.raises(CheckpointError) as error:
        check_optimizer_state("w.pth", *_sgd_after_loading(torch.zeros(1, 2, 3)))
    assert str(error.value) == ("w.pth cannot be resumed: its optimizer state does not fit the model (momentum_buffer "
                                "of 0.weight has shape [1, 2, 3], the parameter [4, 3, 3, 3]); a damaged or edited "
                                "file: resume an earlier checkpoint with --resume PATH, or start a new run from its "
                                "weights with --init_from w.pth")
    buffer = torch.zeros(4, 3, 3, 3)
    buffer[0, 0, 0, 0] = float("nan")
    with pytest.raises(CheckpointError) as error:
        check_optimizer_state("w.pth", *_sgd_after_loading(buffer))
    assert str(error.value) == ("w.pth cannot be resumed: its optimizer state holds NaN/inf (momentum_buffer of "
                                "0.weight); a damaged or edited file: resume an earlier checkpoint with --resume "
                                "PATH, or start a new run from its weights with --init_from w.pth")


def test_a_checkpoint_of_another_format_version_says_so(tmp_path):
    """It was called 'not a checkpoint written by main.py', sending the user to look for another file when the code
    is what has to change."""
    save_checkpoint(_state(1.0) | {"format": "mutual-guidance-checkpoint-v2"}, tmp_path / "newer.pth")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "newer.pth")
    assert str(error.value) == (f"{tmp_path / 'newer.pth'} was written by another version of this project (format "
                                f"'mutual-guidance-checkpoint-v2'; this one reads '{FORMAT}'); read it with the "
                                "version that wrote it, or pass a checkpoint saved by this one")


@pytest.mark.parametrize("keys", [("backbone.conv1.weight", "head.conf.0.weight"), ("module.conv1.weight",),
                                  ("conv1.weight", "fc.weight")])
def test_a_bare_state_dict_is_named_as_such(tmp_path, keys):
    """A model.state_dict() saved on its own (the authors' code saves its detectors so; torchvision's ImageNet files
    are such) was refused as any foreign file, without saying what it lacks or where backbone weights go."""
    torch.save({key: torch.zeros(2) for key in keys}, tmp_path / "bare.pth")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "bare.pth")
    assert str(error.value) == (f"{tmp_path / 'bare.pth'} is a bare state dict ({len(keys)} tensors), not a checkpoint "
                                "written by main.py: it records no architecture or class names to rebuild the model "
                                "from; pass a file from weights/ saved by this project (ImageNet backbone weights go "
                                "to --pretrained PATH)")


def test_a_path_that_is_not_a_regular_file_is_not_called_missing(tmp_path):
    """A named pipe, a device or a socket was reported as 'does not exist'."""
    pipe = tmp_path / "run.pth"
    os.mkfifo(pipe)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(pipe, source="--trained_model")
    assert str(error.value) == (f"checkpoint {pipe} is not a regular file (a pipe, a device or a socket); pass the "
                                ".pth file main.py saved")


def test_init_from_takes_a_size_of_as_many_pyramid_levels_and_refuses_another_count_either_way():
    config = {"version": "pafpn", "backbone": "vgg16", "size": 512, "base_anchor_size": 24.0}
    for size, anchor in ((512, 32.0), (640, None), (1024, 16.0), (None, None)):
        check_init_architecture("w.pth", config, {"size": size, "base_anchor_size": anchor})
    with pytest.raises(CheckpointError) as error:
        check_init_architecture("w.pth", config, {"size": 320})
    assert str(error.value) == (
        "w.pth was trained with --size 512, whose model has 5 pyramid levels (strides 8 to 128), but --size 320 "
        "builds 4 (strides 8 to 64): its fifth level's layers would have no place; fine-tune it at a --size of 512 or "
        "more (5 levels: any multiple of 64 from 512), or drop --size")
    with pytest.raises(CheckpointError, match="was trained with --backbone vgg16, but --backbone resnet18 was given"):
        check_init_architecture("w.pth", config, {"backbone": "resnet18", "size": 640})


def test_resume_restores_the_weights_momentum_fp16_loss_scale_and_random_states(tmp_path):
    """--resume (utils.training_setup.restore_training_state): after the restore the model, SGD's momentum buffers,
    the fp16 GradScaler (its scale halved twice to 2^14, growth tracker 0) and the Python/NumPy/torch generators are
    those saved, not those of the fresh run (scale 2^16, other seeds)."""
    from utils.optim import build_optimizer
    from utils.training_setup import restore_training_state

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer, scaler = build_optimizer(model, lr=0.1), torch.amp.GradScaler("cpu", init_scale=2.0**16)
    for _ in range(2):  # two overflowing steps: skipped, scale 2^16 -> 2^14
        optimizer.zero_grad()
        scaler.scale(model(torch.ones(1, 3)).sum() * float("inf")).backward()
        scaler.step(optimizer)
        scaler.update()
    optimizer.zero_grad()
    scaler.scale(model(torch.ones(1, 3)).sum()).backward()
    scaler.step(optimizer)  # a real step: momentum buffers
    scaler.update()
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    path = tmp_path / "run.pth"
    save_checkpoint(_state(0.0) | {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                   "scaler": scaler.state_dict(), "rng": capture_rng_state()}, path)
    draws = (random.random(), np.random.rand(), torch.rand(2).tolist())

    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    fresh = torch.nn.Linear(3, 2)
    fresh_optimizer, fresh_scaler = build_optimizer(fresh, lr=0.1), torch.amp.GradScaler("cpu", init_scale=2.0**16)
    restore_training_state(load_checkpoint(path), path, fresh, fresh_optimizer, fresh_scaler)
    assert (random.random(), np.random.rand(), torch.rand(2).tolist()) == draws
    assert fresh_scaler.get_scale() == 2.0**14 and fresh_scaler.state_dict() == scaler.state_dict()
    assert all(torch.equal(fresh.state_dict()[key], value) for key, value in model.state_dict().items())
    momentum = [fresh_optimizer.state[p]["momentum_buffer"] for p in fresh.parameters()]
    saved_momentum = [optimizer.state[p]["momentum_buffer"].tolist() for p in model.parameters()]
    assert [m.tolist() for m in momentum] == saved_momentum
    assert momentum[0].abs().sum() > 0


def test_a_run_s_checkpoint_holds_its_fp16_loss_scale_momentum_iteration_and_random_states(tmp_path):
    """What a training run writes (utils.training_run.RunCheckpoints.save), for --resume to restore: the GradScaler's
    state (here its scale halved once to 2^15 by an overflowing step), SGD's momentum, the iteration done and the
    generators' states (the next draws after a restore are those after the save)."""
    from types import SimpleNamespace

    from utils.distributed import DistributedContext
    from utils.logging import RunLog
    from utils.optim import build_optimizer
    from utils.training_run import RunCheckpoints

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer, scaler = build_optimizer(model, lr=0.1), torch.amp.GradScaler("cpu", init_scale=2.0**16)
    for factor in (float("inf"), 1.0):  # an overflow (skipped, scale 2^16 -> 2^15), then a real step
        optimizer.zero_grad()
        scaler.scale(model(torch.ones(1, 3)).sum() * factor).backward()
        scaler.step(optimizer)
        scaler.update()
    setup = SimpleNamespace(optimizer=optimizer, scaler=scaler, max_iter=9, config=ARCHITECTURE | {"run_id": "r"},
                            dataset=SimpleNamespace(class_names=["cat"]))
    path = tmp_path / "run.pth"
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    RunCheckpoints(path, setup, model, DistributedContext(), RunLog(tmp_path / "run"), None).save(4)
    draws = (random.random(), np.random.rand(), torch.rand(2).tolist())
    state = load_checkpoint(path)
    assert state["iteration"] == 4 and state["max_iter"] == 9
    assert state["scaler"] == scaler.state_dict() and state["scaler"]["scale"] == 2.0**15
    assert state["scaler"]["_growth_tracker"] == 1
    momentum = [buffer["momentum_buffer"] for buffer in state["optimizer"]["state"].values()]
    assert len(momentum) == 2 and momentum[0].abs().sum() > 0
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng_state(state["rng"])
    assert (random.random(), np.random.rand(), torch.rand(2).tolist()) == draws


def test_trained_model_takes_a_size_of_as_many_levels_above_its_anchors_and_refuses_other_anchors():
    """--trained_model (evaluation, --demo, --export) at another --size of as many pyramid levels runs the same
    weights; the size must stay above the anchors it was trained with (PriorBox refused it with its own argument
    names, after the test split was read), and other anchors are refused with the reason."""
    config = {"version": "fssd", "backbone": "resnet18", "size": 320, "base_anchor_size": 150.0}
    for size in (192, 448, 320, None):
        check_trained_architecture("w.pth", config, {"size": size, "base_anchor_size": 150}, "evaluate it")
    with pytest.raises(CheckpointError) as error:
        check_trained_architecture("w.pth", config, {"size": 128}, "export it")
    assert str(error.value) == ("w.pth was trained with --base_anchor_size 150, not below --size 128: every anchor "
                                "would cover the whole image; export it at a --size above 150, or drop --size")
    with pytest.raises(CheckpointError, match=r"but --size 512 builds 5 .*; run the demo at a --size from 128 to 448"):
        check_trained_architecture("w.pth", config, {"size": 512}, "run the demo")
    with pytest.raises(CheckpointError, match=r"^w\.pth was trained with --base_anchor_size 150\.0, but "
                                              r"--base_anchor_size 24\.0 was given: the box offsets it predicts are "
                                              r"relative to the anchors .* --init_from w\.pth --base_anchor_size 24$"):
        check_trained_architecture("w.pth", config, {"size": 192, "base_anchor_size": 24.0}, "evaluate it")


def test_init_from_at_a_size_not_above_the_checkpoints_anchors_names_where_the_anchor_size_came_from():
    """--init_from of a checkpoint trained with --base_anchor_size 150 at --size 128: the refusal said
    "--base_anchor_size 150: ... must be from 1 to below the --size 128 input", a flag that was not given (taken from
    the checkpoint); it now names the checkpoint and both ways out. A --base_anchor_size given below 128 fits."""
    config = {"version": "fssd", "backbone": "resnet18", "size": 320, "base_anchor_size": 150.0}
    with pytest.raises(CheckpointError) as error:
        check_init_architecture("w.pth", config, {"size": 128})
    assert str(error.value) == ("w.pth was trained with --base_anchor_size 150, not below --size 128: every anchor "
                                "would cover the whole image; fine-tune it at a --size above 150, or give a "
                                "--base_anchor_size below 128")
    check_init_architecture("w.pth", config, {"size": 128, "base_anchor_size": 32.0})
    check_init_architecture("w.pth", config, {"size": 192})
