"""The user-facing documentation (README.md, docs/*.md) against the code it describes."""
from __future__ import annotations

import re
from pathlib import Path

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
