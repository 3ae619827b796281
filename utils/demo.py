"""Run a trained detector on your own images: ``main.py --trained_model W --demo PATH [PATH ...]``.

Each PATH is an image, a folder (its images, not sub-folders) or a glob (``'photos/**/*.jpg'``, quoted so the
program expands it; an unquoted glob expanded by the shell works too). Images are read upright, as image viewers show
them (an EXIF orientation tag is applied, :func:`upright`), resized to the checkpoint's input size (or
:func:`run_demo`'s ``size``), run through the network in batches and post-processed (``PostProcessor``: decode, score
threshold, per-class NMS). The output folder receives

- ``<image stem>.jpg``: the image with boxes, class names and scores drawn, one colour per class;
- ``detections.json``: per image the file, its width and height and its detections
  ``{"box": [x1, y1, x2, y2] 0-based continuous pixels of the upright original image, "score", "label",
  "class_name"}``.

Files that cannot be decoded are reported by name, skipped and listed under ``"unreadable"`` in the JSON. An image
whose drawn copy cannot be written (e.g. wider than JPEG's 65,500 px) keeps its detections, with ``"output": null``.
The output folder must not hold input images, nor other files named as a drawn copy that no demo run wrote (each
drawn copy carries a JPEG comment saying so): the drawn copies would replace them. Drawn copies there that the inputs
take in (a glob through the folder) are left out of the inputs, with a line saying so. Like ``eval/<DATASET>/``, it
holds the latest run's results alone: the drawn copies of earlier runs that a run does not rewrite are deleted (files
that carry that comment only). A run writing the folder while another does waits for it (``utils.run_lock.one_writer``),
so the two runs' files never mix.
"""
from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import stat
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from data.dataset import IMAGE_EXTENSIONS, exif_orientation, read_image
from data.errors import DataError
from data.loader import WorkerLoader
from data.transforms import normalize_image, resize
from models.fold import fold_batchnorm
from models.memory_format import memory_format, prefers_channels_last
from utils.checkpoint import check_writable_folder, size_suffix_of
from utils.cuda_graph import CUDAGraphDetector
from utils.files import file_identity, write_text
from utils.draw import class_colours, draw_detections, undrawable_names
from utils.export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from utils.messages import counted, preview_names
from utils.postprocess import PostProcessor, detections_to_numpy
from utils.progress import progress_bar
from utils.run_lock import one_writer
from utils.trained_model import TrainedDetector, detector_from_state, load_trained_detector

GLOB_CHARACTERS = "*?["
SUBFOLDER_SCAN_LIMIT = 10_000  # entries below a folder without images that the "its sub-folders hold" hint looks at
DETECTIONS_FILE = "detections.json"
JPEG_QUALITY = 95
DEFAULT_SCORE_THRESH = 0.3  # --score_thresh: --demo's and --export_nms' score threshold
DRAWN_MARK = b"drawn by main.py --demo"  # a JPEG comment in every drawn copy: the files a later run may replace


class DemoInputError(DataError):
    """Nothing to run the demo on (missing path, folder without images, no readable image); one line with the fix."""


def default_demo_output(checkpoint_path: str | os.PathLike, suffix: str = "") -> Path:
    """``eval/demo/<checkpoint stem><suffix>/``; ``suffix``: ``_size<S>`` at another input size than the checkpoint's
    (:func:`utils.checkpoint.other_size_suffix`), "" at its own."""
    return Path("eval") / "demo" / f"{Path(checkpoint_path).stem}{suffix}"


