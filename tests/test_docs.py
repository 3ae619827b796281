"""The user-facing documentation (README.md, docs/*.md) against the code it describes."""
from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import importlib
import importlib.util
import inspect
import io
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURE = REPO / "docs" / "architecture.md"


def module_map_paths() -> list[str]:
    """The paths of the first column of docs/architecture.md's module map (files, or folders ending in ``/``)."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [path for row in rows for path in re.findall(r"`([\w/.]+)`", row.split(" | ")[0])]


def test_module_map_names_every_module_of_the_tree():
    """Every module of utils/, models/ and data/ is in docs/architecture.md's module map, itself or by its folder,
    and every path the map names exists."""
    listed = module_map_paths()
    assert [path for path in listed if not (REPO / path).exists()] == []
    modules = sorted(
        str(path.relative_to(REPO)) for folder in ("utils", "models", "data") for path in (REPO / folder).rglob("*.py")
        if path.name != "__init__.py"
    )
    unlisted = [module for module in modules
                if not any(module == path or (path.endswith("/") and module.startswith(path)) for path in listed)]
    assert unlisted == []




def test_module_map_names_every_exported_function_and_class():
    """Every function and class the packages export (``__all__`` of ``models``, ``data``, ``utils.assign``,
    ``utils.loss``, ``utils.box``; constants aside) is named in docs/architecture.md's module map: ``check_dataset``,
    ``parse_class_list``, the box conversions and the loss functions were exported but not in the map."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    unnamed = [f"{package}.{name}" for package in ("models", "data", "utils.assign", "utils.loss", "utils.box")
               for name in importlib.import_module(package).__all__
               if not name.isupper() and f"`{name}" not in section]
    assert unnamed == []


def module_map_rows() -> list[tuple[list[str], str]]:
    """``(paths, public names)`` of each row of docs/architecture.md's module map."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    cells = [line.split(" | ") for line in section.splitlines() if line.startswith("| `")]
    return [(re.findall(r"`([\w/.]+)`", row[0]), row[2]) for row in cells]


def top_level_parts(text: str) -> list[str]:
    """``text`` split at the commas outside brackets (``boxes1 [B, N, 4], boxes2`` -> 2 parts)."""
    parts, depth, part = [], 0, ""
    for char in text:
        depth += (char in "([{") - (char in ")]}")
        if char == "," and depth == 0:
            parts.append(part.strip())
            part = ""
        else:
            part += char
    return [part for part in [*parts, part.strip()] if part]


# the map's calls of an object rather than of a public name: the criterion built by MultiBoxLoss
CALLS_OF_INSTANCES = {"loss_fn"}


def test_every_call_of_the_module_map_names_a_public_name_with_its_arguments_and_defaults():
    """Every ``name(arg, key=default)`` of the module map's public names is a module-level name, or a method of a class,
    of the row's modules; the arguments it shows are that callable's, and a default it shows is the code's."""
    wrong = []
    for paths, names in module_map_rows():
        modules = [importlib.import_module(path.rstrip("/").removesuffix(".py").replace("/", ".")) for path in paths]
        scope: dict[str, object] = {}
        for module in modules:
            for name, value in vars(module).items():
                scope.setdefault(name, value)
                for attribute in vars(value) if isinstance(value, type) else ():
                    scope.setdefault(attribute, getattr(value, attribute))
        for call in re.findall(r"`([A-Za-z_][\w.]*)\((.*?)\)", names):
            dotted, arguments = call
            if dotted in CALLS_OF_INSTANCES:
                continue
            head, *attributes = dotted.split(".")
            target = functools.reduce(lambda value, attribute: getattr(value, attribute, None), attributes,
                                      scope.get(head))
            if target is None:
                wrong.append(f"{paths}: {dotted} is not a public name of these modules")
                continue
            parameters = inspect.signature(target).parameters
            for part in top_level_parts(arguments):
                name, _, default = (side.strip() for side in part.partition("="))
                if name in ("...", "*"):
                    continue
                if not re.fullmatch(r"\w+(?: \[.*\].*)?", name):
                    wrong.append(f"{dotted}: {part!r} names no argument (a parameter's name, its shape in [ ])")
                    continue
                name = name.split()[0]
                if name not in parameters:
                    wrong.append(f"{dotted}: no argument {name} in {inspect.signature(target)}")
                elif default not in ("", "...") and parameters[name].default != ast.literal_eval(default):
                    wrong.append(f"{dotted}: {name}={default} shown, {parameters[name].default!r} in the code")
    assert wrong == []


