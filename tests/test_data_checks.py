"""Image reading errors and the whole-dataset scan behind --check_data."""
import cv2
import numpy as np
import pytest

from data import DataError, build_dataset, check_dataset
from data.dataset import read_image
from tests.test_data_voc import write_voc_folder


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


def test_jpeg_with_trailing_zero_padding_is_accepted(tmp_path):
    path = tmp_path / "padded.jpg"
    image = write_jpeg(path)
    path.write_bytes(path.read_bytes() + b"\x00" * 16)
    assert read_image(path).shape == image.shape


@pytest.mark.parametrize(
    "content, message",
    [(None, "image file not found"), (b"", "image file is empty"), (b"not an image at all", "OpenCV cannot decode")],
)
def test_unreadable_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=rf"bad\.jpg: {message}"):
        read_image(path)


def make_dataset(tmp_path):
    objects = {"a": [("cat", (1, 2, 10, 12), 1)], "b": [], "c": [("cat", (3, 3, 9, 9), 0), ("dog", (1, 1, 5, 5), 0)]}
    root = write_voc_folder(tmp_path, objects, {"trainval": list(objects)}, size=(40, 50))
    return root, build_dataset("voc", "train", 64, data_root=str(root), classes=["cat", "dog", "bird"])


def test_check_dataset_reports_a_clean_set(tmp_path):
    _, dataset = make_dataset(tmp_path)
    report = check_dataset(dataset, workers=2, progress=False)
    assert (report.num_images, report.num_objects, report.num_difficult, report.empty_images) == (3, 3, 1, 1)
    assert report.objects_per_class == {"cat": 2, "dog": 1, "bird": 0}
    assert "3 images, 3 objects (1 difficult), 1 images without objects" in report.summary()


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