def collect_images(sources: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The image files named by ``sources``, in order, without duplicates (one file named twice, also as
    ``photos/a.jpg`` and ``/home/me/photos/a.jpg`` or through a link, is kept once, as first named).

    A file is taken whatever its suffix (an unreadable one is reported later, as is a link to no file); a folder
    gives its files with an image suffix (:data:`IMAGE_EXTENSIONS`, any case), sorted; a glob gives its matching image
    files, sorted (``**`` descends into sub-folders). Raises :class:`DemoInputError` for a missing path, a path the
    system does not let us look into (no permission), a folder or glob without images, or no source at all.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    found: dict[Path, Path] = {}  # resolved path -> the path as first named
    for source in map(str, sources):
        try:
            paths = _expand(source)
        except OSError as error:  # e.g. a folder without read or search permission
            raise DemoInputError(f"--demo {source}: cannot look into {error.filename or source} "
                                 f"({error.strerror or error}); fix its permissions or leave it out") from None
        for path in paths:
            found.setdefault(path.resolve(), path)
    if not found:
        raise DemoInputError("--demo: no input given; pass an image, a folder of images or a glob like 'photos/*.jpg'")
    return list(found.values())


def _file_or_broken_link(path: Path) -> bool:
    """A regular file, or a link to none (its reading names it as such; a pipe or a device is never read)."""
    return path.is_file() or (path.is_symlink() and not path.exists())


def _expand(source: str) -> list[Path]:
    path = Path(source)
    if _file_or_broken_link(path):
        return [path]
    suffixes = ", ".join(IMAGE_EXTENSIONS)
    if path.is_dir():
        files = [p for p in sorted(path.iterdir()) if _file_or_broken_link(p)]
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        if not images:
            others = counted(len(files), "other file")
            raise DemoInputError(f"--demo {source}: the folder holds no image files ({others})"
                                 + (_images_below(path) or f"; images need one of the suffixes {suffixes}"))
        return images
    if path.exists():  # neither file nor folder: `--demo <(curl ...)` gives a pipe, which is never read
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(path.stat().st_mode) else "a device or socket"
        raise DemoInputError(f"--demo {source}: is {kind}, not a regular file: save the image to a file and pass "
                             "that file")
    if any(character in source for character in GLOB_CHARACTERS):
        matches = [Path(p) for p in sorted(glob.glob(source, recursive=True)) if _file_or_broken_link(Path(p))]
        images = [p for p in matches if p.suffix.lower() in IMAGE_EXTENSIONS]
        if not matches and (hint := _literal_glob_characters(source)):
            raise DemoInputError(f"--demo {source}: the pattern matches no file, but {hint}")
        if not images:
            others = counted(len(matches), "other file")
            raise DemoInputError(f"--demo {source}: the pattern matches no image files ({others}); "
                                 f"images need one of the suffixes {suffixes}")
        return images
    raise DemoInputError(f"--demo {source}: no such file or folder; check the path")


def _literal_glob_characters(pattern: str) -> str | None:
    """For a pattern that matches nothing: a clause naming the leading part of ``pattern`` that exists as written
    although its name holds a glob character (a folder ``Trip [2020]``, whose ``[2020]`` glob reads as one of the
    characters 2 and 0) and the pattern with that part escaped (``Trip [[]2020]``); None when there is no such part."""
    for part in (Path(pattern), *Path(pattern).parents):
        if any(character in part.name for character in GLOB_CHARACTERS) and part.exists():
            rest = pattern[len(str(part)):] if pattern.startswith(str(part)) else f"/{Path(pattern).relative_to(part)}"
            read_as = "the [ ] in its name as a choice of characters" if "[" in part.name else "its * or ? as wildcards"
            return (f"{part} exists: the pattern reads {read_as}; "
                    f"pass '{glob.escape(str(part))}{rest}' (quoted) to match it as written")
    return None


def _images_below(folder: Path) -> str:
    """For a folder without images of its own: a clause saying how many images its sub-folders hold and the glob that
    takes them (a dataset folder with ``train/`` and ``test/``, say); empty when they hold none. It looks at
    :data:`SUBFOLDER_SCAN_LIMIT` entries at most (``--demo ~`` would walk a whole home folder), then says "at least"."""
    subfolders = sorted(path for path in folder.iterdir() if path.is_dir())
    entries = itertools.islice(((sub.name, path) for sub in subfolders for path in sub.rglob("*")),
                               SUBFOLDER_SCAN_LIMIT + 1)  # one more: whether the walk stopped early
    looked_at = list(entries)
    counts = Counter(name for name, path in looked_at[:SUBFOLDER_SCAN_LIMIT]
                     if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file())
    if not counts:
        return ""
    total = sum(counts.values())
    amount = f"at least {total}" if len(looked_at) > SUBFOLDER_SCAN_LIMIT else str(total)
    holding = [f"{name}/" for name in counts]  # in the sub-folders' order
    return (f", but its sub-folders hold {amount} ({preview_names(holding)}): "
            f"pass '{glob.escape(str(folder))}/**/*' (quoted) for all of them, or one sub-folder")


def output_names(paths: Sequence[Path]) -> list[str]:
    """``<stem>.jpg`` per path; a stem met again (``a.png`` and ``a.jpg``, or two folders) gets ``-2``, ``-3``, ..."""
    names, used = [], set()
    for path in paths:
        name, copy = f"{path.stem}.jpg", 1
        while name.lower() in used:
            copy += 1
            name = f"{path.stem}-{copy}.jpg"
        used.add(name.lower())
        names.append(name)
    return names


def upright(image: np.ndarray, orientation: int | None) -> np.ndarray:
    """``image`` ``[H, W, ...]`` in stored pixel order turned as EXIF ``orientation`` (1-8) tells viewers to show it:
    ``[H, W, ...]`` for 1-4, ``[W, H, ...]`` for 5-8 (a 90-degree turn); ``image`` itself for 1, ``None`` or an
    unknown value. The same turns as ``PIL.ImageOps.exif_transpose``."""
    turns = {
        2: lambda a: a[:, ::-1],  # mirrored left-right
        3: lambda a: a[::-1, ::-1],  # 180 degrees
        4: lambda a: a[::-1],  # mirrored top-bottom
        5: lambda a: a.swapaxes(0, 1),  # transposed
        6: lambda a: np.rot90(a, -1),  # stored 90 degrees counter-clockwise: turn clockwise
        7: lambda a: np.rot90(a, 2).swapaxes(0, 1),  # transverse
        8: lambda a: np.rot90(a, 1),  # stored 90 degrees clockwise: turn counter-clockwise
    }
    turn = turns.get(orientation) if isinstance(orientation, int) else None
    return np.ascontiguousarray(turn(image)) if turn else image


class ImageFiles(Dataset):
    """Reads image files for the network, upright (:func:`upright` turns ``read_image``'s stored pixels, a TIFF's
    too, as :func:`exif_orientation` says); a file that cannot be decoded yields its error instead of failing.

    ``dataset[i]`` -> ``(input float32 [3, S, S] BGR minus PIXEL_MEAN_BGR or None, upright original uint8 BGR
    [H, W, 3] or None, error message or None, i)``.
    """

    def __init__(self, paths: Sequence[Path], size: int) -> None:
        self.paths = list(paths)
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, np.ndarray | None, str | None, int]:
        try:
            image = upright(read_image(self.paths[index]), exif_orientation(self.paths[index]))
        except DataError as error:
            return None, None, str(error), index
        return torch.from_numpy(normalize_image(resize(image, self.size))), image, None, index