# --- links, paths, flags and commands of README.md and docs/*.md ---

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
# flags of other programs that the pages show (torchrun, timeout, pip, docker)
OTHER_PROGRAMS_FLAGS = {"--nproc_per_node", "--foreground", "--no-deps", "--only-binary", "--python-version",
                        "--implementation", "--platform", "--no-index", "--target",
                        "--shm-size", "--ipc"}
SCRIPT = re.compile(r"(?:^|\s)(?:main\.py|benchmarks/(\w+)\.py)(?=\s|$)")


def page_text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation but ``-`` and ``_`` dropped, spaces -> ``-``."""
    text = FENCE.sub("", page_text(page))
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = sum(anchor == slug or re.fullmatch(re.escape(slug) + r"-\d+", anchor) is not None
                    for anchor in anchors)
        anchors.add(f"{slug}-{count}" if count else slug)
    return anchors


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for page in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", page_text(page)):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_every_repository_path_named_exists():
    """Paths under the project's folders that the pages name (datasets/ is generated, so it is left out)."""
    missing = set()
    for page in DOCS:
        for path in re.findall(r"(?<![\w/.-])((?:utils|models|data|tests|benchmarks|docs|\.ci)/[\w./-]*\w)",
                               page_text(page)):
            if not (REPO / path.split("::")[0]).exists():
                missing.add(f"{page.name}: {path}")
    assert sorted(missing) == []



def test_every_dotted_python_name_named_exists():
    """A ``package.module.name`` of the project that the pages name in Python's dotted form
    (``utils.postprocess.PostProcessor``, ``data.build_loader``) is an attribute of that module."""
    missing = set()
    for page in DOCS:
        for dotted in re.findall(r"(?<![\w./-])((?:utils|models|data|benchmarks|main)(?:\.[A-Za-z_]\w*)+)(?![\w/-])",
                                 page_text(page)):
            if dotted.rsplit(".", 1)[1] in ("py", "md", "sh", "json", "txt", "csv", "pth"):  # a file's name
                continue
            module, name = dotted.rsplit(".", 1)
            try:  # a module (data.coco_eval), or a name in one
                found = importlib.util.find_spec(dotted) is not None
            except ModuleNotFoundError:
                found = False
            try:
                found = found or hasattr(importlib.import_module(module), name)
            except ModuleNotFoundError:
                pass
            if not found:
                missing.add(f"{page.name}: {dotted}")
    assert sorted(missing) == []


@functools.cache
def project_parsers() -> dict[str, argparse.ArgumentParser]:
    """main.py's and every benchmark script's argument parser, by script name (``main`` or the benchmark's); every
    script imports without the optional packages (demo_export.py asks for onnx and onnxruntime once it runs)."""
    import main

    parsers = {"main": main.get_args_parser()}
    for script in sorted((REPO / "benchmarks").glob("*.py")):
        if script.stem == "common":
            continue
        module = importlib.import_module(f"benchmarks.{script.stem}")
        if hasattr(module, "get_args_parser"):
            parsers[script.stem] = module.get_args_parser()
        else:  # the parser is built inside main(): stop it there
            parsers[script.stem] = parser_built_by(module.main)
    return parsers


class ParserBuilt(Exception):
    """Raised in place of ``parse_args`` by :func:`parser_built_by`, carrying the parser."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def parser_built_by(script_main: Callable[[], object]) -> argparse.ArgumentParser:
    """The parser ``script_main`` builds, taken when it parses its arguments (nothing after that runs)."""

    def stop(parser: argparse.ArgumentParser, args: object = None, namespace: object = None) -> NoReturn:
        raise ParserBuilt(parser)

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = stop
    try:
        script_main()
    except ParserBuilt as built:
        return built.parser
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError(f"{script_main.__module__}.main() parsed no arguments")


def long_flags(action: argparse.Action) -> list[str]:
    """An option's ``--`` spellings, the one ``--help`` shows first first (``-h`` left out)."""
    return [flag for flag in action.option_strings if flag.startswith("--")]


