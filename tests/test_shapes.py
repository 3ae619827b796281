"""The synthetic shapes dataset: geometry, VOC round trip, determinism, special images, atomic reuse."""
import errno
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

import data
import data.shapes as shapes
from data import DataError, build_dataset
from data.shapes import (
    MANIFEST_NAME,
    SHAPES_CLASSES,
    ensure_shapes_dataset,
    generate_shapes_dataset,
    render_sample,
    shape_mask,
    split_layouts,
)

SEED = 3
NUM_TRAINVAL, NUM_TEST = 30, 10


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate_shapes_dataset(
        tmp_path_factory.mktemp("gen") / "shapes", seed=SEED, num_trainval=NUM_TRAINVAL, num_test=NUM_TEST
    )


def read_objects(xml_path: Path) -> tuple[tuple[int, int], list[dict]]:
    root = ET.parse(xml_path).getroot()
    size = (int(root.findtext("size/width")), int(root.findtext("size/height")))
    objects = [
        {
            "name": obj.findtext("name"),
            "difficult": int(obj.findtext("difficult")),
            "truncated": int(obj.findtext("truncated")),
            "box": tuple(int(obj.findtext(f"bndbox/{key}")) for key in ("xmin", "ymin", "xmax", "ymax")),
        }
        for obj in root.iter("object")
    ]
    return size, objects


def all_files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_square_mask_spans_exactly_its_size():
    mask = shape_mask("square", 21, 21)
    assert mask.shape == (23, 23)
    assert mask.sum() == 21 * 21
    assert mask[1:22, 1:22].all()
    np.testing.assert_array_equal(shape_mask("square", 21, 21, angle_deg=90.0), mask)


def test_circle_and_ring_masks():
    circle = shape_mask("circle", 21, 11)
    rows, cols = np.nonzero(circle)
    assert (cols.max() - cols.min() + 1, rows.max() - rows.min() + 1) == (21, 11)
    ring = shape_mask("ring", 41, 41)
    assert ring[20, 20] == 0 and ring[20, 2] == 1  # hole at the centre, filled near the rim
    assert ring.sum() < shape_mask("circle", 41, 41).sum()


def test_unknown_shape_is_rejected():
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        shape_mask("hexagon", 10, 10)


def test_layout_files_and_manifest(dataset):
    trainval = (dataset / "ImageSets/Main/trainval.txt").read_text().split()
    test = (dataset / "ImageSets/Main/test.txt").read_text().split()
    assert trainval == [f"{i:06d}" for i in range(1, NUM_TRAINVAL + 1)]
    assert test == [f"{i:06d}" for i in range(NUM_TRAINVAL + 1, NUM_TRAINVAL + NUM_TEST + 1)]
    for image_id in trainval + test:
        assert (dataset / "JPEGImages" / f"{image_id}.jpg").is_file()
        assert (dataset / "Annotations" / f"{image_id}.xml").is_file()
    manifest = json.loads((dataset / MANIFEST_NAME).read_text())
    assert (manifest["seed"], manifest["num_trainval"], manifest["num_test"]) == (SEED, NUM_TRAINVAL, NUM_TEST)
    assert manifest["classes"] == list(SHAPES_CLASSES)