def collate_image_files(batch: list) -> tuple[torch.Tensor | None, list[np.ndarray], list[int], list[tuple[int, str]]]:
    """``(inputs [b, 3, S, S] or None when no file of the batch was readable, originals, their indices,
    [(index, error)] of the unreadable files)``."""
    readable = [item for item in batch if item[2] is None]
    inputs = torch.stack([item[0] for item in readable]) if readable else None
    failures = [(item[3], item[2]) for item in batch if item[2] is not None]
    return inputs, [item[1] for item in readable], [item[3] for item in readable], failures


def run_demo(
    checkpoint_path: str | os.PathLike,
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    score_thresh: float = DEFAULT_SCORE_THRESH,
    nms_thresh: float = 0.5,
    max_per_image: int = 100,
    workers: int = 0,
    cuda_graph: bool = False,
    state: dict | None = None,
    size: int | None = None,
) -> dict:
    """Detect objects in ``inputs`` (see :func:`collect_images`) and write drawn images and ``detections.json``.

    Args:
        checkpoint_path: a checkpoint saved by ``main.py``; architecture, anchors and class names are read from it.
        output_dir: default :func:`default_demo_output`; written while this run holds its lock
            (:func:`utils.run_lock.one_writer`: it waits, saying so, while another run writes there).
        device: where the network runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``).
        batch_size: images per forward pass; workers: DataLoader processes reading the images (0 = this one).
        score_thresh: keep and draw detections scoring strictly above it; nms_thresh: per-class NMS IoU.
        max_per_image: at most this many detections per image, the highest scores.
        cuda_graph: replay the network and post-processing from a CUDA graph of ``batch_size`` images
            (:class:`utils.cuda_graph.CUDAGraphDetector`; CUDA devices only).
        state: the checkpoint already read from ``checkpoint_path`` with ``load_checkpoint`` (``main.py`` reads it
            first when it needs its flags); None: read it here, once the inputs and ``output_dir`` are checked.
        size: the input side to run it at, of as many pyramid levels as the checkpoint's (the same layers: 128-448,
            or 512 and above; ``CheckpointError`` otherwise); None: the checkpoint's. At another side the default
            ``output_dir`` ends in ``_size<S>``, keeping the demo at the trained size.

    Returns:
        ``{"images": readable images, "unreadable": skipped files, "detections": total detections, "removed": drawn
        copies of earlier runs deleted (:func:`remove_earlier_drawn_copies`), "output_dir": str, "json": str}``.

    Raises :class:`DemoInputError` when there is no image to read or none of the files could be read (after
    writing the JSON), ``CheckpointError`` for an unusable checkpoint, and ``ValueError`` for a bad argument or an
    ``output_dir`` that cannot be written (found before the checkpoint loads).
    """
    if batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {batch_size}")
    if not 0.0 <= score_thresh < 1.0:
        raise ValueError(f"--score_thresh {score_thresh} must be in [0, 1)")
    state, suffix = size_suffix_of(checkpoint_path, state, size)
    out_dir = Path(output_dir) if output_dir is not None else default_demo_output(checkpoint_path, suffix)
    paths = leave_out_drawn_copies(collect_images(inputs), out_dir)
    check_writable_folder(out_dir, "--demo_output")
    names = output_names(paths)
    check_output_folder(out_dir, paths, names)
    device = torch.device(device)
    detector = (load_trained_detector(checkpoint_path, device) if state is None
                else detector_from_state(state, checkpoint_path, device, size))
    postprocessor = PostProcessor(detector.priors, score_thresh=score_thresh, nms_thresh=nms_thresh,
                                  max_per_image=max_per_image)
    detect = _batch_detector(detector.model, postprocessor, device, batch_size, detector.size, cuda_graph)
    json_path = out_dir / DETECTIONS_FILE
    with one_writer(out_dir, "demo run"):  # the folder holds one run's files, whatever else writes there meanwhile
        out_dir.mkdir(parents=True, exist_ok=True)
        records, unreadable = _detect_and_draw(paths, names, out_dir, detector, detect, batch_size, workers, device)
        images_done = [record for record in records if record is not None]
        settings = {"checkpoint": str(checkpoint_path), "class_names": detector.class_names,
                    "input_size": detector.size, "score_thresh": score_thresh, "nms_thresh": nms_thresh}
        write_text(json_path, json.dumps(settings | {"images": images_done, "unreadable": unreadable}, indent=1))
        removed = remove_earlier_drawn_copies(out_dir, keep={record["output"] for record in images_done})
    summary = {
        "images": len(images_done),
        "unreadable": len(unreadable),
        "detections": sum(len(record["detections"]) for record in images_done),
        "removed": len(removed),
        "output_dir": str(out_dir),
        "json": str(json_path),
    }
    deleted = (f"; {counted(len(removed), 'drawn copy')} of earlier runs deleted "
               f"({preview_names([path.name for path in removed])})" if removed else "")
    none_kept = (f" (no box scored above --score_thresh {score_thresh}: a lower one shows weaker detections)"
                 if images_done and not summary["detections"] else "")
    print(f"demo: {counted(summary['detections'], 'detection')} in {counted(summary['images'], 'image')}{none_kept} "
          f"written to {out_dir} ({DETECTIONS_FILE}); {counted(summary['unreadable'], 'unreadable file')} "
          f"skipped{deleted}", file=sys.stderr)
    if not images_done:
        unread = "the one file given could not" if len(paths) == 1 else f"none of the {len(paths)} files could"
        raise DemoInputError(f"--demo: {unread} be read as an image; see the reasons above and in {json_path}")
    return summary


