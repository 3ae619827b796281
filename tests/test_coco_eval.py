"""COCO path: the project's numbers must be exactly pycocotools' on a tiny ground truth made here."""
import contextlib
import io
import json
import warnings

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from data.coco import COCODetection
from data.coco_eval import detections_to_coco_results, evaluate_coco, format_coco_report, write_coco_results
from data.errors import DataError, DataWarning
from data.transforms import TestTransform
from tests.test_data_coco import GOOD_ANNOTATIONS, coco_json, write_coco

CATEGORY_IDS = [1, 3, 7]  # non-contiguous, as in COCO
CATEGORY_NAMES = ["person", "car", "dog"]


def make_ground_truth(seed=0, num_images=6):
    """A COCO ground truth with boxes of every area range and one crowd box."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id * 10, "width": 640, "height": 480, "file_name": f"{image_id:012d}.jpg"})
        for _ in range(int(rng.integers(1, 6))):
            side = float(rng.choice([20.0, 60.0, 150.0])) * rng.uniform(0.8, 1.2)  # small, medium, large
            x, y = rng.uniform(0, 400), rng.uniform(0, 300)
            w, h = side, side * rng.uniform(0.6, 1.4)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id * 10, "category_id": int(rng.choice(CATEGORY_IDS)),
                "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(len(annotations) == 3),
            })
    dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for i, n in zip(CATEGORY_IDS, CATEGORY_NAMES)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
    return coco


def random_detections(coco, seed=0):
    """Jittered copies of the objects, with labels sometimes wrong, plus random boxes."""
    rng = np.random.default_rng(seed)
    detections = []
    for image_id in sorted(coco.getImgIds()):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        xywh = np.array([a["bbox"] for a in anns]).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        boxes = np.repeat(boxes, 2, axis=0) + rng.normal(0, 4, (2 * len(boxes), 4))
        noise_xy = rng.uniform(0, 500, (3, 2))
        boxes = np.concatenate([boxes, np.concatenate([noise_xy, noise_xy + rng.uniform(10, 120, (3, 2))], 1)])
        labels = np.repeat([CATEGORY_IDS.index(a["category_id"]) for a in anns], 2)
        labels = np.concatenate([labels, rng.integers(0, 3, 3)])
        flip = rng.random(len(labels)) < 0.2
        labels[flip] = rng.integers(0, 3, int(flip.sum()))
        detections.append({"boxes": boxes.astype(np.float32), "scores": rng.random(len(labels)).astype(np.float32),
                           "labels": labels.astype(np.int64)})
    return detections


def pycocotools_stats(coco, results, category_ids=None):
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, coco.loadRes(results), iouType="bbox")
        if category_ids is not None:
            evaluator.params.catIds = category_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


@pytest.mark.parametrize("seed", [0, 1])
def test_numbers_are_exactly_pycocotools(seed, tmp_path):
    coco = make_ground_truth(seed)
    image_ids = sorted(coco.getImgIds())
    results = detections_to_coco_results(random_detections(coco, seed), image_ids, CATEGORY_IDS)
    expected = pycocotools_stats(coco, results)
    assert 0.05 < expected[0] < 0.95  # a case that exercises the metric, not a degenerate 0 or 1

    metrics = evaluate_coco(results, coco)
    assert metrics["stats"] == expected.tolist()
    assert (metrics["mAP"], metrics["AP50"], metrics["AP75"]) == tuple(expected[:3])
    assert metrics["AR100"] == expected[8]
    for category_id, name in zip(CATEGORY_IDS, CATEGORY_NAMES):
        assert metrics["per_class_AP"][name] == pycocotools_stats(coco, results, [category_id])[0]

    path = write_coco_results(results, tmp_path / "detections_val2017_results.json")
    assert evaluate_coco(path, coco)["stats"] == expected.tolist()


def test_results_format_maps_categories_and_uses_continuous_widths():
    detections = [
        {"boxes": np.array([[10.0, 20.0, 30.0, 60.0]]), "scores": np.array([0.75]), "labels": np.array([1])},
        {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, np.int64)},
    ]
    results = detections_to_coco_results(detections, [42, 43], CATEGORY_IDS)
    assert results == [{"image_id": 42, "category_id": 3, "bbox": [10.0, 20.0, 20.0, 40.0], "score": 0.75}]


def one_category_ground_truth(boxes_per_image: list[list[list[float]]]) -> COCO:
    """Images of 640 x 480 px (ids 1, 2, ...) holding the given ``[x, y, w, h]`` objects of category 1."""
    images = [{"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"}
              for i in range(1, len(boxes_per_image) + 1)]
    annotations = [{"id": len(images) * 100 + n, "image_id": image_id, "category_id": 1, "bbox": box,
                    "area": box[2] * box[3], "iscrowd": 0}
                   for image_id, boxes in enumerate(boxes_per_image, 1) for n, box in enumerate(boxes)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "cat"}]}
        coco.createIndex()
    return coco


def test_results_keep_every_digit_so_the_file_scores_the_detections():
    """A box of IoU 0.49996 with its object stays below 0.5 (to 2 decimals its height 49.996 would be 50.0: IoU 0.5,
    a match); a true positive scored 3e-7 above a false positive stays ahead of it (to 6 decimals they would tie and
    the list order would put the false positive first)."""
    coco = one_category_ground_truth([[[0.0, 0.0, 100.0, 100.0]]])
    below = [{"boxes": np.array([[0.0, 0.0, 100.0, 49.996]]), "scores": np.array([0.9]), "labels": np.array([0])}]
    results = detections_to_coco_results(below, [1], [1])
    assert results[0]["bbox"] == [0.0, 0.0, 100.0, 49.996]
    assert evaluate_coco(results, coco)["AP50"] == 0.0

    coco = one_category_ground_truth([[[0.0, 0.0, 100.0, 100.0]], [[0.0, 0.0, 100.0, 100.0]]])
    scores = np.array([0.1234561, 0.1234564], dtype=np.float32)
    detections = [
        {"boxes": np.array([[300.0, 300.0, 350.0, 350.0]], np.float32), "scores": scores[:1], "labels": np.array([0])},
        {"boxes": np.array([[0.0, 0.0, 100.0, 100.0]], np.float32), "scores": scores[1:], "labels": np.array([0])},
    ]
    results = detections_to_coco_results(detections, [1, 2], [1])
    assert [r["score"] for r in results] == scores.astype(np.float64).tolist()
    metrics = evaluate_coco(results, coco)
    assert metrics["AP50"] == pytest.approx(51 / 101)  # recall 1/2 at precision 1: 51 of the 101 recall points
    assert metrics["stats"] == pycocotools_stats(coco, results).tolist()


def test_per_class_ap_counts_up_to_100_detections_per_image():
    """One object and twelve detections in its image: eleven boxes far from it score 0.9 down to 0.4, the exact box
    0.3, twelfth. With maxDets 100 (the per-class table's column, as stats[0]) it is found at precision 1/12 at every
    IoU: AP 1/12; the maxDets-10 column would have cut it (AP 0)."""
    coco = one_category_ground_truth([[[0.0, 0.0, 50.0, 50.0]]])
    far = np.array([[300.0 + 20 * i, 300.0, 315.0 + 20 * i, 315.0] for i in range(11)])
    detections = [{"boxes": np.concatenate([far, [[0.0, 0.0, 50.0, 50.0]]]),
                   "scores": np.concatenate([np.linspace(0.9, 0.4, 11), [0.3]]), "labels": np.zeros(12, np.int64)}]
    metrics = evaluate_coco(detections_to_coco_results(detections, [1], [1]), coco)
    assert metrics["per_class_AP"] == {"cat": pytest.approx(1 / 12, abs=1e-12)}
    assert metrics["mAP"] == pytest.approx(1 / 12, abs=1e-12) and metrics["AR10"] == 0.0


def test_pycocotools_100_detections_are_per_image_and_category_so_300_per_image_all_count():
    """pycocotools' maxDets 100 cuts each (image, category) pair, not the image: the up to 300 detections per image
    that reach it (facts §7) all count when no category holds over 100. One image, a cat and a dog; 120 dog boxes
    far from both score 0.9 down to 0.5, then the exact cat and dog boxes 0.4, the 121st and 122nd of the image. The
    cat is found (AP 1: its category's only detection); the dog is its category's 121st, cut (AP 0). A cut to the
    image's 100 best, as some toolkits make before scoring, would give the cat AP 0 too."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {
            "images": [{"id": 1, "width": 640, "height": 480, "file_name": "1.jpg"}],
            "annotations": [{"id": i, "image_id": 1, "category_id": i, "bbox": [100.0 * i, 0.0, 50.0, 50.0],
                             "area": 2500.0, "iscrowd": 0} for i in (1, 2)],
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        }
        coco.createIndex()
    far = [[300.0 + 15 * (i % 10), 300.0 + 15 * (i // 10), 310.0 + 15 * (i % 10), 310.0 + 15 * (i // 10)]
           for i in range(120)]
    detections = [{"boxes": np.array(far + [[100.0, 0.0, 150.0, 50.0], [200.0, 0.0, 250.0, 50.0]]),
                   "scores": np.concatenate([np.linspace(0.9, 0.5, 120), [0.4, 0.4]]),
                   "labels": np.array([1] * 120 + [0, 1])}]
    metrics = evaluate_coco(detections_to_coco_results(detections, [1], [1, 2]), coco)
    assert metrics["per_class_AP"] == {"cat": pytest.approx(1.0, abs=1e-12), "dog": 0.0}
    assert metrics["mAP"] == pytest.approx(0.5, abs=1e-12)


def test_perfect_detections_of_small_boxes_score_one():
    # With continuous corners a perfect 10x10 detection has IoU 1; the authors' "+1" width would
    # make it 11x11 (IoU 100/121 = 0.83) and lose the thresholds 0.85..0.95.
    coco = make_ground_truth(3)
    image_ids = sorted(coco.getImgIds())
    detections = []
    for image_id in image_ids:
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)) if not a["iscrowd"]]
        xywh = np.array([a["bbox"] for a in anns]).reshape(-1, 4)
        detections.append({
            "boxes": np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1),
            "scores": np.ones(len(anns)),
            "labels": np.array([CATEGORY_IDS.index(a["category_id"]) for a in anns], dtype=np.int64),
        })
    metrics = evaluate_coco(detections_to_coco_results(detections, image_ids, CATEGORY_IDS), coco)
    assert metrics["mAP"] == 1.0