def test_every_flag_named_exists():
    """Every ``--flag`` the pages name is a flag of main.py or of a benchmark script, in its first spelling (the one
    ``--help`` shows first): a script that also takes an older spelling (``--batch-sizes``) is shown in its own."""
    flags = {long_flags(action)[0] for parser in project_parsers().values() for action in parser._actions
             if long_flags(action)}
    unknown = set()
    for page in DOCS:
        for flag in re.findall(r"(?<![\w-])(--[A-Za-z][\w-]*)", page_text(page)):
            if flag not in flags | OTHER_PROGRAMS_FLAGS:
                unknown.add(f"{page.name}: {flag}")
    assert sorted(unknown) == []


# the benchmarks' flags once spelled with hyphens; main.py's and the other scripts' are spelled with underscores
HYPHENATED = {"inference_speed": ["--batch-sizes", "1", "--num-classes", "2", "--flops-only"],
              "assignment_loss": ["--reference-repeats", "2", "--focal-bound"],
              "gpu_suite": ["--dry-run", "--budget-s", "60"]}


def test_every_benchmark_flag_is_spelled_with_underscores_and_the_hyphenated_spelling_still_works():
    parsers = project_parsers()
    hyphenated = [f"{script}: {long_flags(action)[0]}" for script, parser in parsers.items() if script != "main"
                  for action in parser._actions if long_flags(action) and "-" in long_flags(action)[0].lstrip("-")]
    assert hyphenated == []
    for script, flags in HYPHENATED.items():
        underscored = [flag.replace("-", "_").replace("__", "--", 1) for flag in flags]
        assert parsers[script].parse_args(flags) == parsers[script].parse_args(underscored)


def shown_commands() -> list[tuple[str, str, list[str]]]:
    """``(page, script, arguments)`` of every main.py or benchmark command in a code block or in an inline
    ``python ...`` span; ``[--flag value]`` (an optional part) counts as given, a command with ``...`` is left out."""
    commands = []
    for page in DOCS:
        text = page_text(page)
        lines = [line for block in FENCE.findall(text) for line in block.replace("\\\n", " ").splitlines()]
        lines += [span for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", FENCE.sub("", text).replace("\n", " "))
                  if re.match(r"(\S+=\S+\s+)*(\S*/)?(python3?|torchrun)\s", span)]
        for line in lines:
            line = re.split(r"\s#\s|\s*&&|\s\|\s", line)[0]
            found = SCRIPT.search(line)
            if not found or not re.match(r"\s*(\S+=\S+\s+)*(\S*/)?(python3?|torchrun)\s", line) or "..." in line:
                continue
            arguments = shlex.split(line[found.end():].replace("[", " ").replace("]", " "))
            commands.append((page.name, found.group(1) or "main", arguments))
    return commands


def test_every_command_shown_parses():
    parsers = project_parsers()
    commands = shown_commands()
    assert len(commands) > 40  # the pages show many; a parsing slip here would silently check none
    refused = []
    for page, script, arguments in commands:
        assert script == "main" or (REPO / "benchmarks" / f"{script}.py").exists(), f"{page}: no benchmarks/{script}.py"
        if script not in parsers:  # an optional dependency is missing
            continue
        try:
            with contextlib.redirect_stderr(io.StringIO()) as stderr, contextlib.redirect_stdout(io.StringIO()):
                parsers[script].parse_args(arguments)
        except SystemExit as stop:
            if stop.code != 0:  # --help exits 0
                refused.append(f"{page}: {script} {' '.join(arguments)}: {stderr.getvalue().strip()}")
    assert refused == []


def test_the_custom_data_commands_name_their_run_and_read_its_checkpoint():
    """README's custom-data block: its training command gives ``--name`` (without it every custom dataset's run of
    one architecture writes ``weights/CUSTOM_<architecture>.pth``, and the next one sets the previous one's aside),
    and the commands after it read the checkpoint that run writes, ``<save_folder>/NAME.pth``."""
    block = next(block for block in FENCE.findall(page_text(REPO / "README.md")) if "--dataset custom" in block)
    parser = project_parsers()["main"]
    commands = [parser.parse_args(shlex.split(re.split(r"\s#\s", line)[0].split("main.py", 1)[1]))
                for line in block.splitlines() if "main.py" in line]
    training = [args for args in commands if args.dataset == "custom" and not args.check_data]
    assert len(training) == 1 and training[0].name
    from utils.run_flags import RUN_DEFAULTS

    checkpoint = str(Path(training[0].save_folder or RUN_DEFAULTS["save_folder"]) / f"{training[0].name}.pth")
    readers = [args.trained_model for args in commands if args.trained_model is not None]
    assert len(readers) >= 2 and set(readers) == {checkpoint}