def _detect_and_draw(paths: Sequence[Path], names: Sequence[str], out_dir: Path, detector: TrainedDetector,
                     detect: Callable[[torch.Tensor, list[np.ndarray]], list[dict]], batch_size: int, workers: int,
                     device: torch.device) -> tuple[list[dict | None], list[dict]]:
    """Run ``detect`` on the images ``paths`` and write each drawn copy to ``out_dir / names[i]``; returns the
    ``detections.json`` record of each image (None: unreadable) and the unreadable files ``{"file", "error"}``."""
    colours = class_colours(len(detector.class_names))
    if undrawable := undrawable_names(detector.class_names):
        print(f"warning: OpenCV's font draws ASCII only: the captions of {preview_names(undrawable)} show '?' for "
              f"their other characters in the drawn images; {DETECTIONS_FILE} holds the names as written",
              file=sys.stderr)
    loader = WorkerLoader(ImageFiles(paths, detector.size), batch_size=batch_size, num_workers=workers,
                          collate_fn=collate_image_files, pin_memory=device.type == "cuda")
    records: list[dict | None] = [None] * len(paths)
    unreadable: list[dict] = []
    bar = progress_bar(total=len(paths), desc="Detecting", unit="img", dynamic_ncols=True)
    with torch.inference_mode(), bar:
        for images, originals, indices, failures in loader:
            for index, message in failures:
                tqdm.write(f"skipped unreadable image: {message}", file=sys.stderr)
                unreadable.append({"file": str(paths[index]), "error": message})
            if images is not None:
                results = detect(images, originals)
                for index, original, result in zip(indices, originals, results):
                    drawn = draw_detections(original, result["boxes"], result["scores"], result["labels"],
                                            detector.class_names, colours)
                    problem = _write_jpeg(out_dir / names[index], drawn)
                    if problem:
                        tqdm.write(f"drawn image not written for {paths[index]}: {problem}", file=sys.stderr)
                    records[index] = _image_record(paths[index], None if problem else names[index], original.shape,
                                                   result, detector.class_names)
            bar.update(len(indices) + len(failures))
    return records, unreadable


