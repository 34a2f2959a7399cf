"""Before a run: LLM calls and tokens per role, student generation, training steps, GPU time and API cost.

Why: the paper profile sends thousands of requests to a paid API (teacher, judge) and needs hours of GPU time; a
user should see roughly how many before starting one. Nothing here is measured on the target. Per-unit rates (calls
per item, tokens per call, new tokens per generated item, training examples per item) come from a finished reference
run (`runs/cpu` by default, else the committed `benchmarks/results/reference_rates_cpu.json`) and are multiplied by
the target profile's item counts (splits, external suites, DCR sets), which come from its parameters and the staged
data. Every row says what it was extrapolated from; what cannot be known in advance is printed as "—".

    python -m dart_utils.estimate --profile paper --price teacher=0.27/1.10 --price judge=0.27/1.10
    python -m dart_utils.estimate --reference runs/cpu --save-reference benchmarks/results/reference_rates_cpu.json
"""
from __future__ import annotations

import argparse
import json
import math
import sqlite3
import sys
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import yaml

from .core.artifacts import read_history
from .core.params import PROJECT_ROOT, Params, ParamsError, SplitParams, load
from .dart.policy import variants_needed
from .data import external, splits
from .data.suite import DataError
from .dcr import data as dcr_data
from .dcr.evaluation import MODELS as DCR_MODELS
from .dcr.evaluation import PAIRWISE_PROMPT
from .reporting.page import LOCAL_HOSTS, parse_prices

SCHEMA = 1
REFERENCE_FILE = PROJECT_ROOT / "benchmarks" / "results" / "reference_rates_cpu.json"
DEFAULT_RUN = PROJECT_ROOT / "runs" / "cpu"
ROLES = ("teacher", "judge", "judge_b")
NTK_MODELS = 4   # notebook 11 measures base, sft_only, stage_a and dcr_sft

# What one unit of each driver is (the item counts of a profile are keyed by these names).
PER = {"train": "train item", "val": "validation item", "test": "test item", "reaudit": "test item × re-audit arm",
       "teacher_harm": "test item (K.4)",
       "teacher_06": "test item (K.4), CV pool item outside train, or K.5 item (labels of train + test, E.1 of train)",
       "judge_06": "test item audited in 06 (K.4 teacher audit, K.5 predicted-label audit and its re-audit)",
       "rewrite_05": "failing HateCheck answer rewritten by the teacher (Table 39; the paper's rates, see item_counts)",
       "judge_b_06": "test pair judged by the second judge (App. L: Stage II's pairs, then its own M_DART's)",
       "cv_pool": "CV pool item", "cv_fold_train": "CV pool item in a fold's training part",
       "open_ended": "open-ended query",
       "open_ended_arms": "open-ended query × arm",
       "external": "external prompt", "dcr_eval": "DCR evaluation prompt", "dcr_judged": "judged DCR answer",
       "win_rate": "win-rate prompt", "win_rate_orders": "win-rate prompt × order", "contrastive": "Stage A prompt",
       "sft": "safety-SFT row", "ntk": "eNTK backward pass"}
# (stage, role, work, driver): each recorded LLM role and the item count its calls scale with.
LLM_WORK = (("01_distill", "teacher", "Stage I targets", "train"),
            ("02_audit", "judge", "drift audit (M_int vs M0)", "test"),
            ("03_repair", "teacher", "repair targets", "test"),
            ("03_repair", "judge", "re-audit", "reaudit"),
            ("05_external_safety", "teacher", "Table 39 rewrites", "rewrite_05"),
            ("06_baselines", "teacher", "K.4 / CV teacher targets", "teacher_06"),
            ("06_baselines", "judge", "K.4 teacher audit / K.5 audit", "judge_06"),
            ("06_baselines", "judge_b", "second-judge audit (App. L)", "judge_b_06"),
            ("10_dcr_evaluation", "judge", "refusal rubric", "dcr_judged"),
            ("10_dcr_evaluation", "judge", "pairwise win rate", "win_rate_orders"),
            ("12_open_ended", "judge", "rubric + pairwise judge", "open_ended_arms"))
# Stages a reference run must have executed; the others (optional work: K.4 with STUDY=ablations on cpu, the
# open-ended stage added later) give "no rate in the reference" rows when a reference lacks them.
LLM_STAGES = ("01_distill", "02_audit", "03_repair", "10_dcr_evaluation")
OPEN_ENDED_QUERIES = 280    # data/open_ended.FILES["queries.jsonl"]

_REQUIRED = {"": ("schema", "provenance", "items", "llm", "generation", "training"),
             "llm": ("stage", "role", "work", "per", "calls_per_item", "prompt_tokens_per_call",
                     "completion_tokens_per_call"),
             "generation": ("stage", "name", "per", "new_tokens_per_item", "max_new_tokens"),
             "training": ("stage", "run", "examples")}


class EstimateError(ValueError):
    """Bad input (reference run or file, price, option); the message names what is wrong."""


# ---- item counts of a profile ---------------------------------------------------------------------------------------
def split_counts(p: dict) -> dict[str, int]:
    """train / val / test records, from the same stratum sizes notebook 00 draws."""
    sizes = splits.stratum_sizes(SplitParams.model_validate(p["splits"]), p["data"]["benchmarks"])
    return {s: sum(v[s] for v in sizes.values()) for s in splits.SPLITS}


def external_count(sizes: dict) -> int:
    """Prompts of notebook 05: null = every staged row of the suite (its pinned row count), 0 = suite off."""
    return sum(external.FILES[external.SUITE_FILES[k]][2] if n is None else n for k, n in sizes.items())


def _dcr_dirs(p: dict) -> dict:
    return dcr_data.data_dirs(SimpleNamespace(**p["dcr"]), SimpleNamespace(**p["external"]))


def dcr_set_sizes(p: dict) -> dict[str, int] | None:
    """Prompts per DCR evaluation set (09) through the project's loader; None when the data is not staged."""
    try:
        dirs = _dcr_dirs(p)
        return {name: len(dcr_data.eval_set(dirs, name, n, p["run"]["seed"], verify=False))
                for name, n in p["dcr_eval"]["sets"].items() if n != 0}
    except (DataError, OSError):
        return None


