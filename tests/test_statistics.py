"""Statistics of the paper (dart_utils.statistics): hand-checked small cases, agreement with scipy / statsmodels
reference implementations on fixed data, and property tests."""
import itertools
import math
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests

from dart_utils.analysis import statistics as S
from dart_utils.dart.evaluation import decision_metrics


def pair(b, c, both_right=0, both_wrong=0):
    """Correctness arrays with b items only A got right, c only B got right, plus concordant items."""
    a = [True] * b + [False] * c + [True] * both_right + [False] * both_wrong
    bb = [False] * b + [True] * c + [True] * both_right + [False] * both_wrong
    return np.array(a), np.array(bb)


# ---- McNemar ----------------------------------------------------------------------------------------------------
def test_mcnemar_hand_checked():
    r = S.mcnemar_exact(*pair(5, 0, both_right=3, both_wrong=2))
    assert (r["b"], r["c"], r["n"]) == (5, 0, 10)
    assert r["p"] == pytest.approx(2 * 0.5 ** 5)            # 0.0625
    assert r["g"] == pytest.approx(0.5)                     # |5 - 0| / 10 (App. J: n = total sample size)
    assert r["g_textbook"] == pytest.approx(0.5)            # max(b, c) / (b + c) - 0.5
    assert r["delta"] == pytest.approx(-0.5) and r["acc_a"] == 0.8 and r["acc_b"] == 0.3


def test_mcnemar_degenerate_cases():
    r = S.mcnemar_exact(*pair(0, 0, both_right=4, both_wrong=1))
    assert r["p"] == 1.0 and r["g"] == 0.0 and math.isnan(r["g_textbook"])
    assert S.mcnemar_exact(*pair(3, 3))["p"] == 1.0
    assert S.mcnemar_exact([1, 0, 1], [0, 0, 1])["b"] == 1      # 0/1 ints accepted
    with pytest.raises(ValueError):
        S.mcnemar_exact([True, False], [True])
    with pytest.raises(ValueError):
        S.mcnemar_exact([0, 2], [1, 1])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_mcnemar_matches_statsmodels_and_binomtest(seed):
    rng = np.random.default_rng(seed)
    a = rng.random(300) < 0.5
    b = np.where(rng.random(300) < 0.8, a, rng.random(300) < 0.3 + 0.1 * seed)
    r = S.mcnemar_exact(a, b)
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    ref = sm_mcnemar(table, exact=True)
    assert r["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert r["p"] == pytest.approx(stats.binomtest(r["c"], r["b"] + r["c"], 0.5).pvalue, rel=1e-9)
    assert r["g"] == pytest.approx(abs(b.mean() - a.mean()))


def test_cohens_g_can_exceed_half_as_table16_reports():
    """Table 16: EQUAL improvements have g > 0.5 — only the paper's |b - c| / n allows it (textbook g <= 0.5)."""
    r = S.mcnemar_exact(*pair(2, 63, both_right=10, both_wrong=25))      # EQUAL-like: .12 -> .73
    assert r["g"] == pytest.approx(0.61) and r["g"] > 0.5 and r["g_textbook"] < 0.5


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=60))
def test_mcnemar_properties(pairs):
    a, b = np.array(pairs).T
    r, swapped = S.mcnemar_exact(a, b), S.mcnemar_exact(b, a)
    assert 0 <= r["p"] <= 1 and r["p"] == pytest.approx(swapped["p"])
    assert (r["b"], r["c"]) == (swapped["c"], swapped["b"])
    assert r["g"] == pytest.approx(abs(r["acc_b"] - r["acc_a"])) and 0 <= r["g"] <= 1


# ---- correctness from prediction frames -------------------------------------------------------------------------
def frame(rows):
    return pd.DataFrame(rows, columns=["id", "benchmark", "category", "condition", "gold", "prediction", "parsed"])


A = frame([("1", "D1", "descriptive", "DIFF", "YES", "YES", True),
           ("2", "D1", "descriptive", "EQUAL", "NO", "YES", True),
           ("3", "N1", "normative", "DIFF", "YES", None, False),
           ("4", "N1", "normative", "EQUAL", "NO", "NO", True)])
B = frame([("4", "N1", "normative", "EQUAL", "NO", "NO", True),       # other order
           ("3", "N1", "normative", "DIFF", "YES", "YES", True),
           ("2", "D1", "descriptive", "EQUAL", "NO", "NO", True),
           ("1", "D1", "descriptive", "DIFF", "YES", None, False)])


