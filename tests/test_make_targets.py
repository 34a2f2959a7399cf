"""The Makefile targets themselves, with PARAMS= as a user types it (not only the Python entry point).

Why: a user meets the parameter checks through `make check` / `make all PARAMS=...`; a Makefile that drops or
reorders the files in PARAMS would pass every test of `dart_utils.pipeline.main` and still ignore the user's file.
"""
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", *args], check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module", autouse=True)
def current_venv():
    """`make check` depends on `venv`: when .venv is not current (pyproject.toml or the Makefile changed since the
    last install) it would reinstall it; `make test` brings it up to date first, a bare pytest run skips instead."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    if subprocess.run(["make", "-q", "venv"], check=False, cwd=ROOT, capture_output=True).returncode != 0:
        pytest.skip(".venv is not current: run `make venv` (or `make test`) first")


def _yaml(tmp_path, name: str, content: dict) -> Path:
    f = tmp_path / name
    f.write_text(yaml.safe_dump(content))
    return f


def test_check_with_a_valid_override(run_dirs):
    out = _make("check", f"PARAMS={run_dirs}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "parameters OK" in out.stdout


@pytest.mark.parametrize("content,key", [
    ({"training": {"learning_rate": -1}}, "training.learning_rate"),
    ({"training": {"epochs": 0}}, "training.epochs"),
    ({"splits": {"test_per_stratum": 5000}}, "splits.test_per_stratum"),       # caught against the data
])
def test_check_names_the_key_and_the_file(tmp_path, content, key):
    f = _yaml(tmp_path, "bad.yaml", content)
    out = _make("check", f"PARAMS={f}")
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "parameters OK" not in text
    assert f"{key}' (set in {f})" in text or f"{key} (set in {f})" in text, text


def test_check_applies_every_file_in_params_the_later_winning(tmp_path, run_dirs):
    a = _yaml(tmp_path, "a.yaml", {"training": {"learning_rate": -1}, "splits": {"test_per_stratum": 5000}})
    b = _yaml(tmp_path, "b.yaml", {"training": {"learning_rate": 1.0e-4}})
    out = _make("check", f"PARAMS={run_dirs} {a} {b}")
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert "training.learning_rate" not in text                       # b.yaml overrode a.yaml's bad value
    assert f"splits.test_per_stratum (set in {a})" in text            # and a.yaml was applied
    fine = _yaml(tmp_path, "c.yaml", {"splits": {"test_per_stratum": 8}})
    out = _make("check", f"PARAMS={a} {b} {fine}")
    assert out.returncode == 0 and "parameters OK" in out.stdout, out.stdout + out.stderr
