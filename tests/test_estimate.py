"""`python -m dart_utils.estimate` (make estimate): rates from a run, scaling to a profile, prices, bad input.

Why: the estimate is read before money and GPU hours are spent; a rate taken from the wrong history line, a count
that does not scale with the profile or a silently ignored price would mislead exactly then. A small fabricated run
(params + stage_history.jsonl + a few manifests) in tmp_path gives rates known by construction; nothing runs a model.
"""
from __future__ import annotations

import json

import pytest
import yaml

from dart_utils import estimate as est
from dart_utils.core.params import load
from dart_utils.core.stage import registry

TEST_ITEMS = 16      # ci: 1 test item per stratum x 16 strata
TRAIN_ITEMS = 16


def _llm(calls, prompt, completion, cached_calls=0, cached_prompt=0, cached_completion=0, seconds=10.0):
    return {"calls": calls, "cache_hits": cached_calls, "errors": 0, "prompt_tokens": prompt,
            "completion_tokens": completion, "seconds": seconds, "cached_calls": cached_calls,
            "cached_prompt_tokens": cached_prompt, "cached_completion_tokens": cached_completion, "cached_seconds": 0.0}


def _line(stage, utc, llm=None, generation=None, steps=None):
    return {"utc": utc, "run": "fake", "stage": stage, "status": "ran", "wall_time_s": 1.0, "git_commit": "c0ffee",
            "steps": steps or {}, "llm": llm or {}, **({"generation": generation} if generation else {})}


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """A ci-sized run: 16 train / 16 test items. 01's teacher made 30 calls and read 2 from the cache in its cold
    run (a smaller earlier line and a warm rerun must not be picked), 02's judge 16 calls, 03's judge 24."""
    run = tmp_path_factory.mktemp("runs") / "fake"
    run.mkdir()
    p = load("ci").to_dict()
    (run / "params.yaml").write_text(yaml.safe_dump(p))
    lines = [
        _line("01_distill", "2026-01-01T00:00", {"teacher_llm": _llm(5, 500, 100)}),
        _line("01_distill", "2026-01-02T00:00", {"teacher_llm": _llm(30, 3000, 600, 2, 200, 40)},
              {"m0": {"new_tokens": 480, "wall_time_s": 4.0, "tokens_per_s": 120.0},
               "val/m0": {"new_tokens": 160, "wall_time_s": 2.0, "tokens_per_s": 80.0}},
              {"stage I training": 40.0}),
        _line("01_distill", "2026-01-03T00:00", {"teacher_llm": _llm(0, 0, 0, 32, 3200, 640)},
              {"m0": "reused", "val/m0": "reused"}, {"stage I training": 0.5}),
        _line("02_audit", "2026-01-02T01:00", {"judge_llm": _llm(16, 16000, 800)}),
        _line("03_repair", "2026-01-02T02:00",
              {"teacher_llm": _llm(3, 900, 150), "judge_llm": _llm(24, 12000, 1200)}),
        _line("10_dcr_evaluation", "2026-01-02T03:00", {"judge_llm": _llm(12, 3600, 48)}),
    ]
    (run / "stage_history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in lines))
    m01 = run / "01_distill"
    m01.mkdir()
    (m01 / "manifest.json").write_text(json.dumps({"stage1": {"steps": 4, "train_examples": 12}}))
    m03 = run / "03_repair"
    m03.mkdir()
    (m03 / "manifest.json").write_text(json.dumps({"stage3": {"weighted": {"steps": 4}}}))   # one re-audit arm
    m10 = run / "10_dcr_evaluation"
    m10.mkdir()
    (m10 / "manifest.json").write_text(json.dumps({"sizes": {"XSTest-safe": 3, "XSTest-unsafe": 3}}))
    (m10 / "judged.jsonl").write_text("{}\n" * 12)
    return run


@pytest.fixture(scope="module")
def fake_rates(fake_run):
    return est.rates_from_run(fake_run)


def _rate(rates, stage, role, work=None):
    return next(e for e in rates["llm"] if e["stage"] == stage and e["role"] == role
                and (work is None or e["work"] == work))


def test_rates_from_a_synthetic_history(fake_rates):
    teacher = _rate(fake_rates, "01_distill", "teacher")
    assert teacher["reference_calls"] == 32                       # the cold line: fresh 30 + cached 2
    assert teacher["calls_per_item"] == pytest.approx(32 / TRAIN_ITEMS)
    assert teacher["prompt_tokens_per_call"] == pytest.approx(3200 / 32)
    assert teacher["completion_tokens_per_call"] == pytest.approx(640 / 32)
    assert teacher["utc"] == "2026-01-02T00:00"
    judge = _rate(fake_rates, "02_audit", "judge")
    assert judge["calls_per_item"] == pytest.approx(16 / TEST_ITEMS)
    assert judge["prompt_tokens_per_call"] == pytest.approx(1000)
    reaudit = _rate(fake_rates, "03_repair", "judge")
    assert reaudit["per"] == "reaudit" and reaudit["calls_per_item"] == pytest.approx(24 / TEST_ITEMS)
    assert _rate(fake_rates, "03_repair", "teacher")["calls_per_item"] == pytest.approx(3 / TEST_ITEMS)
    dcr = _rate(fake_rates, "10_dcr_evaluation", "judge", "refusal rubric")
    assert dcr["reference_items"] == 12 and dcr["calls_per_item"] == pytest.approx(1.0)
    gen = {e["name"]: e for e in fake_rates["generation"]}
    assert gen["m0"]["new_tokens_per_item"] == pytest.approx(480 / TEST_ITEMS)
    assert gen["val/m0"]["per"] == "val" and gen["val/m0"]["new_tokens_per_item"] == pytest.approx(160 / 16)
    stage1 = next(e for e in fake_rates["training"] if e["stage"] == "01_distill")
    assert stage1["examples"] == {"train": pytest.approx(12 / TRAIN_ITEMS)}
    assert stage1["seconds_per_step"] == pytest.approx(40.0 / 4)
    assert fake_rates["provenance"]["git_commits"] == ["c0ffee"]


def _calls(rows, stage, role):
    return next(r for r in rows if r.stage == stage and r.role == role)


def test_ten_times_the_test_items_gives_ten_times_the_judge_calls(fake_rates):
    small, _, _ = est.estimate(load("ci"), fake_rates)
    large, counts, _ = est.estimate(load("ci", overrides={"splits": {"test_per_stratum": 10}}), fake_rates)
    assert counts["test"] == 10 * TEST_ITEMS
    for stage in ("02_audit", "03_repair"):
        a, b = _calls(small, stage, "judge"), _calls(large, stage, "judge")
        assert a.calls > 0 and b.calls == pytest.approx(10 * a.calls)
        assert b.tokens_in == pytest.approx(10 * a.tokens_in, abs=10)
    assert _calls(large, "01_distill", "teacher").calls == _calls(small, "01_distill", "teacher").calls


def test_a_price_gives_tokens_times_price(fake_rates):
    rows, _, _ = est.estimate(load("ci"), fake_rates, prices={"judge": (0.5, 2.0)})
    judged = [r for r in rows if r.role == "judge" and r.tokens_in is not None]   # the fake run has no win-rate rate
    assert len(judged) == 3
    for r in judged:
        assert r.cost == pytest.approx((r.tokens_in * 0.5 + r.tokens_out * 2.0) / 1e6)
    teacher = _calls(rows, "01_distill", "teacher")
    assert teacher.cost is None and teacher.cost_note == "local (0)"   # ci's teacher is in-process llama.cpp
    assert est.cost(1_000_000, 500_000, (0.27, 1.10)) == pytest.approx(0.27 + 0.55)


def test_training_steps_match_the_reference_runs():
    """The step counts the cpu run's manifests recorded: 97 examples -> 21 (Stage I, batch 16 of 4, 3 epochs),
    750 -> 72 (Stage A, batch 32, 3 epochs), 1,049 -> 66 (safety SFT, batch 16 of 4, 1 epoch)."""
    assert est.optimizer_steps(97, 16, 4, 3.0) == 21
    assert est.optimizer_steps(750, 32, 32, 3) == 72
    assert est.optimizer_steps(1049, 16, 4, 1.0) == 66


def test_a_missing_reference_file_errors_clearly(tmp_path, capsys):
    missing = tmp_path / "nope.json"
    assert est.main(["--profile", "ci", "--reference-file", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "reference file not found" in err and str(missing) in err


def test_a_reference_file_missing_keys_names_them(tmp_path, capsys, fake_rates):
    broken = {k: v for k, v in fake_rates.items() if k != "items"}
    broken["llm"] = [{k: v for k, v in e.items() if k != "calls_per_item"} for e in fake_rates["llm"][:1]]
    f = tmp_path / "broken.json"
    f.write_text(json.dumps(broken))
    assert est.main(["--profile", "ci", "--reference-file", str(f)]) == 2
    err = capsys.readouterr().err
    assert "lacks keys" in err and "items" in err and "llm[0].calls_per_item" in err


@pytest.mark.parametrize("args,needle", [
    (["--profile", "no-such-profile"], "unknown profile 'no-such-profile'"),
    (["--profile", "ci", "--price", "judge=cheap"], "--price 'judge=cheap'"),
    (["--profile", "ci", "--price", "studnet=1/2"], "unknown role 'studnet'"),
])
def test_bad_input_is_rejected_by_name(args, needle, capsys):
    assert est.main(args + ["--reference-file", str(est.REFERENCE_FILE)]) == 2
    assert needle in capsys.readouterr().err


def test_the_committed_reference_is_complete():
    ref = est.load_reference(est.REFERENCE_FILE)
    pv = ref["provenance"]
    assert pv["reference_run"] and pv["git_commits"] and pv["created_utc"]
    assert {(e["stage"], e["role"]) for e in ref["llm"]} >= {("01_distill", "teacher"), ("02_audit", "judge"),
                                                              ("03_repair", "judge"), ("10_dcr_evaluation", "judge")}


def test_paper_estimate_lists_every_stage_that_calls_an_llm(capsys):
    assert est.main(["--profile", "paper", "--reference-file", str(est.REFERENCE_FILE),
                     "--price", "teacher=0.27/1.10", "--price", "judge=0.27/1.10"]) == 0
    out = capsys.readouterr().out
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
             if line.startswith(("| 0", "| 1"))]
    llm_rows = {(c[0], c[1].split(":")[0]) for c in cells if c[1].split(":")[0] in ("teacher", "judge")}
    # which stages call an LLM, from the pipeline's own registry: those whose parameter sections name a role
    expected = {(s.name, role) for s in registry().stages for role in ("teacher", "judge") if role in s.params}
    assert expected and expected <= llm_rows, expected - llm_rows
    assert {s.group for s in registry().stages if any(r in s.params for r in ("teacher", "judge"))} == {"dart", "dcr"}
    for c in cells:
        if c[1].split(":")[0] in ("teacher", "judge"):
            assert c[2] == "`deepseek-chat`", c
            # a required stage has a rate (so a price); an optional one (K.4, notebook 12) until the reference has run it
            assert c[6].startswith("$") or (c[0] not in est.LLM_STAGES and "no rate in the reference" in c[3]), c
    assert "Extrapolated, not measured" in out and "upper bound" in out


def test_09_judge_calls_are_split_only_when_the_line_holds_both_jobs():
    """A new 10 history line counts the refusal and the pairwise judge together; an old one the refusal judge only."""
    def entries(calls):
        return [{"work": "refusal rubric", "reference_calls": calls, "reference_items": 144, "calls_per_item": calls / 144,
                 "prompt_tokens_per_call": 300.0, "completion_tokens_per_call": 5.0, "seconds_per_call": 2.0,
                 "from": "stage_history.jsonl"},
                {"work": "pairwise win rate", "reference_calls": 60, "reference_items": 60, "calls_per_item": 1.0,
                 "prompt_tokens_per_call": 300.0 * 204 / 60 - 144 * 280 / 60, "completion_tokens_per_call": 5.0,
                 "seconds_per_call": 2.0, "from": "response cache"}]
    new = entries(204)
    est._split_09_judge(new, {"dcr_judged": 144})
    assert new[0]["reference_calls"] == 144 and new[0]["calls_per_item"] == 1.0
    assert new[0]["prompt_tokens_per_call"] == pytest.approx(280.0) and "taken out" in new[0]["from"]
    old = entries(144)
    est._split_09_judge(old, {"dcr_judged": 144})
    assert old[0]["reference_calls"] == 144 and old[0]["prompt_tokens_per_call"] == 300.0
