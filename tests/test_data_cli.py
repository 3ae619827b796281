"""main.py on bad or tricky data: --skip_unknown_classes, --check_data's image scan, a bad image met in training,
the notes on which image lists a VOC-layout folder uses."""
import io
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import main as cli
from data import DataWarning
from data.shapes import SHAPES_CLASSES, generate_shapes_dataset
from data.voc_eval import write_voc_results
from tests.test_data_checks import corrupt_the_middle, write_jpeg
from tests.test_data_coco import write_coco
from tests.test_data_voc import write_voc_folder
from utils.checkpoint import load_checkpoint
from data.loader import ResumableBatchSampler

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(workdir: Path, *argv: str) -> int:
    old = Path.cwd()
    os.chdir(workdir)
    try:
        return cli.main(cli.get_args_parser().parse_args(list(argv)))
    finally:
        os.chdir(old)


def test_skip_unknown_classes_flag_trains_on_a_subset_of_the_classes(tmp_path, capsys):
    samples = {"a": [("cat", (1, 1, 30, 30), 0), ("dog", (5, 5, 40, 40), 0)],
               "b": [("zebra", (2, 2, 20, 20), 0), ("cat", (3, 3, 25, 25), 0)]}
    root = write_voc_folder(tmp_path / "data", samples, {"trainval": ["a"], "test": ["b"]})
    common = ["--dataset", "custom", "--data_root", str(root), "--classes", "cat", "--check_data", "--workers", "0"]
    assert run(tmp_path, *common) == 2
    err = capsys.readouterr().err
    assert f"{root / 'Annotations/a.xml'}: unknown class 'dog' (classes: cat); add it to --classes, or pass " \
           "--skip_unknown_classes to leave such objects out (counted in one warning)" in err
    with pytest.warns(DataWarning) as warned:
        assert run(tmp_path, *common, "--skip_unknown_classes") == 0
    assert [str(w.message) for w in warned if w.category is DataWarning] == [  # one per split
        f"VOC dataset {root / 'ImageSets/Main' / split}.txt: annotations fixed on reading: "
        f"object of an unknown class skipped: 1 (e.g. '{name}' x1)"
        for split, name in (("trainval", "dog"), ("test", "zebra"))
    ]
    out = capsys.readouterr().out
    assert "custom train: 1 image, 1 object" in out and "objects per class: cat 1" in out
    assert "custom test: 1 image, 1 object" in out
    assert "--skip_unknown_classes" in cli.get_args_parser().format_help()


@pytest.mark.parametrize("mode", [["--max_iter", "2", "--warm_iter", "1"], ["--check_data"]])
def test_an_unknown_class_is_told_to_join_the_class_file_that_classes_names(mode, tmp_path, capsys):
    """``--classes classes.txt``: an object of another class was told "add it to --classes", which reads as typing
    a name into the flag that names the file; the advice names the file to add it to, one name per line."""
    root = write_voc_folder(tmp_path / "data", {"a": [("cat", (1, 1, 30, 30), 0), ("dog", (5, 5, 40, 40), 0)],
                                                "b": [("cat", (3, 3, 25, 25), 0)]}, {"trainval": ["a"], "test": ["b"]})
    (tmp_path / "classes.txt").write_text("cat\n")
    assert run(tmp_path, "--dataset", "custom", "--data_root", str(root), "--classes", "classes.txt", "--size", "128",
               "--workers", "0", "--device", "cpu", *mode) == 2
    err = capsys.readouterr().err
    assert (f"{root / 'Annotations/a.xml'}: unknown class 'dog' (classes: cat); add it to the class file classes.txt, "
            "one name per line, or pass --skip_unknown_classes to leave such objects out (counted in one warning)\n"
            ) in err


