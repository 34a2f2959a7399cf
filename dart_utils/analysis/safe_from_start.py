"""§3.3's "safe-from-start" variants against the staged design: one row per finished run, from its artifacts.

Why: §3.3 argues that suppressing harmful elaboration already in Stage I costs the capability DART keeps: "Stronger
safety prompting cuts initial drift cases from 435 to 182, but also drops EQUAL accuracy from 71.6% to 59.6%;
shortening rationales to 1–2 sentences reduces drift further (95 cases) but collapses EQUAL accuracy to 52.3%. Even
after Stage III repair ... 60.7% vs. 72.6% EQUAL accuracy for Stage I-safe". Each variant is a run of its own
(`make all STUDY=safe_prompt`, `STUDY=short_rationales`: `distill.variant`, `run.tag`), so the table is assembled
after the fact, like Table 15 (`cross_family.run_row`: M_int and M_DART accuracy and EQUAL, Stage II drift cases,
the cases left after repair), with M_int's median rationale toxicity, each run's Stage I variant read from its
parameters and the paper's stated values beside. `make compare RUNS="cpu cpu-safe cpu-short" TABLE=safe_from_start`
writes tables/compare/safe_from_start.*.
"""
from __future__ import annotations

from pathlib import Path
from statistics import median

import pandas as pd
import yaml

from ..core.paper import reported
from .cross_family import _artifact, run_row
from .statistics import mcnemar_exact, paired_correctness, permutation_test_median_shift

NAME, TITLE = "safe_from_start", "Safe-from-start variants vs the staged design (§3.3)"
COLUMNS = ["run", "Stage I variant", "seed", "test n", "acc M_int", "p acc M_int", "EQUAL M_int", "p EQUAL M_int",
           "tox. median M_int", "p tox. M_int", "drift cases (II)", "p drift (II)", "acc M_DART", "p acc M_DART",
           "EQUAL M_DART", "p EQUAL M_DART", "remaining after repair", "drift reduction %"]


def _toxicity(run_root: Path, model: str = "m_int") -> dict[str, float]:
    """Each test item's rationale toxicity for `model` under the run's scorer (notebook 02's harm scores)."""
    return {r["id"]: r["toxicity"] for r in _artifact(run_root, "harm_scores") or []
            if r.get("model") == model and r.get("toxicity") is not None}


def _paired_p(ref: Path, run: Path) -> dict:
    """Exact McNemar p of `run` against the reference run `ref` on the same test items.

    Why: with 128 test items on `cpu` a few points of EQUAL accuracy or one drift case more or less is noise; the
    paper's claim is a paired one (same items, another Stage I). acc / EQUAL: correctness of M_int / M_DART on all
    test items / on the EQUAL items; drift: each test item's Stage II drift flag (in the run's drift pool or not). A p
    is None where either run lacks the artifact or the two runs' test items differ (then they are not paired).
    tox.: the variants exist to make Stage I's rationales less harmful, so M_int's rationale toxicity is compared too,
    with §3.2's paired permutation test of the median shift (`permutation_test_median_shift`)."""
    out = {}
    for model, name in (("m_int", "M_int"), ("m_dart", "M_DART")):
        a, b = _artifact(ref, f"predictions_{model}"), _artifact(run, f"predictions_{model}")
        a, b = (pd.DataFrame(a), pd.DataFrame(b)) if a is not None and b is not None else (None, None)
        for subset, col in ((None, f"p acc {name}"), ("EQUAL", f"p EQUAL {name}")):
            out[col] = None
            if a is None:
                continue
            try:
                ca, cb = (paired_correctness(a, b) if subset is None else
                          paired_correctness(a[a["condition"] == subset], b[b["condition"] == subset]))
            except ValueError:
                continue
            out[col] = mcnemar_exact(ca, cb)["p"]
    test_a, test_b = _artifact(ref, "predictions_m0"), _artifact(run, "predictions_m0")
    pool_a, pool_b = _artifact(ref, "drift_pool"), _artifact(run, "drift_pool")
    ids = sorted(r["id"] for r in test_a or [])
    if pool_a is None or pool_b is None or not ids or ids != sorted(r["id"] for r in test_b or []):
        out["p drift (II)"] = None
    else:
        in_a, in_b = {r["id"] for r in pool_a}, {r["id"] for r in pool_b}
        out["p drift (II)"] = mcnemar_exact([i in in_a for i in ids], [i in in_b for i in ids])["p"]
    tox_a, tox_b = _toxicity(ref), _toxicity(run)
    out["p tox. M_int"] = None
    if tox_a and set(tox_a) == set(tox_b):
        order = sorted(tox_a)
        out["p tox. M_int"] = permutation_test_median_shift([tox_a[i] for i in order], [tox_b[i] for i in order])["p"]
    return out