def test_xml_boxes_equal_the_drawn_objects(dataset):
    """Every XML box is the 1-based tight box of the object's visible pixels, and the JPEG shows the object there."""
    number = 0
    checked_colours = 0
    for split, count in (("trainval", NUM_TRAINVAL), ("test", NUM_TEST)):
        for index, layout in enumerate(split_layouts(SEED, split, count)):
            number += 1
            sample = render_sample(SEED, split, index, layout)
            (width, height), objects = read_objects(dataset / "Annotations" / f"{number:06d}.xml")
            image = cv2.imread(str(dataset / "JPEGImages" / f"{number:06d}.jpg"))
            assert image.shape == (height, width, 3) == sample.image.shape
            assert len(objects) == len(sample.objects)
            for k, (written, drawn) in enumerate(zip(objects, sample.objects)):
                assert written["name"] == drawn.name
                assert written["difficult"] == int(drawn.difficult)
                assert written["truncated"] == int(drawn.truncated)
                x1, y1, x2, y2 = (v - 1 for v in written["box"])
                rows, cols = np.nonzero(sample.instance_map == k)
                assert (cols.min(), rows.min(), cols.max(), rows.max()) == (x1, y1, x2, y2)
                # JPEG blurs colour near edges (4:2:0 chroma), so compare the mask's interior only.
                interior = cv2.erode((sample.instance_map == k).astype(np.uint8), np.ones((5, 5), np.uint8))
                if interior.sum() >= 30:
                    pixels = image[interior.astype(bool)].astype(np.int32)
                    error = np.abs(np.median(pixels, axis=0) - np.array(drawn.colour_bgr))
                    assert error.max() < 40, (number, drawn)
                    checked_colours += 1
    assert checked_colours > 100


def test_every_split_has_an_empty_and_a_crowded_image(dataset):
    for split in ("trainval", "test"):
        ids = (dataset / "ImageSets/Main" / f"{split}.txt").read_text().split()
        counts = [len(read_objects(dataset / "Annotations" / f"{i}.xml")[1]) for i in ids]
        assert min(counts) == 0
        assert max(counts) >= 50


def test_layouts_need_two_images():
    with pytest.raises(ValueError, match="test split needs at least 2 images"):
        split_layouts(0, "test", 1)
    assert sorted(split_layouts(0, "trainval", 250)).count("crowded") == 2


def test_a_too_small_split_is_refused_before_any_folder_is_made(tmp_path):
    # empty folders left behind would hold no manifest: later runs would refuse the folder as not a shapes set
    with pytest.raises(ValueError, match="test split needs at least 2 images"):
        shapes.generate_shapes_dataset(tmp_path / "shapes", num_trainval=2, num_test=1)
    assert not (tmp_path / "shapes").exists()


def test_unknown_split_and_layout_are_rejected():
    with pytest.raises(ValueError, match="unknown split 'val'"):
        render_sample(0, "val", 0)
    with pytest.raises(ValueError, match="unknown layout 'busy'"):
        render_sample(0, "test", 0, "busy")


def test_same_seed_gives_identical_bytes_and_another_seed_differs(dataset, tmp_path):
    again = generate_shapes_dataset(tmp_path / "again", seed=SEED, num_trainval=NUM_TRAINVAL, num_test=NUM_TEST)
    assert all_files(again) == all_files(dataset)
    other = generate_shapes_dataset(tmp_path / "other", seed=SEED + 1, num_trainval=2, num_test=2)
    first = all_files(dataset)
    assert (other / "Annotations/000001.xml").read_bytes() != first["Annotations/000001.xml"]
    assert (other / "JPEGImages/000001.jpg").read_bytes() != first["JPEGImages/000001.jpg"]


def test_statistics_cover_the_intended_range():
    objects = [obj for index in range(150) for obj in render_sample(0, "trainval", index).objects]
    sides = np.array([max(o.box[2] - o.box[0], o.box[3] - o.box[1]) + 1 for o in objects])
    assert {o.name for o in objects} == set(SHAPES_CLASSES)
    assert sides.min() <= 10 and sides.max() >= 200
    assert 0.6 < np.mean((sides >= 16) & (sides <= 200)) < 0.95
    assert 0.03 < np.mean([o.difficult for o in objects]) < 0.25
    assert any(o.truncated for o in objects)
    assert min(o.visible_fraction for o in objects) < 0.6  # some objects are partly hidden


