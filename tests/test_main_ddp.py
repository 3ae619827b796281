"""``torchrun --nproc_per_node=2 main.py`` on CPU (gloo): trains, saves once on rank 0, evaluates gathered
detections."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from data.errors import joins_image_warning_counts
from data.loader import ResumableBatchSampler
from data.shapes import SHAPES_CLASSES, generate_shapes_dataset

ROOT = Path(__file__).resolve().parents[1]


def train_with_two_processes(workdir: Path, root: Path, *flags: str) -> subprocess.CompletedProcess:
    """``main.py`` under ``torchrun --nproc_per_node=2`` in ``workdir``: FSSD-ResNet18 at 128 px on the shapes folder
    ``root`` as custom data, CPU, 2 images per process, checkpoints in ``weights/``, plus ``flags``."""
    argv = [
        "--dataset", "custom", "--data_root", str(root), "--classes", ",".join(SHAPES_CLASSES),
        "--version", "fssd", "--backbone", "resnet18", "--size", "128", "--no_pretrained", "--device", "cpu",
        "--batch_size", "2", "--workers", "0", "--save_folder", "weights", *flags,
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "main.py"), *argv]
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=170)


def test_torchrun_two_cpu_processes(tmp_path):
    # 5 test images: shards of 3 and 2 images, each image run by one process
    root = generate_shapes_dataset(tmp_path / "shapes", num_trainval=16, num_test=5)
    result = train_with_two_processes(tmp_path, root, "--max_iter", "3", "--warm_iter", "1", "--log_interval", "1",
                                      "--checkpoint_interval", "2", "--run_dir", "run", "--mutual_guide",
                                      "--assign_stats", "--eval_interval", "1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    checkpoint = tmp_path / "weights" / "CUSTOM_fssd_resnet18_size128_anchor24.0_MG.pth"
    best = checkpoint.with_name(f"{checkpoint.stem}_best.pth")  # the final evaluation, the run's only one (4 per epoch)
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == [checkpoint.name, best.name]
    assert torch.load(best, weights_only=True)["iteration"] == 3
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "on cpu x2" in log and log.count("saved weights/") == 2  # rank 0 alone logs and saves, the run and its best
    assert "global batch 4: the losses are normalised by its positive anchors (summed over the 2 processes)" in log
    rows = (tmp_path / "run" / "train.csv").read_text().splitlines()
    assert len(rows) == 1 + 3  # header + one row per iteration, written once
    assert "num_pos_cls" in rows[0] and "disagree_with_iou" in rows[0]  # MG statistics, global batch
    assert "assignment statistics, mean over 3 log intervals" in log
    assert result.stdout.count("CUSTOM test: mAP=") == 1
    assert result.stdout.count("iteration 3/3: loss_l ") == 1  # rank 0 alone prints the log interval's line
    assert "Evaluating" not in result.stderr  # no progress bar where standard error is not a terminal
    summary = json.loads((tmp_path / "eval" / "CUSTOM" / "summary.json").read_text())
    assert summary["num_images"] == 5 and summary["config"]["world_size"] == 2

    # one process evaluating the checkpoint finds the same detections (float rounding aside: other batches): process 1
    # scored its shard with rank 0's BatchNorm statistics, the checkpoint's, not those its own last batch left (scores
    # 10 % apart)
    single = subprocess.run([sys.executable, str(ROOT / "main.py"), "--trained_model", str(checkpoint), "--device",
                             "cpu", "--batch_size", "2", "--workers", "0", "--eval_dir", "single"],
                            cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT)),
                            capture_output=True, text=True, timeout=120)
    assert single.returncode == 0, single.stderr[-3000:]
    detections = sorted((tmp_path / "eval" / "CUSTOM").glob("comp4_det_test_*.txt"))
    assert len(detections) == len(SHAPES_CLASSES)
    for path in detections:
        ids, values = read_detections(path)
        single_ids, single_values = read_detections(tmp_path / "single" / path.name)
        assert ids == single_ids and torch.allclose(values, single_values, rtol=1e-4, atol=1e-3), path.name


def read_detections(path: Path) -> tuple[list[str], torch.Tensor]:
    """A ``comp4_det_test_<class>.txt``'s image ids and ``[n, 5]`` (score, x1, y1, x2, y2)."""
    rows = [line.split() for line in path.read_text().splitlines()]
    return [row[0] for row in rows], torch.tensor([[float(v) for v in row[1:]] for row in rows]).reshape(-1, 5)