def test_correctness_follows_decision_metrics():
    assert S.correctness(A).mean() == decision_metrics(A)["acc_overall"]      # unparsed counts as wrong
    ca, cb = S.paired_correctness(A, B)
    assert ca.tolist() == [True, False, False, True] and cb.tolist() == [False, True, True, True]   # aligned on id
    ca, cb = S.paired_correctness(A, B, parsed_only=True)                    # items 2 and 4: parsed by both
    assert ca.tolist() == [False, True] and cb.tolist() == [True, True]
    with pytest.raises(ValueError):
        S.paired_correctness(A, B[B.id != "1"])


# ---- Bonferroni and marks ---------------------------------------------------------------------------------------
def test_bonferroni_table2():
    p = [1e-5, 0.003, 0.004, 0.5] + [0.9] * 11
    r = S.bonferroni(p)
    assert r["m"] == 15 and r["alpha"] == pytest.approx(0.05 / 15) and round(r["alpha"], 4) == 0.0033
    assert r["significant"][:4] == [True, True, False, False]
    assert r["p_adjusted"][0] == pytest.approx(1.5e-4) and r["p_adjusted"][3] == 1.0
    assert S.bonferroni([0.01, 0.02, 0.03, 0.04])["alpha"] == 0.0125                  # Table 24: 4 comparisons


def test_bonferroni_matches_statsmodels():
    p = np.random.default_rng(5).random(15) ** 4
    reject, p_adj, _, alpha_bonf = multipletests(p, alpha=0.05, method="bonferroni")
    r = S.bonferroni(p)
    assert r["significant"] == reject.tolist() and np.allclose(r["p_adjusted"], p_adj)
    assert r["alpha"] == pytest.approx(alpha_bonf)
    with pytest.raises(ValueError):
        S.bonferroni([0.5, 1.2])


@pytest.mark.parametrize("p,alpha,mark", [
    (0.0004, 0.05, "***"), (0.005, 0.05, "**"), (0.03, 0.05, "*"), (0.05, 0.05, "–"), (0.2, 0.05, "–"),
    # Bonferroni alpha: marks of the adjusted p (15 p) at .05/.01/.001
    (0.03, 0.05 / 15, "–"), (0.003, 0.05 / 15, "*"), (0.0005, 0.05 / 15, "**"), (0.00005, 0.05 / 15, "***"),
])
def test_significance_mark(p, alpha, mark):
    assert S.significance_mark(p, alpha) == mark


def test_significance_mark_agrees_with_adjusted_p():
    for p in np.geomspace(1e-7, 1, 200):
        p_adj = min(1, 15 * p)
        assert S.significance_mark(p, 0.05 / 15) == S.significance_mark(p_adj, 0.05)
    assert S.significance_mark(float("nan")) == "" and S.significance_mark(0.5, none="") == ""


# ---- Mann-Whitney and rank-biserial -----------------------------------------------------------------------------
def test_rank_biserial_separated_samples():
    assert S.mann_whitney([4, 5, 6], [1, 2])["r"] == -1.0      # y (M_DART) all lower: "negative = M_DART safer"
    r = S.mann_whitney([1, 2, 3], [4, 5])
    assert r["r"] == 1.0 and r["u"] == 0 and r["u_y"] == 6
    assert S.mann_whitney([1, 2], [1, 2])["r"] == 0.0


def test_mann_whitney_matches_scipy():
    rng = np.random.default_rng(7)
    x, y = rng.lognormal(-10, 1, 400), rng.lognormal(-10.3, 1, 350)
    r = S.mann_whitney(x, y)
    ref = stats.mannwhitneyu(x, y, alternative="two-sided")
    assert r["u"] == ref.statistic and r["p"] == pytest.approx(ref.pvalue)
    assert r["r"] < 0 and r["p"] < 0.05                       # y shifted down
    # r = P(y > x) - P(y < x), from all pairs
    assert r["r"] == pytest.approx(np.mean(np.sign(y[None, :] - x[:, None])))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=25), st.lists(st.integers(0, 6), min_size=1, max_size=25))
def test_rank_biserial_properties(x, y):
    r, swapped = S.mann_whitney(x, y), S.mann_whitney(y, x)
    assert -1 <= r["r"] <= 1
    assert r["r"] == pytest.approx(-swapped["r"])                        # antisymmetric
    assert r["r"] == pytest.approx(np.mean(np.sign(np.subtract.outer(y, x))))   # ties count half
    assert r["u"] + r["u_y"] == len(x) * len(y)


