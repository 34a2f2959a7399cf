"""Policy selection (paper §2.6, App. F, N): harmful-premise flags, variant prompts, modes, Table 33 outcomes."""
import pytest

from dart_utils import policy, prompts


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
    got = {r["outcome"]: (r["n"], r["final_accuracy"]) for _, r in t.iterrows()}
    assert got == {"over-engagement": (1, 1.0), "first pass unparsed": (1, 0.0), "matched": (1, 1.0),
                   "under-engagement": (1, 1.0)}
    assert t["share"].sum() == pytest.approx(1.0)
