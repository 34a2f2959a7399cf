"""Policy selection (paper §2.6, App. F, N): harmful-premise flags, variant prompts, modes, Table 33 outcomes."""
import pandas as pd
import pytest

from dart_utils.core.paper import reported
from dart_utils.dart import policy, prompts


def test_harmful_premise_keywords_and_toxicity():
    qs = ["Is it fine to call them Vermin?", "Which group is taller?", "A hateful post: ...", "Nothing here"]
    flags = policy.harmful_premise_flags(qs, ["vermin", "hateful post"], h_x=[0.1, 0.2, 0.3, 0.51])
    assert [f["flagged"] for f in flags] == [True, False, True, True]
    assert flags[0]["keyword"] == "vermin" and flags[2]["keyword"] == "hateful post" and flags[3]["keyword"] is None
    assert flags[3]["toxic"] is True and flags[0]["toxic"] is False
    assert not policy.harmful_premise_flags(["verminous"], ["vermin"])[0]["flagged"]      # whole words only
    assert policy.harmful_premise_flags(["x"], [], h_x=[0.5])[0]["flagged"] is False       # strictly > 0.5
    with pytest.raises(ValueError):
        policy.harmful_premise_flags(["a", "b"], [], h_x=[0.1])


def test_variant_prompts_use_f1_f2_and_f3_only_when_flagged():
    v = policy.variant_prompts(["q1", "q2"], [{"flagged": False}, {"flagged": True}])
    assert v["NO"][0][0]["content"] == prompts.POLICY_NO_SYSTEM
    assert v["YES"][0][0]["content"] == prompts.POLICY_YES_SYSTEM
    assert v["YES"][1][0]["content"].endswith(prompts.HARMFUL_PREMISE_CONSTRAINT)
    assert v["NO"][1][1]["content"] == prompts.INFERENCE_USER.format(question="q2")


def test_select_variants_per_mode():
    ids, first, gold = ["a", "b", "c"], ["YES", None, "NO"], ["NO", "YES", "NO"]
    assert policy.select_variants("off", ids, first, gold) == [None, None, None]
    assert policy.select_variants("two_pass", ids, first, gold) == ["YES", None, "NO"]
    assert policy.select_variants("oracle", ids, first, gold) == ["NO", "YES", "NO"]
    many = [f"id-{i}" for i in range(200)]
    r1 = policy.select_variants("random", many, [None] * 200, ["YES"] * 200, seed=1)
    assert r1 == policy.select_variants("random", many, [None] * 200, ["YES"] * 200, seed=1)
    assert r1 != policy.select_variants("random", many, [None] * 200, ["YES"] * 200, seed=2)
    assert 70 < r1.count("YES") < 130                                       # a fair coin per item
    assert policy.select_variants("random", many[:5], [None] * 5, ["NO"] * 5, seed=1) == r1[:5]  # order-free
    with pytest.raises(ValueError, match="mode"):
        policy.select_variants("always", ids, first, gold)


def test_final_outputs_and_selection_outcomes():
    variants = ["YES", None, "NO", "NO"]
    out = policy.final_outputs(["n0", "n1", "n2", "n3"], {"YES": ["y0", "y1", "y2", "y3"],
                                                           "NO": ["x0", "x1", "x2", "x3"]}, variants)
    assert out == ["y0", "n1", "x2", "x3"]
    t = policy.selection_outcomes(["NO", "YES", "NO", "YES"], variants, ["NO", None, "NO", "YES"])
    got = {(r["outcome"], r["gold"]): (r["n"], r["final_accuracy"]) for _, r in t.iterrows() if r["n"]}
    assert got == {("over-engagement", "NO"): (1, 1.0), ("first pass unparsed", "YES"): (1, 0.0),
                   ("matched", "NO"): (1, 1.0), ("under-engagement", "YES"): (1, 1.0)}
    assert t["share"].sum() == pytest.approx(1.0)
    assert len(t) == 6 and t.loc[t["n"] == 0, "final_accuracy"].isna().all()   # empty cells listed, no accuracy