READING_FLAGS = ("trained_model", "resume", "init_from")
NOT_TRAINING = ("trained_model", "eval_results", "check_data", "demo", "export", "resume")


def written_checkpoint(args: argparse.Namespace) -> str:
    """The checkpoint a training command of the pages writes, as ``utils/training_run.py`` names it, with main.py's
    defaults for the flags not given (``DATASET_DEFAULTS``, ``RUN_DEFAULTS``)."""
    from utils.box import DEFAULT_BASE_ANCHOR_SIZE
    from utils.checkpoint import checkpoint_name
    from utils.run_flags import DATASET_DEFAULTS, RUN_DEFAULTS

    dataset = args.dataset or "voc"
    version, backbone, size = (getattr(args, key) or DATASET_DEFAULTS[dataset][key]
                               for key in ("version", "backbone", "size"))
    name = f"{args.name.removesuffix('.pth')}.pth" if args.name else checkpoint_name(
        dataset, version, backbone, size, args.base_anchor_size or DEFAULT_BASE_ANCHOR_SIZE, bool(args.mutual_guide))
    return str(Path(args.save_folder or RUN_DEFAULTS["save_folder"]) / name)


def test_every_checkpoint_a_command_reads_is_one_a_command_of_the_pages_writes():
    """A ``weights/NAME.pth`` that a command shown reads (``--trained_model``, ``--resume``, ``--init_from``) is the
    checkpoint of a training command shown on some page, with main.py's defaults: a changed default (the shapes
    set's size, say) or a renamed run would leave the pages pointing at a file no command makes. All-capital names
    (``weights/RUN.pth``) are placeholders."""
    parser = project_parsers()["main"]
    commands = [(page, parser.parse_args(arguments)) for page, script, arguments in shown_commands()
                if script == "main" and "--help" not in arguments]
    written = {written_checkpoint(args) for _, args in commands
               if not any(getattr(args, flag) for flag in NOT_TRAINING)}
    read = {(page, path) for page, args in commands for path in (getattr(args, flag) for flag in READING_FLAGS)
            if path and path.startswith("weights/") and not re.fullmatch(r"[A-Z]+", Path(path).stem)}
    assert len(read) >= 4
    assert sorted(f"{page}: {path}" for page, path in read if path not in written) == []


def test_the_assigner_study_s_cpu_figures_show_the_same_commands_on_both_pages():
    # docs/benchmarks.md repeats docs/assigner_study.md's CPU results; its commands once left out --expand_prob 0.6,
    # which those runs trained with (the study's zoom-out for shapes subsets is now none, main.py's shapes default)
    def study_commands(page: str, heading: str) -> list[str]:
        block = FENCE.search(page_text(REPO / "docs" / page).split(heading, 1)[1]).group(1)
        return [line for line in block.splitlines() if "benchmarks/assigners.py" in line]

    commands = study_commands("assigner_study.md", "## Results on `shapes` (CPU)")
    assert len(commands) == 4 and all(line.endswith(" --expand_prob 0.6") for line in commands)
    assert study_commands("benchmarks.md", "## Assigner study") == commands


def readme_section(title: str) -> str:
    """The text of README.md's ``## <title>`` section, up to the next ``## `` heading."""
    return page_text(REPO / "README.md").split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_folder_layout_names_every_utils_module():
    """README's folder layout lists ``utils/``'s modules by name (``nms``, ``run_flags``, ...): a module added to
    ``utils/`` without a word there leaves the layout stale (docs/architecture.md's module map has its own test)."""
    layout = readme_section("Folder layout")
    modules = sorted(path.stem for path in (REPO / "utils").glob("*.py") if path.name != "__init__.py")
    assert [module for module in modules if not re.search(rf"(?<![\w/]){module}(?!\w)", layout)] == []


def test_every_main_flag_is_named_in_the_readme():
    """Every option of main.py's parser is named in README.md in its first spelling, so a new flag is documented where
    users read first; ``main.py --help`` gives its details and the older spellings it also takes
    (``--no-pretrained``)."""
    readme = page_text(REPO / "README.md")
    flags = [long_flags(action)[0] for action in project_parsers()["main"]._actions if long_flags(action)]
    assert len(flags) > 40
    assert [flag for flag in flags if not re.search(rf"{re.escape(flag)}(?![\w-])", readme)] == []