def _batch_detector(model: torch.nn.Module, postprocessor: PostProcessor, device: torch.device, batch_size: int,
                    size: int, cuda_graph: bool) -> Callable[[torch.Tensor, list[np.ndarray]], list[dict]]:
    """``detect(images [b, 3, S, S] on the host, originals) -> [per-image dict of numpy boxes (pixels of the
    original), scores, labels]``: ``model`` with its BatchNorm folded, in the memory format this device prefers, or
    replayed from a CUDA graph of ``batch_size`` images (``cuda_graph``)."""
    channels_last = prefers_channels_last(device, None)
    network = fold_batchnorm(model, channels_last)
    graphed = CUDAGraphDetector(network, postprocessor, batch_size, size) if cuda_graph else None

    def detect(images: torch.Tensor, originals: list[np.ndarray]) -> list[dict]:
        sizes = torch.tensor([original.shape[:2] for original in originals])  # [b, 2] (h, w)
        if graphed is not None:
            return graphed(images, sizes)
        images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format(channels_last))
        loc, conf = network(images)
        return detections_to_numpy(postprocessor(loc, conf, sizes.to(device)))

    return detect


def _image_record(path: Path, output_name: str | None, shape: tuple[int, ...], result: dict[str, np.ndarray],
                  class_names: Sequence[str]) -> dict:
    """One image of ``detections.json``: boxes in pixels rounded to 0.01, scores to 1e-4."""
    detections = [
        {"box": [round(float(v), 2) for v in box], "score": round(float(score), 4), "label": int(label),
         "class_name": class_names[int(label)]}
        for box, score, label in zip(result["boxes"], result["scores"], result["labels"])
    ]
    return {"file": str(path), "output": output_name, "width": int(shape[1]), "height": int(shape[0]),
            "detections": detections}


