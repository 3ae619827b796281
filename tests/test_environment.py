"""main.py in an environment that cannot run it (utils/environment.py): one line naming what is wrong and the pip
command, exit code 2, before torch is imported; and requirements.txt's lower bounds admit no release the code
cannot run on."""
import ast
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from utils import environment
from utils.environment import MIN_VERSIONS, REQUIRED_MODULES, environment_problem, release, too_old

REPO = Path(__file__).resolve().parent.parent


def requirement_floors(path: Path) -> dict[str, tuple[int, int]]:
    """``{name: (major, minor)}`` of each ``name>=X.Y`` lower bound in a requirements file."""
    floors = re.findall(r"^([\w-]+)>=(\d+\.\d+)", path.read_text(encoding="utf-8"), re.MULTILINE)
    return {name: release(version) for name, version in floors}


def run_main_with(tmp_path: Path, setup: str) -> subprocess.CompletedProcess:
    """``python main.py --help`` run as a script (its folder first on ``sys.path``) from ``tmp_path`` after ``setup``
    (Python code) ran."""
    code = (f"import runpy, sys\nsys.path.insert(0, {str(REPO)!r})\n{setup}\nsys.argv = ['main.py', '--help']\n"
            f"runpy.run_path({str(REPO / 'main.py')!r}, run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)


def test_the_requirements_floors_are_the_releases_with_the_apis_the_code_calls():
    """torch.amp.is_autocast_available and torch.is_autocast_enabled(device) (models/detector.py, every forward pass)
    came with torch 2.4, torch.onnx.export(dynamo=...) (utils/export.py) with 2.5; torchvision 0.20 is 2.5's.
    requirements.txt admitted torch 2.2 and torchvision 0.17."""
    floors = requirement_floors(REPO / "requirements.txt")
    assert {name: floors[name] for name in MIN_VERSIONS} == MIN_VERSIONS == {"torch": (2, 5), "torchvision": (0, 20)}


@pytest.mark.parametrize("version, refused", [
    ("2.3.1+cu121", True), ("2.4.0", True), ("2.5.0", False), ("2.14.1+cu130", False), ("3.0.0", False),
    ("2.15.0.dev20261201", False), ("unknown", False),
])
def test_a_torch_older_than_the_floor_is_refused(version, refused):
    problem = too_old("torch", version)
    assert (problem is not None) == refused
    if refused:
        assert problem == f"torch {version} is older than the 2.5 this project needs"


def test_this_environment_runs_main():
    assert environment_problem() is None


def test_main_refuses_an_old_torch_with_the_pip_command_before_importing_it(tmp_path):
    """A torch 2.3 already installed (pip keeps it when told only ``torch``): main.py stopped at the first forward
    pass, after the data was read, with ``AttributeError: module 'torch.amp' has no attribute
    'is_autocast_available'``."""
    setup = ("import importlib.metadata as m\nreal = m.version\n"
             "m.version = lambda name: {'torch': '2.3.1', 'torchvision': '0.18.1'}.get(name) or real(name)")
    done = run_main_with(tmp_path, setup)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        "main.py cannot run in this environment: torch 2.3.1 is older than the 2.5 this project needs; torchvision "
        f"0.18.1 is older than the 0.20 this project needs; install the requirements: {sys.executable} -m pip "
        f"install -r {REPO / 'requirements.txt'}\n")


def test_main_refuses_a_python_older_than_3_10_before_importing_anything_it_cannot_parse(tmp_path):
    """The project's annotations (``int | tuple[int, int]`` in models/blocks.py, evaluated without ``from __future__
    import annotations``) need Python 3.10; torch 2.5-2.8 install on Python 3.9, where ``import models`` raised
    ``TypeError: unsupported operand type(s) for |``."""
    done = run_main_with(tmp_path, "sys.version_info = (3, 9, 18, 'final', 0)\nsys.modules['torch'] = None")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        f"main.py cannot run in this environment: Python 3.9.18 ({sys.executable}) is older than the 3.10 this "
        "project needs; make the virtual environment with Python 3.10 or newer: python3.10 -m venv .venv && "
        ".venv/bin/pip install -r requirements.txt\n")


