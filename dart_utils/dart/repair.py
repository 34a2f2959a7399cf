"""Stage III repair data (paper §2.5, App. E.2, App. M.2): safe teacher targets, severity-weighted oversampling, and
the combined Stage I + repair training set.

Why: the authors' code accepted any repair target that passed format checks (never comparing toxicity, reference
D4) and de-duplicated the combined list AFTER oversampling, which removed every copy and made the severity weights
a no-op (reference §4.6, D5). Here:

* `repair_targets`: the Stage I teacher with the E.2 prompt (question + gold label only). A target is kept only if
  it parses, its conclusion equals the gold label, its rationale is not empty, and H(r_safe) < H(r_int) (strict),
  where H is `scorer_fn` on the rationale — the same scorer and text view that produced the pool's `h_candidate`
  (the pool's candidate is M_int, so it is H(r_int)). A failing reply gets up to `retries` follow-ups: format /
  label failures get Stage I's follow-ups (the narrow "conclusion line only" request or
  `prompts.FORMAT_FIX_MESSAGE`), a target that is not safer gets `SAFER_FIX_MESSAGE` (ours, not the paper's).
  Every drop is kept with its reasons per round. The loop is `lm.ask.ask_until_valid`; the candidates of a round
  are scored with one scorer call.
* `oversample`: de-duplicate FIRST (by id and target text), THEN repeat each target by its severity weight
  (paper: mild 1, moderate 2, severe 3, extreme 4; `uniform=True` gives 1 for all, the Table 30 ablation). An
  unknown severity is an error, not weight 1.
* `stage3_dataset`: Stage I distillation examples + the weighted repair rows in `distill.sft_dataset`'s format;
  nothing is de-duplicated after oversampling.
* `perturb_severities`: App. M.3's severity-label noise (±1 level or random, on a fraction of the cases);
  `noisy_oversample` applies one arm of `repair.severity_noise` before the weights, and notebook 03 trains, infers
  and re-audits each arm exactly like M_DART; `table31` sets them beside the unperturbed M_DART and the uniform arm.
"""
from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass

import datasets
import pandas as pd

from ..core.paper import reported
from ..lm.ask import Conversation, Turn, ask_until_valid
from . import distill, prompts
from .distill import DistillResult
from .judge import SEVERITIES
from .parsing import parse_output

SEVERITY_WEIGHTS = {"mild": 1, "moderate": 2, "severe": 3, "extreme": 4}      # [paper §2.5]

# Ours: follow-up when a correct target is not less toxic than M_int's rationale (the paper only filters).
SAFER_FIX_MESSAGE = (
    "Your analysis must be safer. Rewrite it in high-level, abstract wording (2–4 sentences): do not repeat, quote, "
    "paraphrase or elaborate on any hateful, violent, toxic or stereotyping content, and avoid slurs and graphic "
    "details. Then output a final line exactly: Conclusion: {gold}\n"
    "Output only the corrected answer.")


def _fix_messages(conv: Conversation, gold: str) -> list[dict]:
    """The follow-up of a failing repair target: `SAFER_FIX_MESSAGE` when it was not safer, else Stage I's
    format follow-up (the narrow "conclusion line only" request or `prompts.FORMAT_FIX_MESSAGE`)."""
    last = conv.last
    if any(r.startswith("not_safer") for r in last.info["reasons"]):
        return [dict(m) for m in conv.messages] + [
            {"role": "assistant", "content": (last.text or "").strip()},
            {"role": "user", "content": SAFER_FIX_MESSAGE.format(gold=gold)}]
    return distill.format_follow_up(conv, gold)


def _describe(scorer_fn) -> object:
    """The scorer's own description (harm.HarmScorer.describe() for a bound `scorer.score`), else its name."""
    owner = getattr(scorer_fn, "__self__", None)
    if owner is not None and callable(getattr(owner, "describe", None)):
        return owner.describe()
    return getattr(scorer_fn, "__qualname__", None) or type(scorer_fn).__name__


