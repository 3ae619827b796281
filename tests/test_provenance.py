"""The record of what ran that opens each training attempt in log.txt: command, config, software, git commit."""
import json
import os
import platform
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torchvision

from utils.provenance import code_revision, provenance_lines

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="no git program")


def git(folder, *command: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *command], capture_output=True, text=True, check=True).stdout


@needs_git
def test_the_code_line_names_the_commit_and_whether_tracked_files_changed(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "main.py").write_text("print(1)\n")
    git(tmp_path, "add", "main.py")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    commit = git(tmp_path, "rev-parse", "HEAD").strip()
    assert code_revision(tmp_path) == f"git commit {commit} of {tmp_path}"
    (tmp_path / "weights.pth").write_bytes(b"untracked: data, weights and runs are no change to the code")
    assert code_revision(tmp_path) == f"git commit {commit} of {tmp_path}"
    (tmp_path / "main.py").write_text("print(2)\n")
    assert code_revision(tmp_path) == f"git commit {commit} of {tmp_path}, with uncommitted changes to tracked files"


@needs_git
def test_reading_the_commit_leaves_the_checkouts_index_as_it_is(tmp_path):
    """A tracked file touched (same content, new time): git status would rewrite .git/index to refresh it, under a
    user's git command running in that checkout at the same time; the run's reading leaves it alone."""
    git(tmp_path, "init", "-q")
    (tmp_path / "main.py").write_text("print(1)\n")
    git(tmp_path, "add", "main.py")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    os.utime(tmp_path / "main.py", (1e9, 1e9))
    index = tmp_path / ".git" / "index"
    before = index.read_bytes()
    assert code_revision(tmp_path).endswith(f"of {tmp_path}")
    assert index.read_bytes() == before


@needs_git
def test_a_folder_outside_git_says_why_there_is_no_commit(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # a checkout above tmp_path is not looked for
    assert code_revision(tmp_path) == f"git commit unknown ({tmp_path}: fatal: not a git repository (or any of the " \
                                      "parent directories): .git)"


def test_without_a_git_program_the_code_line_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert code_revision(tmp_path) == f"git commit unknown (no git program to read {tmp_path})"


def test_the_lines_give_the_command_as_a_shell_reads_it_the_config_as_json_and_the_versions(tmp_path, monkeypatch):
    """Every part of the software line (a CUDA build adds its CUDA and cuDNN) and the code line of ``repository``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # a checkout above tmp_path is not looked for
    command, config, software, code = provenance_lines(
        {"seed": 3, "lr": 0.01, "data_root": "/data/my set"}, torch.device("cpu"),
        ["main.py", "--data_root", "/data/my set", "--seed", "3"], repository=tmp_path)
    assert command == f"command: main.py --data_root '/data/my set' --seed 3 (in {tmp_path})"
    assert json.loads(config.removeprefix("config: ")) == {"seed": 3, "lr": 0.01, "data_root": "/data/my set"}
    python = ".".join(map(str, sys.version_info[:3]))
    assert re.fullmatch(rf"software: python {re.escape(python)}, torch {re.escape(torch.__version__)}"
                        rf"(, CUDA [\d.]+, cuDNN \d+)?, torchvision {re.escape(torchvision.__version__)}, numpy "
                        rf"{re.escape(np.__version__)}, opencv {re.escape(cv2.__version__)}, "
                        rf"{re.escape(platform.platform())}", software)
    assert code.startswith("code: git commit unknown (") and f"{tmp_path}" in code  # not a checkout, or no git