def test_ensure_generates_once_then_reuses(tmp_path, capsys, monkeypatch):
    root = tmp_path / "datasets" / "shapes"
    assert ensure_shapes_dataset(root, seed=1, num_trainval=3, num_test=2) == root
    assert "Generating the synthetic 'shapes' dataset (seed 1, 3 trainval + 2 test images)" in capsys.readouterr().out
    before = all_files(root)

    def must_not_run(*args, **kwargs):
        raise AssertionError("a complete dataset must be reused")

    monkeypatch.setattr(shapes, "generate_shapes_dataset", must_not_run)
    ensure_shapes_dataset(root, seed=1, num_trainval=3, num_test=2)
    assert all_files(root) == before
    assert list(root.parent.iterdir()) == [root]


def test_ensure_regenerates_on_a_manifest_mismatch(tmp_path):
    root = tmp_path / "shapes"
    ensure_shapes_dataset(root, seed=1, num_trainval=3, num_test=2)
    ensure_shapes_dataset(root, seed=2, num_trainval=2, num_test=2)
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    assert (manifest["seed"], manifest["num_trainval"]) == (2, 2)
    assert len(list((root / "JPEGImages").iterdir())) == 4
    assert list(tmp_path.iterdir()) == [root]


def test_a_data_root_holding_a_set_generated_with_other_arguments_is_used_as_it_is(tmp_path, monkeypatch):
    """--dataset shapes --data_root DIR on a small set made with generate_shapes_dataset (docs/shapes.md) trains on it
    instead of replacing it by the 2,500 images of seed 0; the default folder still follows seed 0's defaults."""
    root = generate_shapes_dataset(tmp_path / "tiny", seed=1, num_trainval=3, num_test=2)
    before = all_files(root)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the user's set must not be regenerated")

    monkeypatch.setattr(shapes, "generate_shapes_dataset", must_not_run)
    train = build_dataset("shapes", "train", 64, data_root=str(root))
    test = build_dataset("shapes", "test", 64, data_root=str(root))
    assert (len(train), len(test)) == (3, 2) and train.class_names == list(SHAPES_CLASSES)
    assert all_files(root) == before

    requested = []
    monkeypatch.setattr(shapes, "ensure_shapes_dataset", lambda root, **arguments: requested.append(arguments) or root)
    monkeypatch.setitem(data.DEFAULT_ROOTS, "shapes", root)
    build_dataset("shapes", "train", 64)  # the default folder: seed 0's set, whatever it holds
    assert requested == [{"seed": 0}]


def test_interrupted_generation_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    root = tmp_path / "shapes"
    calls = []

    def failing_render(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return render_sample(*args, **kwargs)

    monkeypatch.setattr(shapes, "render_sample", failing_render)
    with pytest.raises(KeyboardInterrupt):
        ensure_shapes_dataset(root, seed=0, num_trainval=3, num_test=2)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["shapes", "shapes[v2]"])  # [v2]: no glob pattern of a character set
