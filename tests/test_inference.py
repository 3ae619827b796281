"""Batched inference over a DataLoader and dataset-level evaluation, with a fake model and tiny fake datasets."""
import contextlib
import io
import json
import os
import shutil

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from pycocotools.cocoeval import COCOeval
from torch.utils.data.distributed import DistributedSampler

from data.coco_eval import detections_to_coco_results, evaluate_coco
from data.voc_eval import evaluate_voc, read_pr_curves, voc_ap
from tests.test_coco_eval import CATEGORY_IDS, CATEGORY_NAMES, make_ground_truth, random_detections
from utils.box import PriorBox
from utils.inference import (
    evaluate_detections, evaluate_results_file, gather_detections, remove_earlier_results, run_inference,
)
from utils.files import replace_text
from utils.postprocess import PostProcessor

SIZE, NUM_CLASSES, NUM_IMAGES = 64, 3, 7
PRIORS = PriorBox(size=SIZE).forward()  # [510, 4]


class FakeDetector(nn.Module):
    """Fixed random outputs per image; image i is filled with the value i, which picks its outputs."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("loc", torch.randn(NUM_IMAGES, len(PRIORS), 4, generator=generator) * 0.5)
        self.register_buffer("conf", torch.randn(NUM_IMAGES, len(PRIORS), NUM_CLASSES, generator=generator) - 2)

    def forward(self, images):
        index = images[:, 0, 0, 0].long()
        return self.loc[index], self.conf[index]


def collate(batch):
    images, targets, indices = zip(*batch)
    return torch.stack(images), list(targets), torch.tensor(indices)


class FakeVocDataset(Dataset):
    kind = "voc"
    class_names = ["circle", "square", "star"]

    def __init__(self):
        self.image_ids = [f"{i:06d}" for i in range(NUM_IMAGES)]
        self.sizes = [(100 + 10 * i, 200 - 5 * i) for i in range(NUM_IMAGES)]

    def __len__(self):
        return NUM_IMAGES

    def __getitem__(self, i):
        return torch.full((3, SIZE, SIZE), float(i)), torch.zeros(0, 5), i

    def image_size(self, i):
        return self.sizes[i]

    def ground_truth(self):
        """The fake model's 4 best detections per image, rounded to whole devkit pixels; the 4th is difficult."""
        out = []
        for d in per_image_reference(FakeDetector(), self)[: len(self)]:
            boxes = (d["boxes"][:4].astype(np.float64) + [1, 1, 0, 0] + [3, 0, 0, 2]).round()
            out.append({"boxes": boxes, "labels": d["labels"][:4], "difficult": np.arange(len(boxes)) == 3})
        return out


class FakeCocoDataset(FakeVocDataset):
    kind = "coco"
    class_names = CATEGORY_NAMES
    category_ids = CATEGORY_IDS

    def __init__(self):
        super().__init__()
        self.coco = make_ground_truth(0, num_images=NUM_IMAGES)
        self.image_ids = sorted(self.coco.getImgIds())


def per_image_reference(model, dataset):
    post = PostProcessor(PRIORS)
    out = []
    for i in range(len(dataset)):
        loc, conf = model(dataset[i][0][None])
        result = post(loc, conf, torch.tensor([dataset.image_size(i)]))[0]
        out.append({k: v.numpy() for k, v in result.items()})
    return out