def dcr_training_rows(p: dict) -> tuple[int | None, int | None]:
    """Stage A prompts (D_seemingly + D_toxic) and safety-SFT rows (D_general + D_safe); None when not staged."""
    try:
        dirs, d, s = _dcr_dirs(p), p["dcr"], p["dcr_sft"]
        return (len(dcr_data.d_seemingly(dirs, d["seemingly_per_type"], False))
                + len(dcr_data.d_toxic(dirs, d["n_toxic"], False)),
                len(dcr_data.d_general(dirs, s["n_general"], False)) + len(dcr_data.d_safe(dirs, s["n_safe"], False)))
    except (DataError, OSError):
        return None, None


def judged_count(set_sizes: dict[str, int] | None, judge_n: int | None) -> int | None:
    """10's refusal judge rates the same judge_n prompts per set for every model (all when null)."""
    if set_sizes is None:
        return None
    return len(DCR_MODELS) * sum(n if judge_n is None else min(judge_n, n) for n in set_sizes.values())


def stage3_arms(repair: dict) -> int:
    """Stage III runs in 03: M_DART, Table 30's uniform arm and one per Table 31 severity-noise arm (each trained,
    generated and re-audited)."""
    return 1 + bool(repair["uniform_ablation"]) + len(repair.get("severity_noise") or [])


def item_counts(p: dict) -> dict[str, int | None]:
    """Every driver's count for a parameter dict (a profile's `to_dict()` or a run's params.yaml)."""
    c: dict[str, int | None] = dict(split_counts(p))
    c["reaudit"] = c["test"] * stage3_arms(p["repair"])
    c["external"] = external_count(p["external"]["sizes"])
    # Table 39: one teacher call per failing HateCheck answer. How many fail is known only after 05 scores them; the
    # count uses the paper's rates: M0 answers 68.5 % of HateCheck (31.5 % abstain), 1.96 % of those fail
    hc = external_count({k: n for k, n in p["external"]["sizes"].items() if k.startswith("HateCheck")})
    c["rewrite_05"] = round(hc * (1 - 0.315) * 0.0196) if p["external"].get("teacher_rewrite") else 0
    sets = dcr_set_sizes(p)
    c["dcr_eval"] = sum(sets.values()) if sets is not None else None
    c["dcr_judged"] = judged_count(sets, p["dcr_eval"]["judge_n"])
    wr = p["dcr_eval"]["win_rate_n"]
    c["win_rate"] = dcr_data.FILES["alpaca_eval"][3] if wr is None else wr
    c["win_rate_orders"] = 2 * c["win_rate"]
    c["contrastive"], c["sft"] = dcr_training_rows(p)
    c["ntk"] = NTK_MODELS * 2 * p["dcr_ntk"]["n"] * p["dcr_ntk"]["topk"]
    c["teacher_harm"] = c["test"] if p["baselines"].get("teacher_harm") else 0
    cv = p["splits"].get("cv_folds", 0) >= 2 and p["baselines"].get("cv", False)
    pool = p["splits"].get("cv_pool", ["train", "test"])
    c["cv_pool"] = sum(c[s] for s in pool) if cv else 0
    c["cv_fold_train"] = c["cv_pool"] * (p["splits"]["cv_folds"] - 1) // p["splits"]["cv_folds"] if cv else 0
    # the teacher in 06 answers the test items for K.4 and, with the CV, every pool item outside train (shared calls)
    c["teacher_06"] = sum(c[s] for s in ("val", "test")
                          if (s == "test" and c["teacher_harm"]) or (cv and s in pool))
    # K.5: the teacher labels every train and test item and writes E.1 for the train items (an upper bound: where its
    # label is the gold one the E.1 call is Stage I's, cached); the judge re-audits the test pairs (likewise)
    k5 = bool(p["baselines"].get("label_conditioning"))
    c["teacher_06"] += (2 * c["train"] + c["test"]) if k5 else 0
    # K.5's audit of the test pairs, then the re-audit of its own M_DART (Stage III on its pool); not counted: the
    # repair teacher's calls for that pool's drift cases (a few per case)
    c["judge_06"] = c["teacher_harm"] + (2 * c["test"] if k5 else 0)
    # App. L: judge B judges the test pairs, then re-audits its own M_DART (Stage III on its pool). Not counted: the
    # repair teacher's calls for judge B's drift cases (a few per case, those both judges found cached from 03)
    c["judge_b_06"] = 2 * c["test"] if p["baselines"].get("judge_choice") else 0
    oe = p.get("open_ended")                  # absent in the params.yaml of runs older than notebook 12
    if oe:
        c["open_ended"] = OPEN_ENDED_QUERIES if oe["n"] is None else min(oe["n"], OPEN_ENDED_QUERIES)
        c["open_ended_arms"] = c["open_ended"] * len(oe["arms"])
    return c


# ---- the reference run --------------------------------------------------------------------------------------------
def _lines(path: Path) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def _manifest(run: Path, stage: str) -> dict:
    path = run / stage / "manifest.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError:
        return {}


def artifact_counts(run: Path, counts: dict) -> dict[str, int]:
    """The counts a reference run actually processed, from its artifacts; they replace those of its params.yaml
    (`counts`), which is the last pipeline call's and may postdate a stage's execution."""
    out: dict[str, int] = {}
    for s in splits.SPLITS:
        if (run / "00_data_splits" / f"{s}.jsonl").is_file():
            out[s] = _lines(run / "00_data_splits" / f"{s}.jsonl")
    if (run / "02_audit" / "drift_pool.jsonl").is_file():
        out["drift"] = _lines(run / "02_audit" / "drift_pool.jsonl")
    if arms := _manifest(run, "03_repair").get("stage3"):
        out["reaudit"] = out.get("test", counts["test"]) * len(arms)
    if suites := _manifest(run, "05_external_safety").get("suites"):
        out["external"] = sum(suites.values())
    m10 = _manifest(run, "10_dcr_evaluation")
    if m10.get("sizes"):
        out["dcr_eval"] = sum(m10["sizes"].values())
    if (run / "10_dcr_evaluation" / "judged.jsonl").is_file():
        out["dcr_judged"] = _lines(run / "10_dcr_evaluation" / "judged.jsonl")
    if "n" in (m10.get("win_rate") or {}):
        out["win_rate"], out["win_rate_orders"] = m10["win_rate"]["n"], 2 * m10["win_rate"]["n"]
    m12 = _manifest(run, "12_open_ended")
    if m12.get("queries"):
        out["open_ended"] = m12["queries"]
        out["open_ended_arms"] = m12["queries"] * len(m12.get("arms") or ["off"])
    sizes08, sizes09 = _manifest(run, "08_dcr_contrastive").get("sizes", {}), _manifest(run, "09_dcr_safety_sft").get(
        "sizes", {})
    if {"D_seemingly", "D_toxic"} <= set(sizes08):
        out["contrastive"] = sizes08["D_seemingly"] + sizes08["D_toxic"]
    if {"D_general", "D_safe"} <= set(sizes09):
        out["sft"] = sizes09["D_general"] + sizes09["D_safe"]
    return out