def test_weighted_r():
    assert S.weighted_r([0.2, -0.4], [1, 3]) == pytest.approx(-0.25)
    rs, ns = [-0.02, 0.0, -0.39, -0.41], [1000, 192, 1000, 3728]          # Table 35, HolisticBias r unknown (~0)
    assert S.weighted_r(rs, ns) == pytest.approx(-0.32, abs=0.01)         # §3.4: weighted r_rb = -0.32
    assert np.mean(rs) == pytest.approx(-0.2, abs=0.01)                   # the unweighted mean does not fit
    with pytest.raises(ValueError):
        S.weighted_r([0.1, 0.2], [10])


# ---- paired bootstrap -------------------------------------------------------------------------------------------
def test_bootstrap_of_constant_metric_is_a_point():
    r = S.accuracy_ci(np.ones(50, dtype=bool), n_resamples=500)
    assert r["estimate"] == r["lo"] == r["hi"] == 1.0
    r = S.paired_bootstrap_ci(lambda x, axis=-1: np.zeros(np.shape(x)[:-1]), np.arange(10), n_resamples=100)
    assert r["lo"] == r["hi"] == 0.0


def test_accuracy_ci_matches_scipy_bootstrap_and_is_fast():
    c = np.random.default_rng(1).random(1600) < 0.7
    t = time.perf_counter()
    r = S.accuracy_ci(c, n_resamples=10_000, seed=3)
    elapsed = time.perf_counter() - t
    ref = stats.bootstrap((c.astype(float),), np.mean, n_resamples=10_000, method="percentile",
                          rng=np.random.default_rng(0)).confidence_interval
    assert r["estimate"] == pytest.approx(c.mean())
    assert r["lo"] == pytest.approx(ref.low, abs=0.004) and r["hi"] == pytest.approx(ref.high, abs=0.004)
    se = math.sqrt(c.mean() * (1 - c.mean()) / c.size)                    # normal-theory width
    assert r["hi"] - r["lo"] == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert elapsed < 3.0                                                  # ~0.2 s; loose for a busy machine


def test_bootstrap_is_seeded():
    c = np.random.default_rng(2).random(200) < 0.5
    a, b = S.accuracy_ci(c, n_resamples=400, seed=1), S.accuracy_ci(c, n_resamples=400, seed=1)
    other = S.accuracy_ci(c, n_resamples=400, seed=2)
    assert a == b
    assert (other["lo"], other["hi"]) != (a["lo"], a["hi"]) and other["estimate"] == a["estimate"]


def test_diff_ci_is_paired():
    """B = A with 60 of A's 1000 items turned from wrong to right (Δ = .06, every pair concordant but those 60):
    paired resampling gives a CI ~0.03 wide; resampling the two accuracies independently would give ~0.09."""
    rng = np.random.default_rng(4)
    a = rng.random(1000) < 0.5
    b = a.copy()
    b[np.flatnonzero(~a)[:60]] = True
    r = S.paired_bootstrap_diff_ci(S.accuracy, a, b, n_resamples=5_000, seed=0)
    assert r["estimate"] == pytest.approx(0.06)
    assert r["lo"] > 0.04 and r["hi"] < 0.08 and r["hi"] - r["lo"] < 0.035
    ref = stats.bootstrap((a.astype(float), b.astype(float)), lambda x, y, axis=-1: y.mean(axis) - x.mean(axis),
                          paired=True, n_resamples=5_000, method="percentile", rng=np.random.default_rng(1))
    assert r["lo"] == pytest.approx(ref.confidence_interval.low, abs=0.004)
    assert r["hi"] == pytest.approx(ref.confidence_interval.high, abs=0.004)


def test_bootstrap_rejects_unpaired_input():
    with pytest.raises(ValueError):
        S.paired_bootstrap_ci(S.relative_median_change, np.ones(5), np.ones(4))
    with pytest.raises(ValueError):
        S.paired_bootstrap_ci(S.accuracy, np.array([]))


def test_relative_median_change_ci():
    rng = np.random.default_rng(6)
    x = rng.lognormal(np.log(3.81e-5), 0.5, 1624)
    y = x * 1.071                                                          # §3.2: +7.1 % median toxicity
    r = S.paired_bootstrap_ci(S.relative_median_change, x, y, n_resamples=2_000, seed=0)
    assert r["estimate"] == pytest.approx(0.071) and r["lo"] == pytest.approx(0.071) == r["hi"]