def assert_detections_equal(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        for key in ("boxes", "scores", "labels"):
            np.testing.assert_array_equal(a[key], e[key])


def test_batched_inference_equals_one_image_at_a_time_and_is_indexed_like_the_dataset():
    dataset, model = FakeVocDataset(), FakeDetector().train()
    loader = DataLoader(dataset, batch_size=3, shuffle=True, collate_fn=collate,
                        generator=torch.Generator().manual_seed(0))
    detections = run_inference(model, loader, PRIORS, torch.device("cpu"))
    assert model.training  # the mode is restored
    assert_detections_equal(detections, per_image_reference(model, dataset))
    assert all(d["boxes"].dtype == np.float32 and d["labels"].dtype == np.int64 for d in detections)


class RandomImages(FakeVocDataset):
    """The fake dataset's sizes with random images at 128 px, for a real detector."""

    def __getitem__(self, i):
        return torch.randn(3, 128, 128, generator=torch.Generator().manual_seed(i)) * 50, torch.zeros(0, 5), i


def test_a_real_detector_runs_channels_last_on_the_cpu_and_leaves_the_callers_model(one_torch_thread, monkeypatch):
    # run_inference evaluates a folded channels-last copy on the CPU (models/memory_format.py); the caller's model,
    # still training and NCHW, must not change, and the detections are the plain model's up to float rounding.
    import utils.inference
    from models import build_detector
    from models.fold import fold_batchnorm
    from models.memory_format import stores_channels_last

    networks = []

    def recording_fold(*args):
        networks.append(fold_batchnorm(*args))
        return networks[-1]

    monkeypatch.setattr(utils.inference, "fold_batchnorm", recording_fold)
    torch.manual_seed(0)
    model = build_detector("fssd", "resnet18", 128, NUM_CLASSES).train()
    priors = PriorBox(size=128).forward()
    dataset = RandomImages()
    loader = DataLoader(dataset, batch_size=4, collate_fn=collate)
    detections = run_inference(model, loader, priors, torch.device("cpu"))
    assert model.training and not stores_channels_last(model)
    assert len(networks) == 1 and stores_channels_last(networks[0])
    post = PostProcessor(priors)
    with torch.no_grad():
        expected = post(*model.eval()(torch.stack([dataset[i][0] for i in range(len(dataset))])),
                        torch.tensor([dataset.image_size(i) for i in range(len(dataset))]))
    for got, want in zip(detections, expected):
        assert len(got["scores"]) == len(want["scores"]) > 0
        np.testing.assert_allclose(got["scores"][:20], want["scores"][:20].numpy(), rtol=1e-4)


class TwoRandomImages(RandomImages):
    def __len__(self):
        return 2


def test_a_detector_with_bf16_weights_gets_images_of_its_dtype(one_torch_thread):
    """model.to(torch.bfloat16) (or float64) failed with torch's "Input type (float) and bias type (c10::BFloat16)
    should be the same": the loader's images are float32. They are now cast to the weights' dtype; a CUDA graph,
    whose captured input is float32, refuses such a model naming amp_dtype."""
    from models import build_detector

    torch.manual_seed(0)
    model = build_detector("fssd", "resnet18", 128, NUM_CLASSES).eval()
    priors = PriorBox(size=128).forward()
    loader = DataLoader(TwoRandomImages(), batch_size=2, collate_fn=collate)
    reference = run_inference(model, loader, priors, "cpu", progress=False)
    detections = run_inference(model.to(torch.bfloat16), loader, priors, "cpu", progress=False)
    for got, want in zip(detections, reference):
        assert got["scores"].dtype == np.float32 and len(got["scores"]) > 0
        np.testing.assert_allclose(got["scores"][:5], want["scores"][:5], atol=2e-2)
    with pytest.raises(ValueError, match=r"run_inference: cuda_graph captures float32 images but the model's weights "
                                         r"are torch.bfloat16; keep float32 weights and pass amp_dtype=torch.bfloat16"):
        run_inference(model, loader, priors, "cpu", cuda_graph=True)


def test_a_compiled_or_data_parallel_model_is_run_as_the_module_it_wraps(one_torch_thread):
    """A researcher's torch.compile(model) failed in the BatchNorm folding with 'Module [OptimizedModule] is missing
    the required "forward" function', nn.DataParallel(model) with torch.fx's 'Proxy object cannot be iterated'."""
    from models import build_detector

    torch.manual_seed(0)
    model = build_detector("fssd", "resnet18", 128, NUM_CLASSES).eval()
    priors = PriorBox(size=128).forward()
    loader = DataLoader(TwoRandomImages(), batch_size=2, collate_fn=collate)
    reference = run_inference(model, loader, priors, "cpu", progress=False)
    for wrapped in (torch.compile(model, backend="eager"), nn.DataParallel(model)):
        assert_detections_equal(run_inference(wrapped, loader, priors, "cpu", progress=False), reference)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_inference_equals_the_eager_cpu_path():
    dataset = FakeVocDataset()
    loader = DataLoader(dataset, batch_size=3, collate_fn=collate, pin_memory=True)  # batches of 3, 3 and 1
    graphed = run_inference(FakeDetector().cuda(), loader, PRIORS.cuda(), torch.device("cuda"), cuda_graph=True)
    eager = run_inference(FakeDetector(), loader, PRIORS, torch.device("cpu"))
    for got, want in zip(graphed, eager):
        np.testing.assert_array_equal(got["labels"], want["labels"])
        np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-6, atol=0)
        np.testing.assert_allclose(got["boxes"], want["boxes"], rtol=0, atol=1e-3)