def _check_format(text: str, gold: str) -> tuple[object, list[str]]:
    p = parse_output(text)
    if not p.parsed:
        return p, [f"unparsed:{p.failure}"]
    if p.conclusion != gold:
        return p, [f"wrong_conclusion:{p.conclusion}"]
    if not p.rationale.strip():
        return p, ["empty_rationale"]
    return p, []


@dataclass
class RepairResult(DistillResult):
    """Accepted safe targets and dropped drift cases (with reasons per round), as in Stage I."""

    def drop_table(self) -> pd.DataFrame:
        """Final-round drop reasons (kind before the colon) by severity, plus accepted counts."""
        rows = [{"severity": r["severity"], "outcome": "accepted"} for r in self.accepted]
        rows += [{"severity": r["severity"], "outcome": r["reasons"][-1][0].split(":")[0]} for r in self.rejected]
        if not rows:
            return pd.DataFrame(columns=["severity"])
        return pd.crosstab(pd.DataFrame(rows)["severity"], pd.DataFrame(rows)["outcome"]).reset_index()


def repair_targets(pool, client, scorer_fn, retries: int = 2) -> RepairResult:
    """Safe targets for every drift case (dicts with id, question, gold, severity, h_candidate; a DriftPool works).

    `h_candidate` is the harm score of the audited candidate's rationale; in the Stage II pool the candidate is M_int,
    so it is H(r_int) (the records keep it as `h_int`). `scorer_fn(list[str]) -> list[float]`: harm scores of
    rationales (the scorer that produced h_candidate); it is called once per round on every candidate of the round
    that passed the format and label checks. `retries`: follow-ups per failing case (the paper does not say; Stage I
    uses distill.format_fix_rounds). Loop: `lm.ask.ask_until_valid`, progress "repair teacher round N".
    """
    if retries < 0:
        raise ValueError("retries must be >= 0")
    cases = list(pool.cases if hasattr(pool, "cases") else pool)
    for c in cases:
        if c.get("severity") not in SEVERITIES[1:]:
            raise ValueError(f"case {c.get('id')}: severity must be one of {SEVERITIES[1:]}, got {c.get('severity')!r}")
        h = float(c["h_candidate"])
        if not math.isfinite(h):
            raise ValueError(f"case {c['id']}: h_candidate must be finite, got {h}")
    golds = [str(c["gold"]).strip().upper() for c in cases]

    def check(turns: list[Turn]) -> list[tuple[dict | None, dict]]:
        """The whole round: format and label per reply, then ONE scorer call on the rationales that passed."""
        checked = [_check_format(distill.completed_text(t), golds[t.index]) for t in turns]
        to_score = [(k, parsed.rationale.strip()) for k, (parsed, reasons) in enumerate(checked) if not reasons]
        scores = list(scorer_fn([text for _, text in to_score])) if to_score else []
        if len(scores) != len(to_score):
            raise ValueError(f"scorer_fn returned {len(scores)} scores for {len(to_score)} texts")
        h_safe = {k: float(s) for (k, _), s in zip(to_score, scores)}
        out = []
        for k, (t, (parsed, reasons)) in enumerate(zip(turns, checked)):
            h_int = float(cases[t.index]["h_candidate"])
            if k in h_safe and not h_safe[k] < h_int:
                reasons = [f"not_safer:{h_safe[k]:.6g}>={h_int:.6g}"]
            value = None
            if not reasons:
                r = parsed.rationale.strip()
                value = {"rationale": r, "conclusion": parsed.conclusion, "h_safe": h_safe[k],
                         "target": prompts.render_target(r, parsed.conclusion), "sentences": distill.count_sentences(r)}
            out.append((value, {"reasons": reasons, "h_safe": h_safe.get(k)}))
        return out

    conversations = ask_until_valid(
        client, [prompts.teacher_repair_messages(c["question"], g) for c, g in zip(cases, golds)], check,
        lambda i, conv: _fix_messages(conv, golds[i]), retries + 1, "repair teacher")
    cfg = getattr(client, "cfg", None)
    provenance = {"backend": getattr(cfg, "backend", None), "model": getattr(cfg, "model", None),
                  "temperature": getattr(cfg, "temperature", None), "max_tokens": getattr(cfg, "max_tokens", None),
                  "prompt": "E.2", "retries": retries, "scorer": _describe(scorer_fn)}
    accepted, rejected = [], []
    for c, g, conv in zip(cases, golds, conversations):
        base = {k: c[k] for k in ("id", "benchmark", "category", "condition", "question", "severity", "kind")
                if k in c} | {"gold": g, "h_int": float(c["h_candidate"])}
        record = base | {"rounds_used": conv.rounds_used, "teacher": provenance,
                         "cache_keys": [a.cache_key for a in conv.attempts], "raw_text": conv.last.text}
        if conv.ok:
            accepted.append(record | conv.value)
        else:
            rejected.append(record | {"reasons": [a.info["reasons"] for a in conv.attempts],
                                      "h_safe": [a.info["h_safe"] for a in conv.attempts]})
    return RepairResult(accepted, rejected)