def _ran(history: list[dict], stage: str) -> list[dict]:
    return [h for h in history if h.get("stage") == stage and h.get("status", "ran") == "ran"]


def _cold_calls(line: dict) -> int:
    return sum(int(s.get("calls") or 0) + int(s.get("cached_calls") or 0) for s in (line.get("llm") or {}).values())


def cold_line(history: list[dict], stage: str) -> dict | None:
    """The stage's execution that made or read the most LLM answers: its stats are the empty-cache cost."""
    return max(_ran(history, stage), key=_cold_calls, default=None)


def _source(line: dict) -> dict:
    return {"utc": line.get("utc"), "git_commit": line.get("git_commit")}


def llm_rate(history: list[dict], counts: dict, stage: str, role: str, work: str, per: str) -> dict | None:
    """Calls per driving item and tokens per call of one role in one stage (fresh + cached = cold)."""
    line = cold_line(history, stage)
    s = ((line or {}).get("llm") or {}).get(f"{role}_llm")
    if not s or not counts.get(per):
        return None
    calls = int(s.get("calls") or 0) + int(s.get("cached_calls") or 0)
    tin = int(s.get("prompt_tokens") or 0) + int(s.get("cached_prompt_tokens") or 0)
    tout = int(s.get("completion_tokens") or 0) + int(s.get("cached_completion_tokens") or 0)
    secs = float(s.get("seconds") or 0) + float(s.get("cached_seconds") or 0)
    return {"stage": stage, "role": role, "work": work, "per": per, "reference_items": counts[per],
            "reference_calls": calls, "calls_per_item": calls / counts[per],
            "prompt_tokens_per_call": tin / calls if calls else 0.0,
            "completion_tokens_per_call": tout / calls if calls else 0.0,
            "seconds_per_call": secs / calls if calls else None,
            "from": "stage_history.jsonl", **_source(line)}


def _cache_db(run: Path, p: dict) -> Path | None:
    for db in (run.resolve().parents[1] / p["run"]["cache_dir"] / "llm_cache.sqlite",
               run.resolve().parent / "cache" / "llm_cache.sqlite"):
        if db.is_file():
            return db
    return None


def win_rate_from_cache(run: Path, p: dict, counts: dict) -> dict | None:
    """10's pairwise judge: until notebook 10 recorded its judge stats after the win-rate calls, they were in no history
    line, and in a newer line they are mixed with the refusal judge's (``_split_09_judge``). The reference's response cache still holds each of those requests with its token counts: match the exact
    prompts rebuilt from 09's general.jsonl (both orders) and read them, without writing to the cache."""
    general, db = run / "10_dcr_evaluation" / "general.jsonl", _cache_db(run, p)
    if not general.is_file() or db is None or not counts.get("win_rate_orders"):
        return None
    rows = [json.loads(line) for line in general.read_text(encoding="utf-8").splitlines() if line.strip()]
    wanted = {PAIRWISE_PROMPT.format(instruction=r["prompt"], a=a, b=b)
              for r in rows for a, b in ((r["dcr_sft"], r["sft_only"]), (r["sft_only"], r["dcr_sft"]))}
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        found = [(pt or 0, ct or 0, s or 0.0) for req, pt, ct, s in con.execute(
            "SELECT request, prompt_tokens, completion_tokens, seconds FROM responses WHERE request LIKE ?",
            ("%You compare two AI assistant responses%",)) if json.loads(req)["messages"][0]["content"] in wanted]
    if not found:
        return None
    n, per = len(found), "win_rate_orders"
    return {"stage": "10_dcr_evaluation", "role": "judge", "work": "pairwise win rate", "per": per,
            "reference_items": counts[per], "reference_calls": n, "calls_per_item": n / counts[per],
            "prompt_tokens_per_call": sum(f[0] for f in found) / n,
            "completion_tokens_per_call": sum(f[1] for f in found) / n,
            "seconds_per_call": sum(f[2] for f in found) / n,
            "from": f"response cache {db.name} (requests rebuilt from 10_dcr_evaluation/general.jsonl)",
            **_source(cold_line(read_history(run), "10_dcr_evaluation") or {})}


def gen_driver(stage: str, name: str) -> str:
    """Which items a recorded generation ran over."""
    if stage == "10_dcr_evaluation":
        return "win_rate" if "AlpacaEval" in name else "dcr_eval"
    if stage == "05_external_safety":
        return "external"
    if stage == "12_open_ended":
        return "open_ended"
    return "val" if name.startswith("val/") else "test"


def gen_cap(p: dict, stage: str, name: str) -> int:
    """max_new_tokens of that generation (the hard upper bound of its tokens per item)."""
    if stage == "10_dcr_evaluation":
        return p["dcr_eval"]["win_rate_max_new_tokens"] if "AlpacaEval" in name else \
            p["dcr_eval"]["generation"]["max_new_tokens"]
    if stage == "12_open_ended" and not name.endswith("/pass1"):
        return p["open_ended"]["max_new_tokens"]          # free-form answers; pass 1 is the E.3 classification
    return p["generation"]["max_new_tokens"]


_GEN_ARTIFACT = {"01_distill": "predictions_{}.jsonl", "03_repair": "predictions_{}.jsonl",
                 "05_external_safety": "outputs_{}.jsonl"}


def _tokens_from_artifact(run: Path, stage: str, name: str) -> int | None:
    """A generation the history saw only as 'reused': the per-record new_tokens of its output file."""
    if stage not in _GEN_ARTIFACT:
        return None
    path = run / stage / (f"predictions_val_{name[4:]}.jsonl" if name.startswith("val/")
                          else _GEN_ARTIFACT[stage].format(name))
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sum(int(r["new_tokens"]) for r in rows) if all("new_tokens" in r for r in rows) else None