def test_distributed_share_leaves_other_images_empty_and_gather_is_a_no_op_without_ddp():
    dataset, model = FakeVocDataset(), FakeDetector()
    sampler = DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=False)
    loader = DataLoader(dataset, batch_size=2, sampler=sampler, collate_fn=collate)
    detections = gather_detections(run_inference(model, loader, PRIORS, torch.device("cpu")))
    assert [i for i, d in enumerate(detections) if d is not None] == [0, 1, 3, 5]  # 7 images padded to 8
    with pytest.raises(ValueError, match=r"3 missing \(images 2, 4, 6\): .* call gather_detections after"):
        evaluate_detections(dataset, detections, "unused", run_info={})


def test_images_a_loader_did_not_yield_are_named_without_blaming_distribution():
    """A loader with drop_last=True (or a sampler over part of the dataset) left the last images without detections;
    evaluate_detections then told a single-process user to call gather_detections after a distributed run."""
    dataset = FakeVocDataset()  # 7 images
    loader = DataLoader(dataset, batch_size=3, drop_last=True, collate_fn=collate)
    detections = gather_detections(run_inference(FakeDetector(), loader, PRIORS, "cpu", progress=False))
    with pytest.raises(ValueError, match=r"^evaluate_detections: need one entry per image of the dataset \(7\), got 7 "
                                         r"with 1 missing \(image 6\): the loader did not yield them \(drop_last=True, "
                                         r"or a sampler over part of the dataset\): pass run_inference a loader over "
                                         r"every image, build_loader\(dataset, batch_size, train=False, workers=...\); "
                                         r"under torch.distributed, call gather_detections after run_inference$"):
        evaluate_detections(dataset, detections, "unused", run_info={})
    with pytest.raises(ValueError, match=r"dataset \(7\), got 5: pass the list run_inference returned for this "
                                         r"dataset$"):  # another dataset's list
        evaluate_detections(dataset, detections[:5], "unused", run_info={})


def test_gather_gives_each_image_its_own_detections_from_whichever_process_ran_it(monkeypatch):
    """Two ranks' shares of the 7 images (padded to 8: rank 1 runs image 0 again) merged by ``gather_detections``,
    with ``all_gather_object`` simulated in this process: every image's detections at its own index, as one process
    computing them image by image (the test above only sees the no-op without a process group)."""
    dataset, model = FakeVocDataset(), FakeDetector()
    shares = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=False)
        loader = DataLoader(dataset, batch_size=2, sampler=sampler, collate_fn=collate)
        shares.append(run_inference(model, loader, PRIORS, torch.device("cpu")))
    assert [[i for i, d in enumerate(share) if d is not None] for share in shares] == [[0, 2, 4, 6], [0, 1, 3, 5]]

    def all_gather_object(output: list, share: list) -> None:
        assert share is shares[0]  # this process is rank 0
        output[:] = shares

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "all_gather_object", all_gather_object)
    merged = gather_detections(shares[0])
    assert_detections_equal(merged, per_image_reference(model, dataset))


def test_anchor_count_mismatch_names_the_flag():
    loader = DataLoader(FakeVocDataset(), batch_size=2, collate_fn=collate)
    with pytest.raises(ValueError, match="same --size"):
        run_inference(FakeDetector(), loader, PriorBox(size=128).forward(), torch.device("cpu"),
                      postprocessor=PostProcessor(PRIORS))