def test_a_data_error_in_one_process_share_of_the_evaluation_stops_every_process(tmp_path):
    """An undecodable test image lies in one process's shard: every process stops with a message saying why (the
    other process used to wait for it in the gather until torchrun killed it, without a word)."""
    root = generate_shapes_dataset(tmp_path / "shapes", num_trainval=8, num_test=4)
    first = (root / "ImageSets" / "Main" / "test.txt").read_text().split()[0]
    (root / "JPEGImages" / f"{first}.jpg").write_bytes(b"not an image")
    result = train_with_two_processes(tmp_path, root, "--max_iter", "1", "--warm_iter", "0")
    assert result.returncode != 0
    assert f"{first}.jpg: OpenCV cannot decode the file as an image" in result.stderr
    assert "another process met a data error in its share of the evaluation" in result.stderr
    assert "training is complete and saved in weights/CUSTOM_fssd_resnet18_size128_anchor24.0.pth" in result.stdout


def test_an_unreadable_image_in_one_process_share_of_a_training_batch_stops_every_process(tmp_path):
    """Only process 1 reads the bad image, in the 3rd batch: both processes learn it before the step (process 0 used
    to wait for it in DDP's collectives and die with gloo's 'Connection closed by peer' traceback), rank 0 saves the
    2 iterations done and says how to continue. Continued so, with the file fixed, the run goes on with the batches
    of the uninterrupted run, into the next epoch (4 iterations each): the same losses and weights."""
    root = generate_shapes_dataset(tmp_path / "shapes", num_trainval=16, num_test=4)
    ids = (root / "ImageSets" / "Main" / "trainval.txt").read_text().split()
    shares = [list(ResumableBatchSampler(16, 2, seed=0, start_iter=0, max_iter=3, rank=rank, world_size=2))
              for rank in (0, 1)]
    read_before = {index for rank, batches in enumerate(shares) for batch in batches[:3 if rank == 0 else 2]
                   for index, _ in batch}
    bad = next(ids[index] for index, _ in shares[1][2] if index not in read_before)
    image = root / "JPEGImages" / f"{bad}.jpg"
    good = image.read_bytes()
    image.write_bytes(b"not an image")
    flags = ("--max_iter", "6", "--warm_iter", "1", "--log_interval", "1", "--checkpoint_interval", "100")
    result = train_with_two_processes(tmp_path, root, *flags)
    assert result.returncode != 0
    assert f"[rank 1] error: {root}/JPEGImages/{bad}.jpg: OpenCV cannot decode the file as an image" in result.stderr
    assert "[rank 0] error: another process met a data error in its share of the batch" in result.stderr
    assert "Connection closed by peer" not in result.stderr and "[rank0]: Traceback" not in result.stderr
    checkpoint = tmp_path / "weights" / "CUSTOM_fssd_resnet18_size128_anchor24.0.pth"
    assert (f"training stopped by a data error: saved {checkpoint.relative_to(tmp_path)} after iteration 2; "
            "fix or replace the file (--check_data scans every image), then continue with the same command plus "
            "--resume (from iteration 2)"
            in result.stdout)
    assert torch.load(checkpoint, weights_only=True)["iteration"] == 2
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == [checkpoint.name]  # no partial file

    image.write_bytes(good)
    resumed = train_with_two_processes(tmp_path, root, *flags, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (tmp_path / "uninterrupted").mkdir()
    reference = train_with_two_processes(tmp_path / "uninterrupted", root, *flags)
    assert reference.returncode == 0, reference.stderr[-3000:]
    run = Path("runs") / checkpoint.stem
    rows = (tmp_path / run / "train.csv").read_text().splitlines()
    expected = (tmp_path / "uninterrupted" / run / "train.csv").read_text().splitlines()
    columns = rows[0].split(",")
    assert rows[0] == expected[0] and len(rows) == len(expected) == 1 + 6
    for row, expected_row in zip(rows[1:], expected[1:]):  # the same batches: the same losses
        values, expected_values = dict(zip(columns, row.split(","))), dict(zip(columns, expected_row.split(",")))
        for key in ("iteration", "epoch", "lr"):
            assert values[key] == expected_values[key]
        for key in ("loss_l", "loss_c"):
            assert float(values[key]) == pytest.approx(float(expected_values[key]), rel=1e-5), (row, expected_row)
    weights = torch.load(checkpoint, weights_only=True)["model"]
    expected_weights = torch.load(tmp_path / "uninterrupted" / "weights" / checkpoint.name, weights_only=True)["model"]
    for key, value in expected_weights.items():
        assert torch.allclose(weights[key].float(), value.float(), rtol=1e-4, atol=1e-6), key


@pytest.mark.skipif(not joins_image_warning_counts(), reason="each process says its own count on this torch")
def test_the_images_with_a_warning_are_counted_once_for_the_whole_run(tmp_path):
    """24 training images saved with a broken colour profile (a decoder's warning each), 12 read by each process: each
    process named its first 10 and printed its own count, "12 images ... (in its process of rank N)", twice short of
    the run's 24. Rank 0 now prints one line counting the run's images, those of both processes."""
    root = generate_shapes_dataset(tmp_path / "shapes", num_trainval=24, num_test=2)
    for image_id in (root / "ImageSets" / "Main" / "trainval.txt").read_text().split():
        path = root / "JPEGImages" / f"{image_id}.jpg"
        Image.open(path).save(path, format="PNG", icc_profile=b"\0" * 300)  # the decoder reads the content, a PNG
    result = train_with_two_processes(tmp_path, root, "--max_iter", "6", "--warm_iter", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("libpng warning: iCCP: too short") == 20  # each process names the first 10 it reads
    for rank in (0, 1):
        assert result.stderr.count(f"warning: 10 images with a warning of the image decoder named by this process "
                                   f"(rank {rank}); any more it reads are not named (--check_data counts them)") == 1
    assert [line for line in result.stderr.splitlines() if ", of which " in line] == [
        "warning: 24 images with a warning of the image decoder in this run (its 2 processes together), of which 20 "
        "were named (each process names the first 10 it reads; --check_data counts them in each split)"]


def evaluate_in_a_group(rank: int, init_file: str, workdir: str) -> None:
    """Process ``rank`` of 2 (gloo) runs ``main.py --trained_model`` on ``<workdir>/w.pth`` and the shapes folder
    ``<workdir>/shapes``, as under ``torchrun``; its standard error goes to ``rank<rank>.txt``, its exit code to
    ``code<rank>.txt``."""
    import main as cli

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    sys.stderr = open(Path(workdir) / f"rank{rank}.txt", "w", encoding="utf-8")  # noqa: SIM115 - closed at exit
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    args = cli.get_args_parser().parse_args([
        "--trained_model", f"{workdir}/w.pth", "--dataset", "custom", "--data_root", f"{workdir}/shapes", "--classes",
        "circle,square,triangle", "--skip_unknown_classes", "--device", "cpu", "--workers", "0", "--batch_size", "1",
        "--eval_dir", f"{workdir}/eval"])  # fmt: skip
    code = cli.main(args)
    sys.stderr.flush()
    (Path(workdir) / f"code{rank}.txt").write_text(str(code))


def test_a_data_error_in_one_process_share_of_an_evaluation_of_a_trained_model_is_named(tmp_path):
    """--trained_model under torchrun, an undecodable test image in process 1's shard: process 0 said "another process
    met a data error ... (its message says which file)", but process 1 printed nothing (main.py printed the data
    errors it took from rank 0 alone, as if every process met them alike): no message named the file. Process 1 now
    names it, as a training run's evaluation does."""
    from tests.tiny_checkpoint import write_tiny_checkpoint

    write_tiny_checkpoint(tmp_path / "w.pth")
    root = generate_shapes_dataset(tmp_path / "shapes", num_trainval=2, num_test=4)
    last = (root / "ImageSets" / "Main" / "test.txt").read_text().split()[-1]  # image 3: process 1's shard (1, 3)
    (root / "JPEGImages" / f"{last}.jpg").write_bytes(b"not an image")
    mp.start_processes(evaluate_in_a_group, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                       start_method="fork")
    assert [(tmp_path / f"code{rank}.txt").read_text() for rank in (0, 1)] == ["2", "2"]
    assert (f"[rank 1] error: {root}/JPEGImages/{last}.jpg: OpenCV cannot decode the file as an image; re-download "
            "or re-encode the file") in (tmp_path / "rank1.txt").read_text().splitlines()
    assert ("[rank 0] error: another process met a data error in its share of the evaluation (its message says which "
            "file)") in (tmp_path / "rank0.txt").read_text().splitlines()


def test_a_start_refused_before_the_processes_join_says_it_once(tmp_path):
    """Flags are read and checked before the processes join their group: every process refuses them, but only rank 0
    prints the refusal (and the line naming an ignored flag), as it prints everything after they join; each line
    used to come once per process."""
    root = generate_shapes_dataset(tmp_path / "shapes", num_trainval=4, num_test=2)
    result = train_with_two_processes(tmp_path, root, "--epochs", "3", "--max_iter", "2", "--lr", "-1")
    assert result.returncode != 0
    assert result.stdout.count("with --max_iter the flag --epochs is ignored") == 1, result.stdout
    assert result.stderr.count("error: --lr must be a number > 0") == 1, result.stderr[-3000:]
    assert "exitcode  : 2" in result.stderr and "exitcode  : 1" not in result.stderr  # every process: bad input


def test_the_flag_parser_refuses_once_under_torchrun(monkeypatch, capsys):
    """The parser runs in every process before main(): rank 0 prints the refusal at once; another process waits
    first (torchrun stops it once rank 0 has refused alike and exited: exiting first, it would make torchrun stop
    rank 0 before it printed), and prints it with its rank if it is still running then. Every process exits 2."""
    import utils.distributed
    from main import get_args_parser

    waits = []
    monkeypatch.setattr(utils.distributed.time, "sleep", waits.append)
    monkeypatch.setenv("WORLD_SIZE", "2")
    refusal = "main.py: error: argument --size: invalid int value: 'big' (see --help)"
    for rank, printed, waited in (("0", refusal, []), ("1", f"[rank 1] {refusal}", [10.0])):
        monkeypatch.setenv("RANK", rank)
        waits.clear()
        with pytest.raises(SystemExit) as stopped:
            get_args_parser().parse_args(["--size", "big"])
        assert stopped.value.code == 2
        assert capsys.readouterr().err == printed + "\n"
        assert waits == waited


def fetch_backbone_in_a_group(rank: int, init_file: str, torch_home: str) -> None:
    """Process ``rank`` of 2 (gloo) builds FSSD-ResNet18 with its ImageNet weights, as ``main.py`` does under
    ``torchrun``; the download is faked (0.5 s, then the file in torch.hub's cache) and logged in ``downloads.txt``."""
    import time

    import torch.distributed as dist
    import torchvision
    from torchvision.models._api import WeightsEnum

    from models.pretrained import cached_weights_path
    from utils.distributed import DistributedContext
    from utils.training_setup import build_detector_fetching_once

    os.environ["TORCH_HOME"] = torch_home

    def download_once(weights, **kwargs):  # torch.hub's logic: download when the cache holds no file
        cached = cached_weights_path(weights.url)
        if not cached.exists():
            with open(Path(torch_home) / "downloads.txt", "a") as log:
                log.write(f"rank {rank}\n")
            time.sleep(0.5)
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.save(torchvision.models.resnet18().state_dict(), f"{cached}.{rank}.partial")
            os.replace(f"{cached}.{rank}.partial", cached)
        return torch.load(cached, weights_only=True)

    WeightsEnum.get_state_dict = download_once
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        args = argparse.Namespace(version="fssd", backbone="resnet18", size=128, pretrained=True)
        model = build_detector_fetching_once(args, 3, DistributedContext(rank=rank, world_size=2, local_rank=rank))
        torch.save(model.state_dict(), Path(torch_home) / f"model{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_the_imagenet_weights_are_downloaded_once_per_machine(tmp_path):
    """Both processes started together used to find no cached file and download it each; process 0 now downloads it
    and process 1 reads the cached file: one download, the same backbone weights in both."""
    import torch.multiprocessing as mp

    mp.spawn(fetch_backbone_in_a_group, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "downloads.txt").read_text() == "rank 0\n"
    models = [torch.load(tmp_path / f"model{rank}.pt", weights_only=True) for rank in (0, 1)]
    backbone = [key for key in models[0] if key.startswith("backbone.")]
    assert backbone and all(torch.equal(models[0][key], models[1][key]) for key in backbone)


@pytest.mark.parametrize("local_rank", [0, 1])
def test_the_shapes_set_is_generated_once_per_machine(tmp_path, monkeypatch, local_rank):
    """Under torchrun every process found no shapes set and generated all 2,500 images into a temp folder of its own
    (N times the work, the 'Generating' line N times). Each machine's first process now makes the training split
    first (generating the set); the others wait for it (the all-reduce that says whether it could), then read the set
    it made. The exchange is faked for one process of two."""
    import torch.distributed as dist

    from utils import run_data
    from utils.distributed import DistributedContext
    from utils.run_data import make_training_split

    events = []
    monkeypatch.setattr(run_data, "make_dataset", lambda *args, **kwargs: events.append("made") or "dataset")
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, **_: events.append("agreed"))
    args = argparse.Namespace(dataset="shapes", size=128)
    ctx = DistributedContext(rank=local_rank, world_size=2, local_rank=local_rank)
    assert make_training_split(args, ctx, None) == "dataset"
    assert events == (["made", "agreed"] if local_rank == 0 else ["agreed", "made"])
    events.clear()
    assert make_training_split(argparse.Namespace(dataset="voc", size=128), ctx, None) == "dataset"
    assert events == ["made"]  # a dataset on disk: every process reads it at once