def generation_rates(history: list[dict], run: Path, p: dict, counts: dict) -> list[dict]:
    """New tokens per item of every student generation the reference recorded."""
    names = dict.fromkeys((h["stage"], n) for h in history if h.get("status", "ran") == "ran"
                          for n in (h.get("generation") or {}))
    out = []
    for stage, name in names:
        per = gen_driver(stage, name)
        made = [h for h in _ran(history, stage) if isinstance((h.get("generation") or {}).get(name), dict)
                and "new_tokens" in h["generation"][name]]
        made.sort(key=lambda h: bool(h["generation"][name].get("reused")))   # a fresh record first
        tokens, src = (made[0]["generation"][name]["new_tokens"], {"from": "stage_history.jsonl", **_source(made[0])}
                       ) if made else (_tokens_from_artifact(run, stage, name), {"from": f"{stage} output new_tokens"})
        if tokens is None or not counts.get(per):
            continue
        tps = made[0]["generation"][name].get("tokens_per_s") if made else None
        out.append({"stage": stage, "name": name, "per": per, "reference_items": counts[per],
                    "reference_new_tokens": int(tokens), "new_tokens_per_item": tokens / counts[per],
                    "max_new_tokens": gen_cap(p, stage, name), "reference_tokens_per_s": tps, **src})
    return out


def _step_seconds(history: list[dict], stage: str, prefix: str) -> tuple[float, dict] | None:
    """Seconds of the training step(s) in the stage's longest recorded execution of them (the cold one)."""
    best = max(_ran(history, stage), default=None,
               key=lambda h: sum(v for k, v in (h.get("steps") or {}).items() if k.startswith(prefix)))
    secs = sum(v for k, v in ((best or {}).get("steps") or {}).items() if k.startswith(prefix))
    return (secs, best) if best and secs else None


def _training_entry(history: list[dict], stage: str, label: str, prefix: str, steps: int | None, runs: int,
                    examples: int | None, rates: dict | None) -> dict | None:
    """One LoRA run's examples per driving item; `steps` per run, the timed step(s) covering `runs` runs."""
    timed = _step_seconds(history, stage, prefix)
    if not steps or not timed or not rates:
        return None
    return {"stage": stage, "run": label, "examples": rates, "reference_examples": examples,
            "reference_steps": steps, "seconds_per_step": timed[0] / (steps * runs),
            "from": "manifest + stage_history.jsonl", **_source(timed[1])}


def training_rates(history: list[dict], run: Path, counts: dict) -> list[dict]:
    """Examples per driving item of each LoRA run (Stage I keeps only accepted teacher targets) and the reference's
    seconds per optimizer step (its machine and model: provenance, not a forecast)."""
    s1 = _manifest(run, "01_distill").get("stage1") or {}
    rep, s3 = _manifest(run, "03_repair").get("repair") or {}, _manifest(run, "03_repair").get("stage3") or {}
    a = _manifest(run, "08_dcr_contrastive").get("stage_a") or {}
    sft = _manifest(run, "09_dcr_safety_sft").get("sft") or {}
    ex1, train, test = s1.get("train_examples"), counts.get("train"), counts.get("test")
    rows3 = (rep.get("rows") or {}).get("weighted")
    out = [
        _training_entry(history, "01_distill", "Stage I", "stage I training", s1.get("steps"), 1, ex1,
                        {"train": ex1 / train} if ex1 and train else None),
        _training_entry(history, "03_repair", "Stage III", "stage III training (weighted)",
                        (s3.get("weighted") or {}).get("steps"), 1, rows3,
                        {"train": ex1 / train, "test": (rows3 - ex1) / test} if ex1 and rows3 and train and test
                        else None),
        _training_entry(history, "08_dcr_contrastive", "Stage A", "stage A training", a.get("global_step"), 1,
                        counts.get("contrastive"), {"contrastive": 1.0}),
        _training_entry(history, "09_dcr_safety_sft", "safety SFT", "safety SFT",   # both runs, the same data
                        max((r.get("steps") or 0 for r in sft.values()), default=0), max(len(sft), 1),
                        counts.get("sft"), {"sft": 1.0}),
    ]
    return [e for e in out if e]


def _models(p: dict) -> dict:
    return {"student": p["student"]["name"], "dcr_model": p["dcr"]["model"]["name"],
            **{r: {"backend": p[r]["backend"], "model": p[r]["model"]} for r in ROLES if r in p}}   # judge_b: newer


def _split_09_judge(llm: list[dict | None], counts: dict) -> None:
    """Since notebook 10 records its judge stats after the pairwise judge too, a new history line's 10 judge calls
    hold both jobs: take the pairwise calls (read from the cache) out of the refusal-rubric rate. An old line (stats
    recorded before the pairwise calls) has fewer calls than judged answers once they are taken out: left as is."""
    ref = next((e for e in llm if e and e["work"] == "refusal rubric"), None)
    pair = next((e for e in llm if e and e["work"] == "pairwise win rate"), None)
    if not (ref and pair) or ref["reference_calls"] - pair["reference_calls"] < counts.get("dcr_judged", 0):
        return
    n = ref["reference_calls"] - pair["reference_calls"]
    for k in ("prompt_tokens_per_call", "completion_tokens_per_call"):
        ref[k] = (ref[k] * ref["reference_calls"] - pair[k] * pair["reference_calls"]) / n
    if ref.get("seconds_per_call") is not None and pair.get("seconds_per_call") is not None:
        ref["seconds_per_call"] = (ref["seconds_per_call"] * ref["reference_calls"]
                                   - pair["seconds_per_call"] * pair["reference_calls"]) / n
    ref["reference_calls"], ref["calls_per_item"] = n, n / ref["reference_items"]
    ref["from"] += " (the pairwise judge's calls taken out)"


def rates_from_run(run: Path) -> dict:
    """Per-unit rates of a finished run, from its stage_history.jsonl, params.yaml, manifests and artifacts."""
    run = Path(run)
    history = read_history(run)
    if not history or not (run / "params.yaml").is_file():
        raise EstimateError(f"reference run {run}: needs stage_history.jsonl and params.yaml (a finished `make all`)")
    missing = [s for s in LLM_STAGES if not cold_line(history, s)]
    if missing:
        raise EstimateError(f"reference run {run}: no executed line in stage_history.jsonl for {', '.join(missing)}")
    p = yaml.safe_load((run / "params.yaml").read_text(encoding="utf-8"))
    counts = item_counts(p)
    counts.update(artifact_counts(run, counts))
    llm = [win_rate_from_cache(run, p, counts) if w[3] == "win_rate_orders" else llm_rate(history, counts, *w)
           for w in LLM_WORK]
    _split_09_judge(llm, counts)
    rates = {"schema": SCHEMA, "provenance": {}, "items": counts, "llm": [e for e in llm if e],
             "generation": generation_rates(history, run, p, counts), "training": training_rates(history, run, counts)}
    commits = [e.get("git_commit") for k in ("llm", "generation", "training") for e in rates[k]]
    rates["provenance"] = {
        "reference_run": str(run), "run": history[0].get("run"), "profile": p.get("profile"),
        "git_commits": sorted({c for c in commits if c}), "audit_mode": p["audit"]["mode"],
        "history_utc": [min(h["utc"] for h in history), max(h["utc"] for h in history)],
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M+00:00"), "models": _models(p),
        "how": "python -m dart_utils.estimate --reference RUN --save-reference FILE (dart_utils/estimate.py)"}
    return rates


