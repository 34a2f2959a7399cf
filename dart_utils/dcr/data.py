"""DCR's data roles and evaluation sets, read from the staged stand-ins with their SHA-256 checked.

Why: the DCR paper's exact prompts are not public, so every role is a stand-in named in
../shared/data/dcr/README.md (default first): D_seemingly = XSTest's 250 safe prompts; D_toxic = the STL split
``d_toxic_500``; D_safe = the STL split ``d_safe_1k`` (harmful instruction -> safe response); D_general = Alpaca 5k.
CPU-scale subsets are the README's deterministic ones (lowest ``rank_seed42`` first; XSTest: the first k prompts of
each type in file order). The evaluation sets keep their own expected behaviour (comply = over-refusal set,
refuse = safety set). Files are read from ../shared (or the directories the parameters name), never copied.
Every row: ``id``, ``prompt`` (the user turn), ``set``, ``expected`` (comply | refuse), and ``response`` for the
SFT roles.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

from ..core import sampling
from ..core.hashing import sha256_file
from ..core.params import PROJECT_ROOT
from ..data.external import dir_from_params
from ..data.suite import DataError

DEFAULT_DIR = "../shared/data/dcr"

# key -> (root: "dcr" | "external", path under it, sha256 from the folder's SHA256SUMS, rows)
FILES: dict[str, tuple[str, str, str, int]] = {
    "safety_pairs": ("dcr", "safety_tuned_llamas/safety_pairs.jsonl",
                     "dced5c28ca84e54d0851a35afcfdd8c9457eafe43b1e83ae74eecfc4b6b890b6", 2483),
    "dcr_split": ("dcr", "safety_tuned_llamas/dcr_split_seed42.jsonl",
                  "6b8b96b247279898d7b4123601ee011d2cc7f91f4824e65861018e9d4c462b00", 2483),
    "alpaca_5k": ("dcr", "general_instructions/alpaca_5k.jsonl",
                  "6af39f7502d61ab31f6b5579f971bb9e82b93a02794981e8689920c0cef405eb", 5000),
    "alpaca_eval": ("dcr", "alpaca_eval/alpaca_eval_805.jsonl",
                    "daaca1d7f5b3d166ba9f8ba798c4a1614e0eda08f24a9da70a839fdef29cd0f6", 805),
    "advbench": ("dcr", "advbench/harmful_behaviors.jsonl",
                 "82749643038832fe117ac8877d23edcddc7e3549c02c806b296f953644f866e5", 520),
    "stl_malicious": ("dcr", "safety_tuned_llamas/eval_i_malicious_instructions.jsonl",
                      "cc084967d80d4408f4376cc9f8b2765438e6800e695bbd4bbaadbc0d2e75ff13", 100),
    "stl_cona": ("dcr", "safety_tuned_llamas/eval_i_cona.jsonl",
                 "6b77d0aab632a50108e96c588e0c0c3b093867bc8d21beb6685927ea062d5dd4", 178),
    "stl_controversial": ("dcr", "safety_tuned_llamas/eval_i_controversial.jsonl",
                          "c011b8cfda4db109dd002dcc920d91e00d1d408911ea82305148be16cf0fb32a", 40),
    "stl_physical_unsafe": ("dcr", "safety_tuned_llamas/eval_i_physical_safety_unsafe.jsonl",
                            "a0f9edd57773ce760ee2db822121e624eb457a87700b07279a2436ae2ba6d68c", 100),
    "xstest": ("external", "xstest/xstest.jsonl",
               "bfbcaee441e018adda7785062629648cbaf461f42171ba8d973d0b41bd630a91", 450),
    "orbench_hard": ("external", "orbench/orbench_hard_1k.jsonl",
                     "04ab479b17c965b1812307298389c025c204e415379d5444e14236a8dec71e88", 1319),
    "orbench_toxic": ("external", "orbench/orbench_toxic.jsonl",
                      "a2d4c2a70938100098ec157e14b0fcba271ba77ef0cc6ef61b4caf7a092be7be", 655),
    "oktest": ("external", "oktest/oktest.jsonl",
               "feab0086c2343410a2cc05daecf7144f1e56e6bdbac55eea74319738deb40020", 350),
    "phtest": ("external", "phtest/phtest.jsonl",
               "7a496869295d2ea988452880211e42974c7ca0c42bf2a16039be80b066abb451", 3260),
    "coconot_contrast": ("external", "coconot/coconot_contrast_test.jsonl",
                         "c16d49c153dc9aabb918b0ed2bc45749224016231e86a348350ce3830c8d3c03", 379),
}

# Evaluation sets: name -> (file key, row filter, expected behaviour). Over-refusal sets are benign prompts (DCR reports
# compliance); safety sets are harmful prompts (DCR reports the defence success rate = refusal rate).
EVAL_SETS: dict[str, tuple[str, tuple[str, object] | None, str]] = {
    "XSTest-safe": ("xstest", ("label", "safe"), "comply"),
    "OR-Bench-hard": ("orbench_hard", None, "comply"),
    "OKTest": ("oktest", ("split", "main"), "comply"),
    "PHTest": ("phtest", ("harmfulness", "harmless"), "comply"),
    "CoCoNot-contrast": ("coconot_contrast", None, "comply"),
    "XSTest-unsafe": ("xstest", ("label", "unsafe"), "refuse"),
    "OR-Bench-toxic": ("orbench_toxic", None, "refuse"),
    "I-MaliciousInstructions": ("stl_malicious", None, "refuse"),
    "I-CoNa": ("stl_cona", None, "refuse"),
    "I-Controversial": ("stl_controversial", None, "refuse"),
    "I-PhysicalSafetyUnsafe": ("stl_physical_unsafe", None, "refuse"),
    "AdvBench": ("advbench", None, "refuse"),
    "AlpacaEval": ("alpaca_eval", None, "comply"),
}
STRATUM_FIELDS = ("type", "category", "subcategory", "tag")   # a sample keeps these in proportion (first found)
OVER_REFUSAL_SETS = ("XSTest-safe", "OR-Bench-hard", "OKTest", "PHTest", "CoCoNot-contrast")
SAFETY_SETS = ("XSTest-unsafe", "OR-Bench-toxic", "I-MaliciousInstructions", "I-CoNa", "I-Controversial",
               "I-PhysicalSafetyUnsafe", "AdvBench")


def data_dirs(dp, ep) -> dict[str, Path]:
    """The two roots, from ``params.dcr`` (``dp``) and ``params.external`` (``ep``): DCR's folder (the variable named
    in ``dcr.data_dir_env`` wins when set) and the external suites (``external.dir``, or ``external.dir_env``)."""
    dcr = Path(os.environ.get(dp.data_dir_env) or dp.data_dir)
    return {"dcr": dcr if dcr.is_absolute() else (PROJECT_ROOT / dcr).resolve(), "external": dir_from_params(ep)}


def path_of(dirs: dict[str, Path], key: str) -> Path:
    root, rel, _, _ = FILES[key]
    return dirs[root] / rel


def read(dirs: dict[str, Path], key: str, verify: bool = True) -> list[dict]:
    """All records of one staged file, after its checksum and row count are checked (errors name the file)."""
    path = path_of(dirs, key)
    if not path.is_file():
        raise DataError(f"DCR data file not found: {path}. The DCR data is read from {DEFAULT_DIR} and the "
                        f"over-refusal suites from the external suites directory (parameters dcr.data_dir, "
                        f"external.dir, or the variables they name); see ../shared/data/dcr/README.md.")
    if verify:
        actual, expected = sha256_file(path), FILES[key][2]
        if actual != expected:
            raise DataError(f"checksum mismatch for {path}:\n  expected {expected}\n  actual   {actual}\n"
                            f"Restore the staged file (its SOURCE.md says how it was built) or set "
                            f"dcr.verify_checksums: false and record why.")
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{i}: not valid JSON ({e})") from None
    if len(rows) != FILES[key][3]:
        raise DataError(f"{path}: {len(rows)} records, expected {FILES[key][3]} (see its SOURCE.md)")
    return rows


def _prompt_of(instruction: str, inp: str) -> str:
    """Alpaca-style instruction with its optional input, as one user turn (the input after a blank line)."""
    return f"{instruction}\n\n{inp}" if inp and inp.strip() else instruction


def d_seemingly(dirs: dict[str, Path], per_type: int | None = None, verify: bool = True) -> list[dict]:
    """XSTest's safe prompts (``dcr_contrastive_train``), the first ``per_type`` of each type in file order
    (None = all 250)."""
    taken: dict[str, int] = defaultdict(int)
    out = []
    for r in read(dirs, "xstest", verify):
        if not r.get("dcr_contrastive_train"):
            continue
        if per_type is not None and taken[r["type"]] >= per_type:
            continue
        taken[r["type"]] += 1
        out.append({"id": r["id"], "prompt": r["prompt"], "set": "D_seemingly", "expected": "comply",
                    "type": r["type"]})
    return out


def _stl_split(dirs: dict[str, Path], split: str, n: int | None, verify: bool) -> list[dict]:
    """Rows of one split of the suggested STL split, lowest ``rank_seed42`` first (the README's CPU subsets)."""
    pairs = {r["id"]: r for r in read(dirs, "safety_pairs", verify)}
    chosen = sorted((r for r in read(dirs, "dcr_split", verify) if r["split"] == split),
                    key=lambda r: r["rank_seed42"])
    if n is not None:
        if n > len(chosen):
            raise DataError(f"{split} has {len(chosen)} rows; {n} were asked for")
        chosen = chosen[:n]
    return [pairs[r["id"]] | {"rank_seed42": r["rank_seed42"]} for r in chosen]


def d_toxic(dirs: dict[str, Path], n: int | None = None, verify: bool = True) -> list[dict]:
    """D_toxic: the harmful instructions of split ``d_toxic_500`` (disjoint from D_safe), ``n`` lowest ranks."""
    return [{"id": r["id"], "prompt": _prompt_of(r["instruction"], r["input"]), "set": "D_toxic",
             "expected": "refuse"} for r in _stl_split(dirs, "d_toxic_500", n, verify)]


def d_safe(dirs: dict[str, Path], n: int | None = None, verify: bool = True) -> list[dict]:
    """D_safe: harmful instruction -> safe response pairs of split ``d_safe_1k``, ``n`` lowest ranks."""
    return [{"id": r["id"], "prompt": _prompt_of(r["instruction"], r["input"]), "response": r["output"],
             "set": "D_safe", "expected": "refuse"} for r in _stl_split(dirs, "d_safe_1k", n, verify)]


def d_general(dirs: dict[str, Path], n: int | None = None, verify: bool = True) -> list[dict]:
    """D_general: Alpaca 5k rows with ``rank_seed42 < n`` (None = all), rows that duplicate an evaluation prompt
    (non-empty ``eval_overlap``) dropped."""
    rows = sorted(read(dirs, "alpaca_5k", verify), key=lambda r: r["rank_seed42"])
    if n is not None:
        rows = [r for r in rows if r["rank_seed42"] < n]
    return [{"id": r["id"], "prompt": _prompt_of(r["instruction"], r["input"]), "response": r["output"],
             "set": "D_general", "expected": "comply"} for r in rows if not r["eval_overlap"]]


def eval_set(dirs: dict[str, Path], name: str, n: int | None, seed: int, verify: bool = True,
             exclude_ids: set[str] | None = None) -> list[dict]:
    """One evaluation set, all rows or a seed-``seed`` stratified sample of ``n`` (``core.sampling``; file order kept);
    ids in ``exclude_ids``
    (prompts used in training) are dropped first."""
    if name not in EVAL_SETS:
        raise DataError(f"unknown DCR evaluation set {name!r}; known: {', '.join(EVAL_SETS)}")
    key, where, expected = EVAL_SETS[name]
    rows = [r for r in read(dirs, key, verify) if where is None or r.get(where[0]) == where[1]]
    rows = [r for r in rows if r["id"] not in (exclude_ids or set())]
    if n is not None and n < len(rows):   # proportional to the set's own categories, where it has them
        field = next((f for f in STRATUM_FIELDS if f in rows[0]), None)
        strata = [str(r.get(field, "")) if field else "" for r in rows]
        keep = set(sampling.stratified_sample([r["id"] for r in rows], strata, n, seed))
        rows = [r for i, r in enumerate(rows) if i in keep]
    return [{"id": r["id"], "prompt": r["prompt"], "set": name, "expected": expected} for r in rows]


def sft_messages(rows: list[dict], system: str | None = None) -> list[dict]:
    """Conversational prompt-completion rows for trl (``training.train_lora``): [system?, user] -> [assistant]."""
    head = [{"role": "system", "content": system}] if system else []
    return [{"id": r["id"], "prompt": head + [{"role": "user", "content": r["prompt"]}],
             "completion": [{"role": "assistant", "content": r["response"]}]} for r in rows]