def test_decision_metric_ci_reuses_evaluation_and_matches_vectorised_path():
    rng = np.random.default_rng(8)
    n = 120
    gold = np.where(rng.random(n) < 0.5, "YES", "NO")
    pred = np.where(rng.random(n) < 0.7, gold, np.where(gold == "YES", "NO", "YES")).astype(object)
    parsed = rng.random(n) < 0.9
    pred[~parsed] = None
    df = pd.DataFrame({"id": [str(i) for i in range(n)], "benchmark": "D1", "category": "descriptive",
                       "condition": np.where(gold == "YES", "DIFF", "EQUAL"), "gold": gold, "prediction": pred,
                       "parsed": parsed})
    r = S.decision_metric_ci(df, "acc_overall", n_resamples=60, seed=9)
    v = S.accuracy_ci(S.correctness(df), n_resamples=60, seed=9)        # same seed -> same resamples
    assert (r["estimate"], r["lo"], r["hi"]) == pytest.approx((v["estimate"], v["lo"], v["hi"]))
    f1 = S.decision_metric_ci(df, "f1_overall", n_resamples=40, seed=9)
    assert f1["lo"] < f1["estimate"] < f1["hi"]
    better = df.assign(prediction=df["gold"], parsed=True).sample(frac=1, random_state=0)   # shuffled order
    d = S.decision_metric_ci(df, "acc_overall", other=better, n_resamples=40, seed=9)
    assert d["estimate"] == pytest.approx(1 - S.correctness(df).mean()) and d["lo"] > 0
    with pytest.raises(KeyError):
        S.decision_metric_ci(df, "accuracy", n_resamples=10)


# ---- permutation test -------------------------------------------------------------------------------------------
def _two_sided(null, obs):
    tol = 1e-12 * abs(obs)
    return min(1.0, 2 * min(np.mean(null <= obs + tol), np.mean(null >= obs - tol)))


def test_paired_permutation_is_exact_for_small_n():
    x = np.array([0.10, 0.40, 0.35, 0.80, 0.22, 0.51, 0.05, 0.63])
    y = x + np.array([0.05, 0.20, -0.03, 0.10, 0.07, 0.02, 0.11, -0.01])
    null = []
    for flips in itertools.product([False, True], repeat=x.size):               # all 2^8 within-pair swaps
        f = np.array(flips)
        null.append(np.median(np.where(f, x, y)) - np.median(np.where(f, y, x)))
    obs = np.median(y) - np.median(x)
    r = S.permutation_test_median_shift(x, y, n_resamples=1_000, seed=0)
    assert r["statistic"] == pytest.approx(obs) and r["p"] == pytest.approx(_two_sided(np.array(null), obs))


def test_unpaired_permutation_is_exact_for_small_n():
    x, y = np.array([1.0, 2.5, 3.0, 4.2, 5.1]), np.array([3.3, 4.0, 6.1, 7.5, 8.0])
    pooled, null = np.concatenate([x, y]), []
    for idx in itertools.combinations(range(10), 5):                            # all C(10, 5) relabellings
        mask = np.zeros(10, bool)
        mask[list(idx)] = True
        null.append(np.median(pooled[~mask]) - np.median(pooled[mask]))
    r = S.permutation_test_median_shift(x, y, n_resamples=1_000, seed=0, paired=False)
    assert r["p"] == pytest.approx(_two_sided(np.array(null), np.median(y) - np.median(x)))


def test_permutation_test_seeded_and_pairing_matters():
    rng = np.random.default_rng(11)
    x = rng.lognormal(-10, 1.0, 400)
    y = x * rng.lognormal(0.02, 0.2, 400)                         # small paired shift, big between-item spread
    a = S.permutation_test_median_shift(x, y, n_resamples=2_000, seed=1, paired=False)
    assert a == S.permutation_test_median_shift(x, y, n_resamples=2_000, seed=1, paired=False)
    assert a["p"] != S.permutation_test_median_shift(x, y, n_resamples=2_000, seed=2, paired=False)["p"]
    assert a["p"] > 0.3                                           # unpaired: the shift drowns in item variance
    strong = S.permutation_test_median_shift(x, x * 1.07, n_resamples=2_000, seed=1)
    assert strong["p"] == pytest.approx(2 / 2_001)                # paired: every resample beaten; floor 2/(R+1)
    rel = S.permutation_test_median_shift(x, x * 1.07, n_resamples=500, seed=1, relative=True)
    assert rel["statistic"] == pytest.approx(0.07)


def test_permutation_test_under_null_is_not_significant():
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=300), rng.normal(size=300)
    assert S.permutation_test_median_shift(x, y, n_resamples=2_000, seed=0)["p"] > 0.05
    with pytest.raises(ValueError):
        S.permutation_test_median_shift(x, y[:-1])                # paired needs equal lengths
