"""What ``main.py`` needs of the Python environment, checked before it imports torch and the project's modules.

An installed torch older than the code's APIs failed at the first forward pass (``torch.amp.is_autocast_available``:
torch 2.4, after the data was read) or at ``--export onnx`` (``torch.onnx.export(dynamo=False)``: torch 2.5) with an
``AttributeError``/``TypeError`` traceback; a package left out (OpenCV, pycocotools) with a ``ModuleNotFoundError``
naming a module (``cv2``) that is not its pip package; and Python 3.9, on which torch 2.5-2.8 install, with a
``TypeError`` at import (``int | tuple[int, int]`` annotations need Python 3.10). :func:`environment_problem` says it
in one line with the command that fixes it instead. Standard library only, and Python 3.8's syntax: it runs before
anything else is imported.
"""
from __future__ import annotations

import importlib.util
import re
import sys
from importlib import metadata
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements.txt"
MIN_PYTHON = (3, 10)
# (module, the pip package of requirements.txt that installs it): OpenCV's and Pillow's modules are named otherwise
REQUIRED_MODULES = (("torch", "torch"), ("torchvision", "torchvision"), ("numpy", "numpy"),
                    ("cv2", "opencv-python-headless"), ("pycocotools", "pycocotools"), ("tqdm", "tqdm"),
                    ("PIL", "pillow"))
# the oldest release of each package whose APIs the code calls, as requirements.txt's lower bounds give them
MIN_VERSIONS = {"torch": (2, 5), "torchvision": (0, 20)}


def release(version: str) -> tuple[int, int] | None:
    """``(major, minor)`` of a version string (``"2.14.1+cu130"`` -> ``(2, 14)``); None when it does not start so."""
    match = re.match(r"(\d+)\.(\d+)", version)
    return None if match is None else (int(match[1]), int(match[2]))


def install_command() -> str:
    """The pip command that installs requirements.txt into the running interpreter's environment."""
    return f"{sys.executable} -m pip install -r {REQUIREMENTS}"


def too_old(distribution: str, version: str) -> str | None:
    """Why ``version`` of ``distribution`` (a key of :data:`MIN_VERSIONS`) cannot run the project; None if it can."""
    found, needed = release(version), MIN_VERSIONS[distribution]
    if found is None or found >= needed:
        return None
    return f"{distribution} {version} is older than the {'.'.join(map(str, needed))} this project needs"


def python_too_old() -> str | None:
    """Why the running Python cannot run the project, with the fix; None if it can."""
    if tuple(sys.version_info[:2]) >= MIN_PYTHON:
        return None
    needed = ".".join(map(str, MIN_PYTHON))
    return (f"Python {'.'.join(map(str, sys.version_info[:3]))} ({sys.executable}) is older than the {needed} this "
            f"project needs; make the virtual environment with Python {needed} or newer: python{needed} -m venv .venv "
            "&& .venv/bin/pip install -r requirements.txt")


def not_installed() -> list[str]:
    """The pip packages of :data:`REQUIRED_MODULES` whose module cannot be found (found, not imported: no cost)."""
    missing = []
    for module, distribution in REQUIRED_MODULES:
        if module in sys.modules:
            found = sys.modules[module] is not None  # None: an import of it was blocked
        else:
            found = importlib.util.find_spec(module) is not None
        if not found:
            missing.append(distribution if module == distribution else f"{distribution} (module {module})")
    return missing


def environment_problem() -> str | None:
    """One line saying what the running environment lacks for ``main.py`` and the command that fixes it; None when
    nothing is found. A package installed without pip's metadata (a build from source) is taken as it is."""
    python = python_too_old()
    if python is not None:
        return f"main.py cannot run in this environment: {python}"
    missing = not_installed()
    problems = [f"{', '.join(missing)} not installed"] if missing else []
    for distribution in MIN_VERSIONS:
        try:
            version = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
        problem = too_old(distribution, version)
        if problem is not None:
            problems.append(problem)
    if not problems:
        return None
    return (f"main.py cannot run in this environment: {'; '.join(problems)}; "
            f"install the requirements: {install_command()}")
