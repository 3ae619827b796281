"""The count of the images of a kind of image warning past those named, as a run ends: under ``torchrun`` one line for
the whole run (each image once, whichever processes read it), printed once."""
import sys
import warnings
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp

import pytest

import data.errors
from data.errors import (
    ImageDecoderWarning,
    joins_image_warning_counts,
    one_line_data_warnings,
    say_unnamed_image_warnings,
)
from utils.distributed import DistributedContext
from utils.messages import SharedSeen

# the images each of two processes reads: 14 each, 6 of them (8..13) read by both
IMAGES_READ = (range(0, 14), range(8, 22))
DECODER_KIND = "with a warning of the image decoder"


def warn_about_images(numbers: range) -> None:
    """The warning a decoder's line about image ``p<number>.png`` gives, for each of ``numbers``, as reading does."""
    for number in numbers:
        warnings.warn(f"p{number:02d}.png: the image decoder says 'libpng warning: iCCP: too short' (the image is "
                      "read; re-save it to silence this)", ImageDecoderWarning)


def read_and_count(rank: int, init_file: str, out_dir: str, together: tuple[bool, bool]) -> None:
    """Process ``rank`` of 2 (gloo): reads its images of :data:`IMAGES_READ` under ``main.py``'s display of data
    warnings (its own record, as each torchrun process has), then counts them as a run ends, joining the other
    process's count when ``together[rank]``; its standard error goes to ``<out_dir>/rank<rank>.txt``."""
    sys.stderr = open(Path(out_dir) / f"rank{rank}.txt", "w", encoding="utf-8")  # noqa: SIM115 - closed at exit
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = one_line_data_warnings(warnings.showwarning, SharedSeen())
        warn_about_images(IMAGES_READ[rank])
        say_unnamed_image_warnings(DistributedContext(rank=rank, world_size=2), together=together[rank])
    sys.stderr.flush()
    dist.destroy_process_group()


def counted_lines(out_dir: Path, rank: int) -> list[str]:
    """The lines of process ``rank`` that count images (not those naming one)."""
    return [line for line in (out_dir / f"rank{rank}.txt").read_text().splitlines() if ", of which " in line]


def run_two_processes(tmp_path: Path, together: tuple[bool, bool]) -> None:
    mp.start_processes(read_and_count, args=(str(tmp_path / "init"), str(tmp_path), together), nprocs=2,
                       start_method="fork")


@pytest.mark.skipif(not joins_image_warning_counts(), reason="each process says its own count on this torch")
def test_torchrun_processes_count_the_images_of_the_whole_run_once(tmp_path):
    """Each process counted the images it read and printed its own line, "14 images ... (in its process of rank N)":
    two lines, each short of the run's 22 images (the 6 both read counted by each). Rank 0 now prints one line for the
    whole run: 22 images, of which 18 were named (0..9 by process 0, 8..17 by process 1)."""
    run_two_processes(tmp_path, together=(True, True))
    assert counted_lines(tmp_path, 0) == [
        f"warning: 22 images {DECODER_KIND} in this run (its 2 processes together), of which 18 were named (each "
        "process names the first 10 it reads; --check_data counts them in each split)"]
    assert counted_lines(tmp_path, 1) == []


def test_a_process_whose_partner_stopped_without_joining_counts_its_own_images(tmp_path):
    """Process 0 stopped on an error (its count its own, without joining: the other process may be in a collective of
    the run) and left; process 1, whose run finished, waits to join their counts, learns that process 0 has gone and
    prints its own count, saying so, instead of waiting forever or dying with gloo's traceback."""
    run_two_processes(tmp_path, together=(False, True))
    for rank in (0, 1):
        assert counted_lines(tmp_path, rank) == [
            f"warning: 14 images {DECODER_KIND} in this run in its process of rank {rank} (this process's count "
            "alone), of which the first 10 were named (--check_data counts them in each split)"]


def own_count_line(rank: int) -> str:
    return (f"warning: 14 images {DECODER_KIND} in this run in its process of rank {rank} (this process's count "
            "alone), of which the first 10 were named (--check_data counts them in each split)")


def test_on_a_torch_older_than_the_joining_needs_each_process_says_its_own_count(tmp_path, monkeypatch):
    """torch 2.5.1's gloo left a process of a finished torchrun run waiting forever in destroy_process_group after the
    gather: there the processes do not join their records, each prints its own count, labelled so."""
    monkeypatch.setattr(data.errors, "joins_image_warning_counts", lambda: False)
    run_two_processes(tmp_path, together=(True, True))
    assert [counted_lines(tmp_path, rank) for rank in (0, 1)] == [[own_count_line(0)], [own_count_line(1)]]


@pytest.mark.parametrize("version, joins", [("2.5.1+cu124", False), ("2.13.9", False), ("2.14.0", True),
                                            ("2.14.1+cu130", True), ("3.0.0.dev20270101", True), ("nightly", True)])
def test_the_processes_join_their_counts_from_torch_2_14(version, joins):
    assert joins_image_warning_counts(version) is joins
