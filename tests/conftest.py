"""Shared pytest setup: run from the repository root so `models`, `data` and `utils` import."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
