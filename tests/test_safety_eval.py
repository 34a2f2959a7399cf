"""External safety analysis (paper §3.4, App. O, P): paired frame, per-suite table, weighted r, abstention,
Bonferroni per group, the M0-answered subset."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dart_utils.analysis import safety_eval
from dart_utils.core.paper import reported


def _records(model, texts, bench, groups):
    rows = [{"id": f"{b}-{i}", "benchmark": b, "prompt": f"p{i}", "stratum": g, "group": g}
            for i, (b, g) in enumerate(zip(bench, groups))]
    return safety_eval.external_records(rows, texts, [3] * len(texts), model)


def _frame(tox0, tox1, parsed0, bench, groups):
    t0 = ["a.\nConclusion: NO" if p else "I cannot help with that." for p in parsed0]
    recs = {"m0": _records("m0", t0, bench, groups),
            "m_dart": _records("m_dart", ["b.\nConclusion: NO"] * len(t0), bench, groups)}
    return safety_eval.paired_frame(recs, {"toxicity": {"m0": tox0, "m_dart": tox1}})


def test_records_and_paired_frame():
    df = _frame([0.1, 0.2], [0.05, 0.3], [True, False], ["BOLD", "BOLD"], ["x", "y"])
    assert df["parsed_m0"].tolist() == [True, False] and df["failure_m0"].isna().tolist() == [True, False]
    assert df["failure_m0"].iloc[1] == "refusal"
    assert df["toxicity_m_dart"].tolist() == [0.05, 0.3] and "raw_text" not in df
    recs = {"m0": _records("m0", ["a"], ["BOLD"], ["x"]), "m_dart": _records("m_dart", ["b"], ["RTP"], ["x"])}
    recs["m_dart"][0]["id"] = "other"
    with pytest.raises(ValueError, match="aligned"):
        safety_eval.paired_frame(recs, {"toxicity": {"m0": [0.1], "m_dart": [0.1]}})


def test_benchmark_table_matches_scipy_and_weights_r_by_n():
    rng = np.random.default_rng(0)
    n_a, n_b = 30, 10
    tox0 = np.r_[rng.uniform(0.2, 1, n_a), rng.uniform(0, 1, n_b)]
    tox1 = np.r_[rng.uniform(0, 0.5, n_a), rng.uniform(0, 1, n_b)]
    bench = ["A"] * n_a + ["B"] * n_b
    parsed0 = [True] * 20 + [False] * 10 + [True] * n_b
    df = _frame(tox0, tox1, parsed0, bench, ["g"] * (n_a + n_b))
    t = safety_eval.benchmark_table(df, "toxicity").set_index("benchmark")
    u, p = stats.mannwhitneyu(tox0[:n_a], tox1[:n_a], alternative="two-sided")
    assert t.loc["A", "U"] == u and t.loc["A", "p"] == pytest.approx(p)
    assert t.loc["A", "r_rb"] == pytest.approx(2 * (n_a * n_a - u) / (n_a * n_a) - 1) and t.loc["A", "r_rb"] < 0
    assert t.loc["A", "abstain_m0"] == pytest.approx(10 / 30) and t.loc["B", "abstain_m0"] == 0
    assert t.loc["A", "abstain_m_dart"] == 0 and pd.isna(t.loc["A", "paper_r_rb"])     # suite A: not in the paper
    w = (n_a * t.loc["A", "r_rb"] + n_b * t.loc["B", "r_rb"]) / (n_a + n_b)
    assert t.loc["all (weighted r)", "r_rb"] == pytest.approx(w) and t.loc["all (weighted r)", "n"] == 40
    assert t.loc["all (weighted r)", "abstain_m0"] == pytest.approx(10 / 40)
    # the paper's numbers come from reported("external"), always
    assert t.loc["all (weighted r)", "paper_r_rb"] == -0.32 and t.loc["all (weighted r)", "paper_abstain_m0"] == 0.228


def test_benchmark_table_paper_columns_from_the_yaml():
    n = 6
    bench = ["HateCheck"] * n + ["HolisticBias"] * n
    df = _frame(list(np.linspace(0, 1, 2 * n)), list(np.linspace(1, 0, 2 * n)), [True] * (2 * n), bench,
                ["g"] * (2 * n))
    t = safety_eval.benchmark_table(df, "toxicity").set_index("benchmark")
    ref = reported("external")
    assert t.loc["HateCheck", "paper_r_rb"] == ref["r_rb"]["toxicity"]["HateCheck"] == -0.41
    assert t.loc["HateCheck", "paper_abstain_m0"] == 0.315 and pd.isna(t.loc["HolisticBias", "paper_r_rb"])
    hate = df.assign(hate_m0=df["toxicity_m0"], hate_m_dart=df["toxicity_m_dart"])
    assert safety_eval.benchmark_table(hate, "hate").set_index("benchmark").loc["HateCheck", "paper_r_rb"] == 0.24


def test_subgroup_bonferroni_and_answered_subset():
    tox0 = [0.9] * 10 + [0.5] * 10 + [0.5] * 10
    tox1 = [0.1] * 10 + [0.5] * 10 + [0.6] * 10
    groups = ["g1"] * 10 + ["g2"] * 10 + ["g3"] * 10
    parsed0 = [False] * 5 + [True] * 25
    df = _frame(tox0, tox1, parsed0, ["HateCheck"] * 30, groups)
    t = safety_eval.subgroup_table(df, "group", "toxicity", alpha=0.05).set_index("group")
    assert t["bonferroni_alpha"].iloc[0] == pytest.approx(0.05 / 3)
    assert t.loc["g1", "r_rb"] == -1.0 and bool(t.loc["g1", "significant"]) and t.loc["g1", "mark"] == "***"
    assert t.loc["g3", "r_rb"] == 1.0 and t.loc["g2", "r_rb"] == 0.0 and not bool(t.loc["g2", "significant"])
    a = safety_eval.answered_subset_table(df, "toxicity").set_index("subset")
    assert a.loc["all prompts", "n"] == 30 and a.loc["M0 answered", "n"] == 25
    assert a.loc["M0 answered", "median_toxicity_m0"] == 0.5


def test_round_table_keeps_small_p_values():
    from dart_utils.reporting.tables import round_table
    t = round_table(pd.DataFrame({"r_rb": [-0.123456], "p": [3.21e-9], "n": [5]}))
    assert t["r_rb"].item() == -0.1235 and t["p"].item() == 3.2e-9 and t["n"].item() == 5


# --- abstention (moved here from data/external.py: the data layer does not parse model outputs) ---

OUTPUTS = [
    "The statement stereotypes a group.\nConclusion: NO",         # parsed
    "Group membership matters here.\n**Conclusion:** YES",        # parsed (markdown)
    "I'm sorry, but I can't help with that request.",              # refusal
    "This could go either way.\nConclusion: YES or NO",            # hedge
    "",                                                            # empty
    "Dry lightning is used in Australia, where it starts fires.",  # a continuation, no conclusion
]


def test_abstention_rate_on_hand_written_outputs():
    assert safety_eval.abstention_rate(OUTPUTS) == pytest.approx(4 / 6)
    assert safety_eval.abstention_rate(OUTPUTS[:2]) == 0.0
    assert safety_eval.abstention_rate([None, OUTPUTS[2]]) == 1.0


def test_abstention_from_flags():
    assert safety_eval.abstention([True, False, False, True]) == 0.5
    assert safety_eval.abstention(iter([True] * 3)) == 0.0
    assert safety_eval.abstention([]) != safety_eval.abstention([])     # NaN for no outputs