def test_stale_temp_folder_of_a_dead_process_is_removed(tmp_path, name):
    dead_pid = 2**22 + 12345  # above the default pid_max, so no such process
    with pytest.raises(ProcessLookupError):
        os.kill(dead_pid, 0)
    stale = tmp_path / f".{name}.tmp-{dead_pid}"
    (stale / "JPEGImages").mkdir(parents=True)
    ensure_shapes_dataset(tmp_path / name, seed=0, num_trainval=2, num_test=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_a_link_to_an_empty_folder_gets_the_set_in_its_target(tmp_path):
    """datasets/shapes linked to a folder on a larger disk: the set is generated there and the link kept (it was
    renamed away, the set thrown away and a traceback printed: rmtree refuses a link)."""
    target = tmp_path / "big" / "shapes"
    target.mkdir(parents=True)
    link = tmp_path / "datasets" / "shapes"
    link.parent.mkdir()
    link.symlink_to(target, target_is_directory=True)
    assert ensure_shapes_dataset(link, seed=1, num_trainval=3, num_test=2) == link
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert json.loads((target / MANIFEST_NAME).read_text())["num_trainval"] == 3
    assert len(list((target / "JPEGImages").iterdir())) == 5
    assert [p.name for p in link.parent.iterdir()] == ["shapes"] and [p.name for p in target.parent.iterdir()] == [
        "shapes"]


def test_an_existing_folder_is_filled_and_replaced_in_place(tmp_path):
    """An existing folder stays the same folder (a mount point, a Docker volume, cannot be renamed: that failed with
    'Device or resource busy' after the whole generation), when empty and when its set of other arguments is
    replaced; nothing is left beside or inside it but the set."""
    root = tmp_path / "shapes"
    root.mkdir()
    inode = root.stat().st_ino
    ensure_shapes_dataset(root, seed=1, num_trainval=3, num_test=2)
    ensure_shapes_dataset(root, seed=2, num_trainval=2, num_test=2)
    assert root.stat().st_ino == inode
    assert json.loads((root / MANIFEST_NAME).read_text())["seed"] == 2
    assert len(list((root / "JPEGImages").iterdir())) == 4
    assert sorted(p.name for p in root.iterdir()) == ["Annotations", "ImageSets", "JPEGImages", MANIFEST_NAME]
    assert list(tmp_path.iterdir()) == [root]


def test_a_stale_temp_folder_inside_an_existing_folder_is_removed(tmp_path):
    dead_pid = 2**22 + 12345  # above the default pid_max, so no such process
    root = tmp_path / "shapes"
    (root / f".shapes.tmp-{dead_pid}" / "JPEGImages").mkdir(parents=True)
    ensure_shapes_dataset(root, seed=0, num_trainval=2, num_test=2)
    assert sorted(p.name for p in root.iterdir()) == ["Annotations", "ImageSets", "JPEGImages", MANIFEST_NAME]


def test_another_run_generating_in_the_same_existing_folder_is_not_foreign_content(tmp_path):
    """Two runs started together on an empty datasets/shapes (an IoU and an MG run, say): the second saw the first's
    temp folder inside it and refused the folder as not made by the generator."""
    root = tmp_path / "shapes"
    other = root / f".shapes.tmp-{os.getppid()}"  # a live process's generation under way
    (other / "JPEGImages").mkdir(parents=True)
    ensure_shapes_dataset(root, seed=1, num_trainval=2, num_test=2)
    assert json.loads((root / MANIFEST_NAME).read_text())["seed"] == 1 and other.is_dir()


def test_a_broken_link_is_named_before_generating(tmp_path, monkeypatch):
    """A link to a drive not mounted: one line naming it and its target at once, not 30 s of generation and then
    'Not a directory' about a temp folder."""
    link = tmp_path / "shapes"
    link.symlink_to(tmp_path / "drive" / "shapes")

    def must_not_run(*args, **kwargs):
        raise AssertionError("nothing can be generated through a broken link")

    monkeypatch.setattr(shapes, "generate_shapes_dataset", must_not_run)
    with pytest.raises(data.DatasetNotFoundError) as error:
        ensure_shapes_dataset(link, seed=0, num_trainval=2, num_test=2)
    assert str(error.value) == (f"{link} is a broken symbolic link (to {tmp_path / 'drive' / 'shapes'}, which does not "
                                f"exist): mount its drive or create that folder (the shapes set is then generated in "
                                f"{link}), or remove the link")
    assert link.is_symlink() and list(tmp_path.iterdir()) == [link]
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(data.DatasetNotFoundError, match=f"^{tmp_path / 'a'} is a symbolic link in a loop"):
        ensure_shapes_dataset(tmp_path / "a", seed=0, num_trainval=2, num_test=2)
    # datasets/ linked to a drive not mounted: was 'cannot be generated there (File exists)'
    with pytest.raises(data.DatasetNotFoundError) as error:
        ensure_shapes_dataset(link / "shapes", seed=0, num_trainval=2, num_test=2)
    assert str(error.value).startswith(f"{link} is a broken symbolic link (to {tmp_path / 'drive' / 'shapes'}, which "
                                       f"does not exist): mount its drive or create that folder (the shapes set is "
                                       f"then generated in {link / 'shapes'})")


def test_a_file_in_place_of_the_folder_is_named_before_generating(tmp_path, monkeypatch):
    root = tmp_path / "shapes"
    root.write_text("not a folder")
    monkeypatch.setattr(shapes, "generate_shapes_dataset", lambda *args, **kwargs: pytest.fail("generated"))
    with pytest.raises(data.DatasetNotFoundError, match=f"^{root}: the shapes dataset cannot be generated there "
                                                        f"\\({root} is not a folder\\)"):
        ensure_shapes_dataset(root, seed=0, num_trainval=2, num_test=2)


def test_a_set_is_generated_into_a_folder_whose_name_is_not_utf8(tmp_path):
    """A folder named in another encoding's bytes (caf\\xe9): OpenCV's imwrite takes the path as UTF-8 and failed on
    every image ('OpenCV could not write the image', as on a full disk, where the system's reason was lost too)."""
    root = generate_shapes_dataset(tmp_path / os.fsdecode(b"caf\xe9"), seed=1, num_trainval=2, num_test=2)
    images = sorted((root / "JPEGImages").iterdir())
    assert [path.name for path in images] == ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"]
    assert cv2.imdecode(np.fromfile(images[0], np.uint8), cv2.IMREAD_COLOR).shape[2] == 3


def test_a_full_disk_while_generating_is_named_with_the_image(tmp_path, monkeypatch):
    """A full disk: the error said 'OpenCV could not write the image' (cv2.imwrite returns False without a reason); it
    is the system's reason, naming the file, and nothing is left behind."""
    def full_disk(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write() refused, without a file name

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(OSError) as error:
        ensure_shapes_dataset(tmp_path / "shapes", seed=1, num_trainval=2, num_test=2)
    assert (error.value.errno, Path(error.value.filename).name) == (errno.ENOSPC, "000001.jpg")
    assert list(tmp_path.iterdir()) == []


def test_foreign_folder_is_not_overwritten(tmp_path):
    root = tmp_path / "shapes"
    root.mkdir()
    (root / "mine.txt").write_text("user data")
    with pytest.raises(DataError, match=f"has no {MANIFEST_NAME}, so it was not made by the shapes generator; move it "
                                        "away or pass another --data_root"):
        ensure_shapes_dataset(root, seed=0, num_trainval=2, num_test=2)
    assert (root / "mine.txt").read_text() == "user data"


def test_difficult_rule_at_its_boundaries():
    """An object is difficult when its visible box's shorter side is below 10 px or less than half of its pixels are
    visible; an object with no visible pixel is dropped and the instance map renumbered."""
    instance_map = np.full((40, 60), -1, np.int16)
    instance_map[0:9, 0:12] = 0  # 12 x 9 px box: shorter side 9 -> difficult
    instance_map[10:20, 0:10] = 1  # 10 x 10, all 100 pixels visible
    instance_map[10:20, 20:30] = 2  # 10 x 10 visible of 201 -> 100/201 < 0.5 -> difficult
    instance_map[25:35, 0:10] = 3  # 10 x 10 visible of 200 -> exactly half -> not difficult
    # object 4 is fully hidden
    instance_map[25:35, 40:50] = 5  # 10 x 10 of 100, after the hidden one
    names = ["circle", "square", "triangle", "star", "ring", "cross"]
    colours = [np.zeros(3, np.float32)] * 6
    objects, renumbered = shapes._annotate(instance_map, names, colours, [False] * 6, [108, 100, 201, 200, 50, 100])
    assert [o.name for o in objects] == ["circle", "square", "triangle", "star", "cross"]
    assert [o.box for o in objects] == [(0, 0, 11, 8), (0, 10, 9, 19), (20, 10, 29, 19), (0, 25, 9, 34),
                                        (40, 25, 49, 34)]
    assert [o.difficult for o in objects] == [True, False, True, False, False]
    assert [o.visible_fraction for o in objects] == pytest.approx([1.0, 1.0, 100 / 201, 0.5, 1.0])
    assert renumbered[30, 45] == 4 and renumbered[39, 59] == -1 and renumbered[0, 0] == 0
