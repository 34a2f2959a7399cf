"""Cross-family replication (paper App. I.2, Table 15): one row per finished run, assembled from the runs' artifacts.

Why: Table 15 sets the same pipeline on several student families side by side (Δ accuracy, Δ EQUAL, drift
reduction). Each family is a run of its own (`make all STUDENT=...`, or a profile such as `cpu-large`), so the table
is built after the fact from what the runs left behind: M0's and M_DART's test predictions (01, 03), the Stage II
drift pool and the pool remaining after repair (02, 03). A run that has not reached a stage shows "not run" in that
stage's columns (M_int's accuracy stands in the row so that a run stopped after Stage II still says something);
nothing is inferred. `make compare RUNS="cpu cpu-large"` writes tables/compare/table15_cross_family.*.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..core.paper import reported
from ..core.stage import registry
from ..dart.evaluation import decision_metrics
from .statistics import mcnemar_exact, paired_correctness


def _jsonl(path: Path) -> list[dict] | None:
    if not path.is_file():
        return None
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _artifact(run_root: Path, name: str) -> list[dict] | None:
    return _jsonl(registry().artifact(name).location(run_root))


def _student(run_root: Path) -> str | None:
    """The student's name as the stage manifests record it (the first manifest with a plain `student` entry)."""
    for m in sorted(Path(run_root).glob("[0-9][0-9]_*/manifest.json")):
        s = json.loads(m.read_text()).get("student")
        if isinstance(s, str):
            return s
    return None


def run_row(run_root: Path) -> dict:
    """Table 15's numbers for one run directory (runs/<run>)."""
    run_root = Path(run_root)
    if not run_root.is_dir():
        raise FileNotFoundError(f"no run directory {run_root}: run `make all` for it first (see README)")
    preds = {m: _artifact(run_root, f"predictions_{m}") for m in ("m0", "m_int", "m_dart")}
    if preds["m0"] is None:
        raise FileNotFoundError(f"{run_root}: no M0 predictions (stage 01_distill has not finished)")
    frames = {m: pd.DataFrame(p) for m, p in preds.items() if p is not None}
    met = {m: decision_metrics(df) for m, df in frames.items()}
    row = {"run": run_root.name, "student": _student(run_root), "test n": met["m0"]["n"],
           "acc M0": met["m0"]["acc_overall"], "acc M_int": met.get("m_int", {}).get("acc_overall"),
           "acc M_DART": met.get("m_dart", {}).get("acc_overall"),
           "EQUAL M0": met["m0"]["acc_equal"], "EQUAL M_int": met.get("m_int", {}).get("acc_equal"),
           "EQUAL M_DART": met.get("m_dart", {}).get("acc_equal")}
    best = "m_dart" if "m_dart" in frames else "m_int" if "m_int" in frames else None
    row["compared"] = {"m_dart": "M_DART", "m_int": "M_int (no M_DART)", None: "not run"}[best]
    if best:
        row["Δ acc (pp)"] = round(100 * (met[best]["acc_overall"] - met["m0"]["acc_overall"]), 1)
        row["Δ EQUAL (pp)"] = round(100 * (met[best]["acc_equal"] - met["m0"]["acc_equal"]), 1)
        a, b = paired_correctness(frames["m0"], frames[best])
        row["McNemar p (acc)"] = mcnemar_exact(a, b)["p"]
    before, after = _artifact(run_root, "drift_pool"), _artifact(run_root, "drift_pool_m_dart")
    row["drift cases (II)"] = len(before) if before is not None else None
    row["remaining after repair"] = len(after) if after is not None else None
    row["drift reduction %"] = (round(100 * (1 - len(after) / len(before)), 1)
                                if before and after is not None else None)
    return row


