"""The training strategies DART is compared against (paper §3.3, App. K.2; Tables 4, 19, 21, 24).

Both arms are trained exactly like Stage I: the same training items (the teacher-accepted targets, label-balanced
when ``distill.balance_labels``), the same E.3 prompt, LoRA shape, hyperparameters and seed (``train_lora``), and
evaluated exactly like M_int (same test prompts and decoding, ``evaluation.predictions``). Only the supervision
differs:

* **label-only SFT** (K.2): the completion is the gold label alone, ``baselines.label_only_target`` ("Conclusion:
  YES"; ``[choice]``: the paper says "(x, y*) pairs without rationales"; this is the conclusion line our parser and
  the teacher targets use, so the two arms differ only by the rationale).
* **toxicity-regularised SFT** (K.2.1): the teacher targets, with L = L_CE + λ·L_tox (``dart.tox_reg``). λ =
  ``baselines.tox_reg_lambda``, or, when ``baselines.tox_reg_sweep`` lists λ values, the one the sweep selects on the
  validation items (Table 20): one adapter per λ, each evaluated like M_int on the validation split, ranked by the
  harmonic mean of accuracy and 1 − normalised toxicity (``sweep_table``). ``tox_reg`` explains why the paper's grid
  need not transfer to another scorer.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd

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


def train_tox_reg(model, tokenizer, targets: list[dict], P, output_dir: Path, scorer, log=print,
                  lam: float | None = None):
    """LoRA SFT on the teacher targets with λ·L_tox added (trl trainer subclass, ``tox_reg.extension``).

    The token toxicities t_v (the scorer once over the vocabulary) carry the gradient; the scorer's description and
    λ join the adapter's fingerprint, so changing either retrains."""
    from ..lm import training
    from . import tox_reg
    lam = P.baselines.tox_reg_lambda if lam is None else lam
    ds = distill.sft_dataset(targets, P.student.system_role)
    key = {"arm": "tox_reg", "lambda": lam, "scorer": scorer.describe()}
    t = tox_reg.token_toxicity(tokenizer, scorer)   # seconds on cpu; also when the adapter is reused (simpler)
    return training.train_lora(model, tokenizer, ds, P.training, output_dir, seed=P.run.seed, log=log,
                               system_role=P.student.system_role,
                               extend_trainer=tox_reg.extension(lam, scorer, t, tokenizer), extend_key=key)


# ---- Table 20: the λ sweep on validation items --------------------------------------------------------------------
def sweep_dir(root: Path, lam: float) -> Path:
    """Where the sweep's adapter for λ lives (``root/lambda_<λ>``)."""
    return Path(root) / f"lambda_{lam:g}"


def harmonic_mean(a: float, b: float) -> float:
    return 0.0 if a <= 0 or b <= 0 else 2 * a * b / (a + b)


def sweep_table(results: dict[float, dict], normalise: str = "max") -> pd.DataFrame:
    """Table 20 from {λ: {"acc": validation accuracy (unparsed = wrong), "tox": median toxicity}}: normalised toxicity,
    H-mean = harmonic mean of accuracy and 1 − normalised toxicity, and the selected λ (largest H-mean; a tie goes to
    the smaller λ).

    normalise (``baselines.tox_reg_normalise``, ``[choice]``: the paper does not say): "max" divides by the largest
    median toxicity of the sweep (the most toxic λ then scores 0 on that side); "none" takes the score as it is (a
    probability already in [0, 1])."""
    if not results:
        raise ValueError("sweep_table: no λ results")
    lams = sorted(results)
    tox = {lam: float(results[lam]["tox"]) for lam in lams}
    if any(math.isnan(t) or t < 0 for t in tox.values()):
        raise ValueError(f"sweep_table: toxicities must be numbers >= 0, got {tox}")
    if normalise == "max":
        top = max(tox.values())
        norm = {lam: (t / top if top > 0 else 0.0) for lam, t in tox.items()}
    elif normalise == "none":
        norm = tox
    else:
        raise ValueError(f"unknown baselines.tox_reg_normalise {normalise!r} (expected 'max' or 'none')")
    rows = [{"lambda": lam, "acc": float(results[lam]["acc"]), "median toxicity": tox[lam],
             "normalised toxicity": norm[lam], "H-mean": harmonic_mean(float(results[lam]["acc"]), 1 - norm[lam]),
             "n": results[lam].get("n")} for lam in lams]
    best = max(rows, key=lambda r: (r["H-mean"], -r["lambda"]))
    for r in rows:
        r["selected"] = r is best
    return pd.DataFrame(rows)


def selected_lambda(table: pd.DataFrame) -> float:
    return float(table.loc[table["selected"], "lambda"].iloc[0])


def reuse_adapter(src: Path, dst: Path) -> None:
    """Copy a finished training directory (adapter, log, fingerprint) so that ``train_lora`` on ``dst`` with the same
    inputs skips: the sweep's run for the selected λ becomes the test arm without training it twice."""
    src, dst = Path(src), Path(dst)
    fp = src / "train_fingerprint.txt"
    if not fp.is_file():
        raise FileNotFoundError(f"{src} holds no finished training run (train_fingerprint.txt missing)")
    if (dst / fp.name).is_file() and (dst / fp.name).read_text() == fp.read_text():
        return                                              # already the same run
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("trainer"))