def leave_out_drawn_copies(paths: Sequence[Path], out_dir: Path) -> list[Path]:
    """``paths`` less the drawn copies (:func:`drawn_by_demo`) that earlier runs wrote to ``out_dir``, which a glob
    through it takes in (``'photos/**/*'`` with ``--demo_output photos/detected``, run again): they are not inputs
    but the results a run replaces. Says on stderr which were left out; raises :class:`DemoInputError` when every
    path is such a copy."""
    folder = out_dir.resolve()
    drawn = {path for path in paths if path.resolve().parent == folder and drawn_by_demo(path)}
    if not drawn:
        return list(paths)
    shown = preview_names(sorted(path.name for path in drawn))
    kept = [path for path in paths if path not in drawn]
    if not kept:
        raise DemoInputError(f"--demo: every input is a drawn copy that an earlier run wrote to --demo_output "
                             f"{out_dir} ({shown}); pass the original images")
    print(f"demo: left out {counted(len(drawn), 'drawn copy')} that earlier runs wrote to --demo_output {out_dir} "
          f"({shown}), which the inputs take in", file=sys.stderr)
    return kept


def check_output_folder(out_dir: Path, paths: Sequence[Path], names: Sequence[str]) -> None:
    """Raise :class:`DemoInputError` when ``out_dir`` holds one of the input images ``paths``: a drawn copy could
    replace it, and a later run on the folder would read the drawn copies as inputs; or when it holds a file named as
    a drawn copy (``names``, one per path) that no demo run wrote (neither :func:`drawn_by_demo` nor in
    :func:`listed_outputs`), such as a photo of the user's own: the drawn copy would replace it; or a link (a demo run
    writes none), which the drawn copy would be written through, into the file it points to."""
    folder = out_dir.resolve()
    inside = [path for path in paths if path.resolve().parent == folder]
    if inside:
        raise DemoInputError(
            f"--demo_output {out_dir} holds input images ({inside[0].name}{', ...' if len(inside) > 1 else ''}): the "
            "drawn copies would replace them; choose another --demo_output folder"
        )
    taken = [(path, name) for path, name in zip(paths, names)
             if (out_dir / name).exists() or (out_dir / name).is_symlink()]
    listed = listed_outputs(out_dir) if taken else set()
    foreign = [(path, name) for path, name in taken if (out_dir / name).is_symlink()  # it would write through it
               or name not in listed and not drawn_by_demo(out_dir / name)]
    if foreign:
        (path, name), more = foreign[0], f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise DemoInputError(
            f"--demo_output {out_dir} holds {name}{more}, which no demo run wrote: the drawn copy of {path} would "
            "replace it; choose another --demo_output folder (a new or empty one)"
        )


def listed_outputs(out_dir: Path) -> set[str]:
    """The drawn copies (``"output"`` names) that ``out_dir``'s ``detections.json`` lists: an earlier run's, including
    one from before drawn copies were marked; empty when the file is missing or unreadable."""
    try:
        images = json.loads((out_dir / DETECTIONS_FILE).read_text(encoding="utf-8"))["images"]
        return {image["output"] for image in images if isinstance(image.get("output"), str)}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return set()