def test_the_test_suite_refuses_an_environment_main_refuses_in_one_line():
    """tests/conftest.py runs the same check before the test modules are collected (an old Python is simulated
    through an old torch here: pytest itself reads ``sys.version_info``)."""
    code = ("import sys, pytest, importlib.metadata as m\nreal = m.version\n"
            "m.version = lambda name: '2.3.1' if name == 'torch' else real(name)\n"
            f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', {str(REPO / 'tests' / 'test_files.py')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in output
    assert "the tests cannot run in this environment: torch 2.3.1 is older than the 2.5 this project needs" in output


@pytest.mark.parametrize("path", ["main.py", "utils/environment.py"])
def test_what_runs_before_the_python_check_parses_on_python_3_8(path):
    ast.parse((REPO / path).read_text(encoding="utf-8"), path, feature_version=(3, 8))


def test_main_names_the_pip_packages_of_missing_modules_before_importing_them(tmp_path):
    """Without OpenCV or pycocotools (skipped on a machine where its build failed), even ``main.py --help`` stopped
    with ``ModuleNotFoundError: No module named 'cv2'``, a module whose pip package has another name."""
    done = run_main_with(tmp_path, "sys.modules['cv2'] = sys.modules['pycocotools'] = None")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        "main.py cannot run in this environment: opencv-python-headless (module cv2), pycocotools not installed; "
        f"install the requirements: {sys.executable} -m pip install -r {REPO / 'requirements.txt'}\n")


def test_every_required_module_is_one_requirements_txt_installs():
    requirements = re.findall(r"^([\w-]+)[<>=]", (REPO / "requirements.txt").read_text(encoding="utf-8"), re.MULTILINE)
    assert sorted(distribution for _, distribution in REQUIRED_MODULES) == sorted(requirements)


def fake_versions(versions: dict[str, str]) -> str:
    """Setup code for :func:`run_main_with`: pip's metadata reports ``versions`` for those packages."""
    return (f"import importlib.metadata as m\nreal = m.version\nfake = {versions!r}\n"
            "m.version = lambda name: fake.get(name) or real(name)")


def test_main_names_packages_built_for_numpy_1_beside_numpy_2(tmp_path):
    """pycocotools 2.0.7 and OpenCV 4.8 (requirements.txt's lower bounds) are built for NumPy 1: beside NumPy 2,
    ``main.py --help`` stopped with ``ValueError: numpy.dtype size changed, may indicate binary incompatibility``
    (pycocotools) or ``ImportError: numpy.core.multiarray failed to import`` (cv2)."""
    setup = fake_versions({"numpy": "2.4.6", "pycocotools": "2.0.7", "opencv-python-headless": "4.8.1.78",
                           "opencv-python": "4.9.0.80"})
    done = run_main_with(tmp_path, setup)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        "main.py cannot run in this environment: opencv-python-headless 4.8.1.78, opencv-python 4.9.0.80, "
        "pycocotools 2.0.7 are built for NumPy 1 and cannot be imported beside NumPy 2.4.6 (opencv 4.10.0.84 and "
        f"pycocotools 2.0.8 are the first built for NumPy 2); install the requirements: {sys.executable} -m pip "
        f"install -r {REPO / 'requirements.txt'}, and upgrade opencv-python: {sys.executable} -m pip install -U "
        "opencv-python\n")


def test_packages_built_for_numpy_1_run_beside_numpy_1(monkeypatch):
    versions = {"numpy": "1.24.4", "pycocotools": "2.0.7", "opencv-python-headless": "4.8.1.78"}
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: versions.get(name) or real(name))
    assert environment_problem() is None


def test_the_requirements_floors_are_built_for_the_numpy_they_admit():
    floors = dict(re.findall(r"^([\w-]+)>=([\d.]+)", (REPO / "requirements.txt").read_text(encoding="utf-8"),
                             re.MULTILINE))
    assert release(floors["numpy"]) < (2,) and release(floors["opencv-python-headless"]) >= (4, 10, 0, 84)
    assert release(floors["pycocotools"]) >= (2, 0, 8)


def test_a_conda_build_of_an_old_release_is_taken_beside_numpy_2(monkeypatch):
    """conda-forge rebuilds a package's releases for the NumPy of the environment: its pycocotools 2.0.7 can be built
    for NumPy 2, so only what pip (or another wheel installer) installed is judged by its version."""
    versions = {"numpy": "2.4.6", "pycocotools": "2.0.7"}
    real_version, real_installer = metadata.version, environment.installer
    monkeypatch.setattr(metadata, "version", lambda name: versions.get(name) or real_version(name))
    monkeypatch.setattr(environment, "installer",
                        lambda name: "conda" if name == "pycocotools" else real_installer(name))
    assert environment.built_for_numpy_1() == []
    monkeypatch.setattr(environment, "installer", lambda name: "pip")
    assert environment.built_for_numpy_1() == [("pycocotools", "2.0.7")]


def test_one_numpy_1_build_is_named_in_the_singular(monkeypatch):
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "2.4.6" if name == "numpy" else real(name))
    assert environment.numpy_1_builds([("pycocotools", "2.0.7")]) == (
        "pycocotools 2.0.7 is built for NumPy 1 and cannot be imported beside NumPy 2.4.6 (pycocotools 2.0.8 is the "
        "first built for NumPy 2)")