def _target_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dedupe(repair_records) -> tuple[list[dict], int]:
    """First occurrence per (id, target text); returns (unique records, number removed)."""
    seen, out = set(), []
    records = list(repair_records)
    for r in records:
        k = (r["id"], _target_hash(r["target"]))
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out, len(records) - len(out)


def oversample(repair_records, weights: dict | None = None, uniform: bool = False) -> list[dict]:
    """De-duplicate, then repeat each record weights[severity] times (copies carry `copy` 0..w-1 and `weight`).

    weights default to SEVERITY_WEIGHTS; uniform=True sets every weight to 1 (Table 30 "Uniform (1x)"). Two
    DIFFERENT targets for one id are both kept and both weighted (repair_targets yields one per id)."""
    weights = dict(SEVERITY_WEIGHTS if weights is None else weights)
    unique, _ = dedupe(repair_records)
    out = []
    for r in unique:
        sev = r.get("severity")
        if sev not in weights:
            raise ValueError(f"repair record {r['id']}: severity {sev!r} has no weight (weights: {weights})")
        w = 1 if uniform else int(weights[sev])
        if w < 1:
            raise ValueError(f"weight for {sev!r} must be >= 1, got {w}")
        out += [dict(r) | {"copy": k, "weight": w} for k in range(w)]
    return out


NOISE_MODES = ("up", "down", "random")


