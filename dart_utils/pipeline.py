"""Run the numbered notebooks in order with papermill (what `make all` and `make stage-NN` call).

Why: one command must rebuild every result, rerun nothing whose inputs did not change, and stop at the first
failing stage showing the failing cell. A stage is skipped when its stamp matches a fingerprint of: the notebook,
the merged parameters, the dart_utils sources, the benchmark files, and the stamps of all earlier stages (their
outputs are this stage's inputs) — and its manifest still exists. Finer caching (LLM calls, adapters) lives inside
the stages.

Stamps and manifests describe only the latest execution, and a rerun that reuses caches takes seconds; so every
execution also appends one line to runs/<run>/stage_history.jsonl (time, stage, wall time, fingerprint, commit,
the manifest's step times and LLM / generation stats), from which the report shows the longest ("cold") run.

    python -m dart_utils.pipeline run --profile cpu [--student NAME] [--params FILE ...] [--stage 00 ...] [--force]
    python -m dart_utils.pipeline report --profile cpu [--price judge=0.27/1.10 ...]   # reports/<run>/report.{md,html}
    python -m dart_utils.pipeline check --profile paper --student qwen2.5-14b
    python -m dart_utils.pipeline list
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from . import data
from .hashing import content_key
from .params import PROJECT_ROOT, Params, ParamsError, load
from .runs import Run, git_commit, project_relative

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
HISTORY_FILE = "stage_history.jsonl"
# dart_utils modules no stage imports: editing them must not invalidate every stage (the report is built after them)
NOT_STAGE_CODE = frozenset({"report.py"})
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def stages() -> list[Path]:
    """Numbered notebooks (NN_name.ipynb), in order. A new stage is a new file: no change here."""
    return sorted(p for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def select(selectors: list[str] | None) -> list[Path]:
    all_stages = stages()
    if not selectors:
        return all_stages
    chosen = []
    for s in selectors:
        match = [p for p in all_stages if p.stem == s or p.stem.startswith(f"{s}_") or p.stem[:2] == s]
        if not match:
            raise SystemExit(f"no stage '{s}'. Stages: {', '.join(p.stem for p in all_stages)}")
        chosen += [m for m in match if m not in chosen]
    return sorted(chosen)


def _hash_files(paths) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(Path(p).name.encode())
        h.update(Path(p).read_bytes())
    return h.hexdigest()


def _notebook_code(path: Path) -> str:
    """Hash only the cells' sources: outputs or metadata touched by JupyterLab do not force a rerun."""
    nb = json.loads(path.read_text())
    return hashlib.sha256(json.dumps([c.get("source") for c in nb["cells"]]).encode()).hexdigest()


def fingerprint(nb: Path, params: Params, previous: list[str]) -> str:
    pkg = PROJECT_ROOT / "dart_utils"
    data_dir = data.data_dir(params)
    data_files = [data_dir / f"{b}.jsonl" for b in params.data.benchmarks if (data_dir / f"{b}.jsonl").is_file()]
    parts = {
        "notebook": _notebook_code(nb),
        "params": params.fingerprint(),
        "code": _hash_files([*(p for p in pkg.glob("*.py") if p.name not in NOT_STAGE_CODE), *pkg.glob("*.yaml")]),
        "data": _hash_files(data_files),
        "previous": previous,
    }
    return content_key(parts)


def _stamp_path(run: Run, stage: str) -> Path:
    return run.root / "stamps" / f"{stage}.json"


def is_current(run: Run, stage: str, fp: str) -> bool:
    stamp = _stamp_path(run, stage)
    if not stamp.is_file():
        return False
    recorded = json.loads(stamp.read_text())
    return recorded.get("fingerprint") == fp and (run.root / stage / "manifest.json").is_file()


def history_path(run: Run) -> Path:
    return run.root / HISTORY_FILE


def _history_record(run: Run, stage: str, fp: str, wall: float, status: str, started: float) -> dict:
    """One execution: what ran, how long, and (if the stage wrote its manifest during this execution) the manifest's
    step times and LLM / generation stats — the manifest itself is overwritten by the next execution."""
    rec = {"utc": datetime.now(UTC).isoformat(timespec="seconds"), "run": run.name, "stage": stage,
           "status": status, "wall_time_s": wall, "fingerprint": fp, "params_fingerprint": run.params.fingerprint(),
           "git_commit": git_commit()}
    manifest = run.root / stage / "manifest.json"
    if status == "ran" and manifest.is_file() and manifest.stat().st_mtime >= started:
        try:
            m = json.loads(manifest.read_text())
        except ValueError:
            m = {}
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


