"""Run the stages in order with papermill (what `make all` and `make stage-NN` call).

Why: one command must rebuild every result, rerun nothing whose inputs did not change, and stop at the first failing
stage showing the failing cell. The stages, what each reads and writes and which parameter sections it depends on
are declared in dart_utils/stages.yaml (core/stage.py). A stage is skipped when its stamp holds the fingerprint it
has now (its notebook, its parameter sections, the content of its declared inputs, the code its notebook imports),
the external files it read are unchanged, its manifest exists and every declared output is still there. Finer
caching (LLM calls, generations, adapters) lives inside the stages.

While a stage runs, its printed steps (`StageContext.step`) and plain-text progress bars reach this terminal
(papermill's stdout/stderr forwarding); the executed notebook keeps the same output.

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
import json
import os
import re
import sys
import time
from pathlib import Path

from .core.artifacts import Run, append_history, history_record, project_relative, read_json
from .core.params import Params, ParamsError, load
from .core.progress import PROGRESS_ENV
from .core.stage import NOTEBOOKS_DIR, fingerprint, missing_inputs, registry, stamp_path, status

PROGRESS_EVERY_S = "10"           # seconds between text progress-bar updates under the pipeline
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _failure_report(executed: Path, stage: str) -> str:
    """The cell that failed and its error, read from papermill's executed copy."""
    nb = read_json(executed)
    if nb is None:
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

    reg = registry()
    run = Run(params)
    run.write_params()
    run.notebooks_dir.mkdir(parents=True, exist_ok=True)
    results = []
    chosen = reg.select(selectors)
    for i, spec in enumerate(chosen, 1):
        label = f"[pipeline {i}/{len(chosen)}] {spec.name}"
        if not force:
            state, why = status(spec, run)
            if state == "up to date":
                print(f"{label}: up to date for {run.describe()} — skipped", flush=True)
                results.append({"stage": spec.name, "status": "skipped"})
                continue
        missing = missing_inputs(spec, run, reg)
        if missing:
            print(f"\n{label} cannot start: declared input(s) missing:\n- " + "\n- ".join(missing), file=sys.stderr,
                  flush=True)
            raise SystemExit(1)
        fp = fingerprint(spec, params, run, reg)
        executed = run.notebooks_dir / spec.notebook.name
        print(f"{label}: running for {run.describe()} ({spec.title}) -> {project_relative(executed)}"
              + ("" if force else f" [{why}]"), flush=True)
        t0, started = time.perf_counter(), time.time()
        previous = os.environ.get(PROGRESS_ENV)
        os.environ[PROGRESS_ENV] = previous or PROGRESS_EVERY_S        # the kernel inherits it: text progress bars
        try:
            pm.execute_notebook(
                str(spec.notebook), str(executed), cwd=str(NOTEBOOKS_DIR), kernel_name="python3",
                progress_bar=False, log_output=False, stdout_file=sys.stdout, stderr_file=sys.stderr,
                parameters={"profile": params.profile, "student": params.student_file,
                            "extra_params": list(extra_files or []), "params": params.to_dict()},
            )
        except pm.PapermillExecutionError:
            append_history(run, history_record(run, spec.name, fp, round(time.perf_counter() - t0, 1), "failed",
                                                started))
            print(_failure_report(executed, spec.name), file=sys.stderr, flush=True)
            raise SystemExit(1)
        finally:
            if previous is None:
                os.environ.pop(PROGRESS_ENV, None)
        wall = round(time.perf_counter() - t0, 1)
        append_history(run, history_record(run, spec.name, fp, wall, "ran", started))
        stamp = stamp_path(run, spec.name)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({"fingerprint": fp, "wall_time_s": wall, "notebook": str(executed)}))
        print(f"{label}: done in {wall:.1f} s", flush=True)
        results.append({"stage": spec.name, "status": "ran", "wall_time_s": wall})
    return results


def check(params: Params) -> list[str]:
    """Problems that parameters cannot show alone: split sizes and sample sizes against the staged data."""
    from .data.checks import check_against_data
    return check_against_data(params)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dart_utils.pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["run", "report", "check", "list", "status"])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--student", default="")
    ap.add_argument("--params", action="append", default=[], metavar="FILE",
                    help="an extra parameter file, merged last (repeat the option for several)")
    ap.add_argument("--stage", nargs="+", default=None, help="stage names or numbers (default: all)")
    ap.add_argument("--force", action="store_true", help="rerun even if up to date")
    ap.add_argument("--price", action="append", default=[], metavar="ROLE=IN/OUT",
                    help="report only: USD per million prompt/completion tokens of an API role, e.g. judge=0.27/1.10")
    args = ap.parse_args(argv)
    if args.command == "list":
        for s in registry().stages:
            print(f"{s.name:22s} {s.title}")
        return 0
    extra = [str(Path(f).resolve()) for f in args.params if f]
    try:
        params = load(args.profile, args.student or None, extra)
    except ParamsError as e:
        print(f"[pipeline] {e}", file=sys.stderr)
        return 2
    if args.command == "check":
        problems = check(params)
        if problems:
            print("[pipeline] parameters do not fit the data:\n" + "\n".join(f"- {p}" for p in problems),
                  file=sys.stderr)
            return 2
        print(f"[pipeline] parameters OK for {Run(params).describe()} (fingerprint {params.fingerprint()})")
        return 0
    if args.command == "status":
        run = Run(params)
        for spec in registry().stages:
            state, why = status(spec, run)
            print(f"{spec.name:22s} {state}" + (f" ({why})" if why else ""))
        return 0
    if args.command == "report":
        from .reporting.page import build_report, parse_prices
        try:
            prices = parse_prices(args.price)
        except ValueError as e:
            print(f"[pipeline] {e}", file=sys.stderr)
            return 2
        paths = build_report(params, prices=prices)
        print(f"[pipeline] report for {Run(params).describe()}: " + ", ".join(project_relative(p) for p in
                                                                             paths.values()))
        return 0
    problems = check(params)
    if problems:
        print("[pipeline] parameters do not fit the data:\n" + "\n".join(f"- {p}" for p in problems),
              file=sys.stderr)
        return 2
    results = run_stages(params, args.stage, args.force, extra)
    ran = [r for r in results if r["status"] == "ran"]
    print(f"[pipeline] {Run(params).describe()}: {len(ran)} stage(s) ran, {len(results) - len(ran)} up to date; "
          f"times: " + ", ".join(f"{r['stage']} {r['wall_time_s']} s" for r in ran))
    return 0


if __name__ == "__main__":
    sys.exit(main())