def test_images_of_another_size_than_the_model_s_are_refused_naming_both_sizes(one_torch_thread):
    """A 320 model given the loader of a 64 dataset (and 320 priors) was told to build PriorBox with the model's
    --size, which it had; the images were the wrong size. (At 127 px the anchor count is 128's: it ran silently.)"""
    from models import build_detector

    model = build_detector("fssd", "resnet18", 128, NUM_CLASSES)
    loader = DataLoader(FakeVocDataset(), batch_size=2, collate_fn=collate)  # 64 x 64 images
    # a torch.compile(fullgraph=True) model too: checked before the call, whose Dynamo error would wrap the message
    for wrapped in (model, torch.compile(model, fullgraph=True)):
        with pytest.raises(ValueError, match=r"run_inference: the loader gives 64 x 64 images but the model was built "
                                             r"for 128 x 128: build the dataset with size=128"):
            run_inference(wrapped, loader, PriorBox(size=128).forward(), torch.device("cpu"))
        # the refusal left a training model in eval mode: training on in a notebook froze its BatchNorm statistics
        assert model.training


def test_a_device_name_is_taken_and_a_training_loader_is_refused(tmp_path):
    """device="cpu" failed with "'str' object has no attribute 'type'"; a training loader (its dataset yields
    augmented images, without image_size) failed with "'EpochSamples' object has no attribute 'image_size'"."""
    from data import build_loader

    loader = DataLoader(FakeVocDataset(), batch_size=3, collate_fn=collate)
    assert_detections_equal(run_inference(FakeDetector(), loader, PRIORS, "cpu", progress=False),
                            run_inference(FakeDetector(), loader, PRIORS, torch.device("cpu"), progress=False))
    train_loader = build_loader(FakeVocDataset(), 2, train=True, workers=0, max_iter=1)
    with pytest.raises(ValueError, match=r"run_inference: the loader's dataset \(EpochSamples\) has no image_size\(i\)"
                                         r".*build_loader\(dataset, batch_size, train=False"):
        run_inference(FakeDetector(), train_loader, PRIORS, "cpu")


def test_voc_evaluation_writes_devkit_files_summary_and_prints_both_protocols(tmp_path, capsys):
    dataset, model = FakeVocDataset(), FakeDetector()
    detections = run_inference(model, DataLoader(dataset, batch_size=4, collate_fn=collate), PRIORS,
                               torch.device("cpu"))
    run_info = {"dataset": "VOC", "split": "2007_test", "config": {"version": "pafpn", "size": 320},
                "checkpoint": "weights/x.pth"}
    metrics = evaluate_detections(dataset, detections, tmp_path, run_info=run_info)

    expected = evaluate_voc(detections, dataset.ground_truth(), dataset.class_names)
    assert json.dumps(metrics) == json.dumps(expected) and 0 < metrics["mAP"] < metrics["AP50"] < 1
    printed = capsys.readouterr().out
    assert "paper protocol: mean over IoU .50:.05:.95 of VOC07 11-point AP" in printed
    assert f"standard VOC07 mAP@0.5 (11-point) = {expected['VOC07_mAP50']:.4f}" in printed
    lines = (tmp_path / "comp4_det_test_star.txt").read_text().splitlines()
    assert len(lines) == sum(int((d["labels"] == 2).sum()) for d in detections)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {k: summary[k] for k in ("dataset", "split", "config", "checkpoint", "num_images")} == {
        **run_info, "num_images": NUM_IMAGES}
    assert summary["metrics"]["mAP"] == metrics["mAP"] and "date" in summary

    # the files hold every digit of the float32 detections: re-scoring them gives the same numbers exactly
    assert json.dumps(evaluate_results_file(tmp_path, dataset)) == json.dumps(metrics)