def _failure_report(executed: Path, stage: str) -> str:
    """The cell that failed and its error, read from papermill's executed copy."""
    try:
        nb = json.loads(executed.read_text())
    except (OSError, ValueError):
        return f"stage {stage} failed; no executed notebook at {executed}"
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                src = "".join(cell.get("source", ""))
                tb = _ANSI.sub("", "\n".join(out.get("traceback", [])))
                return (f"\nStage {stage} FAILED in cell {i} ({executed}):\n"
                        f"---- cell source ----\n{src}\n---- error ----\n{tb[-4000:]}\n"
                        f"{out.get('ename')}: {_ANSI.sub('', str(out.get('evalue')))}\n")
    return f"stage {stage} failed; see {executed}"


def run_stages(params: Params, selectors: list[str] | None = None, force: bool = False,
               extra_files: list[str] | None = None) -> list[dict]:
    """Execute the selected stages in order; skip current ones; stop with the failing cell on error."""
    import papermill as pm  # imported here so `check`/`list` stay fast

    run = Run(params)
    run.write_params()
    run.notebooks_dir.mkdir(parents=True, exist_ok=True)
    chosen = select(selectors)
    previous: list[str] = []
    results = []
    for nb in stages():
        stage = nb.stem
        fp = fingerprint(nb, params, previous)
        previous.append(fp)
        if nb not in chosen:
            continue
        if not force and is_current(run, stage, fp):
            print(f"[pipeline] {stage}: up to date for {run.describe()} — skipped", flush=True)
            results.append({"stage": stage, "status": "skipped"})
            continue
        executed = run.notebooks_dir / nb.name
        print(f"[pipeline] {stage}: running for {run.describe()} -> {project_relative(executed)}", flush=True)
        t0, started = time.perf_counter(), time.time()
        try:
            pm.execute_notebook(
                str(nb), str(executed), cwd=str(NOTEBOOKS_DIR), kernel_name="python3", progress_bar=False,
                log_output=False,
                parameters={"profile": params.profile, "student": params.student_file,
                            "extra_params": list(extra_files or []), "params": params.to_dict()},
            )
        except pm.PapermillExecutionError:
            append_history(run, _history_record(run, stage, fp, round(time.perf_counter() - t0, 1), "failed", started))
            print(_failure_report(executed, stage), file=sys.stderr, flush=True)
            raise SystemExit(1)
        wall = round(time.perf_counter() - t0, 1)
        append_history(run, _history_record(run, stage, fp, wall, "ran", started))
        stamp = _stamp_path(run, stage)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({"fingerprint": fp, "wall_time_s": wall, "notebook": str(executed)}))
        print(f"[pipeline] {stage}: done in {wall:.1f} s", flush=True)
        results.append({"stage": stage, "status": "ran", "wall_time_s": wall})
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dart_utils.pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["run", "report", "check", "list"])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--student", default="")
    ap.add_argument("--params", nargs="*", default=[], help="extra parameter files, merged last")
    ap.add_argument("--stage", nargs="*", default=None, help="stage names or numbers (default: all)")
    ap.add_argument("--force", action="store_true", help="rerun even if up to date")
    ap.add_argument("--price", nargs="*", default=[], metavar="ROLE=IN/OUT",
                    help="report only: USD per million prompt/completion tokens of an API role, e.g. judge=0.27/1.10")
    args = ap.parse_args(argv)
    if args.command == "list":
        print("\n".join(p.stem for p in stages()))
        return 0
    extra = [str(Path(f).resolve()) for f in args.params if f]
    try:
        params = load(args.profile, args.student or None, extra)
    except ParamsError as e:
        print(f"[pipeline] {e}", file=sys.stderr)
        return 2
    if args.command == "check":
        print(f"[pipeline] parameters OK for {Run(params).describe()} (fingerprint {params.fingerprint()})")
        return 0
    if args.command == "report":
        from .report import build_report, parse_prices
        try:
            prices = parse_prices(args.price)
        except ValueError as e:
            print(f"[pipeline] {e}", file=sys.stderr)
            return 2
        paths = build_report(params, prices=prices)
        print(f"[pipeline] report for {Run(params).describe()}: " + ", ".join(project_relative(p) for p in
                                                                             paths.values()))
        return 0
    results = run_stages(params, args.stage, args.force, extra)
    ran = [r for r in results if r["status"] == "ran"]
    print(f"[pipeline] {Run(params).describe()}: {len(ran)} stage(s) ran, {len(results) - len(ran)} up to date; "
          f"times: " + ", ".join(f"{r['stage']} {r['wall_time_s']} s" for r in ran))
    return 0


if __name__ == "__main__":
    sys.exit(main())
