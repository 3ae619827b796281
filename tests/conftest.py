"""Shared pytest setup: run from the repository root so `models`, `data` and `utils` import; shared fixtures."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils.environment import environment_problem  # noqa: E402  (the standard library alone)


def pytest_configure(config: pytest.Config) -> None:
    """An environment main.py refuses (an old Python or torch) stops the tests with its one line, exit code 2, where
    every test module's import or first forward pass failed with a traceback."""
    problem = environment_problem()
    if problem is not None:
        pytest.exit(problem.replace("main.py", "the tests", 1), returncode=2)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of training runs: on a shared 2-core CPU, oversubscribed OpenMP threads
    run about 10x slower. Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch  # here, not at the top: pytest_configure's check runs before torch is imported

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
