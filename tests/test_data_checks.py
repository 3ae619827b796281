"""Image reading errors and the whole-dataset scan behind --check_data."""
import json
import re
import struct
import sys
import warnings
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image
import torch
from torch.utils.data import DataLoader

from data import COCODetection, DataError, DataWarning, TestTransform, build_dataset, check_dataset
from data import checks
from data.loader import WorkerLoader
from data.dataset import DEGENERATE_BOX_DROPPED, Annotations, DetectionDataset, exif_orientation, read_image
from data.errors import CorruptImageWarning, ImageWarning, original_message, say_unnamed_image_warnings
from main import one_line_data_warnings
from tests.terminal_view import TerminalView
from tests.test_data_coco import GOOD_ANNOTATIONS, coco_json, write_coco
from tests.test_data_voc import voc_xml, write_png_header, write_voc_folder


def write_jpeg(path, height=40, width=50):
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    cv2.imwrite(str(path), image)
    return image


def test_read_image_returns_bgr_pixels(tmp_path):
    image = np.zeros((6, 7, 3), np.uint8)
    image[..., 0] = 200  # blue in BGR
    cv2.imwrite(str(tmp_path / "a.png"), image)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), image)


def test_truncated_jpeg_is_detected_although_opencv_decodes_it(tmp_path):
    path = tmp_path / "cut.jpg"
    write_jpeg(path, 120, 160)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert cv2.imread(str(path)) is not None  # OpenCV returns a partial image and only warns
    with pytest.raises(DataError, match=r"cut\.jpg: truncated JPEG \(no end-of-image marker FFD9\)"):
        read_image(path)


def test_a_whole_jpeg_whose_header_is_damaged_is_undecodable_not_truncated(tmp_path):
    """A damaged segment length that runs past the end of the file made the marker walk call a whole file (its
    end-of-image marker there) "truncated JPEG (no end-of-image marker FFD9)"; the same file cut short still is."""
    image = np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    data = bytearray(cv2.imencode(".jpg", image)[1].tobytes())
    huffman_table = data.index(b"\xff\xc4")
    data[huffman_table + 2:huffman_table + 4] = (0xFFF0).to_bytes(2, "big")  # its length, past the end of the file
    damaged, cut = tmp_path / "damaged.jpg", tmp_path / "cut.jpg"
    damaged.write_bytes(bytes(data))
    cut.write_bytes(bytes(data[:-100]))
    with pytest.raises(DataError) as error:
        read_image(damaged)
    assert str(error.value).startswith(f"{damaged}: OpenCV cannot decode the file as an image")
    with pytest.raises(DataError, match=r"cut\.jpg: truncated JPEG \(no end-of-image marker FFD9\)"):
        read_image(cut)


def test_jpeg_with_trailing_zero_padding_is_accepted(tmp_path):
    path = tmp_path / "padded.jpg"
    image = write_jpeg(path)
    path.write_bytes(path.read_bytes() + b"\x00" * 16)
    assert read_image(path).shape == image.shape


def test_jpeg_with_a_camera_trailer_after_its_end_marker_is_accepted(tmp_path):
    path = tmp_path / "trailer.jpg"
    image = write_jpeg(path)
    path.write_bytes(path.read_bytes() + b"SEFT" + bytes(range(256)) + b"\xff\xd8\xff")
    np.testing.assert_array_equal(read_image(path), cv2.imread(str(path)))
    assert image.shape == (40, 50, 3)


def with_embedded_thumbnail(data: bytes) -> bytes:
    """The JPEG ``data`` with a comment segment holding a small JPEG (as an EXIF thumbnail sits in APP1): an ``FFD9``
    inside a length-prefixed segment, before the main image's scan."""
    ok, thumbnail = cv2.imencode(".jpg", np.full((8, 8, 3), 90, np.uint8))
    assert ok and thumbnail.tobytes().endswith(b"\xff\xd9")
    segment = b"\xff\xfe" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail.tobytes()
    return data[:2] + segment + data[2:]


@pytest.mark.parametrize(
    "params",
    [[], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], [cv2.IMWRITE_JPEG_RST_INTERVAL, 2]],
    ids=["baseline", "progressive", "restart markers"],
)
def test_truncation_is_found_past_an_embedded_thumbnail_in_every_jpeg_kind(tmp_path, params):
    image = np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", image, params)
    data = with_embedded_thumbnail(encoded.tobytes())
    whole, cut = tmp_path / "whole.jpg", tmp_path / "cut.jpg"
    whole.write_bytes(data)
    cut.write_bytes(data[: len(data) - 200])
    np.testing.assert_array_equal(read_image(whole), cv2.imdecode(encoded, cv2.IMREAD_COLOR))
    with pytest.raises(DataError, match=r"cut\.jpg: truncated JPEG"):
        read_image(cut)