def test_report_is_pycocotools_summary_then_the_per_class_table(tmp_path):
    """The 12 lines as pycocotools' own summarize() prints them, then one line per category."""
    coco = make_ground_truth(1)
    results = detections_to_coco_results(random_detections(coco, 1), sorted(coco.getImgIds()), CATEGORY_IDS)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        evaluator = COCOeval(coco, coco.loadRes([dict(r) for r in results]), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    summary = [line for line in printed.getvalue().splitlines() if line.startswith(" Average")]
    metrics = evaluate_coco(results, coco)
    lines = format_coco_report(metrics).splitlines()
    assert len(summary) == 12 and lines[:12] == summary
    per_class = metrics["per_class_AP"]
    per_class_lines = [f"  {name:<6}  {per_class[name]:0.3f}" for name in CATEGORY_NAMES]
    last = f"COCO mAP = {metrics['mAP']:.4f}  AP50 = {metrics['AP50']:.4f}  AP75 = {metrics['AP75']:.4f}"
    assert lines[12:] == ["per-class AP@[.50:.95]:", *per_class_lines, last]
    path = write_coco_results(results, tmp_path / "eval" / "COCO" / "detections_val2017_results.json")  # parents made
    assert json.loads(path.read_text()) == results


def test_the_per_class_table_follows_the_model_class_order_and_names(tmp_path):
    """Categories listed out of id order (7, 1, 3) and a name with spaces, as a hand-written json may have them: the
    labels follow the json's order and strip the names (data/coco.py), and so do the per-class AP table and its dict,
    as the VOC table and --check_data do; each value stays pycocotools' AP of that category alone."""
    coco = make_ground_truth(0)
    order = [2, 0, 1]  # dog, person, car
    coco.dataset["categories"] = [{"id": CATEGORY_IDS[i], "name": f" {CATEGORY_NAMES[i]} " if i == 2 else
                                   CATEGORY_NAMES[i]} for i in order]
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    results = detections_to_coco_results(random_detections(coco, 0), sorted(coco.getImgIds()), CATEGORY_IDS)
    metrics = evaluate_coco(results, coco)
    assert list(metrics["per_class_AP"]) == ["dog", "person", "car"]
    for i in order:
        assert metrics["per_class_AP"][CATEGORY_NAMES[i]] == pycocotools_stats(coco, results, [CATEGORY_IDS[i]])[0]
    per_class = metrics["per_class_AP"]
    table = format_coco_report(metrics).splitlines()[13:16]
    assert table == [f"  {name:<6}  {per_class[name]:0.3f}" for name in ("dog", "person", "car")]


def test_per_class_ap_names_a_category_as_the_dataset_reads_it(tmp_path):
    """A category named with a surrounding space (" bus", "person ": a hand-edited or exported json) is read without
    it (the dataset's class names, --check_data, the checkpoint, the demo); the evaluation's per-class table and
    summary.json kept the space, so a class name of the checkpoint was no key of its per-class AP."""
    data = coco_json(GOOD_ANNOTATIONS)
    data["categories"] = [{"id": 5, "name": " bus"}, {"id": 1, "name": "person "}, {"id": 90, "name": "toothbrush"}]
    path = write_coco(tmp_path, "val", data)
    with pytest.warns(DataWarning):  # the person box reaching past the image edge, clipped
        dataset = COCODetection(path, tmp_path / "val", TestTransform(32))
    assert dataset.class_names == ["bus", "person", "toothbrush"]
    metrics = evaluate_coco([], dataset.coco)
    assert list(metrics["per_class_AP"]) == ["bus", "person", "toothbrush"]
    assert format_coco_report(metrics).splitlines()[13:16] == [  # in the model's class order
        "  bus         nan", "  person      0.000", "  toothbrush  0.000"]  # bus: a crowd box alone


def test_no_detection_gives_zeros_and_a_report():
    metrics = evaluate_coco([], make_ground_truth(0))
    assert metrics["stats"] == [0.0] * 12
    report = format_coco_report(metrics)
    assert report.splitlines()[0] == " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.000"
    assert report.splitlines()[-1] == "COCO mAP = 0.0000  AP50 = 0.0000  AP75 = 0.0000"


def test_no_detection_scores_as_pycocotools_scores_a_detection_that_finds_nothing():
    """Categories and area ranges without objects stay undefined (NaN per class, -1 in the stats) when nothing is
    detected, as pycocotools reports them for a result set whose one detection overlaps no object."""
    full = make_ground_truth(0)
    kept = [a for a in full.dataset["annotations"] if a["category_id"] != 7 and a["area"] > 32 ** 2]
    coco = COCO()
    coco.dataset = dict(full.dataset, annotations=kept)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    finds_nothing = [{"image_id": 10, "category_id": 1, "bbox": [630.0, 470.0, 5.0, 5.0], "score": 0.5}]
    empty = evaluate_coco([], coco)
    assert empty["stats"] == pycocotools_stats(coco, [dict(r) for r in finds_nothing]).tolist()
    assert empty["stats"][3] == -1.0 and empty["stats"][0] == 0.0  # no small object; AP 0 over all areas
    for category_id, name in zip(CATEGORY_IDS, CATEGORY_NAMES):  # pycocotools' -1 (no object) is NaN per class
        expected = pycocotools_stats(coco, [dict(r) for r in finds_nothing], [category_id])[0]
        assert empty["per_class_AP"][name] == expected or (expected == -1 and np.isnan(empty["per_class_AP"][name]))
    assert np.isnan(empty["per_class_AP"]["dog"]) and empty["per_class_AP"]["person"] == 0.0


def test_restricting_to_some_images(tmp_path):
    coco = make_ground_truth(0)
    image_ids = sorted(coco.getImgIds())
    results = detections_to_coco_results(random_detections(coco, 0), image_ids, CATEGORY_IDS)
    subset = [r for r in results if r["image_id"] in image_ids[:3]]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, coco.loadRes(subset), iouType="bbox")
        evaluator.params.imgIds = image_ids[:3]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluate_coco(subset, coco, image_ids=image_ids[:3])["stats"] == evaluator.stats.tolist()


