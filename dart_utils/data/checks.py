"""Parameters checked against the data, before any work: sizes the schema alone cannot refute.

Why: a split larger than a stratum, or a sample larger than a staged suite, is only found when a stage draws it,
possibly hours into a run. `make check` and `make all` call `check_against_data` first (dart_utils/pipeline.py).
Every problem names the dotted key and the file that set it (`Params.origin`). Checksums are not verified here
(stage 00 does): this check counts records and must stay fast.
"""
from __future__ import annotations

import difflib
import json
import os
from collections import Counter
from pathlib import Path

from ..core.params import Params
from .external import FILES
from .suite import GOLD_FOR, DataError, _file, data_dir

CONDITIONS = tuple(GOLD_FOR)            # DIFF, EQUAL
# external.sizes / policy.premise_labelled_set name -> key of external.FILES (path, sha256, rows)
SUITE_FILES = {"BOLD": "bold", "HolisticBias": "holisticbias", "RTP": "rtp", "HateCheck": "hatecheck",
               "HateCheck-1000": "hatecheck_1000"}


def _at(params: Params, key: str) -> str:
    return f"{key} (set in {params.origin(key)})"


def _dir_key(params: Params) -> str:
    """Where the data directory came from: the environment variable named by data.dir_env, else the parameter."""
    var = params.data.dir_env
    if os.environ.get(var):
        return f"{_at(params, 'data.dir_env')}: ${var}={os.environ[var]}"
    return _at(params, "data.difference_awareness_dir")


def _hint(err: DataError) -> str:
    """The advice part of a data error (its lines after the first), to repeat beside our own first line."""
    return str(err).partition("\n")[2].replace("\n", " ")


def _count_file(path: Path) -> Counter | str:
    """Records per (benchmark, condition) in one JSONL file, or the first line that is not such a record."""
    counts: Counter = Counter()
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
                counts[rec["benchmark"], rec["condition"]] += 1
            except (json.JSONDecodeError, KeyError, TypeError):
                return f"{path}:{i}"
    return counts


def _stratum_counts(params: Params, problems: list[str]) -> dict[str, Counter]:
    """benchmark -> records per (benchmark, condition), for every readable benchmark file; each file that cannot be
    read adds one problem instead (and its strata are not checked)."""
    directory = data_dir(params)
    counts = {}
    for bench in params.data.benchmarks:
        try:
            path = _file(directory, bench)
        except DataError as e:
            if not directory.is_dir():
                problems.append(f"{_dir_key(params)}: data directory not found: {directory}. {_hint(e)}")
                return {}
            problems.append(f"{_at(params, 'data.benchmarks')}: benchmark file not found: "
                            f"{directory / f'{bench}.jsonl'} (directory from {_dir_key(params)}). {_hint(e)}")
            continue
        got = _count_file(path)
        if isinstance(got, str):
            problems.append(f"{_dir_key(params)}: {got} is not a record with 'benchmark' and 'condition' "
                            f"(stage 00 reports every malformed record)")
            continue
        counts[bench] = got
    return counts


def _split_problems(params: Params, counts: dict[str, Counter]) -> list[str]:
    s, problems = params.splits, []
    for bench, found in counts.items():
        test_key = "splits.test_per_stratum"
        if bench in s.test_per_stratum_by_benchmark:
            test_key = f"splits.test_per_stratum_by_benchmark.{bench}"
        sizes = {test_key: s.test_per_stratum_by_benchmark.get(bench, s.test_per_stratum),
                 "splits.val_per_stratum": s.val_per_stratum, "splits.train_per_stratum": s.train_per_stratum}
        blamed = max(sizes, key=sizes.get)          # the largest share is the likeliest culprit
        need = sum(sizes.values())
        for cond in CONDITIONS:
            have = found[bench, cond]
            if need > have:
                problems.append(
                    f"{_at(params, blamed)}: {sizes[test_key]} test + {s.val_per_stratum} val + "
                    f"{s.train_per_stratum} train records per stratum, but stratum {bench}/{cond} has {have} records")
    return problems


def _unknown_benchmarks(params: Params) -> list[str]:
    known, problems = params.data.benchmarks, []
    for bench in params.splits.test_per_stratum_by_benchmark:
        if bench not in known:
            close = [k for k in known if k.lower() == bench.lower()] or difflib.get_close_matches(bench, known, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            problems.append(f"{_at(params, f'splits.test_per_stratum_by_benchmark.{bench}')}: {bench} is not a "
                            f"configured benchmark (data.benchmarks: {', '.join(known)}).{hint}")
    return problems


def _external_problems(params: Params) -> list[str]:
    problems = []
    for suite, n in params.external.sizes.items():
        path, _, rows = FILES[SUITE_FILES[suite]]
        if n is not None and n > rows:
            problems.append(f"{_at(params, f'external.sizes.{suite}')}: {n} prompts requested, but the staged "
                            f"{suite} file ({path}) has {rows} rows (null = all of them)")
    pol = params.policy
    if pol.premise_labelled_set != "none" and pol.premise_labelled_n is not None:
        path, _, rows = FILES[SUITE_FILES[pol.premise_labelled_set]]
        if pol.premise_labelled_n > rows:
            problems.append(f"{_at(params, 'policy.premise_labelled_n')}: {pol.premise_labelled_n} cases requested, "
                            f"but {pol.premise_labelled_set} ({path}) has {rows} labelled rows (null = all of them)")
    return problems


def _open_ended_problems(params: Params) -> list[str]:
    from .open_ended import FILES as OE_FILES
    n, rows = params.open_ended.n, OE_FILES["queries.jsonl"][1]
    if n is not None and n > rows:
        return [f"{_at(params, 'open_ended.n')}: {n} queries requested, but the open-ended set has {rows} "
                "(null = all of them)"]
    return []


def _cv_problems(params: Params) -> list[str]:
    if params.baselines.cv and params.splits.cv_folds < 2:
        return [f"{_at(params, 'baselines.cv')}: cross-validation is on, but {_at(params, 'splits.cv_folds')} is "
                f"{params.splits.cv_folds} (no folds): set splits.cv_folds to 2 or more, or baselines.cv to false"]
    return []


def check_against_data(params: Params) -> list[str]:
    """One human-readable problem per violation (empty: the parameters fit the data), each naming key and file."""
    problems = _unknown_benchmarks(params)
    problems += _split_problems(params, _stratum_counts(params, problems))
    return problems + _external_problems(params) + _open_ended_problems(params) + _cv_problems(params)