def test_an_image_above_opencvs_pixel_limit_is_an_error_naming_the_file(tmp_path):
    ok, encoded = cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))
    data = bytearray(encoded.tobytes())
    data[16:24] = (33_000).to_bytes(4, "big") * 2  # the header's width and height: 1.1e9 pixels, above 2^30
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    path = tmp_path / "huge.png"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as error:
        read_image(path)
    assert str(error.value) == (f"{path}: the image is over the decoder's pixel limit (the limit is 1,073,741,824 "
                                "pixels); resize the image (and scale its boxes to match)")


@pytest.mark.parametrize(
    "content, message",
    [(None, "image file not found"), (b"", "image file is empty"), (b"not an image at all", "OpenCV cannot decode"),
     (b"II*\x00\xff\xff\x00\x00", "OpenCV cannot decode"),  # a TIFF header whose directory is past the end
     (b"MM\x00*\x00\x00\x00\x08\x00\x03\x01\x12", "OpenCV cannot decode")],  # cut inside its first entry
)
def test_unreadable_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=rf"bad\.jpg: {message}"):
        read_image(path)


def test_a_decoder_error_is_part_of_the_error_naming_the_file(tmp_path, capfd):
    """libpng prints why it cannot decode a file (a truncated PNG) on stderr, without the file's name."""
    path = tmp_path / "cut.png"
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    data = cv2.imencode(".png", image)[1].tobytes()
    path.write_bytes(data[: len(data) // 2])
    capfd.readouterr()
    with pytest.raises(DataError) as error:
        read_image(path)
    # libpng's line or OpenCV's own (without its log prefix), by where the data stops
    assert re.fullmatch(rf"{re.escape(str(path))}: OpenCV cannot decode the file as an image \((libpng error|OpenCV): "
                        r"PNG input buffer is incomplete\); re-download or re-encode the file", str(error.value))
    assert capfd.readouterr().err == ""  # not libpng's bare line


def test_a_decoder_warning_about_an_image_that_decodes_names_the_file_once(tmp_path, capfd):
    """A PNG with a broken colour profile (iCCP chunk) decodes, and libpng prints a warning line without the file's
    name at every read: every epoch, for every such image. It is a warning naming the file, shown once per run."""
    path = tmp_path / "profile.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(path, icc_profile=b"\0" * 300)
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = one_line_data_warnings(warnings.showwarning)
        for _ in range(3):
            assert read_image(path).shape == (20, 30, 3)
    assert capfd.readouterr().err == (f"warning: {path}: the image decoder says 'libpng warning: iCCP: too short' "
                                      "(the image is read; re-save it to silence this)\n")


@pytest.mark.parametrize("kind", ["png", "bmp", "gray_jpeg", "gray_png", "cmyk_jpeg", "png16", "rgba_png"])
def test_every_image_kind_of_a_researchers_own_set_reads_as_the_8_bit_bgr_pillow_shows(tmp_path, kind):
    """The image kinds README "Datasets" lists are read as uint8 BGR with the pixels Pillow gives (its RGB
    conversion; a 16-bit PNG's high bytes; the colour under an alpha channel), so boxes and colours line up."""
    rgb = np.random.default_rng(0).integers(0, 256, (12, 16, 3), np.uint8)
    picture = Image.fromarray(rgb)
    name = {"bmp": "a.bmp", "gray_jpeg": "a.jpg", "cmyk_jpeg": "a.jpg"}.get(kind, "a.png")
    path = tmp_path / name
    if kind == "png16":
        assert cv2.imwrite(str(path), rgb[..., ::-1].astype(np.uint16) * 257)
        expected = rgb
    elif kind == "rgba_png":
        picture.putalpha(Image.fromarray(np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)))
        picture.save(path)
        expected = rgb
    else:
        {"gray_jpeg": picture.convert("L"), "gray_png": picture.convert("L"),
         "cmyk_jpeg": picture.convert("CMYK")}.get(kind, picture).save(path)
        expected = np.asarray(Image.open(path).convert("RGB"))
    image = read_image(path)
    assert image.shape == (12, 16, 3) and image.dtype == np.uint8
    assert np.abs(image[..., ::-1].astype(int) - expected).mean() < 1.5


def test_a_16_bit_image_of_12_bit_data_that_reads_nearly_black_is_a_warning_naming_the_file(tmp_path):
    """A 16-bit PNG or TIFF is read as 8 bits, the high byte of each value: a camera's or microscope's 12-bit data
    (0..4095) read as 0..15, so the network trained on black images without a word. It still reads so, with a warning
    naming the file, its range and the fix; full-range 16-bit images and black 8-bit ones give none."""
    rng = np.random.default_rng(0)
    twelve_bit = rng.integers(0, 4000, (20, 30), np.uint16)
    twelve_bit[0, 0] = 4000
    for suffix in (".png", ".tif"):
        path = tmp_path / f"raw{suffix}"
        cv2.imwrite(str(path), twelve_bit)
        with pytest.warns(ImageWarning) as caught:
            image = read_image(path)
        np.testing.assert_array_equal(image, np.repeat((twelve_bit >> 8).astype(np.uint8)[..., None], 3, axis=2))
        assert [str(warning.message) for warning in caught] == [
            f"{path}: a 16-bit image whose values reach only 4000 of 65535 (data of 12 bits or fewer): read as 8 bits, "
            "the high byte of each value, it is nearly black (0..15 of 255); rescale its values to 8 bits (e.g. "
            "value * 255 // 4000) or to the 16-bit range and save it again"
        ]
    with_alpha = tmp_path / "raw_alpha.png"  # an opaque alpha channel (65535) is no image value
    cv2.imwrite(str(with_alpha), np.dstack([twelve_bit] * 3 + [np.full_like(twelve_bit, 65535)]))
    with pytest.warns(ImageWarning, match="values reach only 4000 of 65535"):
        read_image(with_alpha)
    cv2.imwrite(str(tmp_path / "full.png"), rng.integers(0, 65536, (20, 30, 3), np.uint16))
    cv2.imwrite(str(tmp_path / "black.png"), np.zeros((20, 30, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "blank16.png"), np.zeros((20, 30, 3), np.uint16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("full.png", "black.png", "blank16.png"):
            read_image(tmp_path / name)


def make_dataset(tmp_path):
    objects = {"a": [("cat", (1, 2, 10, 12), 1)], "b": [], "c": [("cat", (3, 3, 9, 9), 0), ("dog", (1, 1, 5, 5), 0)]}
    root = write_voc_folder(tmp_path, objects, {"trainval": list(objects)}, size=(40, 50))
    return root, build_dataset("voc", "train", 64, data_root=str(root), classes=["cat", "dog", "bird"])


def test_check_dataset_reports_a_clean_set(tmp_path):
    _, dataset = make_dataset(tmp_path)
    report = check_dataset(dataset, workers=2, progress=False)
    assert (report.num_images, report.num_objects, report.num_difficult, report.empty_images) == (3, 3, 1, 1)
    assert report.objects_per_class == {"cat": 2, "dog": 1, "bird": 0}
    assert report.summary() == ("3 images, 3 objects (1 difficult), 1 image without objects\n"
                                "objects per class: cat 2, dog 1, bird 0")
    report.num_objects, report.empty_images = 1, 2
    assert report.summary().splitlines()[0] == "3 images, 1 object (1 difficult), 2 images without objects"
    report.fixups = {"box clipped to the image": 2, DEGENERATE_BOX_DROPPED: 1}
    assert report.summary().splitlines()[1] == ("annotations fixed on reading: box clipped to the image: 2; "
                                                "degenerate box dropped (x2 <= x1 or y2 <= y1, in pixels or once "
                                                "normalised): 1")


@pytest.mark.filterwarnings("ignore::data.errors.DataWarning")  # the person box reaching past the image edge
def test_check_dataset_counts_crowd_boxes_not_difficult_ones_for_coco_data(tmp_path):
    """COCO has no difficult flag; its metric ignores iscrowd boxes instead, so the report counts those."""
    write_coco(tmp_path, "train", coco_json(GOOD_ANNOTATIONS))
    report = check_dataset(build_dataset("custom", "train", 64, data_root=str(tmp_path)), workers=0, progress=False)
    # person (iscrowd 0) and the crowd bus; the 5 px toothbrush is left out of training
    assert report.num_objects == 2 and report.num_crowd == 1
    assert report.summary().splitlines()[0] == "3 images, 2 objects (1 iscrowd), 1 image without objects"


def test_check_dataset_lists_every_bad_image(tmp_path):
    root, dataset = make_dataset(tmp_path)
    cut = root / "JPEGImages" / "a.jpg"
    cut.write_bytes(cut.read_bytes()[:100])
    write_jpeg(root / "JPEGImages" / "c.jpg", 41, 50)  # one row more than its XML says
    with pytest.raises(DataError, match="2 problem") as error:
        check_dataset(dataset, workers=2, progress=False)
    message = str(error.value)
    assert f"{cut}: truncated JPEG" in message
    assert "c.jpg: image is 50x41 (WxH) but its annotation says 50x40" in message


def corrupt_the_middle(path):
    """Insert a restart marker in the middle of the entropy-coded data: libjpeg warns "Corrupt JPEG data: premature
    end of data segment" on stderr and OpenCV still returns an image (with damaged pixels)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] + b"\xff\xd0" + data[len(data) // 2:])


@pytest.mark.parametrize("workers", [0, 2])
def test_check_dataset_reports_a_jpeg_corrupt_in_the_middle(tmp_path, workers, capfd):
    root, dataset = make_dataset(tmp_path)
    bad = root / "JPEGImages" / "b.jpg"
    write_jpeg(bad, 40, 50)
    corrupt_the_middle(bad)
    with pytest.warns(CorruptImageWarning):
        assert read_image(bad).shape == (40, 50, 3)  # training reads it, with a warning: the check is --check_data's
    capfd.readouterr()
    with pytest.raises(DataError, match="1 problem") as error:
        check_dataset(dataset, workers=workers, progress=False)
    assert (f"{bad}: corrupt JPEG data (libjpeg: Corrupt JPEG data: premature end of data segment); it decodes with "
            "damaged pixels: re-download or re-encode the file") in str(error.value)
    assert "Corrupt JPEG" not in capfd.readouterr().err  # reported once, in the error, not also on stderr


@pytest.mark.parametrize("workers", [0, 1])
def test_a_corrupt_jpeg_read_in_training_is_a_warning_naming_the_file(tmp_path, workers, capfd):
    root, dataset = make_dataset(tmp_path)
    bad = root / "JPEGImages" / "b.jpg"
    write_jpeg(bad, 40, 50)
    corrupt_the_middle(bad)
    capfd.readouterr()
    with warnings.catch_warnings():  # as main.py shows warnings, also in the DataLoader's worker processes
        warnings.simplefilter("default")
        warnings.showwarning = one_line_data_warnings(warnings.showwarning)
        batches = list(DataLoader(dataset, batch_size=3, num_workers=workers, collate_fn=list))
    assert [item[2] for item in batches[0]] == [0, 1, 2]  # the damaged image is trained on
    err = capfd.readouterr().err
    assert err == (f"warning: {bad}: corrupt JPEG data (libjpeg: Corrupt JPEG data: premature end of data segment); "
                   "it decodes with damaged pixels: re-download or re-encode the file\n")  # not libjpeg's bare line


def test_a_corrupt_jpeg_is_named_once_per_run_whatever_the_worker_processes_reading_it(tmp_path, capfd):
    """Each DataLoader worker has its own warning registry: every worker reading the file (and every evaluation's new
    workers) showed the line again. The workers forked after main.py installs its warning display share one record."""
    root, dataset = make_dataset(tmp_path)
    bad = root / "JPEGImages" / "b.jpg"
    write_jpeg(bad, 40, 50)
    corrupt_the_middle(bad)
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = one_line_data_warnings(warnings.showwarning)
        for _ in range(2):  # as a training loader and then an evaluation's, each with its own workers
            loader = DataLoader(dataset, batch_size=1, sampler=[1, 1, 1, 1], num_workers=2, collate_fn=list)
            assert [batch[0][2] for batch in loader] == [1, 1, 1, 1]  # both workers read it, twice each
    assert capfd.readouterr().err == (f"warning: {bad}: corrupt JPEG data (libjpeg: Corrupt JPEG data: premature end "
                                      "of data segment); it decodes with damaged pixels: re-download or re-encode the "
                                      "file\n")


def test_size_mismatch_of_an_exif_rotated_image_names_the_rotation(tmp_path):
    root = write_voc_folder(tmp_path, {"a": voc_xml(40, 60, []), "b": voc_xml(40, 60, [])}, {"trainval": ["a", "b"]})
    exif = Image.Exif()
    exif[0x0112] = 6  # viewers turn it 90 degrees: 60x40 stored, 40x60 shown
    Image.new("RGB", (60, 40)).save(root / "JPEGImages" / "a.jpg", exif=exif)
    Image.new("RGB", (60, 40)).save(root / "JPEGImages" / "b.jpg")
    dataset = build_dataset("voc", "train", 64, data_root=str(root), classes=["cat"])
    with pytest.raises(DataError) as error:
        dataset.load_image(0)
    assert str(error.value) == (
        f"{root / 'JPEGImages/a.jpg'}: image is 60x40 (WxH) but its annotation says 40x60 "
        f"({root / 'Annotations/a.xml'}), the size after its EXIF orientation 6 (a 90-degree turn) that viewers "
        "apply; images are read in their stored pixel order, as VOC and COCO annotate them: save the image turned "
        "upright without the EXIF orientation tag, or annotate the stored pixels"
    )
    with pytest.raises(DataError, match=r"b\.jpg: image is 60x40 \(WxH\) but its annotation says 40x60 \(.*b\.xml\); "
                                        "fix the annotation's"):
        dataset.load_image(1)


def test_check_dataset_warns_about_images_whose_exif_orientation_no_size_check_can_catch(tmp_path, monkeypatch):
    """Images are read in stored pixel order. A photo turned 180 degrees by its EXIF tag (3), or a square one turned
    90 degrees (6), has the same size either way, so boxes drawn on what a viewer shows passed every check and trained
    on the wrong pixels without a word: --check_data names such images (a warning: the boxes may be on the stored
    pixels, which is right)."""
    objects = {"a": [("cat", (1, 2, 10, 12), 0)], "b": [("cat", (3, 3, 9, 9), 0)], "c": [], "d": []}
    root = write_voc_folder(tmp_path, objects, {"trainval": list(objects)}, size=(40, 40))
    for name, orientation in (("a", 3), ("b", 6), ("c", 1)):
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.new("RGB", (40, 40)).save(root / "JPEGImages" / f"{name}.jpg", exif=exif)
    dataset = build_dataset("voc", "train", 64, data_root=str(root), classes=["cat"])
    monkeypatch.setattr(checks, "CHECK_BATCH", 1)  # each image its own batch: named after its place in the split
    with pytest.warns(DataWarning) as caught:
        check_dataset(dataset, workers=0, progress=False)
    assert [str(warning.message) for warning in caught] == [
        f"2 images with an EXIF orientation tag, which viewers apply (e.g. {root / 'JPEGImages/a.jpg'}: "
        f"orientation 3, {root / 'JPEGImages/b.jpg'}: orientation 6): training and evaluation read the stored "
        "pixels, as VOC and COCO annotate them, so the boxes of such an image must be drawn on its stored pixels. "
        "If your annotation tool showed it turned, its boxes miss their objects: save such images turned upright "
        "without the tag (PIL: ImageOps.exif_transpose) and keep the annotations"
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_dataset(build_dataset("voc", "train", 64, data_root=str(make_dataset(tmp_path / "plain")[0]),
                                    classes=["cat", "dog"]), workers=0, progress=False)


def test_check_dataset_reports_boxes_without_width_once_normalised(tmp_path):
    """A dataset built by another loader (COCO's does not drop them) may hold a box wider than 0 px whose float32
    target divided by the image width has no width: --check_data lists it as invalid."""
    root, _ = make_dataset(tmp_path)
    paths = [str(root / "JPEGImages" / name) for name in ("a.jpg", "b.jpg")]
    write_jpeg(paths[0], 40, 96)
    boxes = [np.array([[12.219999, 10, 12.22, 30], [1, 1, 20, 30]], np.float32), np.zeros((0, 4), np.float32)]
    annotations = Annotations.from_images(paths, ["a", "b"], [(40, 96), (40, 50)], boxes,
                                          [np.zeros(2, np.int64), np.zeros(0, np.int64)], [np.zeros(2, bool)] * 2)
    with pytest.raises(DataError) as error:
        check_dataset(DetectionDataset(annotations, ["cat"], transform=None), workers=0, progress=False)
    assert str(error.value) == (
        "--check_data on 2 images: 1 problem(s)\n"
        f"  - {paths[0]}: object box [12.219999313354492, 10.0, 12.220000267028809, 30.0] label 0 is invalid (needs "
        "x2 > x1 and y2 > y1, also once normalised by the image size, and a label in 0..0)"
    )


def test_exif_orientation_of_a_header_over_pils_pixel_limit_is_unknown_without_a_warning(tmp_path):
    path = tmp_path / "huge.png"
    write_png_header(path, 20_000, 20_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert exif_orientation(path) is None
        write_png_header(path, 10_000, 10_000)  # between PIL's warning and error limits
        assert exif_orientation(path) is None


def test_original_message_of_an_error_raised_in_a_dataloader_worker(tmp_path):
    root, dataset = make_dataset(tmp_path)
    (root / "JPEGImages" / "b.jpg").write_bytes(b"")
    with pytest.raises(DataError) as error:
        list(DataLoader(dataset, batch_size=None, num_workers=1))
    assert str(error.value).startswith("Caught DataError in DataLoader worker process 0.")
    assert original_message(error.value) == f"{root / 'JPEGImages/b.jpg'}: image file is empty"
    assert original_message(DataError("a\nb")) == "a\nb"


@pytest.mark.parametrize("workers", [0, 1])
def test_check_dataset_shows_a_decoder_warning_on_a_line_of_its_own_not_glued_to_the_progress_bar(
        tmp_path, workers, capfd, monkeypatch):
    """--check_data's bar is drawn by the main process; the decoding (in worker processes) met a warning and printed
    it there, right after the bar's text on the same line. The main process now shows it, lifting the bar off."""
    root, dataset = make_dataset(tmp_path)
    path = root / "JPEGImages" / "b.jpg"  # the decoder reads the content, a PNG with a broken colour profile
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(path, format="PNG", icc_profile=b"\0" * 300)
    capfd.readouterr()
    monkeypatch.setattr(sys, "stderr", TerminalView(sys.stderr))  # the bar is drawn on a terminal alone
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = one_line_data_warnings(warnings.showwarning)
        check_dataset(dataset, workers=workers, progress=True)
    err = capfd.readouterr().err
    line = (f"warning: {path}: the image decoder says 'libpng warning: iCCP: too short' (the image is read; re-save "
            "it to silence this)\n")
    assert err.count(line) == 1
    before = err[: err.index(line)]
    assert before.endswith("\r")  # tqdm cleared the bar's line before the warning was written
    assert before.rstrip(" \r").endswith("checking images:   0%|          | 0/3 [00:00<?, ?it/s]")


def handmade_tiff(image_rgb: np.ndarray, orientation: int, byte_order: str = "<", orientation_type: int = 3) -> bytes:
    """A baseline uncompressed RGB TIFF of ``image_rgb`` uint8 ``[H, W, 3]`` with the orientation tag, written by hand
    for what PIL does not write: big-endian byte order (``">"``) and an orientation of type LONG (4), not SHORT (3)."""
    height, width = image_rgb.shape[:2]
    pixels = image_rgb.tobytes()
    bits_at = 8 + 2 + 10 * 12 + 4  # after the header and the IFD of 10 entries
    pixels_at = bits_at + 6
    short, long = (lambda v: struct.pack(byte_order + "HH", v, 0)), (lambda v: struct.pack(byte_order + "I", v))
    entries = [(256, 4, 1, long(width)), (257, 4, 1, long(height)), (258, 3, 3, long(bits_at)), (259, 3, 1, short(1)),
               (262, 3, 1, short(2)), (273, 4, 1, long(pixels_at)),
               (274, orientation_type, 1, (short if orientation_type == 3 else long)(orientation)),
               (277, 3, 1, short(3)), (278, 4, 1, long(height)), (279, 4, 1, long(len(pixels)))]
    header = (b"II*\x00" if byte_order == "<" else b"MM\x00*") + struct.pack(byte_order + "I", 8)
    ifd = struct.pack(byte_order + "H", len(entries)) + b"".join(
        struct.pack(byte_order + "HHI", tag, kind, count) + value for tag, kind, count, value in entries)
    return header + ifd + struct.pack(byte_order + "I", 0) + struct.pack(byte_order + "3H", 8, 8, 8) + pixels


def save_tiff(path, image_bgr: np.ndarray, orientation: int, kind: str = "lzw"):
    """``image_bgr`` stored as is in a TIFF with orientation tag ``orientation``: ``kind`` "lzw" (PIL, little-endian,
    LZW), "bigtiff" (PIL), or handmade (:func:`handmade_tiff`) "big-endian" or "long tag"."""
    rgb = np.ascontiguousarray(image_bgr[..., ::-1])
    if kind in ("lzw", "bigtiff"):
        Image.fromarray(rgb).save(path, compression="tiff_lzw" if kind == "lzw" else None,
                                  big_tiff=kind == "bigtiff", tiffinfo={0x0112: orientation})
    else:
        path.write_bytes(handmade_tiff(rgb, orientation, ">" if kind == "big-endian" else "<",
                                       4 if kind == "long tag" else 3))
    return path


@pytest.mark.parametrize("kind", ["lzw", "bigtiff", "big-endian", "long tag"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_read_image_returns_a_tiffs_stored_pixels_whatever_its_orientation_tag(tmp_path, orientation, kind):
    """OpenCV's TIFF decoder applies the orientation tag itself, whatever IMREAD_IGNORE_ORIENTATION says: a TIFF with
    a tag other than 1 was read turned, mirrored or transposed, away from the stored pixels its annotations are on."""
    stored = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), np.uint8)
    path = save_tiff(tmp_path / "a.tif", stored, orientation, kind)
    with Image.open(path) as picture:
        assert picture.tag_v2[0x0112] == orientation
    np.testing.assert_array_equal(read_image(path), stored)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_box_on_a_tiffs_stored_pixels_lines_up_and_a_size_of_its_turned_view_is_named(tmp_path, orientation):
    """A TIFF annotated on its stored pixels (or without a size: its header's is read) passes the size check and its
    box holds the object, whatever its orientation tag; one annotated with the size of the view after a 90-degree tag
    is refused, naming the tag."""
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[4:30, 5:20] = 255  # the object: x 5..20, y 4..30 in stored pixels
    box = [("cat", (6, 5, 20, 30), 0)]
    xmls = {"a": voc_xml(60, 40, box), "b": voc_xml(40, 60, box), "c": voc_xml(0, 0, box, size=False)}
    root = write_voc_folder(tmp_path, xmls, {"trainval": ["a", "b", "c"]})
    for name in xmls:
        (root / "JPEGImages" / f"{name}.jpg").unlink()
        save_tiff(root / "JPEGImages" / f"{name}.tif", stored, orientation)
        xml = root / "Annotations" / f"{name}.xml"
        xml.write_text(xml.read_text().replace("<filename>x.jpg</filename>", f"<filename>{name}.tif</filename>"))
    dataset = build_dataset("custom", "train", 64, data_root=str(root), classes=["cat"])
    assert dataset.image_size(2) == (40, 60)
    for index in (0, 2):
        image = dataset.load_image(index)
        (x1, y1, x2, y2), = dataset.annotation(index)[0].astype(int)
        assert (x1, y1, x2, y2) == (5, 4, 20, 30)
        assert (image[y1:y2, x1:x2] == 255).all() and image.sum() == 26 * 15 * 3 * 255
    if orientation in (5, 6, 7, 8):
        with pytest.raises(DataError, match=rf"b\.tif: image is 60x40 \(WxH\) but its annotation says 40x60 \(.*\), "
                                            rf"the size after its EXIF orientation {orientation} \(a 90-degree turn\)"):
            dataset.load_image(1)
    else:
        with pytest.raises(DataError, match=r"b\.tif: image is 60x40 \(WxH\) but its annotation says 40x60 \(.*\); "
                                            "fix the annotation's size"):
            dataset.load_image(1)



def test_a_coco_image_without_size_is_told_the_stored_size_of_its_tiff(tmp_path):
    """The error for an image entry without a size suggests its file's size: the stored one, also for a TIFF with a
    90-degree orientation tag, as annotations are on the stored pixels (Pillow 11+ gives the turned view's size)."""
    path = write_coco(tmp_path, "x", coco_json([], [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 60}]))
    data = json.loads(path.read_text())
    data["images"][0]["file_name"] = "a.tif"
    del data["images"][0]["width"]
    path.write_text(json.dumps(data))
    save_tiff(tmp_path / "x" / "a.tif", np.zeros((40, 60, 3), np.uint8), 6)
    with pytest.raises(DataError, match="1 problem") as error:
        COCODetection(path, tmp_path / "x", TestTransform(32))
    assert (f"{path}: image id 1 ('a.tif') has no width: write the image's size in pixels, its file is 60x40 (WxH): "
            '"height": 40, "width": 60') in str(error.value)


class _ReadsImages(torch.utils.data.Dataset):
    """Item ``i``: the image file ``paths[i]`` read as training reads it (its warnings in the reading process)."""

    def __init__(self, paths: list) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> int:
        read_image(self.paths[index])
        return index


def write_profile_pngs(folder, count: int, suffix: str = ".png") -> list:
    """``count`` PNGs (``p00<suffix>``, ...) with a broken colour profile, about which libpng warns at every read."""
    paths = [folder / f"p{number:02d}{suffix}" for number in range(count)]
    for path in paths:
        Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(path, format="PNG", icc_profile=b"\0" * 300)
    return paths


def test_image_warnings_name_at_most_ten_images_of_a_kind_per_run_across_worker_processes(tmp_path, capfd):
    """An own set of 13 PNGs saved with a broken colour profile (a common export) printed one line per image, over
    two epochs read by two workers: on a set of thousands, thousands of lines, and past the record's 4,096 slots the
    same lines again every epoch. A run now names the first 10 images of a kind, then says the others go unnamed;
    another kind (16-bit images of 12-bit data) is named on its own count."""
    profiles = write_profile_pngs(tmp_path, 13)
    deep = [tmp_path / f"deep{number}.png" for number in range(2)]
    for path in deep:
        cv2.imwrite(str(path), np.full((8, 10), 4000, np.uint16))
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = one_line_data_warnings(warnings.showwarning)
        for _ in range(2):  # two epochs, each with its own workers
            loader = WorkerLoader(_ReadsImages(profiles + deep), batch_size=3, num_workers=2, collate_fn=list)
            assert sum(len(batch) for batch in loader) == 15
        # the run's count of the images it did not name, once all were read: a kind that named them all has none
        say_unnamed_image_warnings()
    *lines, counted_line = capfd.readouterr().err.splitlines()
    assert counted_line == ("warning: 13 images with a warning of the image decoder in this run, of which the first "
                            "10 were named (--check_data counts them in each split)")
    named = [line for line in lines if "libpng warning: iCCP: too short" in line]
    assert len(named) == 10 and len(set(named)) == 10
    assert all(re.fullmatch(rf"warning: {re.escape(str(tmp_path))}/p\d\d\.png: the image decoder says 'libpng "
                            r"warning: iCCP: too short' \(the image is read; re-save it to silence this\)", line)
               for line in named)
    assert lines.count("warning: 10 images with a warning of the image decoder named; any more in this run are not "
                       "named (--check_data counts them)") == 1
    assert sorted(line for line in lines if "16-bit" in line) == [
        f"warning: {path}: a 16-bit image whose values reach only 4000 of 65535 (data of 12 bits or fewer): read as 8 "
        "bits, the high byte of each value, it is nearly black (0..15 of 255); rescale its values to 8 bits (e.g. "
        "value * 255 // 4000) or to the 16-bit range and save it again" for path in deep]
    assert len(lines) == 13


def test_check_data_counts_the_images_of_a_kind_that_a_run_does_not_name(tmp_path, capfd):
    """--check_data of a set of 13 training images with a decoder's warning names the first 10 of them, then counts
    all 13 in one line, so that the whole extent is known without 13 lines; the test split's 2 such images, which the
    run no longer names, are counted in a line of their own."""
    samples = {f"p{number:02d}": [("cat", (1, 1, 5, 5), 0)] for number in range(15)}
    root = write_voc_folder(tmp_path, samples, {"trainval": list(samples)[:13], "test": list(samples)[13:]},
                            size=(8, 10))
    write_profile_pngs(root / "JPEGImages", 15, suffix=".jpg")  # the decoder reads the content, a PNG
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = one_line_data_warnings(warnings.showwarning)
        for split in ("train", "test"):
            check_dataset(build_dataset("voc", split, 64, data_root=str(root), classes=["cat"]), workers=0,
                          progress=False)
    lines = capfd.readouterr().err.splitlines()
    assert sum("libpng warning: iCCP: too short" in line for line in lines) == 10
    assert lines[-2:] == [
        "warning: --check_data: 13 images with a warning of the image decoder among the 13 checked (a run names the "
        "first 10 of each kind)",
        "warning: --check_data: 2 images with a warning of the image decoder among the 2 checked (a run names the "
        "first 10 of each kind)"]
    assert len(lines) == 13