# ---- a saved reference --------------------------------------------------------------------------------------------
def check_reference(ref: dict, where: str) -> dict:
    """Every key the estimate reads, so that a stale or hand-edited file fails here, naming the keys it lacks."""
    if not isinstance(ref, dict):
        raise EstimateError(f"{where}: not a reference (a JSON object with {', '.join(_REQUIRED[''])})")
    missing = [k for k in _REQUIRED[""] if k not in ref]
    for part in ("llm", "generation", "training"):
        for i, e in enumerate(ref.get(part) or []):
            missing += [f"{part}[{i}].{k}" for k in _REQUIRED[part] if k not in e]
    if missing:
        raise EstimateError(f"{where}: reference file lacks keys {', '.join(missing)}; regenerate it with "
                            "`python -m dart_utils.estimate --reference runs/cpu --save-reference FILE`")
    if ref["schema"] != SCHEMA:
        raise EstimateError(f"{where}: reference schema {ref['schema']}, this code reads schema {SCHEMA}")
    return ref


def load_reference(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise EstimateError(f"reference file not found: {path} (write one with --reference runs/cpu "
                            f"--save-reference {path})")
    try:
        ref = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise EstimateError(f"{path}: not valid JSON ({e})") from None
    return check_reference(ref, str(path))


def save_reference(ref: dict, path: Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(ref, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def default_reference() -> tuple[dict, str]:
    """runs/cpu when it holds a finished run, else the committed file (a fresh clone has no runs/)."""
    try:
        return rates_from_run(DEFAULT_RUN), ""
    except (EstimateError, KeyError, ValueError, OSError) as e:    # a partial or older run: say why, use the file
        why = f"{DEFAULT_RUN.relative_to(PROJECT_ROOT)} is not usable ({e}); " if DEFAULT_RUN.exists() else ""
        return load_reference(REFERENCE_FILE), why + f"using {REFERENCE_FILE.relative_to(PROJECT_ROOT)}"


# ---- the estimate -------------------------------------------------------------------------------------------------
@dataclass
class Row:
    stage: str
    work: str                      # "teacher: Stage I targets", "student generation", "LoRA training: Stage I"
    model: str
    count: str                     # calls / items / steps, as printed
    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_cap: int | None = None  # generation: items x max_new_tokens
    hours: float | None = None
    time_note: str = ""
    cost: float | None = None
    cost_note: str = ""            # "local (0)", "no price set"
    role: str = ""                 # teacher / judge / generation / training (for the totals)
    calls: float = 0.0
    steps: int = 0


def is_local(cfg) -> bool:
    """As the report decides 'local (0)': an in-process model or a server on this machine costs no API money."""
    return cfg.backend == "llama_cpp" or any(h in str(cfg.base_url or "") for h in LOCAL_HOSTS)


def cost(tokens_in: int, tokens_out: int, price: tuple[float, float]) -> float:
    """USD for prompt / completion tokens at USD per million tokens."""
    return (tokens_in * price[0] + tokens_out * price[1]) / 1e6


def _find(entries: list[dict], **keys) -> dict | None:
    return next((e for e in entries if all(e.get(k) == v for k, v in keys.items())), None)


def llm_rows(p: Params, ref: dict, counts: dict, prices: dict) -> tuple[list[Row], list[str]]:
    rows, unknown = [], []
    ref_models = ref["provenance"].get("models", {})
    for stage, role, work, per in LLM_WORK:
        n, cfg = counts.get(per), getattr(p, role)
        if n == 0:
            continue
        e = _find(ref["llm"], stage=stage, role=role, work=work)
        if e is None and stage == "06_baselines" and role in ("judge", "judge_b"):
            # 06's audits (K.4, K.5, the second judge) send Stage II's prompt: its per-pair rate, an upper bound for
            # K.5 (where the label is the gold one the call is Stage II's, cached)
            e = _find(ref["llm"], stage="02_audit", role="judge")
            if e is not None:
                unknown.append(f"{stage} {role} ({work}): not in the reference; Stage II's judge rate per test item "
                               "(the same prompt)")
                if role == "judge_b":
                    e = {k: v for k, v in e.items() if k != "seconds_per_call"}   # another model: no time
        if e is None or n is None:
            why = "no rate in the reference" if e is None else "item count unknown (data not staged)"
            rows.append(Row(stage, f"{role}: {work}", f"`{cfg.model}`", f"— ({why})", role=role))
            unknown.append(f"{stage} {role} ({work}): {why}")
            continue
        calls = e["calls_per_item"] * n
        tin, tout = round(calls * e["prompt_tokens_per_call"]), round(calls * e["completion_tokens_per_call"])
        same = ref_models.get(role) == {"backend": cfg.backend, "model": cfg.model}
        hours = calls * e["seconds_per_call"] / 3600 if same and e.get("seconds_per_call") else None
        price = prices.get(role)
        rows.append(Row(stage, f"{role}: {work}", f"`{cfg.model}`",
                        f"{round(calls):,} calls ({e['calls_per_item']:.3g} per {PER[per]} × {n:,})", tin, tout,
                        hours=hours, time_note="at the reference's speed" if hours is not None else "",
                        cost=cost(tin, tout, price) if price else None,
                        cost_note="" if price else "local (0)" if is_local(cfg) else "no price set",
                        role=role, calls=calls))
    return rows, unknown


def target_generations(p: Params, counts: dict) -> list[tuple[str, str, str, int]]:
    """(stage, generation, driver, max_new_tokens) of every student generation the target runs."""
    g, d = p.generation.max_new_tokens, p.dcr_eval
    out = [("01_distill", n, "val" if n.startswith("val/") else "test", g) for n in ("m0", "m_int", "val/m0",
                                                                                   "val/m_int")]
    out += [("03_repair", n, "test", g) for n in ("m_dart", "m_dart_uniform")[:1 + p.repair.uniform_ablation]]
    out += [("03_repair", f"m_dart_noise_{a}", "test", g) for a in p.repair.severity_noise]
    out += [("04_policy", f"{m}/{v}", "test", g) for m in p.policy.models for v in variants_needed(p.policy.modes)]
    if counts.get("external"):
        out += [("05_external_safety", n, "external", g) for n in ("m0", "m_dart")]
    out += [("06_baselines", arm, "test", g) for arm in ("label_only", "tox_reg") if getattr(p.baselines, arm)]
    if p.baselines.label_conditioning:
        out += [("06_baselines", n, "test", g) for n in ("stage1_predicted", "m_dart_predicted")]
    if p.baselines.judge_choice:
        out += [("06_baselines", "m_dart_judge_b", "test", g)]
    if counts.get("cv_pool"):
        out += [("06_baselines", "CV folds (M_int per held-out fold)", "cv_pool", g)]
    out += [("10_dcr_evaluation", n, "dcr_eval", d.generation.max_new_tokens) for n in DCR_MODELS]
    if counts.get("win_rate"):
        out += [("10_dcr_evaluation", f"{n} AlpacaEval", "win_rate", d.win_rate_max_new_tokens)
                for n in ("sft_only", "dcr_sft")]
    oe = p.open_ended
    for m in oe.models:
        out += [("12_open_ended", f"{m}/off", "open_ended", oe.max_new_tokens)]
        if "two_pass" in oe.arms:
            out += [("12_open_ended", f"{m}/pass1", "open_ended", g),
                    ("12_open_ended", f"{m}/pass2", "open_ended", oe.max_new_tokens)]
    return out


def gen_rate(ref: dict, stage: str, name: str) -> tuple[dict | None, str]:
    """The reference's rate of the same generation; else the same variant / arm, else the stage's mean."""
    e = _find(ref["generation"], stage=stage, name=name)
    if e:
        return e, ""
    if stage == "06_baselines" and (e := _find(ref["generation"], stage="01_distill", name="m_int")):
        why = ("label-only answers are shorter, so it is an upper bound" if name == "label_only" else
               "a Stage I model" if name.startswith("CV") or name == "stage1_predicted" else "the same training items")
        return e, f"{stage} {name}: not in the reference; M_int's rate (the same decoding; {why})"
    same_stage = [x for x in ref["generation"] if x["stage"] == stage]
    near = [x for x in same_stage if x["name"].split("/")[-1] == name.split("/")[-1]] or \
        [x for x in same_stage if name.startswith(x["name"])] or same_stage
    if not near:
        return None, f"{stage} {name}: no generation of this stage in the reference"
    mean = sum(x["new_tokens_per_item"] for x in near) / len(near)
    return {**near[0], "new_tokens_per_item": mean}, (f"{stage} {name}: not in the reference; mean rate of "
                                                      f"{', '.join(x['name'] for x in near)}")


def generation_rows(p: Params, ref: dict, counts: dict, gpu_tps: float | None) -> tuple[list[Row], list[str]]:
    by_stage: dict[str, list] = {}
    notes = []
    for stage, name, per, cap in target_generations(p, counts):
        e, why = gen_rate(ref, stage, name)
        n = counts.get(per)
        notes += [why] if why else []
        if e and e["max_new_tokens"] < cap:
            notes.append(f"{stage} {name}: the reference capped at {e['max_new_tokens']} new tokens, the target at "
                         f"{cap}: its answers can be longer than the row says")
        by_stage.setdefault(stage, []).append((n, None if e is None or n is None
                                               else round(min(e["new_tokens_per_item"], cap) * n), cap))
    rows = []
    for stage, gens in by_stage.items():
        items = [g[0] for g in gens]
        known = None not in items and all(g[1] is not None for g in gens)
        tokens = sum(g[1] for g in gens) if known else None
        model = p.dcr.model.name if "_dcr_" in stage else p.student.name
        hours = tokens / gpu_tps / 3600 if known and gpu_tps else None
        rows.append(Row(stage, "student generation", f"`{model}`",
                        f"{len(gens)} generation(s), {sum(items):,} items" if known else f"{len(gens)} generation(s), "
                        "items unknown", tokens_out=tokens,
                        tokens_cap=sum(g[0] * g[2] for g in gens) if known else None, hours=hours,
                        time_note=f"at {gpu_tps:g} tokens/s" if hours is not None else "", role="generation"))
    return rows, notes


def optimizer_steps(examples: int, batch: int, per_device: int, epochs: float) -> int:
    """The Trainer's count: ceil(batches / accumulation) per epoch, times the epochs (rounded up)."""
    per_epoch = math.ceil(math.ceil(examples / per_device) / max(batch // per_device, 1))
    return math.ceil(per_epoch * epochs)


def _training_plan(p: Params) -> list[tuple[str, str, str, object, int]]:
    """(stage, label, driver, batch settings, runs) of every LoRA run of the target."""
    t, c, s = p.training, p.dcr_contrastive, p.dcr_sft.training
    return [("01_distill", "Stage I", "train", (t.batch_size, t.per_device_batch_size, t.epochs), 1),
            ("03_repair", "Stage III", "train", (t.batch_size, t.per_device_batch_size, t.epochs),
             stage3_arms(p.repair.model_dump())),
            *[("06_baselines", label, "train", (t.batch_size, t.per_device_batch_size, t.epochs), 1)
              for arm, label in (("label_only", "label-only SFT"), ("tox_reg", "toxicity-reg. SFT"))
              if getattr(p.baselines, arm)],
            # each fold trains on (k−1)/k of the pool, at Stage I's share of accepted targets (training_rows)
            *([("06_baselines", "CV Stage I per fold", "cv_fold_train",
                (t.batch_size, t.per_device_batch_size, t.epochs), p.splits.cv_folds)]
              if p.baselines.cv and p.splits.cv_folds >= 2 else []),
            *([("06_baselines", "K.5 Stage I and Stage III (teacher's labels)", "train",
                (t.batch_size, t.per_device_batch_size, t.epochs), 2)] if p.baselines.label_conditioning else []),
            *([("06_baselines", "Stage III on judge B's pool", "train",
                (t.batch_size, t.per_device_batch_size, t.epochs), 1)] if p.baselines.judge_choice else []),
            ("08_dcr_contrastive", "Stage A", "contrastive", (c.batch_size, c.batch_size, c.epochs), 1),
            ("09_dcr_safety_sft", "safety SFT", "sft", (s.batch_size, s.per_device_batch_size, s.epochs), 2)]


def training_rows(p: Params, ref: dict, counts: dict, gpu_sps: float | None) -> tuple[list[Row], list[str]]:
    rows, notes = [], []
    for stage, label, driver, (batch, pd, epochs), runs in _training_plan(p):
        e = _find(ref["training"], stage=stage) or (_find(ref["training"], stage="01_distill")
                                                     if stage == "06_baselines" else None)   # Stage I's items
        rates = (e or {}).get("examples") or {driver: 1.0}
        if driver == "cv_fold_train":          # a fold's items at Stage I's examples-per-train-item rate
            rates = {driver: (e or {}).get("examples", {}).get("train", 1.0)}
        if e is None and driver in ("train", "test"):
            notes.append(f"{stage}: no training rate in the reference; every train item counted as an example "
                         "(an upper bound)")
        if any(counts.get(k) is None for k in rates):
            rows.append(Row(stage, f"LoRA training: {label}", "", "— (item count unknown)", role="training"))
            continue
        examples = round(sum(r * counts[k] for k, r in rates.items()))
        steps = optimizer_steps(examples, batch, pd, epochs) * runs
        model = p.dcr.model.name if "_dcr_" in stage else p.student.name
        hours = steps * gpu_sps / 3600 if gpu_sps else None
        rows.append(Row(stage, f"LoRA training: {label}", f"`{model}`",
                        f"{runs} run(s) × {steps // runs:,} steps ({examples:,} examples)", hours=hours,
                        time_note=f"at {gpu_sps:g} s/step" if hours is not None else "", role="training",
                        steps=steps))
    return rows, notes


def ntk_row(p: Params, counts: dict) -> Row:
    return Row("11_dcr_mechanism", "eNTK similarity", f"`{p.dcr.model.name}`",
               f"{counts['ntk']:,} backward passes ({NTK_MODELS} models × {2 * p.dcr_ntk.n} prompts × top-"
               f"{p.dcr_ntk.topk})", role="work")


def estimate(p: Params, ref: dict, prices: dict | None = None, gpu_tps: float | None = None,
             gpu_sps: float | None = None) -> tuple[list[Row], dict, list[str]]:
    """Rows for the target profile, its item counts, and the notes on what could not be extrapolated."""
    counts = item_counts(p.to_dict())
    llm, unknown = llm_rows(p, ref, counts, prices or {})
    gen, gen_notes = generation_rows(p, ref, counts, gpu_tps)
    train, train_notes = training_rows(p, ref, counts, gpu_sps)
    order = {s: i for i, s in enumerate(sorted({r.stage for r in llm + gen + train} | {"11_dcr_mechanism"}))}
    rows = sorted(llm + gen + train + [ntk_row(p, counts)], key=lambda r: order[r.stage])
    return rows, counts, unknown + gen_notes + train_notes


# ---- printing -----------------------------------------------------------------------------------------------------
def _n(v) -> str:
    return "—" if v is None else f"{v:,}"


def _hours(h: float | None, note: str = "") -> str:
    if h is None:
        return "—"
    text = "< 1 min" if h < 1 / 60 else f"{h * 60:.0f} min" if h < 1 else f"{h:,.1f} h"
    return text + (f" ({note})" if note else "")


def _money(v: float) -> str:
    return f"${v:,.2f}"


def _cells(r: Row) -> list[str]:
    if r.role in ROLES:
        tokens = f"{_n(r.tokens_in)} / {_n(r.tokens_out)}"
        price = _money(r.cost) if r.cost is not None else (r.cost_note or "—")
    elif r.role == "generation":
        tokens = f"— / {_n(r.tokens_out)} new" + (f" (cap {r.tokens_cap:,})" if r.tokens_cap else "")
        price = "compute time"
    else:
        tokens, price = "—", "compute time"
    return [r.stage, r.work, r.model or "—", r.count, tokens, _hours(r.hours, r.time_note), price]


def _total_row(label: str, rows: list[Row], prices: dict) -> list[str] | None:
    if not rows:
        return None
    if rows[0].role in ROLES:
        tin, tout = sum(r.tokens_in or 0 for r in rows), sum(r.tokens_out or 0 for r in rows)
        priced = [r.cost for r in rows if r.cost is not None]
        price = (_money(sum(priced)) if priced and len(priced) == len(rows) else
                 rows[0].cost_note if not priced else f"{_money(sum(priced))} + unpriced rows")
        return [f"**{label}**", "", "", f"{round(sum(r.calls for r in rows)):,} calls", f"{tin:,} / {tout:,}", "—"
                if all(r.hours is None for r in rows) else _hours(sum(r.hours or 0 for r in rows)), price]
    hours = [r.hours for r in rows]
    time = _hours(sum(hours)) if None not in hours else "—"
    if rows[0].role == "generation":
        return [f"**{label}**", "", "", "", f"— / {_n(sum(r.tokens_out or 0 for r in rows))} new", time, ""]
    return [f"**{label}**", "", "", f"{sum(r.steps for r in rows):,} steps", "—", time, ""]


def render(p: Params, rows: list[Row], counts: dict, ref: dict, notes: list[str], prices: dict,
           source: str = "") -> str:
    c = counts
    head = ["stage", "role or work", "model", "calls / items", "tokens in / out", "time", "cost"]
    body = [_cells(r) for r in rows]
    for label, role in (("teacher total", "teacher"), ("judge total", "judge"), ("second judge total", "judge_b"),
                        ("student generation total", "generation"), ("training total", "training")):
        total = _total_row(label, [r for r in rows if r.role == role], prices)
        body += [total] if total else []
    table = "\n".join(["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
                      + ["| " + " | ".join(x.replace("|", "\\|") for x in r) + " |" for r in body])
    api = [r for r in rows if r.role in ROLES]
    items = (f"Target items: train {_n(c['train'])} / val {_n(c['val'])} / test {_n(c['test'])}; external prompts "
             f"{_n(c['external'])}; DCR evaluation prompts {_n(c['dcr_eval'])} × {len(DCR_MODELS)} models, judged "
             f"answers {_n(c['dcr_judged'])}, win-rate prompts {_n(c['win_rate'])} × 2 orders; Stage A prompts "
             f"{_n(c['contrastive'])}; safety-SFT rows {_n(c['sft'])}.")
    lines = [f"# Estimate for profile `{p.profile}` (run `{p.run_name}`), before running it", "", items, "", table,
             "", _cost_line(api), "", "What these numbers are:"]
    lines += [f"- {x}" for x in _explain(p, ref, counts, prices, source) + [n.rstrip(".") + "." for n in notes]]
    return "\n".join(lines) + "\n"


def _cost_line(api: list[Row]) -> str:
    """The API money in one sentence, saying which rows are unpriced."""
    priced = [r.cost for r in api if r.cost is not None]
    unpriced = sorted({r.work.split(":")[0] for r in api if r.cost is None and r.cost_note != "local (0)"})
    if not priced and not unpriced:
        return "API cost: none (every LLM role runs locally)."
    text = f"API cost of the priced rows: {_money(sum(priced))}" if priced else "API cost: not priced"
    return text + (f"; no price for {', '.join(unpriced)} (--price ROLE=IN/OUT, USD per million tokens)."
                   if unpriced else ".")


def _differs(p: Params, m: dict) -> str:
    """The target's models that are not the reference's (those whose numbers will differ most)."""
    pairs = [("teacher", p.teacher.model, m.get("teacher", {}).get("model")),
             ("judge", p.judge.model, m.get("judge", {}).get("model")),
             ("student", p.student.name, m.get("student")), ("DCR model", p.dcr.model.name, m.get("dcr_model"))]
    return ", ".join(f"{k} `{a}`" for k, a, b in pairs if a != b)


def _explain(p: Params, ref: dict, counts: dict, prices: dict, source: str) -> list[str]:
    pv, items = ref["provenance"], ref["items"]
    m = pv.get("models", {})
    out = [(f"Extrapolated, not measured: every rate comes from the reference run `{pv.get('run')}` (profile "
            f"`{pv.get('profile')}`, {pv.get('reference_run')}, commits "
            f"{', '.join(c[:8] for c in pv.get('git_commits', [])) or '—'}, history "
            f"{' – '.join(x[:10] for x in pv.get('history_utc', []))}). It processed "
            f"train {_n(items.get('train'))} / val {_n(items.get('val'))} / test {_n(items.get('test'))} items, "
            f"{_n(items.get('external'))} external prompts, {_n(items.get('dcr_eval'))} DCR prompts per model."),
           (f"Token counts per call are the reference teacher/judge's (`{m.get('teacher', {}).get('model')}`, "
            f"`{m.get('judge', {}).get('model')}`): their tokenizer, their reply lengths, their retry rate; the "
            f"judge's prompts hold the reference student's (`{m.get('student')}`) rationales."
            + (f" Not the reference's here: {_differs(p, m)}." if _differs(p, m) else "")),
           ("Student tokens per item are the reference student's answer lengths (DCR: "
            f"`{m.get('dcr_model')}`); the cap (items × max_new_tokens) is the hard upper bound."),
           ("Stage I/III examples = train items × the reference's share of accepted teacher targets "
            "(teacher acceptance and `distill.balance_labels` change it); steps follow the target's batch and "
            "epochs exactly."),
           ("Unknown in advance: API latency and rate limits (time —), GPU throughput (pass --gpu-tokens-per-s "
            "and --gpu-seconds-per-step), the harm classifiers' and the eNTK's time, API prompt-cache discounts.")]
    if source:
        out.insert(0, f"Reference: {source}.")
    if pv.get("audit_mode") == "all" and p.audit.mode == "screened":
        out.append("02 and 03's judge: the reference judged every pair (`audit.mode: all`); the target judges only "
                   "screened pairs (Δ > τ), so these rows are upper bounds.")
    drift, test = items.get("drift"), items.get("test")
    rep = _find(ref["llm"], stage="03_repair", role="teacher")
    if rep and drift and test:
        out.append(f"03's teacher calls scale with the drift rate: the reference confirmed {drift} drift case(s) in "
                   f"{test} test items ({drift / test:.1%}), {rep['reference_calls'] / drift:.1f} teacher calls per "
                   f"case; the target's drift rate is unknown until its 02 has run (calls ≈ "
                   f"{rep['reference_calls'] / drift:.1f} × drift cases). Stage III's extra rows scale with it too.")
    win = _find(ref["llm"], stage="10_dcr_evaluation", work="pairwise win rate")
    if win and "cache" in win.get("from", ""):
        out.append("10's pairwise judge rates come from the reference's response cache: 10 recorded the judge's stats "
                   "before the win-rate calls until 2026-12-06 (now after them: taken out of the refusal rate).")
    if prices:
        out.append("Prices as given (" + ", ".join(f"{k} ${a:g} / ${b:g} per M tokens in / out" for k, (a, b) in
                                                    prices.items()) + "): check the provider's current prices.")
    return out


# ---- command line ---------------------------------------------------------------------------------------------------
def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def check_prices(specs: list[str] | None) -> dict[str, tuple[float, float]]:
    """parse_prices (the report's syntax) plus: the role must be one that calls an API."""
    prices = parse_prices(specs)
    for role in prices:
        if role not in ROLES:
            spec = next(s for s in specs if s.strip().startswith(role))
            raise EstimateError(f"--price '{spec}': unknown role '{role}'; priced roles are {', '.join(ROLES)}")
    return prices


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m dart_utils.estimate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--student", default=None)
    ap.add_argument("--params", action="append", default=[], help="extra parameter file (repeatable)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--reference", type=Path, help="a finished run directory, e.g. runs/cpu")
    src.add_argument("--reference-file", type=Path, help=f"saved rates (default {REFERENCE_FILE.name})")
    ap.add_argument("--price", action="append", default=[], metavar="ROLE=IN/OUT",
                    help="USD per million prompt / completion tokens, e.g. judge=0.27/1.10")
    ap.add_argument("--gpu-tokens-per-s", type=_positive, help="student generation throughput on the target GPU")
    ap.add_argument("--gpu-seconds-per-step", type=_positive, help="seconds per LoRA optimizer step on the target GPU")
    ap.add_argument("--save-reference", type=Path, metavar="FILE", help="write the reference run's rates as JSON")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        prices = check_prices(args.price)
        params = load(args.profile, args.student, args.params or None)
        source = ""
        if args.reference_file:
            ref = load_reference(args.reference_file)
        elif args.reference:
            ref = rates_from_run(args.reference)
        elif args.save_reference:
            ref = rates_from_run(DEFAULT_RUN)
        else:
            ref, source = default_reference()
        if args.save_reference:
            if "reference_run" not in ref["provenance"] or args.reference_file:
                raise EstimateError("--save-reference writes a run's rates: give the run with --reference")
            save_reference(ref, args.save_reference)
            print(f"wrote {args.save_reference}", file=sys.stderr)
        rows, counts, notes = estimate(params, ref, prices, args.gpu_tokens_per_s, args.gpu_seconds_per_step)
    except (EstimateError, ParamsError, DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(render(params, rows, counts, ref, notes, prices, source), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
