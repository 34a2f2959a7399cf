"""The training strategies DART is compared against (paper §3.3, App. K.2; Tables 4, 19, 21, 24).

Both arms are trained exactly like Stage I: the same training items (the teacher-accepted targets, label-balanced
when ``distill.balance_labels``), the same E.3 prompt, LoRA shape, hyperparameters and seed (``train_lora``), and
evaluated exactly like M_int (same test prompts and decoding, ``evaluation.predictions``). Only the supervision
differs:

* **label-only SFT** (K.2): the completion is the gold label alone, ``baselines.label_only_target`` ("Conclusion:
  YES"; ``[choice]``: the paper says "(x, y*) pairs without rationales"; this is the conclusion line our parser and
  the teacher targets use, so the two arms differ only by the rationale).
* **toxicity-regularised SFT** (K.2.1): the teacher targets, with L = L_CE + λ·L_tox (``dart.tox_reg``); λ =
  ``baselines.tox_reg_lambda``. The paper picks λ = 0.1 from {0.01 … 0.5} on validation (Table 20); the sweep is not
  run here (README, Not reproduced yet), and ``tox_reg`` explains why that grid need not transfer to another scorer.
"""
from __future__ import annotations

from pathlib import Path

from . import distill

ARMS = {"label_only": "Label-only SFT", "tox_reg": "Toxicity-reg. SFT"}   # model key -> the paper's name


def enabled_arms(bp) -> list[str]:
    """The arms ``baselines`` switches on, in ARMS order."""
    return [arm for arm in ARMS if getattr(bp, arm)]


def stage1_items(accepted: list[dict], balance_labels: bool, seed: int) -> list[dict]:
    """The targets Stage I trained on (notebook 01's selection, recomputed: `distill.balance_labels` is seeded)."""
    return distill.balance_labels(accepted, seed)[0] if balance_labels else list(accepted)


def label_only_targets(targets: list[dict], template: str) -> list[dict]:
    """The same items with the rationale removed: target = template.format(label=gold), gold upper-cased."""
    if "{label}" not in template:
        raise ValueError(f"baselines.label_only_target must contain '{{label}}', got {template!r}")
    out = []
    for t in targets:
        gold = str(t.get("gold", "")).strip().upper()
        if gold not in ("YES", "NO"):
            raise ValueError(f"target {t.get('id')!r} has gold {t.get('gold')!r}, expected YES or NO")
        out.append({**t, "target": template.format(label=gold)})
    return out


def train_label_only(model, tokenizer, targets: list[dict], P, output_dir: Path, log=print):
    """LoRA SFT on (x, y*) with Stage I's hyperparameters -> ``output_dir/adapter`` (a TrainResult)."""
    from ..lm import training
    ds = distill.sft_dataset(label_only_targets(targets, P.baselines.label_only_target), P.student.system_role)
    return training.train_lora(model, tokenizer, ds, P.training, output_dir, seed=P.run.seed, log=log,
                               system_role=P.student.system_role)


def train_tox_reg(model, tokenizer, targets: list[dict], P, output_dir: Path, scorer, log=print):
    """LoRA SFT on the teacher targets with λ·L_tox added (trl trainer subclass, ``tox_reg.extension``).

    The token toxicities t_v (the scorer once over the vocabulary) carry the gradient; the scorer's description and
    λ join the adapter's fingerprint, so changing either retrains."""
    from ..lm import training
    from . import tox_reg
    lam = P.baselines.tox_reg_lambda
    ds = distill.sft_dataset(targets, P.student.system_role)
    key = {"arm": "tox_reg", "lambda": lam, "scorer": scorer.describe()}
    t = tox_reg.token_toxicity(tokenizer, scorer)   # seconds on cpu; also when the adapter is reused (simpler)
    return training.train_lora(model, tokenizer, ds, P.training, output_dir, seed=P.run.seed, log=log,
                               system_role=P.student.system_role,
                               extend_trainer=tox_reg.extension(lam, scorer, t, tokenizer), extend_key=key)
