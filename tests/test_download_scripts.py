"""The download scripts, offline: syntax, shellcheck, and download/verify/extract against local file:// archives."""
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "data" / "scripts"
SCRIPT_NAMES = ("VOC2007.sh", "VOC2012.sh", "COCO2017.sh")

pytestmark = pytest.mark.skipif(shutil.which("curl") is None,
                                reason="the scripts download with curl; curl is not installed")


def make_tar(path: Path, files: dict[str, bytes]) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path.read_bytes()


def make_zip(path: Path, files: dict[str, bytes]) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return path.read_bytes()


def write_overrides(path: Path, archives: dict[str, bytes]) -> Path:
    path.write_text("".join(f"{hashlib.md5(data).hexdigest()}  {name}\n" for name, data in archives.items()))
    return path


def run_script(name: str, datasets: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPTS / name), str(datasets), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def voc2007_server(tmp_path):
    """A fake VOC server holding the two VOC2007 tars, and an MD5 override file matching them."""
    server = tmp_path / "server"
    trainval = make_tar(
        server / "voc2007/VOCtrainval_06-Nov-2007.tar",
        {
            "VOCdevkit/VOC2007/Annotations/000005.xml": b"<annotation/>",
            "VOCdevkit/VOC2007/JPEGImages/000005.jpg": b"jpeg",
            "VOCdevkit/VOC2007/ImageSets/Main/trainval.txt": b"000005\n",
        },
    )
    test = make_tar(
        server / "voc2007/VOCtest_06-Nov-2007.tar",
        {
            "VOCdevkit/VOC2007/Annotations/000001.xml": b"<annotation/>",
            "VOCdevkit/VOC2007/JPEGImages/000001.jpg": b"jpeg",
            "VOCdevkit/VOC2007/ImageSets/Main/test.txt": b"000001\n",
        },
    )
    overrides = write_overrides(
        tmp_path / "md5.txt", {"VOCtrainval_06-Nov-2007.tar": trainval, "VOCtest_06-Nov-2007.tar": test}
    )
    return {"VOC_BASE_URL": server.as_uri(), "MG_MD5_OVERRIDES": str(overrides)}


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_script_syntax(name):
    result = subprocess.run(["bash", "-n", str(SCRIPTS / name)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (apt-get install shellcheck)")
def test_shellcheck_is_clean():
    paths = [str(SCRIPTS / name) for name in (*SCRIPT_NAMES, "download_common.sh")]
    paths.append(str(SCRIPTS.parents[1] / "benchmarks" / "gpu_check.sh"))  # the project's other shell script
    result = subprocess.run(["shellcheck", "-x", *paths], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_usage_errors_exit_2(tmp_path):
    result = run_script("VOC2007.sh", tmp_path, {}, "extra-argument")
    assert result.returncode == 2
    assert "usage: bash data/scripts/VOC2007.sh [DATASETS_DIR]" in result.stderr


def test_voc2007_downloads_verifies_extracts_and_reruns(tmp_path, voc2007_server):
    datasets = tmp_path / "datasets"
    result = run_script("VOC2007.sh", datasets, voc2007_server)
    assert result.returncode == 0, result.stderr
    voc = datasets / "VOCdevkit/VOC2007"
    assert (voc / "ImageSets/Main/trainval.txt").read_text() == "000005\n"
    assert (voc / "ImageSets/Main/test.txt").read_text() == "000001\n"
    assert (voc / "JPEGImages/000001.jpg").read_bytes() == b"jpeg"
    assert list((datasets / "downloads").iterdir()) == []  # verified archives are deleted after extraction

    again = run_script("VOC2007.sh", datasets, voc2007_server)
    assert again.returncode == 0, again.stderr
    assert "VOCtrainval_06-Nov-2007.tar: already extracted" in again.stdout
    assert "VOCtest_06-Nov-2007.tar: already extracted" in again.stdout
    assert "downloading" not in again.stdout


def test_a_rerun_extracts_again_an_archive_whose_stamped_files_went_missing(tmp_path, voc2007_server):
    """A lost ImageSets/Main/test.txt under the stamp of an earlier extraction: the re-run (as the dataset's error
    says to do) downloads and extracts the test tar again instead of stopping on 'missing after extraction'."""
    datasets = tmp_path / "datasets"
    assert run_script("VOC2007.sh", datasets, voc2007_server).returncode == 0
    (datasets / "VOCdevkit/VOC2007/ImageSets/Main/test.txt").unlink()
    again = run_script("VOC2007.sh", datasets, voc2007_server)
    assert again.returncode == 0, again.stderr
    assert "VOCtrainval_06-Nov-2007.tar: already extracted" in again.stdout
    assert (f"VOCtest_06-Nov-2007.tar: extracted before, but {datasets}/VOCdevkit/VOC2007/ImageSets/Main/test.txt is "
            "missing: extracting it again") in again.stdout
    assert (datasets / "VOCdevkit/VOC2007/ImageSets/Main/test.txt").read_text() == "000001\n"


def test_partial_download_is_resumed(tmp_path, voc2007_server):
    datasets = tmp_path / "datasets"
    full = (tmp_path / "server/voc2007/VOCtrainval_06-Nov-2007.tar").read_bytes()
    (datasets / "downloads").mkdir(parents=True)
    (datasets / "downloads/VOCtrainval_06-Nov-2007.tar.part").write_bytes(full[:4096])
    result = run_script("VOC2007.sh", datasets, {**voc2007_server, "KEEP_ARCHIVES": "1"})
    assert result.returncode == 0, result.stderr
    assert "Resuming transfer from byte position 4096" in result.stderr
    assert (datasets / "downloads/VOCtrainval_06-Nov-2007.tar").read_bytes() == full


def test_checksum_mismatch_stops_before_extraction(tmp_path, voc2007_server):
    datasets = tmp_path / "datasets"
    (tmp_path / "md5.txt").write_text("0" * 32 + "  VOCtrainval_06-Nov-2007.tar\n")
    result = run_script("VOC2007.sh", datasets, voc2007_server)
    assert result.returncode != 0
    assert f"checksum mismatch for VOCtrainval_06-Nov-2007.tar: expected MD5 {'0' * 32}" in result.stderr
    assert not (datasets / "VOCdevkit").exists()
    assert (datasets / "downloads/VOCtrainval_06-Nov-2007.tar.corrupt").is_file()


def stub_command(folder: Path, name: str, message: str, status: int) -> dict[str, str]:
    """An environment whose PATH finds ``folder/name`` first: a stub printing ``message`` and exiting ``status``."""
    folder.mkdir(parents=True, exist_ok=True)
    stub = folder / name
    stub.write_text(f"#!/bin/sh\necho '{message}' >&2\nexit {status}\n")
    stub.chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


def test_a_full_disk_during_the_download_says_so(tmp_path, voc2007_server):
    """curl's exit 23 is a write error (a full disk), not the network or the URL."""
    datasets = tmp_path / "data sets"
    stub = stub_command(tmp_path / "stub", "curl", "curl: (23) Failure writing output to destination", 23)
    result = run_script("VOC2007.sh", datasets, {**voc2007_server, **stub})
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: could not write {datasets}/downloads/VOCtrainval_06-Nov-2007.tar.part (curl exit 23): is the disk "
        f"full? free space in {datasets}/downloads (df -h shows it), then re-run to resume")


def test_a_full_disk_during_the_extraction_keeps_the_verified_archive(tmp_path, voc2007_server):
    """tar failing on a verified archive (a full disk) must not advise deleting it: a re-run reuses it."""
    datasets = tmp_path / "data sets"
    stub = stub_command(tmp_path / "stub", "tar", "tar: VOCdevkit/VOC2007: Cannot write: No space left on device", 2)
    result = run_script("VOC2007.sh", datasets, {**voc2007_server, **stub})
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: extracting {datasets}/downloads/VOCtrainval_06-Nov-2007.tar into {datasets} failed (the message "
        "above says why): free space there if the disk is full, then re-run; the verified archive is kept and "
        "reused")
    assert (datasets / "downloads/VOCtrainval_06-Nov-2007.tar").is_file()
    again = run_script("VOC2007.sh", datasets, voc2007_server)
    assert again.returncode == 0, again.stderr
    assert "VOCtrainval_06-Nov-2007.tar: already downloaded and verified" in again.stdout


def test_no_md5_tool_stops_before_the_download(tmp_path, voc2007_server):
    """Without md5sum or md5 the archive cannot be verified: say so before downloading it, not after."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        for path in Path(folder).glob("*") if Path(folder).is_dir() else ():
            if path.name not in ("md5sum", "md5") and not (tools / path.name).exists():
                (tools / path.name).symlink_to(path)
    datasets = tmp_path / "datasets"
    result = run_script("VOC2007.sh", datasets, {**voc2007_server, "PATH": str(tools)})
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "error: neither md5sum nor md5 is installed; install coreutils"
    assert "downloading" not in result.stdout and not list((datasets / "downloads").glob("*"))


def test_missing_archive_fails_with_the_url(tmp_path):
    result = run_script("VOC2012.sh", tmp_path / "datasets", {"VOC_BASE_URL": (tmp_path / "empty").as_uri()})
    assert result.returncode != 0
    assert (f"error: download of {(tmp_path / 'empty').as_uri()}/voc2012/VOCtrainval_11-May-2012.tar failed"
            in result.stderr)


def test_voc2012(tmp_path):
    tar = make_tar(
        tmp_path / "server/voc2012/VOCtrainval_11-May-2012.tar",
        {"VOCdevkit/VOC2012/ImageSets/Main/trainval.txt": b"2008_000002\n"},
    )
    env = {
        "VOC_BASE_URL": (tmp_path / "server").as_uri(),
        "MG_MD5_OVERRIDES": str(write_overrides(tmp_path / "md5.txt", {"VOCtrainval_11-May-2012.tar": tar})),
    }
    result = run_script("VOC2012.sh", tmp_path / "datasets", env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "datasets/VOCdevkit/VOC2012/ImageSets/Main/trainval.txt").read_text() == "2008_000002\n"


@pytest.mark.skipif(shutil.which("unzip") is None, reason="COCO2017.sh needs unzip")
def test_coco2017(tmp_path):
    server = tmp_path / "server"
    archives = {
        "annotations_trainval2017.zip": make_zip(
            server / "annotations/annotations_trainval2017.zip",
            {"annotations/instances_train2017.json": b"{}", "annotations/instances_val2017.json": b"{}"},
        ),
        "val2017.zip": make_zip(server / "zips/val2017.zip", {"val2017/000000000139.jpg": b"jpeg"}),
        "train2017.zip": make_zip(server / "zips/train2017.zip", {"train2017/000000000009.jpg": b"jpeg"}),
    }
    env = {"COCO_BASE_URL": server.as_uri(), "MG_MD5_OVERRIDES": str(write_overrides(tmp_path / "md5.txt", archives))}
    result = run_script("COCO2017.sh", tmp_path / "datasets", env)
    assert result.returncode == 0, result.stderr
    coco = tmp_path / "datasets/coco2017"
    assert (coco / "annotations/instances_val2017.json").read_bytes() == b"{}"
    assert (coco / "val2017/000000000139.jpg").is_file()
    assert (coco / "train2017/000000000009.jpg").is_file()
    assert "COCO 2017 ready" in result.stdout
    (coco / "annotations/instances_train2017.json").unlink()  # lost under the stamp: the re-run extracts it again
    again = run_script("COCO2017.sh", tmp_path / "datasets", env)
    assert again.returncode == 0, again.stderr
    assert (coco / "annotations/instances_train2017.json").read_bytes() == b"{}"
    assert "val2017.zip: already extracted" in again.stdout