def test_malformed_results_file_names_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(DataError, match="bad.json: expected a JSON list"):
        evaluate_coco(path, make_ground_truth(0))


def test_bad_results_entries_name_the_file_entry_and_problem(tmp_path):
    coco = make_ground_truth(0)
    good = {"image_id": 10, "category_id": 3, "bbox": [1.0, 2.0, 30.0, 40.0], "score": 0.5}
    entries = [good, good | {"image_id": 999}, {k: v for k, v in good.items() if k != "score"},
               good | {"category_id": 2}, [10, 3], good | {"bbox": [1, 2, 3]}, good | {"score": "high"}]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(DataError, match="6 problem") as error:
        evaluate_coco(path, coco)
    assert str(error.value).splitlines()[1:] == [
        f"  - {path}: entry 1: image_id 999 is not an image of the ground truth; "
        "were the results made on another split?",
        f"  - {path}: entry 2: no 'score' (needs image_id, category_id, bbox, score)",
        f"  - {path}: entry 3: category_id 2 is not in the categories [1, 3, 7]",
        f"  - {path}: entry 4: list [10, 3] is not an object {{image_id, category_id, bbox, score}}",
        f"  - {path}: entry 5: bbox [1, 2, 3] is not 4 finite numbers [x, y, w, h]",
        f"  - {path}: entry 6: score 'high' is not a finite number",
    ]