def test_check_data_warns_when_many_training_boxes_are_below_the_minimum_side(tmp_path, capsys):
    """--check_data reads the training split unaugmented, so the warning that training gives at loading (boxes of at
    most 1 % of their image's side, rarely trained on) was missing where a user vets the data; the test split, which
    is not trained on, gets none."""
    small = [("cat", (11, 11, 200, 13), 0)]  # 3 px high in a 300 px high image: 1 %
    root = write_voc_folder(tmp_path / "data", {"a": small, "b": small}, {"trainval": ["a"], "test": ["b"]},
                            size=(300, 400))
    with pytest.warns(DataWarning) as warned:
        assert run(tmp_path, "--dataset", "custom", "--data_root", str(root), "--classes", "cat", "--check_data",
                   "--workers", "0") == 0
    assert [str(w.message).split(": the augmentation")[0] for w in warned if "rarely trained" in str(w.message)] == [
        f"1 of the 1 training boxes (100.0 %) have a width or height of at most 1 % of their image's (e.g. "
        f"{root / 'Annotations/a.xml'})"]
    assert "--check_data found no problem" in capsys.readouterr().out


def test_check_data_names_every_bad_image(tmp_path, capsys):
    samples = {name: [] for name in ("ok", "resized", "cut", "empty", "text", "corrupt", "held_out")}
    root = write_voc_folder(tmp_path / "data", samples, {"train": list(samples)[:-1], "test": ["held_out"]},
                            size=(40, 50))
    images = root / "JPEGImages"
    write_jpeg(images / "resized.jpg", 41, 50)
    write_jpeg(images / "cut.jpg")
    (images / "cut.jpg").write_bytes((images / "cut.jpg").read_bytes()[:300])
    (images / "empty.jpg").write_bytes(b"")
    (images / "text.jpg").write_text("not an image")
    write_jpeg(images / "corrupt.jpg")
    corrupt_the_middle(images / "corrupt.jpg")
    argv = ["--dataset", "custom", "--data_root", str(root), "--classes", "cat", "--check_data", "--workers", "2"]
    assert run(tmp_path, *argv) == 2
    err = capsys.readouterr().err
    assert "--check_data on 6 images: 5 problem(s)" in err
    for expected in (f"{images / 'resized.jpg'}: image is 50x41 (WxH) but its annotation says 50x40",
                     f"{images / 'cut.jpg'}: truncated JPEG", f"{images / 'empty.jpg'}: image file is empty",
                     f"{images / 'text.jpg'}: OpenCV cannot decode the file",
                     f"{images / 'corrupt.jpg'}: corrupt JPEG data"):
        assert expected in err


def test_check_data_warns_about_a_class_without_an_object_to_score_in_the_test_split(tmp_path, capsys):
    """A rare class of a small set that a random split left out of the test images (or left there difficult only):
    its AP is undefined and left out of the means, which the per-class table shows only after training."""
    samples = {"a": [("cat", (1, 1, 30, 30), 0), ("dog", (5, 5, 40, 40), 0)],
               "b": [("cat", (3, 3, 25, 25), 0), ("dog", (2, 2, 20, 20), 1)]}
    root = write_voc_folder(tmp_path / "data", samples, {"trainval": ["a"], "test": ["b"]})
    argv = ["--dataset", "custom", "--data_root", str(root), "--classes", "cat,dog,bird", "--check_data",
            "--workers", "0"]
    assert run(tmp_path, *argv) == 0
    out = capsys.readouterr().out
    assert ("warning: the test split holds no object to score of the classes ['dog', 'bird'] (none, or all marked "
            "difficult or iscrowd): their AP is undefined (nan) and left out of the means; move some of their "
            "images to the test split") in out