def voc_evaluation(folder):
    """The fake VOC set, the fake detector's detections, and their evaluation written to ``folder``."""
    dataset = FakeVocDataset()
    detections = run_inference(FakeDetector(), DataLoader(dataset, batch_size=4, collate_fn=collate), PRIORS,
                               torch.device("cpu"))
    return dataset, detections, evaluate_detections(dataset, detections, folder, run_info={"split": "test"})


def test_voc_pr_curves_are_saved_without_pickle_and_give_back_the_reported_ap(tmp_path):
    """Each class's <class>_pr.npz loads with allow_pickle=False; voc_ap of the recall and precision read_pr_curves
    gives back is the AP the evaluation reported at every threshold (per_threshold_AP, the paper's protocol), the
    scores are the class's detections in descending order; --eval_results writes the same files again from the
    devkit files."""
    dataset, detections, metrics = voc_evaluation(tmp_path)
    saved = {}
    for c, name in enumerate(dataset.class_names):
        with np.load(tmp_path / f"{name}_pr.npz", allow_pickle=False) as arrays:
            saved[name] = {key: arrays[key] for key in arrays.files}
        curves = read_pr_curves(tmp_path / f"{name}_pr.npz")
        count = sum(int((d["labels"] == c).sum()) for d in detections)
        assert curves["recall"].shape == curves["precision"].shape == saved[name]["outcome"].shape == (10, count)
        assert count > 10 and saved[name]["num_positives"] == sum(
            int(((g["labels"] == c) & ~g["difficult"]).sum()) for g in dataset.ground_truth())
        np.testing.assert_array_equal(curves["iou_thresholds"], metrics["iou_thresholds"])
        assert np.all(np.diff(curves["scores"]) <= 0)
        np.testing.assert_array_equal(np.sort(curves["scores"]),
                                      np.sort(np.concatenate([d["scores"][d["labels"] == c] for d in detections])))
        recomputed = [voc_ap(recall, precision) for recall, precision in zip(curves["recall"], curves["precision"])]
        assert recomputed == [row[c] for row in metrics["per_threshold_AP"]] == curves["ap"].tolist()
        assert recomputed[-1] < recomputed[0] < 1

    for path in tmp_path.glob("*_pr.npz"):
        path.unlink()
    evaluate_results_file(tmp_path, dataset)
    for name in dataset.class_names:
        with np.load(tmp_path / f"{name}_pr.npz", allow_pickle=False) as arrays:
            for key, value in saved[name].items():
                np.testing.assert_array_equal(arrays[key], value)


def test_eval_results_that_cannot_write_its_curves_warns_and_keeps_the_scores(tmp_path, monkeypatch, capsys):
    dataset, _, metrics = voc_evaluation(tmp_path)

    def refuse(path, arrays):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("data.voc_eval.write_arrays", refuse)
    assert json.dumps(evaluate_results_file(tmp_path, dataset)) == json.dumps(metrics)
    assert (f"warning: --eval_results {tmp_path}: the precision-recall curves could not be written to {tmp_path} "
            f"({tmp_path / 'circle_pr.npz'}: Permission denied)") in capsys.readouterr().err


def test_eval_results_on_a_test_split_that_changed_since_its_evaluation_says_so(tmp_path, capsys):
    """Results re-scored after an image was added to the test split scored it as detecting nothing, and so other
    numbers than the evaluation that wrote them, without a word; its summary.json records how many images it ran on."""
    dataset, _, metrics = voc_evaluation(tmp_path)
    capsys.readouterr()
    assert json.dumps(evaluate_results_file(tmp_path, dataset)) == json.dumps(metrics)
    assert "warning" not in capsys.readouterr().err

    class Grown(FakeVocDataset):  # one more image, with one object
        def __init__(self):
            super().__init__()
            self.image_ids = [*self.image_ids, "000099"]

        def __len__(self):
            return NUM_IMAGES + 1

        def ground_truth(self):
            added = {"boxes": np.array([[1.0, 1.0, 20.0, 20.0]]), "labels": np.array([0]), "difficult": np.array([0])}
            return [*FakeVocDataset().ground_truth(), added]

    assert evaluate_results_file(tmp_path, Grown())["per_class_AP50"]["circle"] < metrics["per_class_AP50"]["circle"]
    assert capsys.readouterr().err == (
        f"warning: --eval_results {tmp_path}: the evaluation that wrote these results ran on {NUM_IMAGES} test images "
        f"({tmp_path / 'summary.json'}), the test split has {NUM_IMAGES + 1} now: an image added since has no "
        "detection in them, so these numbers are not that evaluation's; evaluate the checkpoint again "
        "(--trained_model) on the split as it is\n")


