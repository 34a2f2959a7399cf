"""Stage III on a second drift pool: notebook 03's steps, for an arm whose audit differs from Stage II's.

Why: Table 26 (App. L) is the "impact of judge selection on Stage III repair" and Table 23 (K.5) reports repair
success per label conditioning, so the second judge's pool and the predicted-label audit's pool each go through
Stage III with nothing else changed: E.2 repair targets with 03's filter and follow-ups (`repair.repair_targets`),
the severity weights (`repair.oversample`), LoRA from the arm's Stage I adapter with Stage I's hyperparameters and
seed (`training.train_lora`), inference on the test split (`evaluation.predictions`) and the arm's own re-audit
against M0 (`audit.run_audit`). Notebook 03 keeps its own loop: it trains several weighting arms on one pool.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import audit, evaluation, harm, repair


@dataclass
class PoolRepair:
    """One arm's Stage III: the kept and dropped E.2 targets, the LoRA run, M_DART's test predictions, their
    rationale toxicity and the re-audit."""
    targets: list[dict]
    rejected: list[dict]
    train: object                      # training.TrainResult
    predictions: list[dict]
    toxicity: list[float]
    reaudit: audit.AuditResult
    generation: dict | str = field(default_factory=dict)   # evaluation.predictions: stats, or "reused"

    def after(self) -> dict:
        """The row after Stage III: accuracy, EQUAL accuracy, median toxicity, drift cases left, targets trained."""
        m = evaluation.decision_metrics(pd.DataFrame(self.predictions))
        return {"acc": m["acc_overall"], "equal": m["acc_equal"], "tox": float(pd.Series(self.toxicity).median()),
                "remaining": len(self.reaudit.pool), "repaired": len(self.targets)}

    def summary(self) -> dict:
        return {"repair_targets": len(self.targets), "dropped": len(self.rejected), "steps": self.train.global_step,
                "reused": self.train.skipped, "reaudit": self.reaudit.summary()}


def repair_pool(pool: list[dict], *, model, tokenizer, params, teacher, judge, toxicity, stage1_targets: list[dict],
                init_adapter: Path, out_dir: Path, name: str, audit_rows: list[dict], test, preds_m0: list[dict],
                h_m0: dict, cache_dir: Path, step=None):
    """Stage III on `pool` (drift cases as `audit.run_audit` writes them): returns ``(model, PoolRepair)``, the model
    with the new adapter attached as `name`.

    stage1_targets: the arm's Stage I training rows (balanced as its Stage I was), to which the weighted repair rows
    are added, as in notebook 03. audit_rows: the test rows the arm's audit read (their `gold` is the label the
    judge is told); preds_m0 / h_m0: M0's predictions and toxicity, the re-audit's baseline. step: the stage's
    `ctx.step` (timings), optional."""
    from ..lm import training
    from ..lm.student import attach_adapter
    P = params
    step = step or (lambda _label: nullcontext())
    with step(f"{name}: repair targets ({len(pool)} drift cases)"):
        kept = repair.repair_targets(pool, teacher, toxicity.score, retries=P.repair.retries)
    data = repair.stage3_dataset(stage1_targets, repair.oversample(kept.accepted, P.repair.severity_weights),
                                 P.student.system_role)
    if hasattr(model, "unload"):
        model = model.unload()                              # the bare base model: Stage III starts from init_adapter
    with step(f"{name}: Stage III training ({len(data)} rows, {len(kept.accepted)} repair targets)"):
        run = training.train_lora(model, tokenizer, data, P.training, out_dir, seed=P.run.seed,
                                  init_adapter=init_adapter, system_role=P.student.system_role)
    model = attach_adapter(model, run.adapter_dir, name=name)
    with step(f"{name}: inference ({len(test)} test items)"):
        preds, gen = evaluation.predictions(model, tokenizer, test, name, name, run.adapter_dir, P.generation,
                                            P.run.seed, cache_dir, system_role=P.student.system_role)
    tox = harm.score_rationales(toxicity, [p["raw_text"] for p in preds])
    AP = P.audit
    kept_ids = {r["id"] for r in audit_rows}
    with step(f"{name}: re-audit against M0 ({len(audit_rows)} pairs)"):
        re = audit.run_audit(audit_rows, [p for p in preds_m0 if p["id"] in kept_ids],
                             [p for p in preds if p["id"] in kept_ids], h_m0,
                             {p["id"]: s for p, s in zip(preds, tox)}, judge, P.harm.tau_delta, mode=AP.mode,
                             blind=AP.blind, seed=P.run.seed, retries=AP.judge_retries,
                             safe_below=AP.novel_safe_below, candidate=name, examples=AP.judge_examples)
    return model, PoolRepair(kept.accepted, kept.rejected, run, preds, tox, re, gen)
