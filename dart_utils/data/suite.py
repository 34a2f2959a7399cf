"""The difference-awareness suite (Wang et al., ACL 2025): locate, verify and load it as a `datasets.Dataset`.

Why: every stage trains or evaluates on these 16,000 records, so a corrupted or substituted file must stop the run
before any work, with the file and both hashes named. The data is read from ../shared (or wherever the user points
the environment variable named in ``data.dir_env``); it is never copied into the project.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import datasets

from ..core.hashing import sha256_file
from ..core.params import PROJECT_ROOT, Params

FIELDS = ("id", "benchmark", "category", "condition", "gold", "question", "answer_index", "scenario_id")
FEATURES = datasets.Features({
    "id": datasets.Value("string"),
    "benchmark": datasets.Value("string"),
    "category": datasets.Value("string"),      # descriptive (D1-D4) | normative (N1-N4)
    "condition": datasets.Value("string"),     # DIFF | EQUAL
    "gold": datasets.Value("string"),          # YES (DIFF) | NO (EQUAL)
    "question": datasets.Value("string"),
    "answer_index": datasets.Value("int64"),
    "scenario_id": datasets.Value("string"),   # upstream mixes int and str; kept as its JSON text
    "question_group": datasets.Value("string"),  # same question up to option order -> same group
})
GOLD_FOR = {"DIFF": "YES", "EQUAL": "NO"}
CATEGORY_FOR = {"D": "descriptive", "N": "normative"}


class DataError(RuntimeError):
    """The benchmark data is missing, corrupted or malformed; the message says which file and what to do."""


def data_dir(params: Params) -> Path:
    """The suite's directory: the environment variable named by ``data.dir_env`` wins over the parameter."""
    env = os.environ.get(params.data.dir_env)
    path = Path(env) if env else Path(params.data.difference_awareness_dir)
    return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()


def files(params: Params) -> list[Path]:
    """The suite's files for the configured benchmarks (what stage 00 reads)."""
    directory = data_dir(params)
    return [directory / f"{b}.jsonl" for b in params.data.benchmarks]


def verify_checksums(params: Params, directory: Path | None = None) -> dict[str, str]:
    """SHA-256 of every benchmark file against the pinned values (from SOURCE.md); returns {benchmark: sha256}."""
    directory = directory or data_dir(params)
    hashes = {}
    for bench in params.data.benchmarks:
        path = _file(directory, bench)
        actual = sha256_file(path)
        hashes[bench] = actual
        if not params.data.verify_checksums:
            continue
        expected = params.data.expected_sha256.get(bench)
        if expected is None:
            raise DataError(f"no expected SHA-256 for {bench}: add data.expected_sha256.{bench} to your parameters")
        if actual != expected:
            raise DataError(
                f"checksum mismatch for {path}:\n  expected {expected}\n  actual   {actual}\n"
                f"The file is corrupted or is not the pinned release. Restore it (see SOURCE.md beside it), or, if "
                f"you converted different data on purpose (`make data`), set data.expected_sha256.{bench} in a "
                f"parameter file passed with PARAMS=...")
    return hashes


def _file(directory: Path, bench: str) -> Path:
    path = directory / f"{bench}.jsonl"
    if not path.is_file():
        raise DataError(
            f"benchmark file not found: {path}\nThe suite is read from ../shared/data/difference_awareness by "
            f"default. Point elsewhere with the DART_DATA_DIR environment variable (or data.difference_awareness_dir), "
            f"or build it from the authors' pickles with `make data`.")
    return path


_OPTIONS = re.compile(r"^(?P<stem>.*)\((?:a|1)\)\s*(?P<a>.*?)\s*\(b\)\s*(?P<b>.*?)\s*\(c\)\s*(?P<c>.*)$", re.S)


def question_group(question: str) -> str:
    """A key equal for questions that are the same up to option order.

    The stem and the unordered pair of group options (a)/(b) identify a question; the third option ("neither" /
    "equally") is left out because upstream rewords it between swapped copies (D3, see docs/splits.md). Text that
    has no (a)/(b)/(c) options is keyed by its whole normalised text.
    """
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    m = _OPTIONS.match(question)
    parts = [norm(question)] if not m else [norm(m["stem"]), *sorted([norm(m["a"]), norm(m["b"])])]
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:16]


def _check_record(rec: dict, path: Path, line_no: int) -> dict:
    where = f"{path}:{line_no}"
    missing = [k for k in FIELDS if k not in rec]
    if missing:
        raise DataError(f"{where}: record lacks {missing}")
    if rec["condition"] not in GOLD_FOR or rec["gold"] != GOLD_FOR[rec["condition"]]:
        raise DataError(f"{where}: condition {rec['condition']!r} with gold {rec['gold']!r} (DIFF->YES, EQUAL->NO)")
    if rec["category"] != CATEGORY_FOR.get(rec["benchmark"][:1]):
        raise DataError(f"{where}: benchmark {rec['benchmark']} with category {rec['category']!r}")
    if not isinstance(rec["question"], str) or not rec["question"].strip():
        raise DataError(f"{where}: empty question")
    out = {k: rec[k] for k in FIELDS}
    sid = rec["scenario_id"]
    out["scenario_id"] = sid if isinstance(sid, str) else json.dumps(sid)
    out["question_group"] = f"{rec['benchmark']}:{question_group(rec['question'])}"
    return out


def load_records(params: Params, verify: bool = True) -> list[dict]:
    """All records of the configured benchmarks, checked (checksums first, then each record's schema)."""
    directory = data_dir(params)
    if verify:
        verify_checksums(params, directory)
    records, seen = [], set()
    for bench in params.data.benchmarks:
        path = _file(directory, bench)
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                try:
                    rec = _check_record(json.loads(line), path, i)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{i}: not valid JSON ({e})") from None
                if rec["benchmark"] != bench:
                    raise DataError(f"{path}:{i}: record of benchmark {rec['benchmark']} in {bench}.jsonl")
                if rec["id"] in seen:
                    raise DataError(f"{path}:{i}: duplicate id {rec['id']}")
                seen.add(rec["id"])
                records.append(rec)
    return records


def load_suite(params: Params, verify: bool = True) -> datasets.Dataset:
    """The suite as one `datasets.Dataset` with a fixed schema (FEATURES)."""
    records = load_records(params, verify=verify)
    return datasets.Dataset.from_list(records, features=FEATURES)
