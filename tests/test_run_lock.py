"""One training run per checkpoint path at a time: the lock main.py holds while it trains."""
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from utils.run_lock import exclusive_run, lock_file_for, one_writer

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")


def test_a_second_run_of_one_checkpoint_is_refused_until_the_first_ends(tmp_path):
    checkpoint = tmp_path / "weights" / "VOC_pafpn_vgg16_size320_anchor24.0_MG.pth"
    with exclusive_run(checkpoint):
        with pytest.raises(ValueError, match=rf"{checkpoint} is the checkpoint of a run still going on \(process "
                                             rf"{os.getpid()}\): give this run another --name"):
            with exclusive_run(checkpoint):
                pass
        with exclusive_run(tmp_path / "weights" / "other.pth"):  # another checkpoint: no conflict
            pass
    with exclusive_run(checkpoint):  # released when the first run ended
        pass


def test_the_lock_is_keyed_by_the_resolved_path_and_lives_outside_the_run_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert lock_file_for("weights/a.pth") == lock_file_for(tmp_path / "weights" / ".." / "weights" / "a.pth")
    assert lock_file_for("weights/a.pth") != lock_file_for("weights/b.pth")
    with exclusive_run("weights/a.pth"):
        assert not (tmp_path / "weights").exists()


def test_a_path_whose_name_is_not_utf8_has_a_lock(tmp_path):
    """A folder named in another encoding's bytes (caf\\xe9, Latin-1), which Python reads as 'caf\\udce9': the lock's
    key encoded it as UTF-8, so --save_folder there stopped with "'utf-8' codec can't encode character '\\udce9'"."""
    folder = tmp_path / os.fsdecode(b"caf\xe9")
    assert lock_file_for(folder / "a.pth") != lock_file_for(tmp_path / "cafe" / "a.pth")
    with exclusive_run(folder / "a.pth"):
        with pytest.raises(ValueError, match="is the checkpoint of a run still going on"):
            with exclusive_run(folder / "a.pth"):
                pass


def test_a_run_evaluating_into_its_own_log_folder_does_not_wait_for_itself(tmp_path):
    """--run_dir out --eval_dir out (logs and results kept together): the run holds the log folder's lock, and its
    final evaluation waited forever for that lock, its own, after saving the checkpoint. Another process still waits."""
    finished = threading.Event()

    def evaluate() -> None:
        with one_writer(tmp_path / "out"):
            finished.set()

    with exclusive_run(tmp_path / "out", "the log folder"):
        thread = threading.Thread(target=evaluate, daemon=True)
        thread.start()
        assert finished.wait(timeout=10), "the run's evaluation waits for the run's own lock"
    with one_writer(tmp_path / "out"):  # released with the run
        pass


def test_a_run_that_dies_releases_its_lock(tmp_path):
    checkpoint = tmp_path / "w.pth"
    script = (f"import sys, os; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
              "from utils.run_lock import exclusive_run\n"
              f"with exclusive_run({str(checkpoint)!r}):\n"
              "    print('locked', flush=True)\n"
              "    os._exit(9)  # no clean-up: the lock goes with the process\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 9 and result.stdout == "locked\n"
    with exclusive_run(checkpoint):
        pass


def test_an_evaluation_waits_for_another_writing_the_same_folder(tmp_path, capsys):
    folder, finished = tmp_path / "eval" / "VOC", tmp_path / "first-finished"
    script = (f"import sys, time; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
              "from pathlib import Path\n"
              "from utils.run_lock import one_writer\n"
              f"with one_writer({str(folder)!r}):\n"
              "    print('writing', flush=True)\n"
              "    time.sleep(1.0)\n"
              f"    Path({str(finished)!r}).write_text('')\n")
    first = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline() == "writing\n"
        with one_writer(folder):
            assert finished.exists()  # the first evaluation's files were all written before this one started
        assert f"waiting for another evaluation (process {first.pid}) to finish writing to {folder}" in (
            capsys.readouterr().err)
    finally:
        first.wait(timeout=60)
    with one_writer(folder):  # free again: no wait, no message
        pass
    assert capsys.readouterr().err == ""


def test_a_lock_folder_others_can_write_is_not_trusted(tmp_path, monkeypatch):
    """Another user could plant a link named after a checkpoint in a shared folder: such a folder locks nothing."""
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    checkpoint = tmp_path / "w.pth"
    folder = lock_file_for(checkpoint).parent
    folder.mkdir(mode=0o700)
    with exclusive_run(checkpoint):
        with pytest.raises(ValueError, match="still going on"):
            with exclusive_run(checkpoint):
                pass
    folder.chmod(0o777)
    with exclusive_run(checkpoint):
        with exclusive_run(checkpoint):  # unguarded rather than trusting the folder
            pass
    folder.chmod(0o700)
    lock = lock_file_for(checkpoint)
    lock.unlink()
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    lock.symlink_to(target)
    with exclusive_run(checkpoint):  # a link in place of the lock file is not followed (nor written through)
        pass
    assert target.read_text() == "keep me"
