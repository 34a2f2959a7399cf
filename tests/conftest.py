"""Shared fixtures. Tests read the real suite from ../shared (or DART_DATA_DIR), never a copy in the project."""
import os

import pytest
import torch
from hypothesis import settings

# CI runs the property tests with a fixed seed, so a green run stays green; locally they explore new examples.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

from dart_utils.core import params as P
from dart_utils.data import suite as data


@pytest.fixture(scope="session")
def paper_params():
    return P.load("paper")


@pytest.fixture(scope="session")
def suite(paper_params):
    return data.load_suite(paper_params)


@pytest.fixture
def run_dirs(tmp_path):
    """An extra parameter file that sends runs/, tables/ and figures/ to a temporary directory."""
    f = tmp_path / "tmp_dirs.yaml"
    f.write_text(f"run:\n  runs_dir: {tmp_path / 'runs'}\n  tables_dir: {tmp_path / 'tables'}\n"
                 f"  figures_dir: {tmp_path / 'figures'}\n  reports_dir: {tmp_path / 'reports'}\n")
    return f


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from 2 threads, and with another busy process on a 2-core machine 2 OpenMP threads
    run ~10x slower than 1 (measured); restored after the module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