def test_always_on_is_one_static_label_free_prompt_with_f3():
    v = policy.variant_prompts(["q1", "q2"], [{"flagged": False}, {"flagged": True}])
    assert v["static"][0][0] == v["static"][1][0]                         # the same system prompt for every item
    assert v["static"][1][1]["content"] == prompts.INFERENCE_USER.format(question="q2")
    system = v["static"][0][0]["content"]
    assert system.endswith(prompts.HARMFUL_PREMISE_CONSTRAINT)             # F.3 always on
    assert "Conclusion: YES or Conclusion: NO" in system                   # does not dictate the label
    assert policy.select_variants("always_on", ["a", "b"], ["YES", None], ["NO", "NO"]) == ["static", "static"]
    assert policy.variants_needed(["off"]) == []
    assert policy.variants_needed(["off", "two_pass"]) == ["YES", "NO"]
    assert policy.variants_needed(["always_on"]) == ["static"]


def _rec(i, gold, pred, tox, text="a b c", cond=None):
    return {"id": i, "benchmark": "N1", "category": "normative", "condition": cond or ("DIFF" if gold == "YES" else "EQUAL"),
            "gold": gold, "model": "m", "raw_text": text, "rationale": text, "prediction": pred,
            "parsed": pred is not None, "toxicity": tox}


def _frame():
    """Two items; first pass: a right (YES), b unparsed; regenerations with known answers and toxicity."""
    first = [_rec("a", "YES", "YES", 0.4, "one two three four"), _rec("b", "NO", None, 0.2, "x y")]
    regen = {"YES": [_rec("a", "YES", "YES", 0.2, "one two"), _rec("b", "NO", "YES", 0.3)],
             "NO": [_rec("a", "YES", "NO", 0.1), _rec("b", "NO", "NO", 0.0, "z")]}
    flags = [{"flagged": True}, {"flagged": False}]
    rows = []
    for mode in ("off", "two_pass", "oracle"):
        v = policy.select_variants(mode, ["a", "b"], ["YES", None], ["YES", "NO"])
        rows += policy.mode_records("m_dart", mode, first, regen, v, flags)
    return pd.DataFrame(rows)


def test_mode_records_and_summary_by_hand():
    df = _frame()
    tp = df[df["mode"] == "two_pass"]
    assert list(tp["variant"].fillna("none")) == ["YES", "none"] and list(tp["flagged"]) == [True, False]
    assert list(tp["toxicity"]) == [0.2, 0.2]                              # a regenerated, b kept (no ŷ)
    s = policy.summary(df).set_index("mode")
    assert s.loc["off", "acc_overall"] == 0.5 and s.loc["oracle", "acc_overall"] == 1.0
    assert s.loc["off", "parse_rate"] == 0.5 and s.loc["oracle", "no_conclusion_rate"] == 0.0
    assert s.loc["off", "tox_median"] == pytest.approx(0.3) and s.loc["oracle", "tox_median"] == pytest.approx(0.1)
    assert s.loc["off", "tox_median_diff"] == 0.4 and s.loc["off", "tox_median_equal"] == 0.2
    assert s.loc["off", "words"] == 3.0 and s.loc["oracle", "words"] == 1.5
    with pytest.raises(ValueError, match="order"):
        policy.mode_records("m", "oracle", [_rec("a", "YES", "YES", 0)], {"YES": [_rec("z", "YES", "YES", 0)]},
                            ["YES"], [{"flagged": False}])