def remove_earlier_drawn_copies(out_dir: Path, keep: set[str | None]) -> list[Path]:
    """Delete the drawn copies in ``out_dir`` other than ``keep`` (this run's, by name): ``*.jpg`` regular files (not
    links) that carry :data:`DRAWN_MARK`, left by earlier runs on other images (also by a run stopped before it wrote
    its ``detections.json``), which would sit beside this run's as if they were its. No other file is touched, an
    unmarked copy listed by an earlier ``detections.json`` included (it may since have been replaced by a file of the
    user's), nor a name of a kept file (on a case-insensitive disk, an earlier ``Tall.jpg`` that this run's
    ``tall.jpg`` was written into). Returns the paths deleted, sorted."""
    kept = {file_identity(out_dir / name) for name in keep if name is not None} - {None}
    removed = [path for path in sorted(out_dir.glob("*.jpg")) if path.name not in keep and not path.is_symlink()
               and path.is_file() and file_identity(path) not in kept and drawn_by_demo(path)]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def drawn_by_demo(path: Path) -> bool:
    """Whether ``path`` is a drawn copy a demo run wrote: its first bytes hold :data:`DRAWN_MARK` (a JPEG comment)."""
    try:
        with open(path, "rb") as file:
            return DRAWN_MARK in file.read(256)
    except OSError:
        return False


def mark_drawn(jpeg: bytes) -> bytes:
    """``jpeg`` (a whole JPEG file) with a comment segment (COM, ``FF FE``) holding :data:`DRAWN_MARK` right after
    its start marker and JFIF header (APP0, which must come first)."""
    start = 2  # after SOI (FF D8)
    if jpeg[start:start + 2] == b"\xff\xe0":
        start += 2 + int.from_bytes(jpeg[start + 2:start + 4], "big")
    comment = b"\xff\xfe" + (len(DRAWN_MARK) + 2).to_bytes(2, "big") + DRAWN_MARK
    return jpeg[:start] + comment + jpeg[start:]


def _write_jpeg(path: Path, image: np.ndarray) -> str | None:
    """Write ``image`` to ``path`` as a JPEG; returns why it could not be written, or None."""
    try:
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    except cv2.error:
        ok = False
    if not ok:
        height, width = image.shape[:2]
        return f"OpenCV cannot encode a {width}x{height} image as JPEG (at most 65,500 px a side)"
    try:
        path.write_bytes(mark_drawn(encoded.tobytes()))
    except OSError as error:
        return f"cannot write {path} ({error.strerror})"
    return None


def add_use_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``use a trained model`` flags (demo and export) to ``parser``; returns it."""
    group = parser.add_argument_group("use a trained model (with --trained_model)")
    group.add_argument("--demo", nargs="+", default=None, metavar="PATH",
                       help="detect on images: files, folders or quoted globs ('photos/**/*.jpg'); writes drawn "
                            "images and detections.json to --demo_output")
    group.add_argument("--demo_output", type=str, default=None, metavar="DIR",
                       help="folder for the demo results (default: eval/demo/<checkpoint stem>/; at another --size "
                            "S than the trained one, eval/demo/<checkpoint stem>_size<S>/)")
    group.add_argument("--score_thresh", type=float, default=None,  # None: not given (DEFAULT_SCORE_THRESH)
                       help="--demo: keep and draw detections scoring above this; --export_nms: the graph's score "
                            f"threshold (default: {DEFAULT_SCORE_THRESH:g})")
    group.add_argument("--export", type=str.lower, choices=("onnx",), default=None,
                       help="export the network with box decoding and sigmoid scores to ONNX and exit")
    group.add_argument("--export_path", type=str, default=None, metavar="FILE",
                       help="ONNX file to write, ending in .onnx (default: the checkpoint path with .onnx; at another "
                            "--size S than the trained one, with _size<S>.onnx)")
    group.add_argument("--opset", type=int, default=None,
                       help=f"ONNX opset version, {MIN_OPSET}..{MAX_OPSET} (default: {DEFAULT_OPSET})")
    group.add_argument("--export_nms", action="store_true",
                       help="include the score threshold (--score_thresh) and per-class NMS (--nms_thresh) in the "
                            "ONNX graph, which then outputs detections")
    return parser