def test_the_readme_lists_every_flag_resume_takes_from_a_checkpoint():
    """README's ``python main.py --resume weights/RUN.pth`` sentence lists the run flags taken from the checkpoint
    (``utils.run_flags.RESUMED_FLAGS``; the three ``*_interval`` flags as "the log, checkpoint and evaluation
    intervals"): a flag added there and not to the list would make the README's "every run flag" wrong."""
    from utils.run_flags import RESUMED_FLAGS

    text = " ".join(page_text(REPO / "README.md").split())
    passage = text.split("takes every run flag not given from it", 1)[1].split("logs one line naming them", 1)[0]
    named_in_words = {"dataset": " (dataset,", "log_interval": "the log, checkpoint and evaluation intervals",
                      "checkpoint_interval": "the log, checkpoint and evaluation intervals",
                      "eval_interval": "the log, checkpoint and evaluation intervals"}
    missing = [flag for flag in RESUMED_FLAGS
               if f"`--{flag}`" not in passage and named_in_words.get(flag, f"`--{flag}`") not in passage]
    assert missing == []


def test_the_readme_quotes_the_latest_shapes_main_job_run():
    """The README's first command shows the scores, and its Benchmarks headline the wall time, of the current code's
    run of that command: the last row of docs/benchmarks.md's "The shapes main job" table. A new row (a change that
    moves the trajectory) must update both."""
    section = page_text(REPO / "docs" / "benchmarks.md").split("\n## The shapes main job\n", 1)[1].split("\n## ", 1)[0]
    last_row = [line for line in section.splitlines() if line.startswith("| ")][-1].split(" | ")
    wall_time = re.match(r"\**(\d+ min \d+ s)", last_row[3]).group(1)
    scores = [cell.strip(" |*\n") for cell in last_row[-3:]]
    readme = page_text(REPO / "README.md")
    shown = re.search(r"mAP = (\S+)  AP50 = (\S+)  AP75 = (\S+)", readme)  # the first command's printed lines
    assert list(shown.groups()) == scores
    headline = " ".join(readme_section("Benchmarks").split())
    assert f"{wall_time} for the current code's run" in headline
    assert "mAP {:.3f} / AP50 {:.3f} / AP75 {:.3f} with the current code".format(*map(float, scores)) in headline


# the import name of a distribution of requirements*.txt where it differs from the distribution's name
IMPORT_NAMES = {"opencv-python-headless": "cv2", "pillow": "PIL"}
PYTHON_BLOCK = re.compile(r"^( *)```python\n(.*?)^\1```", re.S | re.M)


def test_every_package_a_python_example_imports_is_installed_by_the_setup_or_the_page_says_how():
    """A ``python`` block of the pages (README.md, docs/*.md and the READMEs of the output folders, such as
    eval/README.md's plot of the precision-recall curves) imports the project's modules, the standard library's and
    the packages of requirements*.txt; a package the README's setup does not install is named with the ``pip
    install`` that adds it on the same page, so that a user who copies the example does not meet a
    ``ModuleNotFoundError``."""
    import sys

    required = {IMPORT_NAMES.get(name.lower(), name.lower()) for path in REPO.glob("requirements*.txt")
                for name in re.findall(r"^([A-Za-z][\w.-]*)", path.read_text(encoding="utf-8"), re.M)}
    project = {path.stem for path in REPO.iterdir() if path.is_dir() or path.suffix == ".py"}
    pages = [*DOCS, *sorted(REPO.glob("*/README.md"))]
    missing, checked = [], set()
    for page in pages:
        text = page_text(page)
        for indent, block in PYTHON_BLOCK.findall(text):
            tree = ast.parse("\n".join(line.removeprefix(indent) for line in block.splitlines()))
            modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                       for alias in node.names}
            modules |= {node.module.split(".")[0] for node in ast.walk(tree)
                        if isinstance(node, ast.ImportFrom) and node.module and not node.level}
            checked |= modules
            missing += [f"{page.relative_to(REPO)}: {module}" for module in sorted(modules)
                        if module not in required | project | sys.stdlib_module_names
                        and not re.search(rf"pip install[^`\n]*\b{re.escape(module)}\b", text)]
    assert len(pages) > 8
    # the blocks were found and read: eval/README.md's plot imports matplotlib, which no requirements file installs
    assert {"matplotlib", "torch", "cv2", "data", "models", "utils"} <= checked
    assert missing == []