def perturb_severities(repair_records, mode: str, fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """App. M.3 (Table 31): the judge's severity replaced on a seeded random ``fraction`` of the drift cases.

    The paper's perturbations, applied before ``oversample``:
    - ``up``: one level higher (mild → moderate → severe → extreme);
    - ``down``: one level lower;
    - ``random``: a uniformly random severity. Uniform weights are ``oversample(uniform=True)``.

    Where the paper is silent, ours [choice]:
    - a shift past either end stays at that end (extreme up stays extreme, mild down stays mild);
    - the random level is drawn from all four, so it may equal the original;
    - the cases are round(fraction × distinct ids), drawn with ``random.Random(seed)`` from the sorted ids. Every
      record of a chosen id gets the same new level.

    Returns new records (``severity`` replaced, the judge's kept as ``severity_original``) and one log row per chosen
    id (id, before, after). The input is not modified.
    """
    import random
    if mode not in NOISE_MODES:
        raise ValueError(f"severity noise mode must be one of {NOISE_MODES}, got {mode!r}")
    if not 0 <= fraction <= 1:
        raise ValueError(f"severity noise fraction must be in [0, 1], got {fraction}")
    levels = list(SEVERITIES[1:])
    records = [dict(r) for r in repair_records]
    for r in records:
        if r.get("severity") not in levels:
            raise ValueError(f"repair record {r.get('id')}: severity {r.get('severity')!r} is not one of {levels}")
    ids = sorted({r["id"] for r in records})
    rng = random.Random(seed)
    chosen = rng.sample(ids, round(fraction * len(ids)))
    before = {r["id"]: r["severity"] for r in records}
    after = {}
    for i in chosen:                         # in draw order, so the random levels depend only on seed and ids
        k = levels.index(before[i])
        if mode == "up":
            after[i] = levels[min(k + 1, len(levels) - 1)]
        elif mode == "down":
            after[i] = levels[max(k - 1, 0)]
        else:
            after[i] = rng.choice(levels)
    for r in records:
        r["severity_original"] = r["severity"]
        r["severity"] = after.get(r["id"], r["severity"])
    log = [{"id": i, "before": before[i], "after": after[i]} for i in sorted(after)]
    return records, log


def oversample_summary(weighted: list[dict]) -> pd.DataFrame:
    """Unique cases, weight and rows per severity (rows = cases x weight)."""
    cases = Counter(r["severity"] for r in weighted if r["copy"] == 0)
    rows = Counter(r["severity"] for r in weighted)
    weight = {r["severity"]: r["weight"] for r in weighted}
    return pd.DataFrame([{"severity": s, "cases": cases[s], "weight": weight[s], "rows": rows[s]}
                         for s in SEVERITIES[1:] if s in cases])


def stage3_dataset(distill_targets, weighted_repair, system_role: bool) -> datasets.Dataset:
    """Stage III training set: every Stage I target, then every weighted repair row, as conversational
    prompt-completion examples (E.3 prompt -> target), with `source` (distill | repair) and `severity` columns
    (training reads only prompt and completion). No de-duplication here: oversampled copies are intended."""
    distill_targets, weighted_repair = list(distill_targets), list(weighted_repair)
    for r in weighted_repair:
        if "copy" not in r:
            raise ValueError(f"repair row {r.get('id')} was not passed through oversample()")
    ds = distill.sft_dataset(distill_targets + weighted_repair, system_role)
    ds = ds.add_column("source", ["distill"] * len(distill_targets) + ["repair"] * len(weighted_repair))
    return ds.add_column("severity", [""] * len(distill_targets) + [r["severity"] for r in weighted_repair])


def accuracy_by_repaired(predictions: dict, repaired_ids) -> pd.DataFrame:
    """App. A.3: decision metrics of each model (name -> predictions frame) on the test items whose drift case was
    repaired (their safe target was in Stage III's data) and on all other test items, kept apart."""
    from .evaluation import decision_metrics
    repaired = set(repaired_ids)
    rows = []
    for subset, keep in (("repaired items", True), ("non-repaired items", False)):
        for name, df in predictions.items():
            part = df[df["id"].isin(repaired) == keep]
            m = decision_metrics(part)
            rows.append({"items": subset, "model": name, "n": m["n"], "acc_overall": round(m["acc_overall"], 3),
                         "acc_diff": round(m["acc_diff"], 3), "acc_equal": round(m["acc_equal"], 3),
                         "parse_rate": round(m["parse_rate"], 3),
                         "parse_rate_first_match": round(m["parse_rate_first_match"], 3)})
    return pd.DataFrame(rows)


def ablation_table(results: dict, pool_before) -> pd.DataFrame:
    """Table 30: per weighting strategy (name -> {"metrics": evaluation.decision_metrics, "pool": drift pool after
    repair}) accuracy, EQUAL accuracy and the drift cases remaining by severity with the change from M_int's
    pool in % (negative = fewer); the paper's rows (Llama-3-8B, `reported("stage3")`) after ours."""
    paper = reported("stage3")
    before = list(pool_before.cases if hasattr(pool_before, "cases") else pool_before)
    n_before = {s: sum(c["severity"] == s for c in before) for s in SEVERITIES[1:4]} | {"total": len(before)}

    def pct(after, b):
        return round(100 * (after - b) / b, 1) if b else None

    rows = []
    for name, r in results.items():
        cases = list(r["pool"].cases if hasattr(r["pool"], "cases") else r["pool"])
        after = {s: sum(c["severity"] == s for c in cases) for s in SEVERITIES[1:4]} | {"total": len(cases)}
        rows.append({"source": "this run", "strategy": name, "acc_overall": round(r["metrics"]["acc_overall"], 3),
                     "acc_equal": round(r["metrics"]["acc_equal"], 3),
                     **{f"remaining_{k}": v for k, v in after.items()},
                     **{f"change_{k}_pct": pct(after[k], n_before[k]) for k in after}})
    for name in ("uniform", "weighted"):
        p = paper[name]
        rows.append({"source": "paper (Llama-3-8B)", "strategy": name, "acc_overall": p["acc_overall"],
                     "acc_equal": p["acc_equal"],
                     **{f"remaining_{k}": p["remaining"][k] for k in ("mild", "moderate", "severe", "total")},
                     **{f"change_{k}_pct": p["change_pct"][k] for k in ("mild", "moderate", "severe", "total")}})
    return pd.DataFrame(rows)


NOISE_LABELS = {"up": "+1 level", "down": "−1 level", "random": "Random"}


def noise_arm(name: str) -> tuple[str, float]:
    """An arm name of `repair.severity_noise` -> (mode, fraction): "up_20" -> ("up", 0.2), "random_40" -> ("random", 0.4)."""
    mode, _, pct = str(name).rpartition("_")
    if mode not in NOISE_MODES or not pct.isdigit() or not 0 <= int(pct) <= 100:
        raise ValueError(f"severity noise arm {name!r}: expected <mode>_<percent> with mode one of {NOISE_MODES} and "
                         "percent 0-100, e.g. up_20")
    return mode, int(pct) / 100


def noisy_oversample(repair_records, arm: str, weights: dict | None, seed: int) -> tuple[list[dict], list[dict]]:
    """One Table 31 arm: the severities perturbed (`perturb_severities`), THEN de-duplicated and weighted like M_DART's
    rows (`oversample`). Returns (weighted rows, the perturbation log: id, before, after)."""
    mode, fraction = noise_arm(arm)
    records, log = perturb_severities(repair_records, mode, fraction, seed)
    return oversample(records, weights), log


def table31(results: dict, paper: dict | None = None) -> pd.DataFrame:
    """Table 31: per arm (name -> {"metrics": decision_metrics, "pool": drift cases after its Stage III, "tox": median
    rationale toxicity, "perturbed": cases whose severity changed}) accuracy, EQUAL, median toxicity and the drift
    cases remaining, with Δ against the unperturbed M_DART (arm "none"); "uniform" is Table 30's uniform arm. The
    paper's rows (`reported("table31")`) after ours."""
    if "none" not in results:
        raise ValueError("table31 needs the unperturbed arm 'none' (M_DART)")
    paper = reported("table31") if paper is None else paper

    def label(arm):
        if arm == "none":
            return "None (original)"
        if arm == "uniform":
            return "Uniform weights"
        mode, fraction = noise_arm(arm)
        return f"{NOISE_LABELS[mode]} ({round(100 * fraction)}%)"

    def n(pool):
        return len(list(pool.cases if hasattr(pool, "cases") else pool))

    base = n(results["none"]["pool"])
    rows = []
    for arm, r in results.items():
        left = n(r["pool"])
        rows.append({"source": "this run", "perturbation": label(arm), "acc": round(r["metrics"]["acc_overall"], 3),
                     "EQUAL": round(r["metrics"]["acc_equal"], 3), "tox. median": r.get("tox"), "remaining": left,
                     "Δ remaining": None if arm == "none" else left - base, "cases perturbed": r.get("perturbed")})
    for arm, p in paper["arms"].items():
        rows.append({"source": "paper (Llama-3-8B)", "perturbation": label(arm), "acc": p["acc"], "EQUAL": p["equal"],
                     "tox. median": p["tox_median"], "remaining": p["remaining"],
                     "Δ remaining": p.get("delta_remaining")})
    return pd.DataFrame(rows)
