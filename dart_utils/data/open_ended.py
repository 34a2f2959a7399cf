"""The open-ended transfer set (paper App. I.1, Table 14): 280 free-form queries in four domains, with a rubric.

Why: the paper's 280 queries were never published; ../shared/data/open_ended holds a set built to App. I.1's
description (SOURCE.md there: 70 prompts per domain, each labelled `demographics_relevant` and `harmful_premise`,
with a reference `appropriate_answer` for the judge). Scores on it are NOT item-comparable with the paper's. The
files are read from there (or from the directory named in $DART_OPEN_ENDED_DIR / `open_ended.dir_env`), never copied
into the project, and a corrupted or substituted file stops the run with the file and both hashes named. A record
that breaks the schema is rejected with its line and key.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import datasets

from ..core import sampling
from ..core.hashing import sha256_file
from ..core.params import PROJECT_ROOT
from .suite import DataError

DOMAINS = ("medical", "legal", "policy", "education")
PREFIX = {"medical": "med-", "legal": "leg-", "policy": "pol-", "education": "edu-"}
# file -> (sha256 from SOURCE.md, rows); SOURCE.md itself is not pinned (it names the others' hashes)
FILES = {"queries.jsonl": ("92f045a3c2f436d3753f82c5acee423d3ba3c5687778d235f8309e33ad54f02e", 280),
         "rubric.md": ("b1e8badb3895185bb68ae77d6b304548adf68188962b80e5c9480a63012907f5", None)}
FEATURES = datasets.Features({
    "id": datasets.Value("string"), "domain": datasets.Value("string"), "prompt": datasets.Value("string"),
    "demographics_relevant": datasets.Value("bool"), "harmful_premise": datasets.Value("bool"),
    "appropriate_answer": datasets.Value("string"), "groups": datasets.Sequence(datasets.Value("string")),
    "topic": datasets.Value("string")})
_TYPES = {"id": str, "domain": str, "prompt": str, "demographics_relevant": bool, "harmful_premise": bool,
          "appropriate_answer": str, "groups": list, "topic": str}


def open_ended_dir(op) -> Path:
    """The set's directory for `params.open_ended`: the variable named in `dir_env` when set, else `dir` (relative
    paths from the project root)."""
    path = Path(os.environ.get(op.dir_env) or op.dir)
    return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()


def _file(directory: Path, name: str, verify: bool) -> Path:
    path = Path(directory) / name
    if not path.is_file():
        raise DataError(f"open-ended file not found: {path}\nThe set is read from ../shared/data/open_ended by "
                        "default; point elsewhere with open_ended.dir or the variable named in open_ended.dir_env.")
    if verify:
        actual, expected = sha256_file(path), FILES[name][0]
        if actual != expected:
            raise DataError(f"checksum mismatch for {path}:\n  expected {expected}\n  actual   {actual}\n"
                            "The file is corrupted or not the staged version (its SOURCE.md gives the hashes). Restore "
                            "it, or set open_ended.verify_checksums: false and record why.")
    return path


def _check(rec: dict, where: str) -> dict:
    missing = [k for k in _TYPES if k not in rec]
    if missing:
        raise DataError(f"{where}: record lacks {missing}")
    for k, t in _TYPES.items():
        if not isinstance(rec[k], t) or (t is str and not rec[k].strip()):
            raise DataError(f"{where}: key {k!r} must be a non-empty {t.__name__}, got {rec[k]!r}")
    if rec["domain"] not in DOMAINS:
        raise DataError(f"{where}: key 'domain' is {rec['domain']!r}, not one of {DOMAINS}")
    if not rec["id"].startswith(PREFIX[rec["domain"]]):
        raise DataError(f"{where}: id {rec['id']!r} does not start with {PREFIX[rec['domain']]!r} (domain "
                        f"{rec['domain']})")
    return {k: rec[k] for k in FEATURES}


def load_queries(directory: str | Path, verify: bool = True) -> datasets.Dataset:
    """All 280 queries (checksum, row count, schema and unique ids checked)."""
    path = _file(Path(directory), "queries.jsonl", verify)
    rows, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            where = f"{path}:{i}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON ({e})") from None
            row = _check(rec, where)
            if row["id"] in seen:
                raise DataError(f"{where}: duplicate id {row['id']}")
            seen.add(row["id"])
            rows.append(row)
    if verify and len(rows) != FILES["queries.jsonl"][1]:
        raise DataError(f"{path}: {len(rows)} records, expected {FILES['queries.jsonl'][1]} (see SOURCE.md)")
    return datasets.Dataset.from_list(rows, features=FEATURES)


def load_rubric(directory: str | Path, verify: bool = True) -> str:
    """The judging rubric (rubric.md), checksum-checked: the judge's system prompt quotes it."""
    return _file(Path(directory), "rubric.md", verify).read_text(encoding="utf-8")


def stratum(row: dict) -> str:
    return f"{row['domain']}|rel={row['demographics_relevant']}|hp={row['harmful_premise']}"


def sample(ds: datasets.Dataset, n: int | None, seed: int) -> datasets.Dataset:
    """A seeded sample of n queries stratified by domain × demographics_relevant × harmful_premise (proportional,
    `core.sampling.stratified_sample`, rows keep the file's order); None or n >= 280 = all."""
    if n is None or n >= len(ds):
        return ds
    if n < 1:
        raise ValueError(f"open_ended.n must be >= 1 or null, got {n}")
    return ds.select(sampling.stratified_sample(list(ds["id"]), [stratum(r) for r in ds], n, seed))