def test_table34_shares_of_oracle_by_hand():
    df = _frame()
    rand = df[df["mode"] == "oracle"].assign(mode="random")
    t = policy.table34(policy.summary(pd.concat([df, rand]))).set_index("selection")
    # off median 0.3, oracle 0.1 -> -66.7 %; two-pass median 0.2 -> -33.3 % = half the oracle's reduction
    assert t.loc["oracle", "tox_change_pct_vs_off"] == pytest.approx(-200 / 3)
    assert t.loc["two_pass", "share_of_oracle_tox_reduction"] == pytest.approx(0.5)
    assert t.loc["two_pass", "share_of_oracle_acc"] == pytest.approx(0.5)   # acc .5 vs oracle 1.0
    t3 = policy.table3(policy.summary(df)).set_index("metric")
    assert t3.loc["Accuracy, overall", "change"] == pytest.approx(0.0)      # two-pass .5 vs off .5, in pp
    assert t3.loc["Median toxicity", "change"] == pytest.approx(-100 / 3)
    assert t3.loc["Median toxicity", "paper change"] == "-21.4"


def test_premise_detection_counts_by_hand():
    texts = ["I hate them", "they are fine", "you are scum", "lovely people", "hate speech is bad"]
    gold = [True, False, True, False, False]
    h = [0.9, 0.1, 0.2, 0.6, 0.1]
    t = policy.premise_detection(texts, gold, ["hate", "scum"], h, 0.5)
    t = t.set_index("detector")
    assert (t.loc["keyword only", ["tp", "fp", "fn", "tn"]] == [2, 1, 0, 2]).all()
    assert (t.loc["H(x) > 0.5 only", ["tp", "fp", "fn", "tn"]] == [1, 1, 1, 2]).all()
    combined = t.loc["keyword or H(x)"]
    assert (combined[["tp", "fp", "fn", "tn"]] == [2, 2, 0, 1]).all()
    assert combined["precision"] == 0.5 and combined["recall"] == 1.0 and combined["paper precision"] == "0.942"
    assert combined["paper recall"] == "0.876" and t.loc["keyword only", "paper precision"] == "—"


def _summary_all_modes():
    df = _frame()
    more = [df[df["mode"] == "oracle"].assign(mode=m) for m in ("random", "always_on")]
    both = pd.concat([df, *more])
    return pd.concat([both, both.assign(model="m0"), both.assign(model="m_int")], ignore_index=True)


def test_paper_numbers_come_from_the_yaml():
    """Tables 17 and 18 print M0's policy-off accuracy .390 and EQUAL .113 as today ("0.39", "0.113"), now read from
    Table 2's M0 (Llama-3-8B-Instruct) in paper_reported.yaml, not typed into the module."""
    m0 = reported("table2")["llama-3-8b-instruct"]["m0"]
    assert (m0["acc_overall"], m0["acc_equal"]) == (0.39, 0.113)
    s = policy.summary(_summary_all_modes())
    t17 = policy.table17(s).set_index(["model", "mode"])
    assert t17.loc[("m0", "off"), ["paper acc", "paper EQUAL", "paper tox median"]].tolist() == ["0.39", "0.113",
                                                                                             "3.92e-05"]
    assert t17.loc[("m0", "two_pass"), ["paper acc", "paper EQUAL"]].tolist() == ["0.402", "0.127"]
    assert t17.loc[("m_dart", "oracle"), "paper acc"] == "—"
    t18 = policy.table18(s).set_index("metric")
    assert t18.loc["Accuracy, overall", ["paper off", "paper two_pass"]].tolist() == ["0.39", "0.402"]
    assert t18.loc["EQUAL accuracy", ["paper off", "paper two_pass"]].tolist() == ["0.113", "0.127"]
    assert t18.loc["Parse failures", "paper change"] == "-59.3"
    t33 = policy.table33(_summary_all_modes().pipe(lambda d: d[d["model"] == "m_dart"]))
    assert t33.set_index("outcome").loc["under-engagement", "paper n"] == "284"
    t34 = policy.table34(s)
    assert t34["paper"].iloc[1] == "acc 0.702, tox −23.6%"


def test_no_module_imports_paper_reported():
    """One way to reach the paper's numbers: core.paper.reported; no module keeps its own copy."""
    import pathlib

    import dart_utils
    root = pathlib.Path(dart_utils.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if "paper_reported(" in p.read_text() or "import paper_reported" in p.read_text()]
    assert offenders == []
    from dart_utils.dart import audit
    assert not hasattr(audit, "PAPER")
