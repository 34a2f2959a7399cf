"""Run directories, JSONL artifacts and stage manifests.

Why: each stage reads earlier stages' files and writes its own, plus a manifest (parameters, seeds, input and output
hashes, package versions, wall time), so a stage can be rerun, resumed and checked alone. Which stage writes which
artifact is declared in dart_utils/stages.yaml (core/stage.py); this module only knows the layout:

    runs/<run>/params.yaml              merged parameters of the last pipeline call
    runs/<run>/notebooks/<stage>.ipynb  executed copies (papermill)
    runs/<run>/<stage>/...              the stage's artifacts and manifest.json
    runs/<run>/stamps/<stage>.json      what the pipeline last ran successfully (see pipeline.py)
    runs/cache/                         shared by all runs: LLM responses, student generations, converted models
    tables/<run>/, figures/<run>/       regenerated paper tables and figures (committed)
"""
from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from .hashing import dir_hash, sha256_file
from .params import PROJECT_ROOT, Params

KEY_PACKAGES = ("torch", "transformers", "peft", "trl", "datasets", "openai", "papermill", "pandas", "scipy")


@dataclass(frozen=True)
class Run:
    """Paths of one run (a profile, optionally with a student) and helpers to write its artifacts."""
    params: Params

    @property
    def name(self) -> str:
        return self.params.run_name

    @property
    def root(self) -> Path:
        return PROJECT_ROOT / self.params.run.runs_dir / self.name

    @property
    def notebooks_dir(self) -> Path:
        return self.root / "notebooks"

    @property
    def tables_dir(self) -> Path:
        return _mkdir(PROJECT_ROOT / self.params.run.tables_dir / self.name)

    @property
    def figures_dir(self) -> Path:
        return _mkdir(PROJECT_ROOT / self.params.run.figures_dir / self.name)

    @property
    def reports_dir(self) -> Path:
        return PROJECT_ROOT / self.params.run.reports_dir / self.name

    @property
    def cache_dir(self) -> Path:
        """Shared by all runs (keys include everything that matters): LLM responses, converted models."""
        return _mkdir(PROJECT_ROOT / self.params.run.cache_dir)

    @property
    def annotations_dir(self) -> Path:
        """Filled human-annotation sheets (App. L, M.1): `audit.annotations_dir`, else runs/<run>/annotations."""
        setting = self.params.audit.annotations_dir
        return (PROJECT_ROOT / setting).resolve() if setting else self.root / "annotations"

    def stage_dir(self, stage: str) -> Path:
        return _mkdir(self.root / stage)

    def describe(self) -> str:
        s = self.params.student
        return f"run '{self.name}' (profile {self.params.profile}, student {s.name})"

    def write_params(self) -> Path:
        path = _mkdir(self.root) / "params.yaml"
        path.write_text(yaml.safe_dump(self.params.to_dict(), sort_keys=False))
        return path


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def write_jsonl(rows, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)  # atomic: a crash never leaves a half-written artifact behind
    return path


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in KEY_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


CODE_PATHS = ("dart_utils", "notebooks", "params", "pyproject.toml")


def git_commit() -> str | None:
    """HEAD, with "-dirty" when the code, notebooks or parameters differ from it (then HEAD did not make the
    outputs; commit, then rerun the stage for a clean record)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=normal", "--", *CODE_PATHS],
                               cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return (sha + ("-dirty" if dirty else "")) or None


class StageTimer:
    """Wall time of named steps inside a stage, for the notebook display and the manifest."""

    def __init__(self):
        self.steps: dict[str, float] = {}
        self._t0 = time.perf_counter()

    def step(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                timer.steps[name] = round(time.perf_counter() - self.t, 3)
                return False
        return _Ctx()

    @property
    def total(self) -> float:
        return round(time.perf_counter() - self._t0, 3)


def content_hash(path: Path) -> str:
    """SHA-256 of a file, or "dir:<hash of every file's name and SHA-256>" of a directory (e.g. an adapter)."""
    path = Path(path)
    return sha256_file(path) if path.is_file() else f"dir:{dir_hash(path)}"


def write_manifest(run: Run, stage: str, inputs: dict[str, Path], outputs: dict[str, Path],
                   timer: StageTimer | None = None, extra: dict[str, Any] | None = None) -> Path:
    """The stage's manifest: what went in (with hashes), what came out, with which parameters, and how long."""
    manifest = {
        "stage": stage,
        "run": run.name,
        "profile": run.params.profile,
        "student": run.params.student.name,
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "params_fingerprint": run.params.fingerprint(),
        "seeds": {"run": run.params.run.seed, "splits": run.params.splits.seed},
        "inputs": {k: {"path": project_relative(p), "sha256": content_hash(p)} for k, p in inputs.items()},
        "outputs": {k: {"path": project_relative(p), "sha256": content_hash(p)} for k, p in outputs.items()},
        "wall_time_s": {"total": timer.total, **timer.steps} if timer else None,
        "packages": package_versions(),
        "git_commit": git_commit(),
        **(extra or {}),
    }
    path = run.stage_dir(stage) / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    return path


def project_relative(p: Path) -> str:
    """A path relative to the project root when it is inside it (manifests stay portable), else absolute."""
    try:
        return str(Path(p).resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(p)


def read_json(path: Path) -> dict | None:
    """A JSON file, or None when it is missing or unreadable (stamps, manifests)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ---- the execution history: one line per stage execution (a rerun that reuses caches takes seconds, so the
# manifest alone cannot tell what a cold run costs; the report shows the longest recorded execution) ----
HISTORY_FILE = "stage_history.jsonl"


def history_path(run: Run) -> Path:
    return run.root / HISTORY_FILE


def history_record(run: Run, stage: str, fp: str, wall: float, status: str, started: float) -> dict:
    """One execution: what ran, how long, and (if the stage wrote its manifest during this execution) the manifest's
    step times and LLM / generation stats — the manifest itself is overwritten by the next execution."""
    rec = {"utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "run": run.name, "stage": stage,
           "status": status, "wall_time_s": wall, "fingerprint": fp, "params_fingerprint": run.params.fingerprint(),
           "git_commit": git_commit()}
    manifest = run.root / stage / "manifest.json"
    if status == "ran" and manifest.is_file() and manifest.stat().st_mtime >= started:
        m = read_json(manifest) or {}
        rec["steps"] = m.get("wall_time_s")
        rec["llm"] = {k: v for k, v in m.items() if k.endswith("_llm") and isinstance(v, dict)}
        if "generation" in m:
            rec["generation"] = m["generation"]
    return rec


def append_history(run: Run, record: dict) -> Path:
    path = history_path(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def read_history(run_root: Path) -> list[dict]:
    """The run's execution history, oldest first (unreadable lines skipped)."""
    path = Path(run_root) / HISTORY_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("stage"):
            out.append(rec)
    return out