def test_ids_written_as_strings_are_named_as_such_not_as_ids_of_another_split(tmp_path):
    """A tool that writes ids as JSON strings ("10", or a file stem "000000000010") had them called images of another
    split; they are the ground truth's ids, quoted."""
    coco = make_ground_truth(0)
    good = {"image_id": 10, "category_id": 3, "bbox": [1.0, 2.0, 30.0, 40.0], "score": 0.5}
    entries = [good | {"image_id": "10"}, good | {"image_id": "000000000010"}, good | {"category_id": " 7"},
               good | {"image_id": "11"}, good | {"category_id": "two"}]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(DataError, match="5 problem") as error:
        evaluate_coco(path, coco)
    assert str(error.value).splitlines()[1:] == [
        f"  - {path}: entry 0: image_id '10' is a string: the ground truth's image id is the number 10; write the "
        "ids as numbers, without quotes",
        f"  - {path}: entry 1: image_id '000000000010' is a string: the ground truth's image id is the number 10; "
        "write the ids as numbers, without quotes",
        f"  - {path}: entry 2: category_id ' 7' is a string: the ground truth's category id is the number 7; write "
        "the ids as numbers, without quotes",
        f"  - {path}: entry 3: image_id '11' is not an image of the ground truth; were the results made on another "
        "split?",
        f"  - {path}: entry 4: category_id 'two' is not in the categories [1, 3, 7]",
    ]