def test_a_test_image_holding_more_objects_than_the_detections_kept_per_image_is_warned_of(tmp_path, capsys):
    """An evaluation keeps 300 detections per image (the authors' max_per_image): of a test image of 500 objects (cells,
    a crowd) at most 300 can be found, so recall and AP were capped without a word. A warning counts such images,
    names the fullest and the objects no model can find there; difficult objects, which are not scored, do not
    count, and an image of exactly 300 is not one."""
    def grid(count: int, difficult: int = 0) -> list:
        return [("cat", (1 + i % 30 * 2, 1 + i // 30 * 2, 2 + i % 30 * 2, 2 + i // 30 * 2), int(i < difficult))
                for i in range(count)]
    samples = {"a": [("cat", (1, 1, 30, 30), 0)], "b": grid(303, difficult=2), "c": grid(300), "d": grid(305)}
    root = write_voc_folder(tmp_path / "data", samples, {"trainval": ["a"], "test": ["b", "c", "d"]})
    argv = ["--dataset", "custom", "--data_root", str(root), "--classes", "cat", "--check_data", "--workers", "0"]
    assert run(tmp_path, *argv) == 0
    assert ("warning: 2 test images hold more objects to score than the 300 detections an evaluation keeps per "
            f"image (the authors' setting; the most: 305 in {root / 'Annotations/d.xml'}): 6 of the test split's 906 "
            "objects to score count as missed whatever the model detects, which lowers recall and AP; cut such "
            "images into tiles holding fewer objects") in capsys.readouterr().out
    # --eval_results scores detections made already, by whatever tool and cap: not warned of
    detections = [{"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0)}] * 3
    write_voc_results(detections, ["b", "c", "d"], ["cat"], tmp_path / "results")
    assert run(tmp_path, "--eval_results", str(tmp_path / "results"), *argv[:6]) == 0
    assert "detections an evaluation keeps" not in capsys.readouterr().out
    samples["d"] = grid(300)
    root = write_voc_folder(tmp_path / "data", samples, {"trainval": ["a"], "test": ["c", "d"]})
    assert run(tmp_path, *argv) == 0
    assert "detections an evaluation keeps" not in capsys.readouterr().out


def test_a_coco_test_image_holding_over_100_objects_of_one_category_is_warned_of(tmp_path, capsys):
    """COCO's metric scores at most 100 detections of an image and category (pycocotools' maxDets): of a shelf of 150
    bottles at most 100 count, so AP and AR@100 were capped without a word. A warning counts such images (crowd
    objects, not scored, do not count; an image of exactly 100 is not one) and names the fullest."""
    def objects(image_id: int, count: int, category_id: int = 1, crowd: int = 0) -> list[dict]:
        return [{"image_id": image_id, "category_id": category_id, "bbox": [i % 20 * 3, i // 20 * 3, 2, 2],
                 "area": 4, "iscrowd": crowd} for i in range(count)]
    categories = [{"id": 1, "name": "bottle"}, {"id": 2, "name": "can"}]
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 64, "width": 64} for i in (1, 2, 3)]
    annotations = [*objects(1, 100, crowd=0), *objects(1, 3, crowd=1), *objects(2, 102), *objects(2, 50, 2),
                   *objects(3, 100), *objects(3, 100, 2)]
    for number, annotation in enumerate(annotations, 1):
        annotation["id"] = number
    train = {"images": images[:1], "annotations": [dict(annotations[0], id=1, bbox=[2, 2, 20, 20], area=400)],
             "categories": categories}
    write_coco(tmp_path / "data", "train", train)
    test_file = write_coco(tmp_path / "data", "val", {"images": images, "annotations": annotations,
                                                      "categories": categories})
    assert run(tmp_path, "--dataset", "custom", "--data_root", str(tmp_path / "data"), "--check_data",
               "--workers", "0") == 0
    out = capsys.readouterr().out
    assert ("warning: 1 test image holds more objects of one category to score than the 100 detections of an image "
            "and category COCO's metric scores (pycocotools' maxDets; the most: 102 'bottle' in image id 2 in "
            f"{test_file}): 2 of the test split's 452 objects to score count as missed whatever the model detects, "
            "which lowers recall and AP; cut such images into tiles holding fewer objects") in out
    assert "than the 300 detections" not in out  # 300 objects in image 3: not more than the 300 kept


def test_the_warnings_about_classes_without_objects_name_the_first_20_of_a_long_class_list(tmp_path, capsys):
    """With 1,000 classes and a few annotated, each warning listed every missing class: 12,000 characters at every
    training start and evaluation. Past 20 names they give the first 20, the count of the others and where every
    class's count is printed."""
    samples = {"a": [("cat", (1, 1, 30, 30), 0)], "b": [("cat", (3, 3, 25, 25), 0)]}
    root = write_voc_folder(tmp_path / "data", samples, {"trainval": ["a"], "test": ["b"]})
    classes = ["cat", *(f"class {i}" for i in range(998))]
    argv = ["--dataset", "custom", "--data_root", str(root), "--classes", ",".join(classes), "--check_data",
            "--workers", "0"]
    assert run(tmp_path, *argv) == 0
    out = capsys.readouterr().out
    first = ", ".join(repr(name) for name in classes[1:21])
    assert (f"warning: the test split holds no object to score of 998 classes ({first} and 978 more; --check_data "
            "prints every class's count) (none, or all marked difficult or iscrowd)") in out
    assert (f"warning: no training image holds an object of 998 classes ({first} and 978 more; --check_data prints "
            "every class's count): the model cannot learn them") in out
    assert max(len(line) for line in out.splitlines() if line.startswith("warning:")) < 600


def test_check_data_reports_the_problems_of_both_splits_in_one_run(tmp_path, capsys):
    samples = {"a": [("dog", (1, 1, 30, 30), 0)], "b": [("cat", (3, 3, 25, 25), 0)]}
    root = write_voc_folder(tmp_path / "data", samples, {"trainval": ["a"], "test": ["b.jpg"]})
    assert run(tmp_path, "--dataset", "custom", "--data_root", str(root), "--classes", "cat", "--check_data",
               "--workers", "0") == 2
    err = capsys.readouterr().err
    assert f"{root / 'Annotations/a.xml'}: unknown class 'dog'" in err  # the train split's problem
    assert f"{root / 'Annotations/b.jpg.xml'}: annotation file not found (image ids are file names without " \
           "extension: write b)" in err  # and the test split's, in the same run
    assert err.count("error:") == 1


def test_check_data_states_a_problem_of_both_splits_once(tmp_path, capsys):
    """A VOC-layout folder without --classes fails for the train and the test split alike: one line, not two."""
    samples = {"a": [("cat", (1, 1, 30, 30), 0)], "b": [("cat", (3, 3, 25, 25), 0)]}
    root = write_voc_folder(tmp_path / "data", samples, {"trainval": ["a"], "test": ["b"]})
    assert run(tmp_path, "--dataset", "custom", "--data_root", str(root), "--check_data", "--workers", "0") == 2
    err = capsys.readouterr().err
    assert err == (f"error: --data_root {root} is a VOC-layout folder: give its class names with --classes a,b,c "
                   "or a file\n")


def test_check_data_names_a_missing_dataset_in_one_line(tmp_path, capsys):
    (tmp_path / "coco").mkdir()  # neither instances_train2017.json nor instances_val2017.json
    assert run(tmp_path, "--dataset", "coco", "--data_root", str(tmp_path / "coco"), "--check_data",
               "--workers", "0") == 2
    err = capsys.readouterr().err.strip()
    assert "instances_train2017.json not found" in err and len(err.splitlines()) == 1


def test_check_data_logs_which_lists_a_folder_without_test_txt_uses(tmp_path, capsys):
    samples = {"a": [("cat", (1, 1, 30, 30), 0)], "b": [("cat", (3, 3, 25, 25), 0)]}
    root = write_voc_folder(tmp_path / "data", samples, {"trainval": ["a", "b"], "train": ["a"], "val": ["b"]})
    assert run(tmp_path, "--dataset", "custom", "--data_root", str(root), "--classes", "cat", "--check_data",
               "--workers", "0") == 0
    out = capsys.readouterr().out
    assert "val.txt is the test split and training reads train.txt instead of trainval.txt" in out
    assert "custom train: 1 image," in out and "custom test: 1 image," in out


def test_class_names_that_standard_output_cannot_encode_print_escaped(tmp_path, monkeypatch):
    """Under PYTHONIOENCODING=ascii (or a Windows console's code page), a class name its encoding lacks printed a
    UnicodeEncodeError as a bad-input error (exit code 2): at the end of a training run, its evaluation's results."""
    samples = {"a": [("caf\u00e9", (1, 1, 30, 30), 0)], "b": [("caf\u00e9", (3, 3, 25, 25), 0)]}
    root = write_voc_folder(tmp_path / "data", samples, {"trainval": ["a"], "test": ["b"]})
    output = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(output, encoding="ascii", write_through=True))
    assert run(tmp_path, "--dataset", "custom", "--data_root", str(root), "--classes", "caf\u00e9", "--check_data",
               "--workers", "0") == 0
    assert "objects per class: caf\\xe9 1" in output.getvalue().decode("ascii")


def resize_behind_the_annotation(root: Path, iteration: int) -> tuple[Path, int, int]:
    """Make the first image of ``iteration``'s batch (batch 2, seed 0) one row taller than its annotation says."""
    ids = (root / "ImageSets/Main/trainval.txt").read_text().split()
    first = next(iter(ResumableBatchSampler(len(ids), 2, 0, iteration, iteration + 1)))[0][0]
    bad = root / "JPEGImages" / f"{ids[first]}.jpg"
    height, width = cv2.imread(str(bad)).shape[:2]
    cv2.imwrite(str(bad), np.zeros((height + 1, width, 3), np.uint8))
    return bad, height, width


def bad_image_argv(root: Path) -> list[str]:
    return ["--dataset", "custom", "--data_root", str(root), "--classes", ",".join(SHAPES_CLASSES),
            "--version", "fssd", "--backbone", "resnet18", "--size", "128", "--no_pretrained", "--batch_size", "2",
            "--max_iter", "4", "--warm_iter", "1", "--workers", "1", "--checkpoint_interval", "100", "--device", "cpu",
            "--save_folder", "weights", "--run_dir", "run"]


def test_a_bad_image_in_the_first_batch_says_to_run_again_not_to_resume(tmp_path, capsys):
    root = generate_shapes_dataset(tmp_path / "shapes", num_trainval=8, num_test=2)
    resize_behind_the_annotation(root, 0)
    assert run(tmp_path, *bad_image_argv(root)) == 2
    logged = (tmp_path / "run" / "log.txt").read_text()
    assert ("training stopped by a data error: no checkpoint was saved; fix or replace the file (--check_data scans "
            "every image), then run the same command again\n") in logged
    assert not (tmp_path / "weights").exists() or not any((tmp_path / "weights").iterdir())


def test_a_size_mismatch_met_in_training_says_which_fix_resume_accepts(tmp_path, capsys):
    """An image resized behind its annotation's back stops training at iteration 2. The line offers both fixes,
    each as it goes on: correcting the annotation's <size> changes the training set, which --resume refuses, so that
    fix needs a new run; restoring the image's annotated size resumes (both checked)."""
    root = generate_shapes_dataset(tmp_path / "shapes", num_trainval=8, num_test=2)
    bad, height, width = resize_behind_the_annotation(root, 2)
    assert run(tmp_path, *bad_image_argv(root)) == 2
    logged = (tmp_path / "run" / "log.txt").read_text()
    checkpoint = Path("weights") / "CUSTOM_fssd_resnet18_size128_anchor24.0.pth"
    assert (f"training stopped by a data error: saved {checkpoint} after iteration 2; give the image the size its "
            "annotation says (--check_data scans every image), then continue with the same command plus --resume "
            "(from iteration 2); correcting the annotation instead changes the training set, which --resume refuses: "
            "then run the same command again\n") in logged
    xml = root / "Annotations" / f"{bad.stem}.xml"
    xml.write_text(xml.read_text().replace(f"<height>{height}</height>", f"<height>{height + 1}</height>"))
    capsys.readouterr()
    assert run(tmp_path, *bad_image_argv(root), "--resume") == 2
    assert "the training set changed, so the run cannot continue exactly" in capsys.readouterr().err
    xml.write_text(xml.read_text().replace(f"<height>{height + 1}</height>", f"<height>{height}</height>"))
    cv2.imwrite(str(bad), np.zeros((height, width, 3), np.uint8))
    assert run(tmp_path, *bad_image_argv(root), "--resume") == 0


def test_a_bad_image_met_in_training_stops_with_one_line_and_saves_the_state(tmp_path, capsys):
    """The first image of iteration 2's batch is resized behind the annotation's back: a DataLoader worker meets
    it; main prints the worker's message alone and saves the state after the 2 completed iterations."""
    root = generate_shapes_dataset(tmp_path / "shapes", num_trainval=8, num_test=2)
    bad, height, width = resize_behind_the_annotation(root, 2)
    assert run(tmp_path, *bad_image_argv(root)) == 2
    captured = capsys.readouterr()
    xml = root / "Annotations" / f"{bad.stem}.xml"
    message = f"error: {bad}: image is {width}x{height + 1} (WxH) but its annotation says {width}x{height} ({xml}); fix"
    assert f"{message} the annotation's size" in captured.err.splitlines()
    assert "Traceback" not in captured.err and "DataLoader worker" not in captured.err
    checkpoint = tmp_path / "weights" / "CUSTOM_fssd_resnet18_size128_anchor24.0.pth"
    assert load_checkpoint(checkpoint)["iteration"] == 2


def test_a_checkpoint_trained_with_a_background_class_is_still_evaluated(tmp_path, capsys):
    """--classes refuses a softmax background entry (__background__) for a new class list, but a model trained with
    one before has that class: --trained_model passed the checkpoint's classes as --classes, and the refusal told a
    user who gave no --classes to remove it from them. The checkpoint's classes are the model's: it is evaluated."""
    import torch

    from tests import tiny_checkpoint

    classes = ["__background__", "cat", "dog"]
    checkpoint = tmp_path / "bg.pth"
    original = list(tiny_checkpoint.CLASS_NAMES)
    tiny_checkpoint.CLASS_NAMES[:] = classes
    try:
        tiny_checkpoint.write_tiny_checkpoint(checkpoint)
    finally:
        tiny_checkpoint.CLASS_NAMES[:] = original
    state = torch.load(checkpoint, weights_only=False)
    state["config"]["dataset"] = "custom"
    torch.save(state, checkpoint)
    samples = {"a": [("cat", (1, 1, 30, 30), 0)], "b": [("dog", (3, 3, 25, 25), 0)]}
    root = write_voc_folder(tmp_path / "data", samples, {"test": ["a", "b"]})
    assert run(tmp_path, "--trained_model", str(checkpoint), "--dataset", "custom", "--data_root", str(root),
               "--workers", "0", "--device", "cpu", "--eval_dir", str(tmp_path / "eval")) == 0
    assert "background class of a softmax classifier" not in capsys.readouterr().err
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert list(summary["metrics"]["per_class_AP50"]) == classes  # each of the model's classes scored
    assert run(tmp_path, "--dataset", "custom", "--data_root", str(root), "--classes", ",".join(classes),
               "--check_data", "--workers", "0") == 2  # a new class list is still refused
    assert capsys.readouterr().err.startswith("error: --classes __background__,cat,dog: '__background__' is the "
                                              "background class of a softmax classifier")
