"""Demo on images and folders: input collection, bad files, pixel-exact detections, drawn output, flags."""
import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models import build_detector
from tests.tiny_checkpoint import CLASS_NAMES, SIZE, write_tiny_checkpoint
from data.errors import DataError
from utils.box import PriorBox
from utils.checkpoint import CheckpointError
from utils.environment import release
from utils.run_lock import one_writer
from utils.demo import (
    DETECTIONS_FILE,
    DemoInputError,
    ImageFiles,
    add_use_arguments,
    collect_images,
    default_demo_output,
    output_names,
    run_demo,
    upright,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "SHAPES_tiny.pth")


def write_image(path: Path, height: int, width: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    cv2.rectangle(image, (width // 4, height // 4), (width // 2, height // 2), (40, 200, 90), -1)
    assert cv2.imwrite(str(path), image)
    return path


@pytest.fixture()
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    write_image(folder / "wide.png", 150, 200, seed=1)
    write_image(folder / "tall.jpg", 160, 90, seed=2)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_collect_images_from_file_folder_and_globs(photos):
    nested = photos / "more"
    nested.mkdir()
    write_image(nested / "deep.bmp", 20, 30, seed=3)
    assert collect_images(str(photos)) == [photos / "tall.jpg", photos / "wide.png"]  # sorted, .txt and folder left out
    assert collect_images(photos / "wide.png") == [photos / "wide.png"]
    assert collect_images(str(photos / "*.png")) == [photos / "wide.png"]
    assert collect_images(str(photos / "**" / "*.*")) == [photos / "more" / "deep.bmp", photos / "tall.jpg",
                                                          photos / "wide.png"]
    # several sources (a shell-expanded glob) keep their order and drop repeats
    assert collect_images([str(photos / "wide.png"), str(photos)]) == [photos / "wide.png", photos / "tall.jpg"]


def test_collect_images_errors_name_the_input(tmp_path, monkeypatch):
    with pytest.raises(DemoInputError, match=r"--demo .*missing: no such file or folder") as error:
        collect_images(str(tmp_path / "missing"))
    assert isinstance(error.value, DataError)  # main.py turns DataError into one line and exit code 2
    empty = tmp_path / "docs"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    with pytest.raises(DemoInputError, match=r"--demo .*docs: the folder holds no image files \(1 other file\)"):
        collect_images(str(empty))
    with pytest.raises(DemoInputError, match=r"the pattern matches no image files \(1 other file\)"):
        collect_images(str(empty / "*"))
    # images in sub-folders only (a dataset's train/ and test/): the message says where they are and what to pass
    for sub, count in (("train", 2), ("test", 1)):
        (empty / sub).mkdir()
        for number in range(count):
            cv2.imwrite(str(empty / sub / f"{number}.jpg"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DemoInputError) as error:
        collect_images(str(empty))
    assert str(error.value) == (
        f"--demo {empty}: the folder holds no image files (1 other file), but its sub-folders hold 3 (test/, train/): "
        f"pass '{empty}/**/*' (quoted) for all of them, or one sub-folder"
    )
    assert len(collect_images(f"{empty}/**/*")) == 3
    # a huge tree below (--demo ~): the hint stops looking after SUBFOLDER_SCAN_LIMIT entries and says "at least"
    monkeypatch.setattr("utils.demo.SUBFOLDER_SCAN_LIMIT", 2)  # test/0.jpg, train/0.jpg looked at; train/1.jpg not
    with pytest.raises(DemoInputError, match=r"but its sub-folders hold at least 2 \(test/, train/\): pass"):
        collect_images(str(empty))
    with pytest.raises(DemoInputError, match="no input given"):
        collect_images([])


def test_a_folder_named_with_brackets_gets_a_glob_that_works(tmp_path):
    # "Trip [2020]": glob reads "[2020]" as one of the characters 2 and 0, so a pattern through the folder matched
    # nothing ("images need one of the suffixes", though it holds JPEGs), and the sub-folder hint gave such a pattern
    trip = tmp_path / "Trip [2020]"
    (trip / "day1").mkdir(parents=True)
    write_image(trip / "day1" / "beach.jpg", 20, 30, seed=4)
    with pytest.raises(DemoInputError) as error:
        collect_images(str(trip))
    hinted = f"{tmp_path}/Trip [[]2020]/**/*"
    assert str(error.value) == (
        f"--demo {trip}: the folder holds no image files (0 other files), but its sub-folders hold 1 (day1/): "
        f"pass '{hinted}' (quoted) for all of them, or one sub-folder"
    )
    assert collect_images(hinted) == [trip / "day1" / "beach.jpg"]
    pattern = f"{trip}/day1/*.jpg"
    with pytest.raises(DemoInputError) as error:
        collect_images(pattern)
    escaped = f"{tmp_path}/Trip [[]2020]/day1/*.jpg"
    assert str(error.value) == (
        f"--demo {pattern}: the pattern matches no file, but {trip} exists: the pattern reads the [ ] in its name as "
        f"a choice of characters; pass '{escaped}' (quoted) to match it as written"
    )
    assert collect_images(escaped) == [trip / "day1" / "beach.jpg"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX feature")
def test_a_pipe_given_as_input_is_named_as_such_not_as_missing(tmp_path):
    # `--demo <(curl ...)` passes /dev/fd/N, a pipe: it exists, yet the demo said "no such file or folder"
    pipe = tmp_path / "photo.jpg"
    os.mkfifo(pipe)
    with pytest.raises(DemoInputError) as error:
        collect_images(str(pipe))
    assert str(error.value) == (f"--demo {pipe}: is a named pipe (FIFO), not a regular file: save the image to a file "
                                "and pass that file")


def test_collect_images_keeps_one_file_named_twice_once(photos, monkeypatch):
    monkeypatch.chdir(photos.parent)
    same = ["photos/wide.png", str(photos / "wide.png"), "photos/../photos/wide.png", "./photos"]
    assert collect_images(same) == [Path("photos/wide.png"), Path("photos/tall.jpg")]


def test_collect_images_names_a_path_it_may_not_look_into(photos, monkeypatch):
    def refused(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", refused)  # a folder without read permission (chmod has no effect on root)
    with pytest.raises(DemoInputError, match=rf"^--demo {photos}: cannot look into {photos} \(Permission denied\); "
                                             "fix its permissions or leave it out$"):
        collect_images(str(photos))


def test_output_names_disambiguate_repeated_stems():
    paths = [Path("a/cat.jpg"), Path("b/cat.jpg"), Path("a/cat.png"), Path("a/dog.jpeg"), Path("c/Cat.bmp")]
    assert output_names(paths) == ["cat.jpg", "cat-2.jpg", "cat-3.jpg", "dog.jpg", "Cat-4.jpg"]


def reference_top_detection(checkpoint: Path, image_path: Path) -> tuple[list[float], float, int]:
    """The highest-scoring detection computed by hand: resize, mean, forward, decode, scale to pixels."""
    state = torch.load(checkpoint, weights_only=True)
    model = build_detector("fssd", "resnet18", SIZE, len(CLASS_NAMES))
    model.load_state_dict(state["model"])
    image = cv2.imread(str(image_path))
    height, width = image.shape[:2]
    net_input = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    net_input = torch.from_numpy((net_input - np.array([104, 117, 123], np.float32)).transpose(2, 0, 1))[None]
    with torch.no_grad():
        loc, conf = model.eval()(net_input)
    scores = conf[0].sigmoid()
    anchor, label = divmod(int(scores.argmax()), len(CLASS_NAMES))
    a_cx, a_cy, a_w, a_h = PriorBox(24.0, SIZE).forward()[anchor].tolist()
    t_x, t_y, t_w, t_h = loc[0, anchor].tolist()
    cx, cy = a_cx + t_x * 0.1 * a_w, a_cy + t_y * 0.1 * a_h
    w, h = a_w * np.exp(t_w * 0.2), a_h * np.exp(t_h * 0.2)
    corners = np.clip([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 0, 1) * [width, height, width, height]
    return corners.tolist(), float(scores.max()), label


def test_demo_writes_pixel_detections_and_drawn_images(checkpoint, photos, tmp_path, capsys):
    out = tmp_path / "out"
    summary = run_demo(checkpoint, str(photos), out, batch_size=2, score_thresh=0.0, max_per_image=5)
    assert summary == {"images": 2, "unreadable": 0, "detections": 10, "removed": 0, "output_dir": str(out),
                       "json": str(out / "detections.json")}
    report = json.loads((out / "detections.json").read_text())
    assert report["class_names"] == CLASS_NAMES and report["input_size"] == SIZE
    assert [(r["file"], r["output"], r["width"], r["height"]) for r in report["images"]] == [
        (str(photos / "tall.jpg"), "tall.jpg", 90, 160), (str(photos / "wide.png"), "wide.jpg", 200, 150)]
    for record in report["images"]:
        image_path = Path(record["file"])
        box, score, label = reference_top_detection(checkpoint, image_path)
        top = record["detections"][0]
        np.testing.assert_allclose(top["box"], box, atol=0.011)
        assert top["score"] == pytest.approx(score, abs=1e-4)
        assert (top["label"], top["class_name"]) == (label, CLASS_NAMES[label])
        scores = [d["score"] for d in record["detections"]]
        assert scores == sorted(scores, reverse=True)
        drawn = cv2.imread(str(out / record["output"]))
        original = cv2.imread(str(image_path))
        assert drawn.shape == original.shape
        assert np.abs(drawn.astype(int) - original.astype(int)).max() > 100  # boxes and captions are drawn
    assert "10 detections in 2 images" in capsys.readouterr().err


def save_with_orientation(path: Path, image_bgr: np.ndarray, orientation: int) -> Path:
    """``image_bgr`` stored as is, with the EXIF orientation tag ``orientation`` (lossless for .png)."""
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(image_bgr[..., ::-1]))
    exif = picture.getexif()
    exif[0x0112] = orientation
    picture.save(path, exif=exif)
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_upright_turns_as_image_viewers_do(tmp_path, orientation):
    from PIL import Image, ImageOps

    from data.dataset import exif_orientation, read_image

    path = save_with_orientation(tmp_path / "a.png", np.random.default_rng(0).integers(0, 256, (5, 7, 3), np.uint8),
                                 orientation)
    with Image.open(path) as picture:
        viewed = np.asarray(ImageOps.exif_transpose(picture).convert("RGB"))[..., ::-1]
    np.testing.assert_array_equal(upright(read_image(path), exif_orientation(path)), viewed)


def test_the_orientation_of_a_png_is_read_without_decoding_its_pixels(tmp_path, monkeypatch):
    """PIL's ``PngImageFile.getexif`` decodes the whole image when no eXIf chunk precedes the pixel data (most PNGs
    have none): the demo read every such PNG twice, once by PIL for nothing. The header's chunks are enough."""
    from PIL import PngImagePlugin

    from data.dataset import exif_orientation

    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), np.uint8)
    assert cv2.imwrite(str(tmp_path / "plain.png"), image)
    rotated = save_with_orientation(tmp_path / "rotated.png", image, 6)
    decoded = []
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: decoded.append(self.filename))
    assert exif_orientation(tmp_path / "plain.png") is None
    assert exif_orientation(rotated) == 6
    assert decoded == []


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_tiff_is_turned_upright_once(tmp_path, orientation):
    """OpenCV's TIFF decoder applies the orientation tag itself, whatever IMREAD_IGNORE_ORIENTATION says: the demo
    turned such a TIFF a second time (a tag 6 TIFF came out sideways, a mirrored one as stored)."""
    stored = np.random.default_rng(0).integers(0, 256, (5, 7, 3), np.uint8)
    path = save_with_orientation(tmp_path / "scan.tif", stored, orientation)
    _, original, error, _ = ImageFiles([path], SIZE)[0]
    assert error is None
    np.testing.assert_array_equal(original, upright(stored, orientation))



@pytest.mark.parametrize("suffix, under_transparent", [(".png", (10, 30, 200)), (".webp", (10, 30, 200)),
                                                       (".tif", (0, 0, 0))])
def test_the_alpha_channel_is_dropped_as_docs_demo_md_says(tmp_path, suffix, under_transparent):
    """A transparent PNG or WebP gives the network the colour stored under its transparent pixels, not a background;
    OpenCV's TIFF decoder multiplies the colour by the alpha instead (docs/demo.md)."""
    from PIL import Image, __version__ as pillow_version

    if suffix == ".webp" and release(pillow_version) < (9, 4):
        pytest.skip(f"Pillow {pillow_version} ignores exact=True (9.4 added it): its lossless WebP writer zeroes the "
                    "colour under transparent pixels, which this test needs stored")
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., :3] = (200, 30, 10)  # RGB
    rgba[:, 3:, 3] = 255  # left half transparent, right half opaque
    path = tmp_path / f"a{suffix}"
    Image.fromarray(rgba).save(path, **({"lossless": True, "exact": True} if suffix == ".webp" else {}))
    _, original, error, _ = ImageFiles([path], SIZE)[0]
    assert error is None and original.shape == (4, 6, 3)
    assert (original[:, :3] == under_transparent).all() and (original[:, 3:] == (10, 30, 200)).all()  # BGR

def test_demo_reads_a_rotated_phone_photo_upright(checkpoint, tmp_path):
    """A photo stored sideways with EXIF orientation 6 gives the detections, size and drawing of its upright view."""
    stored = cv2.imread(str(write_image(tmp_path / "stored.png", 90, 160, seed=4)))  # [90, 160]: sideways
    view = np.ascontiguousarray(np.rot90(stored, -1))  # [160, 90]: what viewers show for orientation 6
    (tmp_path / "in").mkdir()
    save_with_orientation(tmp_path / "in" / "phone.png", stored, 6)
    assert cv2.imwrite(str(tmp_path / "in" / "view.png"), view)
    run_demo(checkpoint, str(tmp_path / "in"), tmp_path / "out", score_thresh=0.0, max_per_image=5)
    phone, plain = json.loads((tmp_path / "out" / "detections.json").read_text())["images"]
    assert (phone["width"], phone["height"]) == (plain["width"], plain["height"]) == (90, 160)
    assert phone["detections"] == plain["detections"]
    assert cv2.imread(str(tmp_path / "out" / "phone.jpg")).shape == (160, 90, 3)


def test_a_rotated_photo_over_pils_pixel_limit_is_still_read_upright(checkpoint, tmp_path, monkeypatch):
    """PIL refuses to open a header of over 2 x ``MAX_IMAGE_PIXELS`` (179 MP: a 200 MP phone photo), which OpenCV
    decodes; its EXIF orientation is still read (only the header is), so the demo sees the upright view. The limit is
    lowered here to 1,000 so that a 90 x 160 photo is over it."""
    from PIL import Image

    from data.dataset import exif_orientation

    stored = cv2.imread(str(write_image(tmp_path / "stored.png", 90, 160, seed=4)))  # [90, 160]: sideways
    (tmp_path / "in").mkdir()
    phone = save_with_orientation(tmp_path / "in" / "phone.jpg", stored, 6)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(phone)
    assert exif_orientation(phone) == 6
    assert Image.MAX_IMAGE_PIXELS == 1000  # PIL's limit is as it was for other readers
    run_demo(checkpoint, str(tmp_path / "in"), tmp_path / "out", score_thresh=0.0, max_per_image=5)
    record = json.loads((tmp_path / "out" / "detections.json").read_text())["images"][0]
    assert (record["width"], record["height"]) == (90, 160)
    assert cv2.imread(str(tmp_path / "out" / "phone.jpg")).shape == (160, 90, 3)


def test_demo_is_the_same_batched_and_one_by_one(checkpoint, photos, tmp_path):
    for batch_size in (1, 2):
        run_demo(checkpoint, str(photos), tmp_path / f"b{batch_size}", batch_size=batch_size, score_thresh=0.0,
                 max_per_image=20)
    one, two = (json.loads((tmp_path / f"b{b}" / "detections.json").read_text())["images"] for b in (1, 2))
    for single, batched in zip(one, two):
        assert [d["label"] for d in single["detections"]] == [d["label"] for d in batched["detections"]]
        np.testing.assert_allclose([d["box"] for d in single["detections"]], [d["box"] for d in batched["detections"]],
                                   atol=0.011)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_demo_equals_the_eager_demo(checkpoint, photos, tmp_path):
    for name, cuda_graph in (("eager", False), ("graph", True)):
        run_demo(checkpoint, str(photos), tmp_path / name, device="cuda", batch_size=2, score_thresh=0.0,
                 max_per_image=20, cuda_graph=cuda_graph)
    eager, graph = (json.loads((tmp_path / name / "detections.json").read_text())["images"]
                    for name in ("eager", "graph"))
    assert len(eager) == len(graph) > 0
    for want, got in zip(eager, graph):
        assert [d["label"] for d in want["detections"]] == [d["label"] for d in got["detections"]]
        np.testing.assert_allclose([d["box"] for d in want["detections"]], [d["box"] for d in got["detections"]],
                                   atol=0.011)


@pytest.mark.parametrize("score_thresh", ["0.99", "0.9999999"])
def test_demo_score_threshold_filters(checkpoint, photos, tmp_path, capsys, score_thresh):
    """The final line names the threshold as given (``:g`` printed 0.9999999 as 1, a threshold that cannot be)."""
    summary = run_demo(checkpoint, str(photos), tmp_path / "none", score_thresh=float(score_thresh))
    assert summary["detections"] == 0 and summary["images"] == 2
    assert (tmp_path / "none" / "tall.jpg").is_file()
    assert (f"demo: 0 detections in 2 images (no box scored above --score_thresh {score_thresh}: a lower one shows "
            "weaker detections) written to") in capsys.readouterr().err  # what to change, not just a count of 0


def test_demo_summary_counts_one_image_one_detection_and_one_unreadable_file_in_the_singular(checkpoint, photos,
                                                                                              tmp_path, capsys):
    run_demo(checkpoint, str(photos), tmp_path / "out", score_thresh=0.0, max_per_image=1)  # draws tall.jpg, wide.jpg
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    capsys.readouterr()
    run_demo(checkpoint, [str(photos / "wide.png"), str(photos / "broken.jpg")], tmp_path / "out", score_thresh=0.0,
             max_per_image=1)
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"demo: 1 detection in 1 image written to {tmp_path / 'out'} (detections.json); 1 unreadable file skipped; "
        "1 drawn copy of earlier runs deleted (tall.jpg)")


def test_demo_skips_unreadable_files_by_name(checkpoint, photos, tmp_path, capsys):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    (photos / "garbage.png").write_bytes(b"plain text, not a png")
    summary = run_demo(checkpoint, str(photos), tmp_path / "out", batch_size=3, score_thresh=0.5)
    assert (summary["images"], summary["unreadable"]) == (2, 2)
    err = capsys.readouterr().err
    assert f"skipped unreadable image: {photos / 'broken.jpg'}: truncated JPEG" in err
    assert f"skipped unreadable image: {photos / 'garbage.png'}: OpenCV cannot decode" in err
    report = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert [u["file"] for u in report["unreadable"]] == [str(photos / "broken.jpg"), str(photos / "garbage.png")]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["detections.json", "tall.jpg", "wide.jpg"]


def test_images_behind_broken_links_are_named_skipped_and_counted(checkpoint, photos, tmp_path, capsys):
    """Links to a drive that is not mounted were left out as if absent: a folder of them "holds no image files
    (0 other files)", one given by name had "no such file or folder", and among good images they were not counted."""
    album = tmp_path / "album"
    album.mkdir()
    (album / "a.jpg").symlink_to(tmp_path / "unmounted" / "a.jpg")
    assert collect_images(str(album)) == collect_images(str(album / "*.jpg")) == [album / "a.jpg"]
    assert collect_images(str(album / "a.jpg")) == [album / "a.jpg"]
    (photos / "linked.jpg").symlink_to(tmp_path / "unmounted" / "b.jpg")
    summary = run_demo(checkpoint, str(photos), tmp_path / "out", score_thresh=0.5)
    assert (summary["images"], summary["unreadable"]) == (2, 1)
    assert (f"skipped unreadable image: {photos / 'linked.jpg'}: image file is a broken symbolic link (to "
            f"{tmp_path / 'unmounted' / 'b.jpg'}, which does not exist)") in capsys.readouterr().err


def test_demo_refuses_an_output_folder_holding_its_inputs(checkpoint, photos):
    before = {path.name: path.read_bytes() for path in photos.iterdir()}
    with pytest.raises(DemoInputError, match=rf"--demo_output {photos} holds input images \(tall\.jpg, \.\.\.\): "
                                             "the drawn copies would replace them"):
        run_demo(checkpoint, str(photos), photos)
    assert {path.name: path.read_bytes() for path in photos.iterdir()} == before


def test_the_same_command_runs_again_when_its_glob_takes_in_the_output_folder(checkpoint, photos, capsys):
    """`--demo 'photos/**/*' --demo_output photos/detected` ran once; run again, its glob took in the drawn copies
    and the demo refused, calling them "input images" that "the drawn copies would replace"."""
    out = photos / "detected"
    pattern = f"{photos}/**/*"
    first = run_demo(checkpoint, pattern, out, score_thresh=0.0)
    capsys.readouterr()
    again = run_demo(checkpoint, pattern, out, score_thresh=0.0)
    assert (first["images"], first["detections"]) == (again["images"], again["detections"]) == (2, 200)
    assert (f"demo: left out 2 drawn copies that earlier runs wrote to --demo_output {out} (tall.jpg, wide.jpg), "
            "which the inputs take in") in capsys.readouterr().err
    report = json.loads((out / DETECTIONS_FILE).read_text())
    assert [image["file"] for image in report["images"]] == [str(photos / "tall.jpg"), str(photos / "wide.png")]
    assert sorted(path.name for path in out.iterdir()) == [DETECTIONS_FILE, "tall.jpg", "wide.jpg"]
    with pytest.raises(DemoInputError) as error:
        run_demo(checkpoint, str(out), out)
    assert str(error.value) == (f"--demo: every input is a drawn copy that an earlier run wrote to --demo_output {out} "
                                "(tall.jpg, wide.jpg); pass the original images")


def test_demo_never_replaces_a_file_it_did_not_draw(checkpoint, photos, tmp_path):
    from PIL import Image

    run_demo(checkpoint, str(photos), tmp_path / "out")
    with Image.open(tmp_path / "out" / "wide.jpg") as drawn:  # a plain JPEG that other programs read
        assert drawn.format == "JPEG" and drawn.size == (200, 150)
    (tmp_path / "out" / DETECTIONS_FILE).unlink()
    run_demo(checkpoint, str(photos), tmp_path / "out")  # a rerun replaces its own drawn copies
    out = tmp_path / "pictures"
    out.mkdir()
    users_photo = write_image(out / "tall.jpg", 30, 40, seed=9).read_bytes()
    with pytest.raises(DemoInputError, match=rf"^--demo_output {out} holds tall\.jpg, which no demo run wrote: the "
                                             rf"drawn copy of {photos / 'tall.jpg'} would replace it; choose another "
                                             r"--demo_output folder \(a new or empty one\)$"):
        run_demo(checkpoint, str(photos), out)
    assert (out / "tall.jpg").read_bytes() == users_photo


def test_demo_replaces_unmarked_drawn_copies_its_detections_json_lists(checkpoint, photos, tmp_path):
    """Drawn copies of a run from before the copies were marked are known from the folder's detections.json."""
    out = tmp_path / "out"
    run_demo(checkpoint, str(photos), out)
    assert cv2.imwrite(str(out / "tall.jpg"), np.zeros((4, 4, 3), np.uint8))  # no mark, as before
    run_demo(checkpoint, str(photos), out)
    assert cv2.imread(str(out / "tall.jpg")).shape == (160, 90, 3)


def test_a_rerun_deletes_the_drawn_copies_an_earlier_run_left_and_no_other_file(checkpoint, photos, tmp_path, capsys):
    """As eval/<DATASET>/ holds the latest evaluation's files alone, the demo folder holds the latest run's drawn
    copies: an earlier run's copy that this run does not rewrite is deleted if it carries the drawn mark; a photo of
    the user's, another file, an unmarked copy (from before copies were marked) and a link to a drawn copy are kept."""
    out = tmp_path / "out"
    run_demo(checkpoint, str(photos), out)
    (out / "tall.jpg").rename(out / "interrupted.jpg")  # a drawn copy of a run stopped before its detections.json
    users_photo = write_image(out / "mine.jpg", 20, 30, seed=4).read_bytes()
    assert cv2.imwrite(str(out / "unmarked.jpg"), np.zeros((4, 4, 3), np.uint8))
    (out / "notes.txt").write_text("kept")
    (out / "link.jpg").symlink_to(out / "wide.jpg")
    capsys.readouterr()
    summary = run_demo(checkpoint, str(photos / "tall.jpg"), out)
    assert sorted(path.name for path in out.iterdir()) == [
        DETECTIONS_FILE, "link.jpg", "mine.jpg", "notes.txt", "tall.jpg", "unmarked.jpg"]
    assert (out / "mine.jpg").read_bytes() == users_photo and summary["removed"] == 2
    assert "; 2 drawn copies of earlier runs deleted (interrupted.jpg, wide.jpg)" in capsys.readouterr().err


def test_a_rerun_keeps_its_own_drawn_copy_that_the_folder_lists_under_an_earlier_runs_letter_case(checkpoint, photos,
                                                                                                  tmp_path):
    """On a case-insensitive disk (macOS, Windows) writing tall.jpg over an earlier run's Tall.jpg keeps the name
    Tall.jpg, which the clean-up then deleted as an earlier run's copy: this run's own drawn copy, listed in its
    detections.json, was gone. A hard link stands in for that second name of the same file here."""
    out = tmp_path / "out"
    run_demo(checkpoint, str(photos / "tall.jpg"), out)
    (out / "tall.jpg").rename(out / "Tall.jpg")  # as an earlier run on Tall.png left it
    (out / "tall.jpg").hardlink_to(out / "Tall.jpg")  # the name this run opens reaches the same file
    summary = run_demo(checkpoint, str(photos / "tall.jpg"), out)
    assert summary["removed"] == 0 and (out / "Tall.jpg").is_file()
    assert cv2.imread(str(out / "Tall.jpg")).shape == (160, 90, 3)


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_demo_waits_while_another_writes_its_output_folder(checkpoint, photos, tmp_path, capsys):
    """Two runs into one folder would mix their files (one's clean-up deleting the other's fresh drawn copies, a
    detections.json naming another run's images): a run waits, saying so, while another holds the folder's lock."""
    out = tmp_path / "out"
    summaries = []
    demo = threading.Thread(target=lambda: summaries.append(run_demo(checkpoint, photos / "wide.png", out)))
    with one_writer(out):  # this test is the other run, writing to out/
        demo.start()
        stderr, deadline = "", time.monotonic() + 60
        while demo.is_alive() and "waiting for" not in stderr and time.monotonic() < deadline:
            time.sleep(0.02)
            stderr += capsys.readouterr().err
        assert demo.is_alive(), "the demo ran to its end while another run held its output folder"
        assert f"waiting for another demo run (process {os.getpid()}) to finish writing to {out}" in stderr
        assert not out.exists()  # nothing written yet
    demo.join(timeout=60)
    assert [summary["images"] for summary in summaries] == [1]
    assert sorted(path.name for path in out.iterdir()) == [DETECTIONS_FILE, "wide.jpg"]


def test_demo_never_writes_through_a_link_named_as_its_drawn_copy(checkpoint, photos, tmp_path):
    """A link where a drawn copy goes was taken for a drawn copy (its target carries the mark, or an earlier
    detections.json lists the name), and the new copy was written through it, into the file it points to: here the
    user's own photo in another folder. A link is never a file a demo run wrote: the run is refused."""
    out = tmp_path / "out"
    run_demo(checkpoint, str(photos), out)
    mine = write_image(tmp_path / "mine.jpg", 30, 40, seed=9)
    users_photo = mine.read_bytes()
    (out / "tall.jpg").unlink()
    (out / "tall.jpg").symlink_to(mine)  # detections.json still lists tall.jpg
    with pytest.raises(DemoInputError, match=r"holds tall\.jpg, which no demo run wrote"):
        run_demo(checkpoint, str(photos), out)
    assert mine.read_bytes() == users_photo and (out / "tall.jpg").is_symlink()
    (out / "tall.jpg").unlink()
    (out / "tall.jpg").symlink_to(tmp_path / "elsewhere.jpg")  # a link to no file: the copy would create it there
    with pytest.raises(DemoInputError, match=r"holds tall\.jpg, which no demo run wrote"):
        run_demo(checkpoint, str(photos), out)
    assert not (tmp_path / "elsewhere.jpg").exists()


def test_demo_output_under_a_file_is_refused(checkpoint, photos, tmp_path):
    in_the_way = tmp_path / "out"
    in_the_way.write_text("")
    with pytest.raises(ValueError, match=rf"--demo_output {in_the_way}/drawn: cannot write there \({in_the_way} is a "
                                         r"file\); give a writable folder"):
        run_demo(checkpoint, str(photos), in_the_way / "drawn")


def test_an_image_too_wide_for_jpeg_keeps_its_detections_without_a_drawn_copy(checkpoint, photos, tmp_path, capsys):
    write_image(photos / "panorama.png", 8, 70_000, seed=3)  # JPEG allows at most 65,500 px a side
    summary = run_demo(checkpoint, str(photos), tmp_path / "out", score_thresh=0.0)
    assert (summary["images"], summary["unreadable"]) == (3, 0)
    assert "OpenCV cannot encode a 70000x8 image as JPEG (at most 65,500 px a side)" in capsys.readouterr().err
    records = {Path(r["file"]).name: r
               for r in json.loads((tmp_path / "out" / "detections.json").read_text())["images"]}
    assert records["panorama.png"]["output"] is None and records["panorama.png"]["width"] == 70_000
    assert records["panorama.png"]["detections"] and records["tall.jpg"]["output"] == "tall.jpg"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["detections.json", "tall.jpg", "wide.jpg"]


def test_demo_with_only_unreadable_files_fails_clearly(checkpoint, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"")
    with pytest.raises(DemoInputError, match=r"^--demo: the one file given could not be read as an image; "):
        run_demo(checkpoint, str(tmp_path / "bad.jpg"), tmp_path / "out")
    report = json.loads((tmp_path / "out" / "detections.json").read_text())
    bad = tmp_path / "bad.jpg"
    assert report["unreadable"] == [{"file": str(bad), "error": f"{bad}: image file is empty"}]


def test_demo_rejects_bad_checkpoint_and_flags(photos, tmp_path, checkpoint):
    fake = tmp_path / "fake.pth"
    torch.save({"model": {}}, fake)
    with pytest.raises(CheckpointError, match="not a checkpoint written by main.py"):
        run_demo(fake, str(photos), tmp_path / "out")
    with pytest.raises(ValueError, match="--batch_size must be >= 1"):
        run_demo(checkpoint, str(photos), tmp_path / "out", batch_size=0)
    with pytest.raises(ValueError, match=r"--score_thresh 1.5 must be in \[0, 1\)"):
        run_demo(checkpoint, str(photos), tmp_path / "out", score_thresh=1.5)


def test_default_output_folder_and_flags():
    assert default_demo_output("weights/SHAPES_fssd_resnet18_size320_anchor24.0_MG.pth") == Path(
        "eval/demo/SHAPES_fssd_resnet18_size320_anchor24.0_MG")
    parser = add_use_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--demo", "a.jpg", "photos/", "--demo_output", "out", "--score_thresh", "0.5",
                              "--export", "ONNX", "--export_path", "m.onnx", "--opset", "13", "--export_nms"])
    assert (args.demo, args.demo_output, args.score_thresh) == (["a.jpg", "photos/"], "out", 0.5)
    assert (args.export, args.export_path, args.opset, args.export_nms) == ("onnx", "m.onnx", 13, True)
    defaults = parser.parse_args([])
    assert (defaults.demo, defaults.demo_output, defaults.score_thresh, defaults.export, defaults.opset) == (
        None, None, None, None, None)  # not given: DEFAULT_SCORE_THRESH (0.3), export_onnx's DEFAULT_OPSET (17)


