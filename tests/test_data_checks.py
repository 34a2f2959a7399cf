"""Parameters checked against the data before any work (dart_utils/data/checks.py), on the real suite."""
import json
import time

import pytest
import yaml

from dart_utils.core import params as P
from dart_utils.data.checks import check_against_data

STUDENTS = ["llama-3-8b", "llama-3.2-3b", "qwen2.5-14b", "mistral-7b-v0.3", "gemma-2-9b", "smollm2-135m",
            "qwen2.5-coder-1.5b"]


def _extra(tmp_path, content: dict, name="mine.yaml"):
    f = tmp_path / name
    f.write_text(yaml.safe_dump(content))
    return f


@pytest.mark.parametrize("profile", ["paper", "cpu", "cpu-large", "ci"])
def test_shipped_profiles_fit_the_data(profile):
    assert check_against_data(P.load(profile)) == []


def test_every_student_fits_the_data():
    for profile in ("paper", "cpu"):
        for student in STUDENTS:
            assert check_against_data(P.load(profile, student)) == [], (profile, student)


def test_it_is_fast():
    params = P.load("paper")
    t0 = time.perf_counter()
    check_against_data(params)
    assert time.perf_counter() - t0 < 1.0


def test_test_size_larger_than_a_stratum(tmp_path):
    f = _extra(tmp_path, {"splits": {"test_per_stratum": 5000}})
    problems = check_against_data(P.load("cpu", extra_files=[f]))
    assert len(problems) == 16                                  # 8 benchmarks x DIFF/EQUAL
    assert all(p.startswith(f"splits.test_per_stratum (set in {f}): 5000 test + 4 val + 8 train") for p in problems)
    assert any("stratum D1/DIFF has 1000 records" in p for p in problems)
    assert any("stratum N4/EQUAL has 1000 records" in p for p in problems)


def test_the_largest_share_is_named_and_per_benchmark_test_sizes_count(tmp_path):
    f = _extra(tmp_path, {"splits": {"train_per_stratum": 800, "test_per_stratum_by_benchmark": {"D1": 300}}})
    problems = check_against_data(P.load("cpu", extra_files=[f]))
    assert problems == [f"splits.train_per_stratum (set in {f}): 300 test + 4 val + 800 train records per stratum, "
                        f"but stratum D1/{c} has 1000 records" for c in ("DIFF", "EQUAL")]


def test_unknown_benchmark_in_test_sizes(tmp_path):
    f = _extra(tmp_path, {"splits": {"test_per_stratum_by_benchmark": {"d1": 5, "D9": 5}}})
    d1, d9 = sorted(check_against_data(P.load("cpu", extra_files=[f])), key=str.lower)
    assert d1.startswith(f"splits.test_per_stratum_by_benchmark.d1 (set in {f}): d1 is not a configured benchmark")
    assert "Did you mean 'D1'?" in d1
    assert d9.startswith(f"splits.test_per_stratum_by_benchmark.D9 (set in {f})") and "Did you mean" not in d9


def test_external_size_larger_than_the_staged_suite(tmp_path):
    f = _extra(tmp_path, {"external": {"sizes": {"HolisticBias": 193, "HateCheck-1000": None}}})
    problems = check_against_data(P.load("cpu", extra_files=[f]))
    assert problems == [(f"external.sizes.HolisticBias (set in {f}): 193 prompts requested, but the staged "
                         f"HolisticBias file (holisticbias/holisticbias_dart192.jsonl) has 192 rows "
                         f"(null = all of them)")]


def test_premise_labelled_n_against_its_labelled_set(tmp_path):
    f = _extra(tmp_path, {"policy": {"premise_labelled_set": "HateCheck-1000", "premise_labelled_n": 1001}})
    problems = check_against_data(P.load("cpu", extra_files=[f]))
    assert len(problems) == 1 and problems[0].startswith(f"policy.premise_labelled_n (set in {f}): 1001 cases")
    ok = _extra(tmp_path, {"policy": {"premise_labelled_set": "none", "premise_labelled_n": 100000}}, "off.yaml")
    assert check_against_data(P.load("cpu", extra_files=[ok])) == []


def test_missing_data_directory_is_a_problem_with_the_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("DART_DATA_DIR", str(tmp_path / "nowhere"))
    problems = check_against_data(P.load("cpu"))
    assert len(problems) == 1
    assert problems[0].startswith("data.dir_env (set in params/base.yaml): $DART_DATA_DIR=")
    assert str(tmp_path / "nowhere") in problems[0] and "make data" in problems[0]


def test_small_suite_missing_file_and_malformed_line(tmp_path, monkeypatch):
    """A suite of our own: a stratum smaller than the splits, a missing file and a malformed line are all named."""
    lines = [json.dumps({"benchmark": "D1", "condition": c}) for c in ["DIFF"] * 20 + ["EQUAL"] * 5]
    (tmp_path / "D1.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "D2.jsonl").write_text('{"benchmark": "D2"}\n')
    monkeypatch.setenv("DART_DATA_DIR", str(tmp_path))
    f = _extra(tmp_path, {"data": {"benchmarks": ["D1", "D2", "D3"]}, "splits": {"test_per_stratum_by_benchmark": {}}})
    problems = check_against_data(P.load("ci", extra_files=[f]))
    assert len(problems) == 2, problems      # D1 fits: 1 + 1 + 1 <= 5
    assert f"{tmp_path / 'D2.jsonl'}:1 is not a record" in problems[0]
    assert problems[1].startswith(f"data.benchmarks (set in {f}): benchmark file not found: {tmp_path / 'D3.jsonl'}")
    small = _extra(tmp_path, {"splits": {"train_per_stratum": 4}}, "small.yaml")
    problems = check_against_data(P.load("ci", extra_files=[f, small]))
    assert problems[2] == (f"splits.train_per_stratum (set in {small}): 1 test + 1 val + 4 train records per "
                           f"stratum, but stratum D1/EQUAL has 5 records")


def test_open_ended_n_larger_than_the_set(tmp_path):
    f = _extra(tmp_path, {"open_ended": {"n": 281}})
    problems = check_against_data(P.load("cpu", extra_files=[f]))
    assert problems == [f"open_ended.n (set in {f}): 281 queries requested, but the open-ended set has 280 "
                        "(null = all of them)"]


def test_cross_validation_without_folds(tmp_path):
    f = _extra(tmp_path, {"baselines": {"cv": True}})                   # cpu draws no folds (splits.cv_folds: 0)
    problems = check_against_data(P.load("cpu", extra_files=[f]))
    assert problems == [f"baselines.cv (set in {f}): cross-validation is on, but splits.cv_folds (set in "
                        f"{P.load('cpu').origin('splits.cv_folds')}) is 0 (no folds): set splits.cv_folds to 2 or "
                        "more, or baselines.cv to false"]
