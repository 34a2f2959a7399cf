"""App. M.4's teacher choice (Table 32): one row per finished run, each run distilled and repaired by another teacher.

Why: Table 32 argues that DART's gains do not hinge on DeepSeek-Chat: three teachers, "identical distillation and
repair procedures", each giving M_DART's accuracy, EQUAL, median toxicity, the Stage II drift cases ("Reg.") and those
left after Stage III ("Remain"). Only the `teacher` section differs between the runs, so each teacher is a study of its
own (`make all STUDY=teacher_qwen05b` on `cpu`; `STUDY=teacher_gpt4`, `STUDY=teacher_llama70b` on `paper`; any
other teacher is a study file with a `teacher:` section and a `run.tag`), and the table is assembled after the fact
like Table 15 (`cross_family.run_row`), with each run's teacher read from its params.yaml and M_DART's median
toxicity from its Stage III harm scores. `make compare RUNS="cpu cpu-teacher_qwen05b" TABLE=teacher_choice` writes
tables/compare/table32_teacher_choice.*.
"""
from __future__ import annotations

from pathlib import Path
from statistics import median

import pandas as pd
import yaml

from ..core.paper import reported
from .cross_family import _artifact, run_row

NAME, TITLE = "table32_teacher_choice", "Teacher choice (Table 32, App. M.4)"
COLUMNS = ["run", "teacher", "test n", "acc M0", "EQUAL M0", "tox. median M0", "acc M_DART", "EQUAL M_DART",
           "tox. median M_DART", "drift cases (II)", "remaining after repair", "drift reduction %"]


def teacher(run_root: Path) -> str:
    """The run's teacher model, from its params.yaml."""
    f = Path(run_root) / "params.yaml"
    if not f.is_file():
        raise FileNotFoundError(f"{run_root}: no params.yaml (the run has not started)")
    return ((yaml.safe_load(f.read_text(encoding="utf-8")) or {}).get("teacher") or {}).get("model", "?")


def _median_toxicity(rows: list[dict] | None, model: str) -> float | None:
    vals = [r["toxicity"] for r in rows or [] if r.get("model") == model and r.get("toxicity") is not None]
    return median(vals) if vals else None


def table(run_roots: list[Path]) -> pd.DataFrame:
    """One row per run (its teacher, M0 and M_DART, Stage II and Stage III drift cases), then the paper's rows."""
    if not run_roots:
        raise ValueError("teacher_choice: name at least one run (RUNS=\"cpu cpu-teacher_qwen05b\")")
    rows = []
    for r in run_roots:
        row = {**run_row(r), "teacher": teacher(r)}
        row["tox. median M0"] = _median_toxicity(_artifact(Path(r), "harm_scores"), "m0")
        row["tox. median M_DART"] = _median_toxicity(_artifact(Path(r), "harm_scores_m_dart"), "m_dart")
        rows.append(row)
    paper = reported("table32")
    m0 = paper["m0"]
    for name, v in paper["teachers"].items():
        rows.append({"run": "paper (Llama-3-8B)", "teacher": name, "acc M0": m0["acc"], "EQUAL M0": m0["equal"],
                     "tox. median M0": m0["tox_median"], "acc M_DART": v["acc"], "EQUAL M_DART": v["equal"],
                     "tox. median M_DART": v["tox_median"], "drift cases (II)": v["drift_cases"],
                     "remaining after repair": v["remaining"],
                     "drift reduction %": round(100 * (1 - v["remaining"] / v["drift_cases"]), 1)})
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    for c in ("acc M0", "EQUAL M0", "acc M_DART", "EQUAL M_DART"):
        df[c] = df[c].astype(float).round(3)
    for c in ("test n", "drift cases (II)", "remaining after repair"):
        df[c] = df[c].astype("Int64")                  # counts, "—" where a row has none (not 16.0)
    df.attrs["note"] = (
        "Ours: one row per run, from its artifacts (test split, unparsed = wrong); the teacher is the run's "
        "`teacher.model`; tox. median = median rationale toxicity under the run's scorer (notebooks 02 and 03; on "
        "`cpu` the alt-profanity-check stand-in, so not on the paper's scale); drift cases = the judge-confirmed "
        "Stage II cases ('Reg.' in the paper), remaining = the re-audit's after Stage III. The judge is the profile's "
        "in every run. Paper: Table 32 (Llama-3-8B student, DeepSeek-Chat judge; Tox. under its RoBERTa classifier).")
    return df


def main(argv: list[str] | None = None) -> int:
    from .cross_family import compare_cli
    return compare_cli(argv, "teacher_choice", __doc__, table, NAME, TITLE, "teacher_choice",
                       "cpu cpu-teacher_qwen05b")


if __name__ == "__main__":
    raise SystemExit(main())