def test_coco_evaluation_writes_results_json_and_matches_pycocotools(tmp_path, capsys):
    dataset = FakeCocoDataset()
    detections = random_detections(dataset.coco, 0)
    metrics = evaluate_detections(dataset, detections, tmp_path, run_info={"dataset": "COCO", "split": "val2017"})

    results = detections_to_coco_results(detections, dataset.image_ids, dataset.category_ids)
    assert metrics["stats"] == evaluate_coco(results, dataset.coco)["stats"]
    assert json.loads((tmp_path / "detections_val2017_results.json").read_text()) == results
    printed = capsys.readouterr().out
    assert printed.splitlines()[-1].startswith(f"COCO mAP = {metrics['mAP']:.4f}")
    assert evaluate_results_file(tmp_path / "detections_val2017_results.json", dataset)["stats"] == metrics["stats"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["metrics"]["stats"] == metrics["stats"] and summary["checkpoint"] is None


def test_coco_pr_curves_are_pycocotools_accumulated_arrays_saved_without_pickle(tmp_path):
    """detection_results.npz holds COCOeval's accumulated precision, recall and scores as pycocotools gives them run
    here on the same detections, and the parameters that index them, loadable with allow_pickle=False; --eval_results
    writes it again."""
    dataset = FakeCocoDataset()
    evaluate_detections(dataset, random_detections(dataset.coco, 0), tmp_path, run_info={"split": "val2017"})
    results = json.loads((tmp_path / "detections_val2017_results.json").read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(dataset.coco, dataset.coco.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    with np.load(tmp_path / "detection_results.npz", allow_pickle=False) as saved:
        curves = {key: saved[key] for key in saved.files}
    assert curves["precision"].shape == (10, 101, 3, 4, 3) and curves["recall"].shape == (10, 3, 4, 3)
    for key in ("precision", "recall", "scores"):
        np.testing.assert_array_equal(curves[key], evaluator.eval[key])
    assert 0.3 < curves["precision"][0, :, :, 0, -1].mean() < 1
    np.testing.assert_array_equal(curves["iouThrs"], evaluator.params.iouThrs)
    np.testing.assert_array_equal(curves["recThrs"], evaluator.params.recThrs)
    assert curves["catIds"].tolist() == [1, 3, 7] and curves["class_names"].tolist() == ["person", "car", "dog"]
    assert curves["areaRngLbl"].tolist() == ["all", "small", "medium", "large"]
    assert curves["areaRng"].tolist() == evaluator.params.areaRng and curves["maxDets"].tolist() == [1, 10, 100]

    (tmp_path / "detection_results.npz").unlink()
    evaluate_results_file(tmp_path, dataset)
    with np.load(tmp_path / "detection_results.npz", allow_pickle=False) as saved:
        np.testing.assert_array_equal(saved["precision"], curves["precision"])


def test_coco_results_folder_is_read_through_its_one_results_json(tmp_path):
    """--eval_results eval/COCO (the folder, as for VOC) scores the results JSON the evaluation wrote there; with
    two results files it names them."""
    dataset = FakeCocoDataset()
    metrics = evaluate_detections(dataset, random_detections(dataset.coco, 0), tmp_path, run_info={"split": "val2017"})
    assert evaluate_results_file(tmp_path, dataset)["stats"] == metrics["stats"]
    shutil.copy(tmp_path / "detections_val2017_results.json", tmp_path / "detections_minival_results.json")
    with pytest.raises(ValueError, match=r"needs a results JSON file: one of .*detections_minival_results\.json, "
                                         r".*detections_val2017_results\.json"):
        evaluate_results_file(tmp_path, dataset)


def test_an_evaluation_folder_holds_the_latest_evaluations_results_only(tmp_path):
    """eval/<DATASET> after an evaluation holds its files alone: the results of an earlier one of other classes or of
    the other layout (a custom VOC-layout folder, then a COCO-layout one) are removed, other files are left."""
    voc = FakeVocDataset()
    voc_detections = run_inference(FakeDetector(), DataLoader(voc, batch_size=4, collate_fn=collate), PRIORS,
                                   torch.device("cpu"))
    evaluate_detections(voc, voc_detections, tmp_path, run_info={"split": "test"})
    voc_files = sorted(tmp_path.glob("comp4_det_test_*.txt"))
    assert len(voc_files) == len(voc.class_names)
    (tmp_path / "notes.txt").write_text("mine")
    coco = FakeCocoDataset()
    evaluate_detections(coco, random_detections(coco.coco, 0), tmp_path, run_info={"split": "test"})
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "detection_results.npz", "detections_test_results.json", "notes.txt", "summary.json"]
    evaluate_detections(voc, voc_detections, tmp_path, run_info={"split": "test"})
    assert sorted(tmp_path.glob("comp4_det_test_*.txt")) == voc_files
    assert not list(tmp_path.glob("detections_*_results.json")) and not (tmp_path / "detection_results.npz").exists()
    assert sorted(p.name for p in tmp_path.glob("*_pr.npz")) == ["circle_pr.npz", "square_pr.npz", "star_pr.npz"]


def test_the_pr_curves_of_a_class_an_evaluation_no_longer_has_are_removed(tmp_path):
    """A folder's <class>_pr.npz are those of its latest evaluation: after one of other classes the curves of a class
    it lacks are gone, by evaluate_detections (with that class's devkit file) and by --eval_results (which leaves
    the devkit files it reads as they are)."""
    _, detections, _ = voc_evaluation(tmp_path)

    class Renamed(FakeVocDataset):
        class_names = ["circle", "square", "triangle"]

    evaluate_detections(Renamed(), detections, tmp_path, run_info={"split": "test"})
    assert sorted(p.name for p in tmp_path.glob("*_pr.npz")) == ["circle_pr.npz", "square_pr.npz", "triangle_pr.npz"]
    assert not (tmp_path / "comp4_det_test_star.txt").exists()

    voc_evaluation(tmp_path)
    (tmp_path / "comp4_det_test_triangle.txt").write_text("")
    (tmp_path / "triangle_pr.npz").write_bytes(b"an earlier evaluation's")
    evaluate_results_file(tmp_path, FakeVocDataset())
    assert sorted(p.name for p in tmp_path.glob("*_pr.npz")) == ["circle_pr.npz", "square_pr.npz", "star_pr.npz"]
    assert (tmp_path / "comp4_det_test_triangle.txt").exists()


def test_an_evaluation_replaces_linked_results_files_and_leaves_what_they_link_to(tmp_path):
    """Results files that are links (a DVC or git-annex tracked folder links each file into its cache; a folder set up
    from another run's files) were written through: the other run's files, or the cache, took the new results."""
    dataset, detections, _ = voc_evaluation(tmp_path / "first")
    first = {path.name: path.read_bytes() for path in (tmp_path / "first").iterdir() if path.is_file()}
    folder = tmp_path / "second"
    folder.mkdir()
    for name in ("comp4_det_test_circle.txt", "summary.json"):
        (folder / name).symlink_to(tmp_path / "first" / name)
    os.link(tmp_path / "first" / "circle_pr.npz", folder / "circle_pr.npz")
    fewer = [{key: value[:1] for key, value in d.items()} for d in detections]
    evaluate_detections(dataset, fewer, folder, run_info={"split": "test"})
    assert {path.name: path.read_bytes() for path in (tmp_path / "first").iterdir() if path.is_file()} == first
    assert not any(path.is_symlink() for path in folder.iterdir())
    assert len((folder / "comp4_det_test_circle.txt").read_text().splitlines()) == sum(
        int((d["labels"] == 0).sum()) for d in fewer)

    coco = FakeCocoDataset()
    evaluate_detections(coco, random_detections(coco.coco, 0), tmp_path / "coco", run_info={"split": "val"})
    linked = tmp_path / "coco_linked"
    linked.mkdir()
    for name in ("detections_val_results.json", "detection_results.npz"):
        (linked / name).symlink_to(tmp_path / "coco" / name)
    kept = {name: (tmp_path / "coco" / name).read_bytes() for name in ("detections_val_results.json",
                                                                        "detection_results.npz")}
    evaluate_detections(coco, random_detections(coco.coco, 1), linked, run_info={"split": "val"})
    assert {name: (tmp_path / "coco" / name).read_bytes() for name in kept} == kept
    assert not any(path.is_symlink() for path in linked.iterdir())


def test_an_evaluation_keeps_its_own_results_file_that_the_folder_lists_under_an_earlier_letter_case(tmp_path):
    """On a case-insensitive disk (macOS, Windows) comp4_det_test_star.txt written over an earlier evaluation's
    comp4_det_test_Star.txt can keep the name ..._Star.txt, which the clean-up then deleted as an earlier evaluation's
    file: the class's results were gone. A hard link stands in for that second name of the same file here (the
    evaluation writes each file anew, so the clean-up is checked on the folder as such a disk leaves it)."""
    voc = FakeVocDataset()
    detections = run_inference(FakeDetector(), DataLoader(voc, batch_size=4, collate_fn=collate), PRIORS,
                               torch.device("cpu"))
    written = evaluate_detections(voc, detections, tmp_path, run_info={"split": "test"})
    name = f"comp4_det_test_{voc.class_names[0]}.txt"
    earlier = tmp_path / name.replace(voc.class_names[0], voc.class_names[0].upper())
    (tmp_path / name).rename(earlier)
    (tmp_path / name).hardlink_to(earlier)
    kept = [tmp_path / f"comp4_det_test_{class_name}.txt" for class_name in voc.class_names]
    assert remove_earlier_results(tmp_path, keep=kept, patterns=("comp4_det_test_*.txt",)) == []
    assert earlier.is_file() and (tmp_path / name).samefile(earlier)
    assert evaluate_results_file(tmp_path, voc)["mAP"] == written["mAP"]


def test_eval_results_refuses_a_folder_whose_evaluation_did_not_finish_writing(tmp_path, monkeypatch):
    """An evaluation whose writing failed after its first class file (a full disk) left that file beside the earlier
    evaluation's other files and its summary.json: --eval_results scored the mix as one evaluation without a word."""
    import errno

    import data.voc_eval

    dataset, detections, _ = voc_evaluation(tmp_path)
    written = []

    def full_disk_after_one_file(path, text):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written.append(path)
        replace_text(path, text)

    monkeypatch.setattr(data.voc_eval, "replace_text", full_disk_after_one_file)
    fewer = [{key: value[:1] for key, value in d.items()} for d in detections]
    with pytest.raises(OSError, match="No space left on device"):
        evaluate_detections(dataset, fewer, tmp_path, run_info={"split": "test"})
    assert written == [tmp_path / "comp4_det_test_circle.txt"]
    summary = tmp_path / "summary.json"
    with pytest.raises(ValueError) as error:
        evaluate_results_file(tmp_path, dataset)
    assert str(error.value) == (
        f"--eval_results {tmp_path}: {summary} records an evaluation that did not finish writing its results there "
        "(stopped by a full disk, a refused write or a crash, or still running), so the folder may hold a mix of its "
        "files and an earlier evaluation's; evaluate the checkpoint again (--trained_model), which writes the folder "
        "whole, or wait for the one still running")

    monkeypatch.undo()  # writing again completes the folder: it is scored
    metrics = evaluate_detections(dataset, fewer, tmp_path, run_info={"split": "test"})
    assert json.loads(summary.read_text())["complete"] is True
    assert json.dumps(evaluate_results_file(tmp_path, dataset)) == json.dumps(metrics)