def table15(run_roots: list[Path]) -> pd.DataFrame:
    """One row per run (`run_row`) and the paper's stated rows for its three main students (Table 2), in order."""
    if not run_roots:
        raise ValueError("table15: name at least one run (RUNS=\"cpu cpu-large\")")
    rows = [run_row(r) for r in run_roots]
    t2 = reported("table2")
    for student, v in t2.items():
        if student == "source":
            continue
        rows.append({"run": "paper", "student": student, "acc M0": v["m0"]["acc_overall"],
                     "acc M_DART": v["m_dart"]["acc_overall"], "EQUAL M0": v["m0"]["acc_equal"],
                     "EQUAL M_DART": v["m_dart"]["acc_equal"], "compared": "M_DART",
                     "Δ acc (pp)": round(100 * (v["m_dart"]["acc_overall"] - v["m0"]["acc_overall"]), 1),
                     "Δ EQUAL (pp)": round(100 * (v["m_dart"]["acc_equal"] - v["m0"]["acc_equal"]), 1)})
    df = pd.DataFrame(rows)
    for c in ("acc M0", "acc M_int", "acc M_DART", "EQUAL M0", "EQUAL M_int", "EQUAL M_DART"):
        df[c] = df[c].astype(float).round(3)
    df.attrs["note"] = ("Ours: one row per run, from its artifacts (test split, unparsed = wrong); 'compared' names the "
                        "model set against M0 (M_int when the run has no M_DART). Drift reduction = 1 − remaining / "
                        "Stage II drift cases. McNemar: exact, M0 vs the compared model. Paper rows: Table 2 "
                        "(Llama-3.2-3B, Llama-3-8B, Qwen2.5-14B); Table 15's body (with Mistral and Gemma and the "
                        "drift reductions, 'above 70 % for all but the smallest 3B model') is missing from the text.")
    return df


def save(df: pd.DataFrame, out_dir: Path, runs: list[str], name: str = "table15_cross_family",
         title: str = "Cross-family replication (Table 15)", table: str | None = None) -> dict[str, Path]:
    """tables/compare/<name>.{csv,md,tex}, the runs and the note in the Markdown and LaTeX (`table`: the TABLE=
    value of `make compare` that rebuilds it; None = the default, Table 15)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{name}.{ext}" for ext in ("csv", "md", "tex")}
    df.to_csv(paths["csv"], index=False)
    how = f"make compare RUNS=\"{' '.join(runs)}\"" + (f" TABLE={table}" if table else "")
    head = f"Runs: {', '.join(runs)} (each row from runs/<run>; `{how}`)."
    shown = df.astype(object).where(df.notna(), None)
    paths["md"].write_text(f"# {title}\n\n{head}\n{df.attrs['note']}\n\n"
                           + shown.to_markdown(index=False, missingval="—") + "\n")
    paths["tex"].write_text(df.to_latex(index=False, na_rep="--", label=f"tab:{name}",
                                        caption=f"{title}. {head} {df.attrs['note']}".replace("%", r"\%")
                                        .replace("_", r"\_")))
    return paths


def compare_cli(argv: list[str] | None, module: str, doc: str, build, name: str, title: str,
                table: str | None, example: str) -> int:
    """The command line shared by the tables built from finished runs (`make compare [TABLE=...]`): run names in,
    `build([run roots])` -> DataFrame, saved under <tables_dir>/compare/<name>.*; exit 2 naming a missing run."""
    import argparse
    import sys

    from ..core.params import PROJECT_ROOT, load
    ap = argparse.ArgumentParser(prog=f"python -m dart_utils.analysis.{module}", description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help=f"run names (directories under runs/), e.g. {example}")
    ap.add_argument("--runs-dir", default=None, help="default: run.runs_dir of the parameters")
    ap.add_argument("--out", default=None, help="default: <tables_dir>/compare")
    args = ap.parse_args(argv)
    p = load("cpu")
    runs_dir = Path(args.runs_dir or p.run.runs_dir)
    runs_dir = runs_dir if runs_dir.is_absolute() else PROJECT_ROOT / runs_dir
    out = Path(args.out) if args.out else PROJECT_ROOT / p.run.tables_dir / "compare"
    try:
        df = build([runs_dir / r for r in args.runs])
    except FileNotFoundError as e:
        print(f"[compare] {e}", file=sys.stderr)
        return 2
    paths = save(df, out, args.runs, name, title, table)
    print(df.to_string(index=False))
    print(f"[compare] {paths['md']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return compare_cli(argv, "cross_family", __doc__, table15, "table15_cross_family",
                       "Cross-family replication (Table 15)", None, "cpu cpu-large")


if __name__ == "__main__":
    raise SystemExit(main())