def test_class_names_opencv_cannot_draw_get_one_warning_and_stay_intact_in_the_json(checkpoint, photos, tmp_path,
                                                                                    capsys):
    """OpenCV's Hershey font draws printable ASCII only: a checkpoint whose classes are "café" and "狗" says so once;
    detections.json keeps the names as written (ASCII JSON escapes)."""
    state = torch.load(checkpoint, weights_only=True)
    renamed = tmp_path / "renamed.pth"
    torch.save(dict(state, class_names=["café", "square", "狗"]), renamed)
    out = tmp_path / "out"
    run_demo(renamed, str(photos), out, score_thresh=0.0, max_per_image=30)
    err = capsys.readouterr().err
    assert err.count("warning: OpenCV's font draws ASCII only: the captions of café, 狗 show '?' for their other "
                     "characters in the drawn images; detections.json holds the names as written") == 1
    text = (out / "detections.json").read_text(encoding="utf-8")
    assert text.isascii() and '"caf\\u00e9"' in text  # ASCII JSON, as docs/demo.md says
    report = json.loads(text)
    assert report["class_names"] == ["café", "square", "狗"]
    assert {d["class_name"] for r in report["images"] for d in r["detections"]} == {"café", "square", "狗"}
    run_demo(checkpoint, str(photos), tmp_path / "ascii", score_thresh=0.0, max_per_image=5)
    assert "OpenCV's font" not in capsys.readouterr().err