def test_results_written_as_corners_get_a_warning_naming_the_file(tmp_path):
    """Another tool's results file with [x1, y1, x2, y2] in bbox (a common slip) scored near 0 without a word; the
    ground truth's loader has warned of such boxes, the results file now gets the same check."""
    coco = make_ground_truth(0)
    corners = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.9,
                "bbox": [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]}
               for a in coco.dataset["annotations"]]
    path = tmp_path / "corners.json"
    path.write_text(json.dumps(corners))
    with pytest.warns(DataWarning, match=rf"^{path}: \d+ of the {len(corners)} boxes extend past their image, and "
                                         r"each fits it read as \[x1, y1, x2, y2\]: COCO's bbox is \[x, y, width, "
                                         r"height\]"):
        assert evaluate_coco(path, coco)["AP"] < 0.5
    boxes = [dict(entry, bbox=a["bbox"]) for entry, a in zip(corners, coco.dataset["annotations"])]
    path.write_text(json.dumps(boxes))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert evaluate_coco(path, coco)["AP"] == pytest.approx(1.0)


def test_ground_truth_without_area_and_iscrowd_scores_as_pycocotools_with_them(tmp_path):
    full = make_ground_truth(0).dataset
    for annotation in full["annotations"]:
        annotation.update(area=annotation["bbox"][2] * annotation["bbox"][3], iscrowd=0)
    stripped = json.loads(json.dumps(full))
    for annotation in stripped["annotations"]:
        del annotation["area"], annotation["iscrowd"]
    path = write_coco(tmp_path, "val", stripped)
    fixed = r"missing area set to the box's w \* h: 22 \(e\.g\. annotation id 1, .*\); missing iscrowd set to 0: 22"
    with pytest.warns(DataWarning, match=fixed):
        dataset = COCODetection(path, tmp_path / "val", TestTransform(32))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = full
        coco.createIndex()
    image_ids = sorted(coco.getImgIds())
    results = detections_to_coco_results(random_detections(coco, 0), image_ids, CATEGORY_IDS)
    expected = pycocotools_stats(coco, results)
    assert 0.05 < expected[0] < 0.95
    assert evaluate_coco(results, dataset.coco, image_ids=dataset.image_ids)["stats"] == expected.tolist()
