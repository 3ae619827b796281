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
# the oldest torch whose torch.compile gives MultiBoxLoss(compile=True) (--compile_loss) the eager losses on the CPU:
# 2.5.1 and 2.6.0 fail to build its focal-loss kernel (C++ error), 2.8.0 and 2.9.1 build a wrong IoU-assignment loss
COMPILED_CRITERION_MIN_TORCH = (2, 14)
# the releases found to miscompile it (2.7 and 2.10-2.13 were not tried)
MISCOMPILING_TORCH = {(2, 5), (2, 6), (2, 8), (2, 9)}
# releases built for NumPy 1, which fail to import beside NumPy 2: the first release of each package built for NumPy 2
# (OpenCV's four packages install the same module cv2; requirements.txt names the headless one)
BUILT_FOR_NUMPY_2 = {"opencv-python-headless": (4, 10, 0, 84), "opencv-python": (4, 10, 0, 84),
                     "opencv-contrib-python": (4, 10, 0, 84), "opencv-contrib-python-headless": (4, 10, 0, 84),
                     "pycocotools": (2, 0, 8)}


def release(version: str) -> tuple[int, ...] | None:
    """The numbers that a version string starts with (``"2.14.1+cu130"`` -> ``(2, 14, 1)``, ``"4.10.0.84"`` ->
    ``(4, 10, 0, 84)``, ``"2.15.0.dev1"`` -> ``(2, 15, 0)``); None when it starts with no number."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    return None if match is None else tuple(int(part) for part in match[0].split("."))


def release_at_least(version: str, minimum: tuple[int, ...]) -> bool:
    """Whether ``version`` is ``minimum`` or later by :func:`release`; True for a version starting with no number (a
    build named otherwise, taken to be new)."""
    found = release(version)
    return found is None or found >= minimum


def installed_version(distribution: str) -> str | None:
    """The version pip's metadata gives for ``distribution``; None when it has none (not installed, or built from
    source without metadata)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def install_command() -> str:
    """The pip command that installs requirements.txt into the running interpreter's environment."""
    return f"{sys.executable} -m pip install -r {REQUIREMENTS}"


def too_old(distribution: str, version: str) -> str | None:
    """Why ``version`` of ``distribution`` (a key of :data:`MIN_VERSIONS`) cannot run the project; None if it can."""
    needed = MIN_VERSIONS[distribution]
    if release_at_least(version, needed):
        return None
    return f"{distribution} {version} is older than the {'.'.join(map(str, needed))} this project needs"


def compiled_criterion_problem(torch_version: str) -> str | None:
    """Why ``torch_version`` (``torch.__version__``) cannot compile the criterion (``--compile_loss``), with the fix;
    None if it can (:data:`COMPILED_CRITERION_MIN_TORCH`)."""
    needed = COMPILED_CRITERION_MIN_TORCH
    if release_at_least(torch_version, needed):
        return None
    found = release(torch_version)
    oldest = ".".join(map(str, needed))
    if found[:2] in MISCOMPILING_TORCH:
        why = ("miscompiles the criterion (torch 2.5-2.6: its kernel fails to build on the CPU; 2.8-2.9: wrong "
               "IoU-assignment losses on the CPU)")
    else:
        why = (f"was not checked with the compiled criterion (the oldest checked to give the eager losses is {oldest}; "
               "on the CPU 2.5-2.6 failed to build its kernel, 2.8-2.9 gave wrong IoU-assignment losses)")
    return (f"torch {torch_version} {why}; compiling it needs torch {oldest} or newer: "
            f"{sys.executable} -m pip install -U 'torch>={oldest},<2.15' 'torchvision>=0.29,<0.30', or train "
            "without --compile_loss (MultiBoxLoss(compile=False))")


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


def installer(distribution: str) -> str:
    """What installed ``distribution`` (its metadata's INSTALLER file: ``pip``, ``uv``, ``conda``); "" if unknown."""
    try:
        return (metadata.distribution(distribution).read_text("INSTALLER") or "").strip()
    except metadata.PackageNotFoundError:
        return ""


def built_for_numpy_1() -> list[tuple[str, str]]:
    """``(distribution, version)`` of the installed releases of :data:`BUILT_FOR_NUMPY_2`'s packages that are built
    for NumPy 1, when the installed NumPy is 2 or newer (beside NumPy 1 they run). A conda package is not judged by
    its version: conda-forge rebuilds older releases for the environment's NumPy."""
    numpy = release(installed_version("numpy") or "")
    if numpy is None or numpy < (2,):
        return []
    old = []
    for distribution, first in BUILT_FOR_NUMPY_2.items():
        version = installed_version(distribution)
        found = None if version is None else release(version)
        if found is not None and found < first and installer(distribution) != "conda":
            old.append((distribution, version))
    return old


def numpy_1_builds(old: list[tuple[str, str]]) -> str:
    """The problem :func:`built_for_numpy_1`'s ``old`` packages make, in words."""
    firsts = sorted({("opencv" if name.startswith("opencv") else name, BUILT_FOR_NUMPY_2[name]) for name, _ in old})
    packages = ", ".join(f"{name} {version}" for name, version in old)
    first_builds = " and ".join(f"{name} {'.'.join(map(str, first))}" for name, first in firsts)
    return (f"{packages} {'is' if len(old) == 1 else 'are'} built for NumPy 1 and cannot be imported beside NumPy "
            f"{installed_version('numpy')} ({first_builds} {'is' if len(firsts) == 1 else 'are'} the first built for "
            "NumPy 2)")


def environment_problem() -> str | None:
    """One line saying what the running environment lacks for ``main.py`` and the command that fixes it; None when
    nothing is found. A package installed without pip's metadata (a build from source) is taken as it is."""
    python = python_too_old()
    if python is not None:
        return f"main.py cannot run in this environment: {python}"
    missing = not_installed()
    problems = [f"{', '.join(missing)} not installed"] if missing else []
    for distribution in MIN_VERSIONS:
        version = installed_version(distribution)
        problem = None if version is None else too_old(distribution, version)
        if problem is not None:
            problems.append(problem)
    old = built_for_numpy_1()
    if old:
        problems.append(numpy_1_builds(old))
    if not problems:
        return None
    required = {distribution for _, distribution in REQUIRED_MODULES}
    others = [name for name, _ in old if name not in required]  # installed besides requirements.txt's packages
    upgrade = f", and upgrade {', '.join(others)}: {sys.executable} -m pip install -U {' '.join(others)}"
    return (f"main.py cannot run in this environment: {'; '.join(problems)}; "
            f"install the requirements: {install_command()}{upgrade if others else ''}")
