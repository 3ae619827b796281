"""--export onnx without the optional 'onnx' package: PyTorch's TorchScript exporter imports it to write the file, so
the export stops with one line naming what to install (exit code 2), not a traceback. Runs whether or not onnx is
installed (its absence is simulated)."""
import sys

import pytest

from main import get_args_parser, main
from tests.tiny_checkpoint import write_tiny_checkpoint
from utils.export import export_onnx


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
