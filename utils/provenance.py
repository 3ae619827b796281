"""What a training run's ``log.txt`` records to reproduce it: the command, the full resolved config, the versions of
the software and the git commit of the code that ran."""
from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision

from utils.messages import first_line

REPOSITORY = Path(__file__).resolve().parents[1]  # the folder of main.py
GIT_TIMEOUT_S = 10.0


def provenance_lines(config: dict, device: torch.device, argv: list[str] | None = None,
                     repository: Path = REPOSITORY) -> list[str]:
    """The lines that open a training attempt's record in ``log.txt``: ``command:`` (``argv``, default ``sys.argv``,
    and the folder it ran in), ``config:`` (``config``, every resolved flag and the run's data, as JSON),
    ``software:`` (:func:`software_versions` on ``device``) and ``code:`` (:func:`code_revision` of ``repository``)."""
    command = shlex.join(sys.argv if argv is None else argv)
    return [f"command: {command} (in {Path.cwd()})",
            f"config: {json.dumps(config, sort_keys=True, default=str)}",
            f"software: {software_versions(device)}",
            f"code: {code_revision(repository)}"]


def software_versions(device: torch.device) -> str:
    """Python, PyTorch (with its CUDA and cuDNN, and the GPU for a CUDA ``device``), torchvision, NumPy and OpenCV
    versions, and the platform."""
    cuda = f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}" if torch.version.cuda else ""
    gpu = f" on {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (f"python {platform.python_version()}, torch {torch.__version__}{cuda}{gpu}, torchvision "
            f"{torchvision.__version__}, numpy {np.__version__}, opencv {cv2.__version__}, {platform.platform()}")


def code_revision(repository: Path) -> str:
    """The git commit checked out in ``repository`` and whether tracked files differ from it, or why there is none
    (not a git checkout, no git program)."""
    try:
        commit = _git(repository, "rev-parse", "HEAD")
        changed = _git(repository, "status", "--porcelain", "--untracked-files=no")  # untracked: data, weights, runs
    except FileNotFoundError:
        return f"git commit unknown (no git program to read {repository})"
    except subprocess.CalledProcessError as error:  # not a checkout, or one git refuses (another owner's, say)
        return f"git commit unknown ({repository}: {first_line(RuntimeError(error.stderr or error))})"
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"git commit unknown ({repository}: {first_line(error)})"
    return f"git commit {commit} of {repository}" + (", with uncommitted changes to tracked files" if changed else "")


def _git(repository: Path, *command: str) -> str:
    """``git command`` run in ``repository``: its standard output, stripped. Raises ``CalledProcessError`` when git
    fails (not a checkout), ``TimeoutExpired``, or ``FileNotFoundError`` when there is no git program."""
    # GIT_OPTIONAL_LOCKS=0: git status leaves the checkout's index as it is (no refresh written while training)
    done = subprocess.run(["git", "-C", str(repository), *command], capture_output=True, text=True, check=True,
                          timeout=GIT_TIMEOUT_S, stdin=subprocess.DEVNULL, env=os.environ | {"GIT_OPTIONAL_LOCKS": "0"})
    return done.stdout.strip()
