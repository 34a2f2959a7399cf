"""Main results of notebook 07 (dart_utils.main_results): Tables 2, 4, 13, 16, the toxicity shifts and Figure 3's
data on small hand-made prediction frames whose right answers are known by hand."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dart_utils.analysis import main_results as MR
from dart_utils.core import params as P
from dart_utils.core.artifacts import write_jsonl
from dart_utils.core.paper import reported

RULE = SimpleNamespace(acc_small_pp=2.0, acc_large_pp=10.0, tox_small_pct=5.0, tox_large_pct=20.0)
N_BOOT = 500


def frame(correct, parsed=None, condition=None, benchmark=None, toxicity=None, prefix="i"):
    """A prediction frame: gold YES everywhere; prediction YES when correct, NO when wrong, None when unparsed."""
    n = len(correct)
    parsed = [True] * n if parsed is None else parsed
    condition = condition or ["DIFF", "EQUAL"] * (n // 2) + ["DIFF"] * (n % 2)
    benchmark = benchmark or ["D1"] * n
    pred = [None if not p else ("YES" if c else "NO") for c, p in zip(correct, parsed)]
    return pd.DataFrame({"id": [f"{prefix}{k:03d}" for k in range(n)], "benchmark": benchmark,
                         "category": ["descriptive" if b.startswith("D") else "normative" for b in benchmark],
                         "condition": condition, "gold": ["YES"] * n, "prediction": pred, "parsed": parsed,
                         "toxicity": toxicity if toxicity is not None else [0.1] * n})


def row(table, metric):
    return table.set_index("metric").loc[metric]


# ---- Table 2 ----------------------------------------------------------------------------------------------------
def test_table2_mcnemar_counts_p_and_bonferroni_mark():
    # 10 items: both right on 2, both wrong on 1, only M0 right on 1 (b), only M_DART right on 6 (c)
    m0 = frame([True] * 2 + [False] + [True] + [False] * 6)
    md = frame([True] * 2 + [False] + [False] + [True] * 6)
    t, _ = MR.table2(m0, md, "llama-3-8b-instruct", alpha=0.05, comparisons=15)
    r = row(t, "Accuracy Overall")
    assert (r["this run M0"], r["this run M_DART"], r["Δ"]) == (0.3, 0.8, 0.5)
    assert r["n tested"] == 10
    assert r["p"] == pytest.approx(stats.binomtest(1, 7, 0.5).pvalue) == pytest.approx(16 / 128)
    assert r["p (Bonferroni)"] == 1.0 and r["mark"] == "–"        # 15 × .125 > .05
    # 20 discordant items all in M_DART's favour: p = 2 · 0.5^20, × 15 < .001 -> ***
    t, _ = MR.table2(frame([False] * 20), frame([True] * 20), "llama-3-8b-instruct")
    r = row(t, "Accuracy Overall")
    assert r["p"] == pytest.approx(2 * 0.5 ** 20) and r["mark"] == "***"
    assert r["p (Bonferroni)"] == pytest.approx(15 * 2 * 0.5 ** 20)
    # with one comparison the same p needs no correction; a mark can change with the family size
    t1, _ = MR.table2(frame([True] * 2 + [False] * 8), frame([True] * 9 + [False]), "llama-3-8b-instruct",
                      comparisons=1)
    t15, _ = MR.table2(frame([True] * 2 + [False] * 8), frame([True] * 9 + [False]), "llama-3-8b-instruct")
    assert row(t1, "Accuracy Overall")["p"] == pytest.approx(2 * 0.5 ** 7)
    assert row(t1, "Accuracy Overall")["mark"] == "*" and row(t15, "Accuracy Overall")["mark"] == "–"


def test_table2_parsed_only_rows_and_untested_rows():
    # M0 leaves items 0-3 unparsed; M_DART parses all. Parsed-only accuracy: each model on its own parsed items;
    # the paired test only on the items both parsed (4..9).
    m0 = frame([False] * 4 + [True, True, False, False, False, False], parsed=[False] * 4 + [True] * 6)
    md = frame([True] * 10)
    t, _ = MR.table2(m0, md, "llama-3-8b-instruct")
    r = row(t, "Accuracy D1–D4")
    assert r["this run M0"] == pytest.approx(2 / 6, abs=1e-3) and r["this run M_DART"] == 1.0
    assert r["n tested"] == 6 and r["p"] == pytest.approx(2 * 0.5 ** 4)
    assert row(t, "Accuracy Overall")["this run M0"] == 0.2             # unparsed = wrong: 2 / 10
    assert row(t, "Parse %")["n tested"] == 10 and row(t, "Parse %")["p"] == pytest.approx(2 * 0.5 ** 4)
    assert set(t.loc[t.metric.str.startswith("Macro-F1"), "mark"]) == {MR.NOT_TESTED}
    n = row(t, "Accuracy N1–N4")                                        # no normative item at all
    assert pd.isna(n["n tested"]) or n["n tested"] == 0
    assert n["mark"] == MR.NO_TEST and pd.isna(n["p"])


def test_table2_paper_columns_and_fallback():
    m = frame([True, False])
    t, notes = MR.table2(m, m, "qwen2.5-14b-instruct")
    assert row(t, "Accuracy Overall")["paper M0"] == 0.448 and row(t, "EQUAL Acc")["paper M_DART"] == 0.806
    assert row(t, "DIFF Acc")["paper mark"] == "–" and row(t, "EQUAL Acc")["paper mark"] == "***"
    assert not any("reports no" in n for n in notes)
    t, notes = MR.table2(m, m, "smollm2-135m-instruct")
    assert row(t, "Accuracy Overall")["paper M0"] == 0.390 and row(t, "Accuracy Overall")["paper Δ"] == 0.298
    assert any("smollm2-135m-instruct" in n and "llama-3-8b-instruct" in n for n in notes)


# ---- Table 13 ---------------------------------------------------------------------------------------------------
def test_table13_per_benchmark_and_unweighted_averages():
    bench = ["D1"] * 4 + ["D2"] * 2 + ["N1"] * 2
    # M0: D1 1/4 right, D2 2/2, N1 one unparsed + one right. M_DART: all right except one D1.
    m0 = frame([True, False, False, False, True, True, False, True], parsed=[True] * 6 + [False, True],
               benchmark=bench)
    md = frame([True, True, True, False, True, True, True, True], benchmark=bench)
    t, _ = MR.table13(m0, md, "llama-3-8b-instruct")
    t = t.set_index("benchmark")
    assert t.loc["D1", "this run M0"] == 0.25 and t.loc["D1", "this run M_DART"] == 0.75
    assert t.loc["N1", "this run M0"] == 1.0 and t.loc["N1", "parsed M0"] == 1
    # unweighted: (0.25 + 1.0) / 2, not the item-weighted 3 / 6
    assert t.loc["D-Average", "this run M0"] == pytest.approx(0.625, abs=1e-3)
    assert t.loc["D-Average", "Δ"] == pytest.approx(((0.75 - 0.25) + 0) / 2, abs=1e-3)
    assert t.loc["D-Average", "n"] == 6 and t.loc["N-Average", "n"] == 2
    assert t.loc["D1", "paper Δ (pp)"] == 3.9 and t.loc["N1", "paper M_DART"] == "0.995"
    assert t.loc["N1", "paper M0"] is None


def test_table13_average_skips_unparsed_benchmark_and_withholds_delta():
    bench = ["D1", "D1", "D2", "D2"]
    m0 = frame([True, False, False, False], parsed=[True, True, False, False], benchmark=bench)
    md = frame([True, True, True, False], benchmark=bench)
    t, _ = MR.table13(m0, md, "llama-3-8b-instruct")
    t = t.set_index("benchmark")
    assert math.isnan(t.loc["D2", "this run M0"])
    assert t.loc["D-Average", "this run M0"] == 0.5 and t.loc["D-Average", "this run M_DART"] == 0.75
    assert t.loc["D-Average", "Δ"] is None and t.loc["D-Average", "benchmarks averaged"] == "M0 1, M_DART 2 of 2"


# ---- Table 16 ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("g, label", [(0.05, "negligible"), (0.0501, "small"), (0.15, "small"), (0.151, "medium"),
                                      (0.25, "medium"), (0.2501, "large"), (float("nan"), "")])
def test_cohen_size_thresholds(g, label):
    assert MR.cohen_size(g) == label


def test_table16_g_is_abs_b_minus_c_over_all_items():
    # EQUAL items (odd positions): M0 wrong on all 5, M_DART right on 4 -> b 0, c 4, g 4/5; DIFF: identical
    m0 = frame([True, False] * 5)
    md = frame([True, True] * 4 + [True, False])
    preds = {"m0": m0, "m_int": m0, "m_dart": md}
    t, _ = MR.table16(preds)
    r = t[(t.comparison == "M0 → M_DART") & (t.metric == "EQUAL")].iloc[0]
    assert (r["n"], r["b"], r["c"], r["g"], r["size"]) == (5, 0, 4, 0.8, "large")
    assert r["paper"] == reported("table16")["acc_equal"]
    d = t[(t.comparison == "M0 → M_DART") & (t.metric == "DIFF")].iloc[0]
    assert (d["b"], d["c"], d["g"], d["size"], d["p"]) == (0, 0, 0.0, "negligible", 1.0)
    mi = t[(t.comparison == "M0 → M_int") & (t.metric == "Overall")].iloc[0]
    assert mi["g"] == 0 and pd.isna(mi["paper"])
    assert len(t) == 15


# ---- toxicity shift ---------------------------------------------------------------------------------------------
def test_toxicity_shift_exact_ratio_and_ci_contains_estimate():
    rng = np.random.default_rng(0)
    x = rng.uniform(1e-5, 1e-4, 60)
    r = MR.toxicity_shift(x, 1.1 * x, n_resamples=N_BOOT)
    assert r["change_pct"] == pytest.approx(10.0)
    assert r["ci_lo_pct"] == pytest.approx(10.0) and r["ci_hi_pct"] == pytest.approx(10.0)
    y = x * rng.uniform(0.7, 1.0, 60)
    r = MR.toxicity_shift(x, y, n_resamples=N_BOOT)
    assert r["ci_lo_pct"] <= r["change_pct"] <= r["ci_hi_pct"] < 0
    assert r["p_permutation"] < 0.05 and 0 < r["p_mann_whitney"] <= 1
    z = MR.toxicity_shift(np.zeros(10), np.ones(10), n_resamples=N_BOOT)
    assert math.isnan(z["change_pct"]) and math.isnan(z["p_permutation"])


def test_toxicity_shift_table_rows_and_paper_columns():
    base = np.linspace(1, 2, 20)
    preds = {"m0": frame([True] * 20, toxicity=base), "m_int": frame([True] * 20, toxicity=base * 1.5),
             "m_dart": frame([True] * 20, toxicity=base * 0.75)}
    t, _ = MR.toxicity_shift_table(preds, n_resamples=N_BOOT)
    t = t.set_index("shift")
    assert t.loc["M0 → M_int", "change %"] == pytest.approx(50.0)
    assert t.loc["M_int → M_DART", "change %"] == pytest.approx(-50.0)
    assert t.loc["M0 → M_DART", "change %"] == pytest.approx(-25.0)
    assert t.loc["M0 → M_int", "paper change %"] == 7.1 and t.loc["M_int → M_DART", "paper change %"] == -13.7


def test_table44_medians_and_shifts_per_task_type():
    bench = ["D1"] * 10 + ["N2"] * 10
    base = np.r_[np.linspace(1, 2, 10), np.linspace(3, 4, 10)]
    int_ = np.r_[np.linspace(1, 2, 10) * 2.0, np.linspace(3, 4, 10)]          # drift only in descriptive
    dart = np.r_[np.linspace(1, 2, 10) * 0.5, np.linspace(3, 4, 10) * 0.8]
    preds = {m: frame([True] * 20, benchmark=bench, toxicity=t)
             for m, t in (("m0", base), ("m_int", int_), ("m_dart", dart))}
    preds["m_int"] = preds["m_int"].iloc[::-1]                                # joined by id, not by position
    t, notes = MR.table44(preds, n_resamples=N_BOOT)
    t = t.set_index("task type")
    assert list(t.index) == ["descriptive", "normative"] and (t["n"] == 10).all()
    assert t.loc["descriptive", "median M0"] == pytest.approx(1.5) and t.loc["normative", "median M_int"] == 3.5
    assert t.loc["descriptive", "M0 → M_int %"] == pytest.approx(100.0)
    assert t.loc["normative", "M0 → M_int %"] == pytest.approx(0.0)
    assert t.loc["descriptive", "M0 → M_DART %"] == pytest.approx(-50.0)
    assert t.loc["normative", "M0 → M_DART %"] == pytest.approx(-20.0)
    assert t.loc["descriptive", "p (M0 → M_int)"] < 0.05 and "Table 44" in notes[0]


# ---- Figure 3 data ----------------------------------------------------------------------------------------------
def test_figure3_data_cis_contain_estimates_and_paper_values():
    rng = np.random.default_rng(1)
    preds = {m: frame(list(rng.random(40) < p), toxicity=rng.uniform(0, 1, 40), prefix="x")
             for m, p in (("m0", 0.3), ("m_int", 0.6), ("m_dart", 0.7))}
    d = MR.figure3_data(preds, "llama-3-8b-instruct", n_resamples=N_BOOT)
    assert len(d) == 12 and (d["ci_lo"] <= d["estimate"]).all() and (d["estimate"] <= d["ci_hi"]).all()
    get = d.set_index(["model", "metric"])["paper"]
    assert get[("M_int", "acc_overall")] == 0.682 and get[("M_DART", "acc_equal")] == 0.726
    assert get[("M0", "median_toxicity")] == pytest.approx(3.81e-5) and pd.isna(get[("M_int", "acc_diff")])
    eq = d.set_index(["model", "metric"]).loc[("M0", "acc_equal")]
    assert eq["n"] == 20 and eq["estimate"] == pytest.approx(preds["m0"].query("condition == 'EQUAL'")
                                                            .eval("prediction == gold").mean())


# ---- Table 4 ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, delta, p, mark", [
    ("acc", 10.0, 0.01, "✓✓"), ("acc", 9.99, 0.01, "✓"), ("acc", 2.0, 0.01, "✓"), ("acc", 1.99, 0.001, "∼"),
    ("acc", 30.0, 0.05, "∼"),                 # p must be < alpha, not equal
    ("acc", -2.0, 0.01, "✗"), ("acc", -25.0, 0.01, "✗"), ("acc", -25.0, 0.2, "∼"), ("acc", 0.0, 1.0, "∼"),
    ("tox", -20.0, 0.01, "✓✓"), ("tox", -19.9, 0.01, "✓"), ("tox", -5.0, 0.01, "✓"), ("tox", -4.9, 0.01, "∼"),
    ("tox", 5.0, 0.01, "✗"), ("tox", 4.9, 0.01, "∼"), ("tox", 50.0, 0.3, "∼"), ("tox", -50.0, 0.3, "∼"),
    ("acc", float("nan"), 0.01, "n/a"), ("tox", -30.0, float("nan"), "n/a")])
def test_table4_rule_edges(kind, delta, p, mark):
    assert MR.table4_mark(kind, delta, p, RULE, alpha=0.05) == mark


def test_table4_rule_reads_params_and_rejects_unknown_kind():
    rule = P.load("cpu").statistics.table4
    assert MR.table4_mark("acc", rule.acc_large_pp, 0.0, rule) == "✓✓"
    with pytest.raises(ValueError):
        MR.table4_mark("f1", 5.0, 0.01, RULE)


def test_component_effect_and_table4_rows():
    n = 40
    tox = np.linspace(0.5, 1.5, n)
    before = frame([False] * n, parsed=[True] * 20 + [False] * 20, toxicity=tox)
    # after: right on 30 of 40 (EQUAL 15 of 20), every item parsed, toxicity halved
    after = frame([True] * 30 + [False] * 10, toxicity=tox / 2)
    e = MR.component_effect(before, after, RULE, n_resamples=N_BOOT)
    assert e["acc"]["delta"] == pytest.approx(75.0) and e["acc"]["mark"] == "✓✓"
    assert e["equal"]["delta"] == pytest.approx(75.0) and e["equal"]["n"] == 20
    assert e["parse"]["delta"] == pytest.approx(50.0) and e["parse"]["p"] == pytest.approx(2 * 0.5 ** 20)
    assert e["tox"]["delta"] == pytest.approx(-50.0) and e["tox"]["mark"] == "✓✓"
    flat = MR.component_effect(before, before, RULE, n_resamples=N_BOOT)
    assert {v["mark"] for v in flat.values()} == {"∼"}
    wide, long = MR.table4({"stage1": e, "stage3": flat})
    w = wide.set_index("component")
    assert w.loc["Stage I: Distillation", "Acc (this run)"] == "✓✓ (+75.0 pp)"
    assert w.loc["Stage I: Distillation", "Tox.↓ (paper)"] == "✗" and w.loc["Stage I: Distillation", "Acc (paper)"] == "✓✓"
    assert w.loc["Label-only SFT", "Acc (this run)"] == MR.NOT_RUN and w.loc["Label-only SFT", "Tox.↓ (paper)"] == "✗"
    assert w.loc["Policy (on M0)", "Parse% (this run)"] == MR.NOT_RUN
    assert w.loc["Full DART + Policy", "EQUAL (paper)"] == MR.AMBIGUOUS
    assert len(long) == 24 and set(long["column"]) == {"Acc", "EQUAL", "Tox.↓", "Parse%"}
    notes = MR.table4_notes(RULE, 0.05)
    assert any("10.0 pp" in x for x in notes) and any("notebook 06's arms" in x for x in notes)


# ---- paper transcription ----------------------------------------------------------------------------------------
def test_paper_numbers_agree_with_each_other():
    ref = {s: reported(s) for s in ("toxicity_shift", "table2", "figure3", "stage1_m_int", "table2_marks", "table4")}
    med = ref["toxicity_shift"]["median"]
    assert round(100 * (med["m_int"] / med["m0"] - 1), 1) == ref["toxicity_shift"]["m0_to_m_int"]["change_pct"]
    assert round(100 * (1 - med["m_dart"] / med["m_int"]), 1) == ref["toxicity_shift"]["m_int_to_m_dart"]["decrease_pct"]
    llama = ref["table2"]["llama-3-8b-instruct"]
    f3 = ref["figure3"]["llama-3-8b-instruct"]
    assert f3["acc_overall"]["m0"] == llama["m0"]["acc_overall"] and f3["acc_equal"]["m_dart"] == llama["m_dart"]["acc_equal"]
    assert f3["acc_overall"]["m_int"] == ref["stage1_m_int"]["llama-3-8b-instruct"]["acc_overall"]
    assert set(ref["table2_marks"]["acc"]) | set(ref["table2_marks"]["f1"]) <= set(llama["m0"])
    rows = ref["table4"]["rows"]
    assert {k for k, *_ in MR.TABLE4_COMPONENTS} == set(rows)
    for key, r in rows.items():
        marks = r["marks"]
        if marks is None:
            assert key == "full_dart_policy" and len(r["raw"]) == 7
        else:
            assert set(marks) == set(ref["table4"]["columns"])
            if "raw" in r:
                assert "".join(marks[c] for c in ref["table4"]["columns"]) == r["raw"]


# ---- artifacts: loading, a changed artifact changes the table ---------------------------------------------------
def _write_run(root, m_dart_correct):
    paths = {name: root / f"{name}.{'json' if name == 'harm_scorers' else 'jsonl'}" for name in MR.ARTIFACTS}
    ids = [f"i{k:03d}" for k in range(8)]
    base = frame([True, False] * 4).drop(columns="toxicity")
    for m, correct in (("m0", [False] * 8), ("m_int", [True] * 8), ("m_dart", m_dart_correct)):
        df = base.assign(prediction=["YES" if c else "NO" for c in correct], model=m)
        write_jsonl(df.to_dict("records"), paths[f"predictions_{m}"])
    write_jsonl([{"id": i, "model": m, "toxicity": 0.1} for m in ("m0", "m_int") for i in ids], paths["harm_scores"])
    write_jsonl([{"id": i, "model": "m_dart", "toxicity": 0.05} for i in ids], paths["harm_scores_m_dart"])
    for k in ("drift_pool", "drift_pool_m_dart", "repair_targets", "policy_outputs"):
        write_jsonl([], paths[k])
    paths["harm_scorers"].write_text(json.dumps({"toxicity": {"model": "stub", "substitution": "a stub"}}))
    return paths


def test_load_run_names_a_missing_artifact(tmp_path):
    paths = _write_run(tmp_path, [True] * 8)
    del paths["harm_scorers"]
    with pytest.raises(KeyError, match="harm_scorers"):
        MR.load_run(paths)


def test_a_changed_artifact_changes_table2(tmp_path):
    paths = _write_run(tmp_path, [True] * 8)
    data = MR.load_run(paths)
    assert data.policy.empty and data.preds["m_dart"]["toxicity"].eq(0.05).all()
    assert MR.scorer_notes(data.scorer) == ["Classifier substitution: stub instead of the paper's RoBERTa classifiers — a stub"]
    t1, _ = MR.table2(data.preds["m0"], data.preds["m_dart"], "llama-3-8b-instruct")
    _write_run(tmp_path, [True] * 7 + [False])
    t2, _ = MR.table2(*(MR.load_run(paths).preds[m] for m in ("m0", "m_dart")), "llama-3-8b-instruct")
    assert row(t1, "Accuracy Overall")["this run M_DART"] == 1.0
    assert row(t2, "Accuracy Overall")["this run M_DART"] == 0.875
    assert row(t2, "Accuracy Overall")["p"] > row(t1, "Accuracy Overall")["p"]


def test_load_run_refuses_missing_toxicity(tmp_path):
    paths = _write_run(tmp_path, [True] * 8)
    write_jsonl([{"id": "i000", "model": "m_dart", "toxicity": 0.05}], paths["harm_scores_m_dart"])
    with pytest.raises(ValueError, match="no toxicity score"):
        MR.load_run(paths)


def test_policy_frame_selects_model_and_mode():
    pol = pd.concat([frame([True] * 4).assign(model="m0", mode="off"),
                     frame([False] * 4).assign(model="m0", mode="two_pass")], ignore_index=True)
    assert MR.policy_frame(pol, "m0", "two_pass")["prediction"].eq("NO").all()
    with pytest.raises(ValueError, match="no rows"):
        MR.policy_frame(pol, "m_dart", "two_pass")


# ---- display and figure -----------------------------------------------------------------------------------------
def test_tidy_keeps_small_toxicities_and_marks_missing():
    df = pd.DataFrame({"tox": [3.812e-5, 0.0182311], "acc": [0.12345, np.nan], "p": [3.1e-21, 0.4567]})
    from dart_utils.reporting.tables import tidy
    t = tidy(df, 3, p_columns=("p",), sig_columns=("tox",))
    assert list(t.columns) == ["tox", "acc", "p"]
    assert t["tox"].tolist() == [3.81e-5, 0.0182] and t["acc"].tolist() == [0.123, "—"]
    assert t["p"].tolist() == [3.1e-21, 0.46]


def test_figure3_draws_the_data(tmp_path):
    import matplotlib.pyplot as plt

    from dart_utils.reporting import figures
    rng = np.random.default_rng(2)
    preds = {m: frame(list(rng.random(20) < 0.5), toxicity=rng.uniform(0, 1, 20)) for m in MR.MODELS}
    fig = figures.figure3(MR.figure3_data(preds, "llama-3-8b-instruct", n_resamples=100), "run 'ci'",
                          tox_label="stub", paper_label="llama-3-8b-instruct")
    assert len(fig.axes) == 3
    assert fig._suptitle.get_text().startswith("Stage ablation (Figure 3): run 'ci'\n")   # the run, not a series name
    fig.savefig(tmp_path / "f3.png")
    plt.close(fig)
    assert (tmp_path / "f3.png").stat().st_size > 10_000


def test_table2_adds_first_match_rows_tested_on_the_authors_parse():
    """With raw texts, Table 2 repeats accuracy, DIFF, EQUAL and parse % under the first-match rule; the McNemar test
    of those rows uses the first-match predictions (here M0 answers 'Conclusion: Yes, because ...': unparsed for us,
    correct for the authors)."""
    m0, md = frame([False] * 10, parsed=[False] * 10), frame([True] * 10)
    m0 = m0.assign(raw_text=["Conclusion: Yes, because of history."] * 8 + ["Nothing."] * 2)
    md = md.assign(raw_text=["Why.\nConclusion: YES"] * 10)
    t, notes = MR.table2(m0, md, "llama-3-8b-instruct")
    strict, fm = row(t, "Parse %"), row(t, "Parse % [first-match]")
    assert (strict["this run M0"], fm["this run M0"]) == (0.0, 0.8)
    assert strict["n tested"] == fm["n tested"] == 10
    assert strict["p"] == pytest.approx(2 * 0.5 ** 10) and fm["p"] == pytest.approx(0.5)
    assert row(t, "Accuracy Overall [first-match]")["this run M0"] == 0.8
    assert row(t, "Accuracy Overall [first-match]")["paper M0"] == row(t, "Accuracy Overall")["paper M0"]
    assert any("first-match" in n for n in notes)
    # frames without raw text have no first-match rows
    t, _ = MR.table2(frame([False] * 4), frame([True] * 4), "llama-3-8b-instruct")
    assert not t["metric"].str.contains("first-match").any()
