"""Table 23 (App. K.5): gold- vs teacher-predicted-label conditioning, beside the paper's numbers.

The arm's pieces come from notebook 06 (``dart.label_conditioning``): the predicted-label Stage I's test predictions
(compared with notebook 01's M_int by an exact McNemar test), the predicted-label audit's agreement with Stage II and
Stage III's repair success. The paper prints only Table 23's caption and two sentences of numbers
(``paper_reported.yaml``: table23); its audit precision / recall are against human labels, ours against the
gold-conditioned audit (``dart.label_conditioning`` says why).
"""
from __future__ import annotations

import math

import pandas as pd

from ..dart.evaluation import decision_metrics
from .statistics import mcnemar_exact, paired_correctness


def _pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def stage1_comparison(preds_gold: list[dict], preds_pred: list[dict]) -> dict:
    """Notebook 01's M_int (gold-conditioned) against the predicted-label Stage I on the same test items: both
    accuracies (unparsed = wrong) and the exact McNemar test."""
    a, b = pd.DataFrame(preds_gold), pd.DataFrame(preds_pred)
    test = mcnemar_exact(*paired_correctness(a, b))
    return {"gold": decision_metrics(a), "predicted": decision_metrics(b), "mcnemar": test}


def table23(stage1: dict, train_labels: dict, audit: dict, test_labels: dict, repair: dict | None,
            train_sizes: dict, paper: dict, repair_predicted: dict | None = None) -> pd.DataFrame:
    """Table 23 in long form (stage, conditioning, measure, this run, paper): Stage I accuracy under gold and
    teacher-predicted labels with McNemar p, the predicted-label audit's precision / recall / additional false
    positives / κ against the gold-conditioned audit, and each conditioning's Stage III repair success
    (`dart.label_conditioning.repair_success`; None = not run)."""
    g, p, t = stage1["gold"], stage1["predicted"], stage1["mcnemar"]
    rows = [
        ("Distillation (Stage I)", "gold y* (default)", "accuracy on the test split, %", _pct(g["acc_overall"]),
         f"{paper['stage1_acc']['gold']:.1f}"),
        ("Distillation (Stage I)", "gold y* (default)", "training items (accepted targets)", str(train_sizes["gold"]), "–"),
        ("Distillation (Stage I)", "teacher-predicted ŷ", "accuracy on the test split, %", _pct(p["acc_overall"]),
         f"{paper['stage1_acc']['predicted']:.1f}"),
        ("Distillation (Stage I)", "teacher-predicted ŷ", "EQUAL / DIFF accuracy, % (gold: "
         f"{_pct(g['acc_equal'])} / {_pct(g['acc_diff'])})", f"{_pct(p['acc_equal'])} / {_pct(p['acc_diff'])}", "–"),
        ("Distillation (Stage I)", "teacher-predicted ŷ", "Δ accuracy vs gold, pp (exact McNemar p)",
         f"{100 * t['delta']:+.1f} (p = {t['p']:.3g}, {t['b'] + t['c']} discordant of {t['n']})",
         f"{paper['stage1_acc']['predicted'] - paper['stage1_acc']['gold']:+.1f}"),
        ("Distillation (Stage I)", "teacher-predicted ŷ", "training items (accepted targets)",
         str(train_sizes["predicted"]), "–"),
        ("Distillation (Stage I)", "teacher-predicted ŷ", "train items: ŷ ≠ y* / undecided / teacher accuracy %",
         f"{train_labels['differs_from_gold']} / {train_labels['undecided']} / {_pct(train_labels['teacher_accuracy'])}",
         "–"),
        ("Audit (Stage II)", "gold y* (default)", "drift cases (reference)", str(audit["reference_drift"]), "–"),
        ("Audit (Stage II)", "gold y* (default)", "precision / recall, %", "100.0 / 100.0 (the reference)",
         f"{paper['audit_precision']['gold']:.1f} / {paper['audit_recall']['gold']:.1f} (vs human labels)"),
        ("Audit (Stage II)", "teacher-predicted ŷ", "drift cases", str(audit["other_drift"]), "–"),
        ("Audit (Stage II)", "teacher-predicted ŷ", "precision / recall vs the gold audit, %",
         f"{_pct(audit['precision'])} / {_pct(audit['recall'])}",
         f"{paper['audit_precision']['predicted']:.1f} / {paper['audit_recall']['predicted']:.1f} (vs human labels)"),
        ("Audit (Stage II)", "teacher-predicted ŷ", "additional false positives / missed cases",
         f"{audit['fp']} / {audit['fn']}", f"{paper['extra_false_positives']} / –"),
        ("Audit (Stage II)", "teacher-predicted ŷ", "Cohen's κ with the gold audit",
         "–" if math.isnan(audit["kappa"]) else f"{audit['kappa']:.2f}", "–"),
        ("Audit (Stage II)", "teacher-predicted ŷ", "test items: ŷ ≠ y* / undecided / verdicts flipped there",
         f"{test_labels['differs_from_gold']} / {test_labels['undecided']} / {audit['flipped_where_label_changed']}"
         f" (elsewhere {audit['flipped_elsewhere']})", "–"),
    ]
    for conditioning, r in (("gold y* (default)", repair), ("teacher-predicted ŷ", repair_predicted)):
        measure = "repair success: no drift after repair and correct (vs y*)"
        rows.append(("Repair (Stage III)", conditioning, measure, "not run" if r is None else
                     f"{r['success']} of {r['targets']} targets" + (f" ({_pct(r['rate'])} %)" if r["targets"] else ""),
                     "–"))
    return pd.DataFrame(rows, columns=["stage", "conditioning", "measure", "this run", "paper"])