def _params(run_root: Path) -> dict:
    f = Path(run_root) / "params.yaml"
    if not f.is_file():
        raise FileNotFoundError(f"{run_root}: no params.yaml (the run has not started)")
    return yaml.safe_load(f.read_text(encoding="utf-8")) or {}


def variant(run_root: Path) -> str:
    """The run's `distill.variant` from its params.yaml ("standard" for runs older than the key)."""
    return (_params(run_root).get("distill") or {}).get("variant", "standard")


def seed(run_root: Path) -> int | None:
    """The run's `run.seed` (teacher sampling, LoRA, generation): a run of the standard variant with another seed is
    the table's noise reference for the variants' differences."""
    return (_params(run_root).get("run") or {}).get("seed")


def table(run_roots: list[Path]) -> pd.DataFrame:
    """One row per run (its variant, Stage I and Stage III numbers), then the paper's stated values per variant."""
    if not run_roots:
        raise ValueError("safe_from_start: name at least one run (RUNS=\"cpu cpu-safe cpu-short\")")
    rows = [{**run_row(r), "Stage I variant": variant(r), "seed": seed(r)} for r in run_roots]
    for root, row in zip(run_roots, rows):
        tox = _toxicity(root)
        row["tox. median M_int"] = median(tox.values()) if tox else None
    for root, row in zip(run_roots[1:], rows[1:]):
        row.update(_paired_p(run_roots[0], root))
    paper = reported("safe_from_start")
    for v in ("standard", "safe", "short"):
        p = paper[v]
        rows.append({"run": "paper (Llama-3-8B)", "Stage I variant": v, "EQUAL M_int": p.get("equal_m_int"),
                     "drift cases (II)": p.get("drift_cases"), "EQUAL M_DART": p.get("equal_m_dart")})
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    for c in ("acc M_int", "EQUAL M_int", "acc M_DART", "EQUAL M_DART"):
        df[c] = df[c].astype(float).round(3)
    for c in [c for c in COLUMNS if c.startswith("p ")] + ["tox. median M_int"]:
        df[c] = df[c].astype(float).map(lambda v: float(f"{v:.3g}"), na_action="ignore")
    df.attrs["note"] = (
        "Ours: one row per run, from its artifacts (test split, unparsed = wrong); drift cases are the judge-"
        "confirmed Stage II cases, 'remaining' the re-audit's after Stage III. Variants ([choice] wording, "
        "dart_utils/dart/prompts.py): safe = E.1 with E.2's safety sentences; short = E.1 asking for 1–2 "
        "sentences, targets validated to 1–2. Paper: §3.3 running text (Llama-3-8B, 1,624 test items; EQUAL as "
        "fractions); it states no accuracy for the variants and no M_DART EQUAL for the short one. p: exact "
        "McNemar against the first run on the same test items (acc: correctness on all of them; EQUAL: on the "
        "EQUAL items; drift: each item's Stage II drift flag); '—' where an artifact is missing or the items "
        "differ. tox. median M_int: median toxicity of M_int's rationales under the run's scorer (notebook 02; on "
        "cpu alt-profanity-check, not the paper's RoBERTa); its p: paired permutation test of the median shift "
        "against the first run (§3.2's test).")
    return df


def main(argv: list[str] | None = None) -> int:
    from .cross_family import compare_cli
    return compare_cli(argv, "safe_from_start", __doc__, table, NAME, TITLE, "safe_from_start",
                       "cpu cpu-safe cpu-short")


if __name__ == "__main__":
    raise SystemExit(main())
