"""--export onnx without the optional 'onnx' package: PyTorch's TorchScript exporter imports it to write the file, so
the export stops with one line naming what to install (exit code 2), not a traceback. Runs whether or not onnx is
installed (its absence is simulated)."""
import re
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from main import get_args_parser, main
from tests.tiny_checkpoint import write_tiny_checkpoint
from utils.export import export_onnx, onnxruntime_unusable


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "SHAPES_tiny.pth")


@pytest.fixture
def without_onnx(monkeypatch):
    for module in ("onnx", "onnxruntime"):
        monkeypatch.setitem(sys.modules, module, None)  # `import onnx` raises ImportError


def test_export_without_onnx_names_the_package(checkpoint, tmp_path, without_onnx):
    with pytest.raises(ValueError, match=r"needs the 'onnx' package.*requirements-export\.txt"):
        export_onnx(checkpoint, tmp_path / "model.onnx")


def test_main_export_without_onnx_exits_2(checkpoint, tmp_path, without_onnx, capsys):
    args = get_args_parser().parse_args(["--trained_model", str(checkpoint), "--export", "onnx", "--device", "cpu",
                                         "--export_path", str(tmp_path / "model.onnx")])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "requirements-export.txt" in err and "Traceback" not in err


@pytest.fixture
def onnxruntime_version(monkeypatch):
    """Set the onnxruntime version that pip's metadata reports; its import is blocked (so the test shows whether the
    check tried it) and NumPy reads as 2.4.6."""
    def set_version(version):
        real = metadata.version
        monkeypatch.setattr(metadata, "version", lambda name: version if name == "onnxruntime" else real(name))
        monkeypatch.setitem(sys.modules, "onnxruntime", None)
        monkeypatch.setattr(np, "__version__", "2.4.6")
    return set_version


def test_an_onnxruntime_built_for_numpy_1_is_named_without_importing_it(onnxruntime_version):
    """onnxruntime 1.17-1.18 (requirements-export.txt admitted 1.17) cannot be imported beside NumPy 2: the import
    printed NumPy's "compiled using NumPy 1.x" warning with a traceback, and the export then advised `pip install
    onnxruntime`, which was installed."""
    onnxruntime_version("1.17.0")
    assert onnxruntime_unusable() == (
        "onnxruntime 1.17.0 cannot run with NumPy 2.4.6 (onnxruntime 1.19 or newer can): install it with "
        "`pip install -r requirements-export.txt`")


def test_an_onnxruntime_that_fails_to_import_is_not_called_missing(onnxruntime_version):
    onnxruntime_version("1.32.0")
    assert onnxruntime_unusable() == (
        "onnxruntime 1.32.0 is installed but fails to import (import of onnxruntime halted; None in sys.modules): "
        "reinstall it with `pip install --force-reinstall -r requirements-export.txt`")


def test_a_missing_onnxruntime_is_named_with_the_install_command(onnxruntime_version, monkeypatch):
    monkeypatch.setattr(metadata, "version", lambda name: (_ for _ in ()).throw(metadata.PackageNotFoundError(name)))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert onnxruntime_unusable() == "pip install onnxruntime to check the file's outputs"


def test_the_export_requirements_admit_no_onnxruntime_that_fails_beside_the_numpy_they_admit():
    text = (Path(__file__).resolve().parent.parent / "requirements-export.txt").read_text(encoding="utf-8")
    assert re.search(r"^onnxruntime>=1\.(19|[2-9]\d)\b", text, re.MULTILINE)
