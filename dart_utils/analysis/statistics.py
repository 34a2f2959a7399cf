"""Significance tests and effect sizes (paper §3.1–3.4, App. J, K.1, K.6, O.2, P; Tables 2, 5, 16, 24, 35, 41–43).

Why: the authors' code ran raw (uncorrected) McNemar tests, a 2,000-resample bootstrap on accuracy deltas only and an
unpaired Mann–Whitney U (reference §6.2–6.3, D14), so the paper's Bonferroni stars, Cohen's g, 10,000-resample
bootstrap CIs and permutation tests on median toxicity had no code behind them. This module holds those primitives,
each seeded and each stating the paper's definition and where we had to choose:

* `mcnemar_exact`     exact two-sided McNemar and Cohen's g = |b − c| / n (App. J: n = total sample size).
* `bonferroni`, `significance_mark`  15 comparisons, α = .05/15 ≈ .0033 (Table 2, App. J); 4 comparisons (Table 24).
* `mann_whitney`, `weighted_r`  U, p and rank-biserial r (negative = the second sample, M_DART, lower / safer;
  Table 5, 35, 41–43) and the size-weighted r of §3.4.
* `paired_bootstrap_ci`, `paired_bootstrap_diff_ci`, `accuracy_ci`, `decision_metric_ci`  percentile CIs resampling
  test items jointly (10,000 resamples, §3.2 "Statistical Significance of Harm Drift", Fig. 3 error bars).
* `relative_median_change`, `permutation_test_median_shift`  the +7.1 % / −13.7 % median-toxicity changes (§3.2,
  §3.3.1, App. K.1) with their permutation test.

Correctness conventions follow `evaluation.decision_metrics`: a parse failure counts as a wrong prediction
(Table 2's Overall/DIFF/EQUAL rows); `correctness` is that convention as a boolean array, and `paired_correctness`
aligns two models' prediction frames on `id`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..dart.evaluation import decision_metrics

DEFAULT_SEED = 42                 # the project's seed (params/base.yaml)
N_RESAMPLES = 10_000              # §3.2: "Bootstrap analysis (10,000 resamples)"
TABLE2_COMPARISONS = 15           # App. J: 5 metrics x 3 models
TABLE24_COMPARISONS = 4           # App. K.6
MARKS = ("*", "**", "***")        # Tables 2, 5, 41-43: *p<.05, **p<.01, ***p<.001
_BATCH_ELEMENTS = 4_000_000       # resampled values held in memory at once (about 32 MB of int64 indices)


# ---- correctness from prediction frames -------------------------------------------------------------------------
def correctness(df: pd.DataFrame) -> np.ndarray:
    """Per-item correctness with a parse failure counted wrong: the convention of Table 2's Overall, DIFF and EQUAL
    rows (`decision_metrics(df)["acc_overall"]` is its mean)."""
    return (df["prediction"] == df["gold"]).to_numpy(dtype=bool)


def paired_correctness(pred_a: pd.DataFrame, pred_b: pd.DataFrame,
                       parsed_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Two models' correctness on the same items, aligned on `id` (both frames must hold the same ids), for McNemar
    and the paired bootstrap.

    parsed_only: keep only the items BOTH models parsed. This is OUR choice for testing Table 2's parsed-only
    D1–D4 / N1–N4 rows: the paper gives those stars without saying how a pair test treats items only one model
    parsed, and a paired test needs one common item set (the reported accuracies use each model's own parsed set)."""
    a, b = pred_a.set_index("id"), pred_b.set_index("id")
    if a.index.has_duplicates or b.index.has_duplicates:
        raise ValueError("paired_correctness: duplicate ids")
    if set(a.index) != set(b.index):
        raise ValueError(f"paired_correctness: the frames hold different items "
                         f"({len(set(a.index) ^ set(b.index))} ids in only one)")
    b = b.loc[a.index]
    if parsed_only:
        keep = (a["parsed"].to_numpy(bool) & b["parsed"].to_numpy(bool))
        a, b = a[keep], b[keep]
    return correctness(a), correctness(b)


def _bool_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"paired arrays must be 1-D and of equal length, got {x.shape} and {y.shape}")
    for v in (x, y):
        if v.dtype != bool and not np.isin(v, (0, 1)).all():
            raise ValueError("correctness arrays must be boolean (or 0/1)")
    return x.astype(bool), y.astype(bool)


# ---- McNemar and Cohen's g (Table 2, 16, 24) --------------------------------------------------------------------
def mcnemar_exact(correct_a, correct_b) -> dict[str, float]:
    """Exact two-sided McNemar test for two models on the same items (Table 2 stars, Table 24; §3.1: "McNemar's for
    classification").

    b = items A gets right and B wrong, c = items A gets wrong and B right. p = two-sided exact binomial test of
    b successes in b + c trials at 0.5 (no continuity correction; p = 1 when b + c = 0); it equals statsmodels'
    `mcnemar(table, exact=True)`.

    g: Cohen's g AS THE PAPER DEFINES IT (App. J): g = |b − c| / n with "n the total sample size", i.e. all
    paired items of the comparison, not only the discordant ones. Since acc_B − acc_A = (c − b) / n, this g is the
    absolute accuracy difference; Table 16's "all EQUAL improvements show g > 0.5" is only possible under this
    definition (Table 2's EQUAL Δ are .540/.613/.622). g_textbook = max(b, c) / (b + c) − 0.5 (Cohen 1988, which
    App. J cites and whose .05/.15/.25 thresholds belong to it; it never exceeds 0.5) is given for comparison."""
    a, b_ = _bool_pair(correct_a, correct_b)
    n = int(a.size)
    b, c = int(np.sum(a & ~b_)), int(np.sum(~a & b_))
    p = 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)
    return {"n": n, "b": b, "c": c, "p": p,
            "acc_a": float(a.mean()) if n else float("nan"), "acc_b": float(b_.mean()) if n else float("nan"),
            "delta": (c - b) / n if n else float("nan"),
            "g": abs(b - c) / n if n else float("nan"),
            "g_textbook": max(b, c) / (b + c) - 0.5 if b + c else float("nan")}


# ---- multiple comparisons and table marks -----------------------------------------------------------------------
def bonferroni(pvalues, alpha: float = 0.05) -> dict:
    """Bonferroni correction over the m p-values given (Table 2 / App. J: m = 15 comparisons, 5 metrics x 3 models,
    "adjusted α = 0.0033"; Table 24: m = 4).

    Returns m, the adjusted per-test alpha (alpha / m, not the rounded .0033), which tests are significant
    (p < alpha / m, strict as the paper's captions write "p <"; statsmodels' multipletests uses <=, identical except
    at an exact tie) and the adjusted p-values min(1, m·p)."""
    p = np.asarray(pvalues, dtype=float).ravel()
    if p.size == 0:
        raise ValueError("bonferroni: no p-values")
    if np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise ValueError("bonferroni: p-values must lie in [0, 1]")
    m = int(p.size)
    adj = alpha / m
    return {"m": m, "alpha": adj, "significant": (p < adj).tolist(), "p_adjusted": np.minimum(1.0, p * m).tolist()}


def significance_mark(p: float, alpha: float = 0.05, none: str = "–") -> str:
    """Table mark for one p-value: "***" if p < alpha/50, "**" if p < alpha/5, "*" if p < alpha, else `none`.

    With alpha = .05 these are the captions' *p<.05, **p<.01, ***p<.001 (Tables 5, 41–43). For Table 2 pass the
    Bonferroni alpha (.05/15): the marks are then those of the adjusted p-value m·p at .05/.01/.001, OUR reading of
    the caption "***p<.001 … (McNemar's test, Bonferroni-corrected, adjusted α=0.0033)" (marking raw p at .05 would
    star results the caption calls non-significant). `none` defaults to Table 2's "–"; NaN gives ""."""
    if p is None or np.isnan(p):
        return ""
    for mark, threshold in zip(MARKS[::-1], (alpha / 50, alpha / 5, alpha)):
        if p < threshold:
            return mark
    return none


# ---- Mann–Whitney U and rank-biserial r (Tables 5, 35, 41–43) ---------------------------------------------------
def mann_whitney(x, y, method: str = "auto") -> dict[str, float]:
    """Two-sided Mann–Whitney U (scipy.stats.mannwhitneyu, continuity-corrected normal approximation with tie
    correction for large or tied samples, exact otherwise) and the rank-biserial correlation (§3.1, §3.4, App. P).

    Pass x = M0's scores, y = M_DART's (or M_int's). u is scipy's U of x (pairs with x > y, ties half);
    u_y = n_x·n_y − u. r = 2·u_y / (n_x·n_y) − 1 = P(y > x) − P(y < x): NEGATIVE when y tends to be lower, i.e.
    "negative = M_DART safer" as in Table 5. Unpaired, as the paper's external benchmarks (Table 5) are compared."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if not (x.size and y.size) or np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("mann_whitney: both samples must be non-empty and free of NaN")
    res = stats.mannwhitneyu(x, y, alternative="two-sided", method=method)
    nn = x.size * y.size
    u = float(res.statistic)
    return {"n_x": int(x.size), "n_y": int(y.size), "u": u, "u_y": nn - u, "p": float(res.pvalue),
            "r": 2 * (nn - u) / nn - 1}


def weighted_r(rs: Sequence[float], ns: Sequence[float]) -> float:
    """Size-weighted mean rank-biserial r, Σ n_i·r_i / Σ n_i (§3.4: "weighted r_rb = −0.32" over Table 5's four
    benchmarks). The paper does not define the weights; n_i = prompts per benchmark fits its number: with Table 35's
    r = −.02 / −.39 / −.41 for BOLD / RealToxicityPrompts / HateCheck (n = 1000 / 1000 / 3728) and HolisticBias
    (n = 192, r not given, p > .4; any |r| <= .1) the n-weighted mean is −.32 to −.33, the unweighted one ≈ −.2."""
    r, n = np.asarray(rs, dtype=float), np.asarray(ns, dtype=float)
    if r.shape != n.shape or r.ndim != 1 or not r.size:
        raise ValueError("weighted_r: rs and ns must be non-empty 1-D sequences of equal length")
    if np.any(n < 0) or n.sum() <= 0:
        raise ValueError("weighted_r: sizes must be non-negative with a positive total")
    return float(np.sum(r * n) / np.sum(n))


# ---- paired bootstrap (§3.2, Fig. 3, App. K.1) ------------------------------------------------------------------
def accuracy(correct, axis: int = -1):
    """Vectorised accuracy: the mean of a correctness array along `axis` (a metric for the bootstrap)."""
    return np.mean(correct, axis=axis)


def relative_median_change(x, y, axis: int = -1):
    """median(y) / median(x) − 1, vectorised: §3.2's "+7.1 %" (M0 → M_int) and "−13.7 %" (M_int → M_DART)
    median-toxicity changes, and App. K.1's 3.81e-5 → 4.08e-5."""
    return np.median(y, axis=axis) / np.median(x, axis=axis) - 1


def _batches(rng: np.random.Generator, n: int, n_resamples: int):
    rows = max(1, _BATCH_ELEMENTS // n)
    for start in range(0, n_resamples, rows):
        size = min(rows, n_resamples - start)
        yield start, rng.integers(0, n, size=(size, n))


def paired_bootstrap_ci(metric_fn: Callable, *paired_arrays, n_resamples: int = N_RESAMPLES,
                        seed: int = DEFAULT_SEED, ci: float = 0.95, vectorized: bool = True) -> dict[str, float]:
    """Percentile bootstrap CI of metric_fn(*paired_arrays), resampling ITEMS jointly: one index vector per
    resample is applied to every array, so per-item pairs (two models' outputs on one prompt, §2.4's "paired
    design") stay together. §3.2 uses 10,000 resamples and 95 % CIs.

    vectorized=True: metric_fn receives arrays of shape (batch, n) and must reduce the last axis (e.g. `accuracy`,
    `relative_median_change`), and is also called once on the 1-D originals for the point estimate.
    vectorized=False: it is called once per resample with 1-D arrays (slower; for metrics like macro-F1).
    Resamples come from numpy's Generator(seed) in fixed-size batches, so a result depends only on (data, seed,
    n_resamples). The CI is [q_(1−ci)/2, q_(1+ci)/2] of the resampled statistics (linear interpolation)."""
    if not paired_arrays:
        raise ValueError("paired_bootstrap_ci: no data")
    arrays = [np.asarray(a) for a in paired_arrays]
    n = arrays[0].shape[0] if arrays[0].ndim else 0
    if any(a.ndim != 1 or a.shape[0] != n for a in arrays) or n == 0:
        raise ValueError("paired_bootstrap_ci: arrays must be 1-D, non-empty and of equal length")
    if not 0 < ci < 1 or n_resamples < 1:
        raise ValueError("paired_bootstrap_ci: need 0 < ci < 1 and n_resamples >= 1")
    rng = np.random.default_rng(seed)
    boot = np.empty(n_resamples)
    for start, idx in _batches(rng, n, n_resamples):
        if vectorized:
            boot[start:start + len(idx)] = metric_fn(*(a[idx] for a in arrays))
        else:
            for j, row in enumerate(idx):
                boot[start + j] = metric_fn(*(a[row] for a in arrays))
    lo, hi = np.quantile(boot, [(1 - ci) / 2, (1 + ci) / 2])
    return {"estimate": float(metric_fn(*arrays)), "lo": float(lo), "hi": float(hi), "ci": ci, "n": int(n),
            "n_resamples": int(n_resamples), "seed": seed}


def _as_tuple(arrays) -> tuple:
    return tuple(arrays) if isinstance(arrays, tuple) else (arrays,)


def paired_bootstrap_diff_ci(metric_fn: Callable, arrays_a, arrays_b, **kwargs) -> dict[str, float]:
    """CI of metric(B) − metric(A) (Table 2's Δ direction, M_DART − M0) with both models' arrays resampled on the
    same items. arrays_a / arrays_b: one array, or a tuple of arrays, per model; kwargs as paired_bootstrap_ci."""
    a, b = _as_tuple(arrays_a), _as_tuple(arrays_b)
    k = len(a)
    return paired_bootstrap_ci(lambda *xs: metric_fn(*xs[k:]) - metric_fn(*xs[:k]), *a, *b, **kwargs)


def accuracy_ci(correct, n_resamples: int = N_RESAMPLES, seed: int = DEFAULT_SEED,
                ci: float = 0.95) -> dict[str, float]:
    """Bootstrap CI of an accuracy from a per-item correctness array (e.g. `correctness(df)`: unparsed = wrong)."""
    return paired_bootstrap_ci(accuracy, np.asarray(correct, dtype=float), n_resamples=n_resamples, seed=seed, ci=ci)


def decision_metric_ci(df: pd.DataFrame, key: str, other: pd.DataFrame | None = None, n_resamples: int = 2_000,
                       seed: int = DEFAULT_SEED, ci: float = 0.95) -> dict[str, float]:
    """Bootstrap CI of any `evaluation.decision_metrics` key (e.g. "f1_overall") by resampling the frame's rows;
    with `other` (the second model's predictions on the same ids), the CI of metric(other) − metric(df).

    Calls decision_metrics once per resample (~10–25 ms each on this machine: 2,000 resamples take ~20–50 s),
    hence the smaller default n_resamples; for accuracies use `accuracy_ci` / `paired_bootstrap_diff_ci`, which
    draw the same resamples for the same seed."""
    if key not in decision_metrics(df.head(0)):
        raise KeyError(f"decision_metric_ci: unknown metric {key!r}")
    df = df.reset_index(drop=True)
    if other is None:
        return paired_bootstrap_ci(lambda i: decision_metrics(df.iloc[i])[key], np.arange(len(df)),
                                   n_resamples=n_resamples, seed=seed, ci=ci, vectorized=False)
    o = other.set_index("id").loc[df["id"]].reset_index()
    return paired_bootstrap_ci(lambda i: decision_metrics(o.iloc[i])[key] - decision_metrics(df.iloc[i])[key],
                               np.arange(len(df)), n_resamples=n_resamples, seed=seed, ci=ci, vectorized=False)


# ---- permutation test on median toxicity (§3.2) -----------------------------------------------------------------
def _median_diff(x, y, axis=-1):
    return np.median(y, axis=axis) - np.median(x, axis=axis)


def permutation_test_median_shift(x, y, n_resamples: int = N_RESAMPLES, seed: int = DEFAULT_SEED,
                                  paired: bool = True, relative: bool = False,
                                  alternative: str = "two-sided") -> dict[str, float]:
    """Permutation test for a shift in median toxicity from x (e.g. M0) to y (e.g. M_int), §3.2: "+7.1 % (95 % CI
    [5.8 %, 8.4 %], p < 10^-12, permutation test)".

    Statistic: median(y) − median(x), or with relative=True `relative_median_change` (median(y)/median(x) − 1).
    paired=True (default, OUR choice: the paper does not say, but §2.4 scores both models on the same test prompts
    "to control for prompt difficulty"): under H0 each item's two scores are exchangeable, so the null swaps x_i and
    y_i at random (scipy permutation_type="samples"); paired=False permutes group labels across all scores. Uses
    scipy.stats.permutation_test with Generator(seed); exact when all 2^n (or C(n_x+n_y, n_x)) permutations fit in
    n_resamples, otherwise p = (hits + 1) / (n_resamples + 1) with two-sided p = 2·min(one-sided), capped at 1.
    Note: a randomized p can never fall below 1 / (n_resamples + 1) ≈ 1e-4, so the paper's p < 10^-12 cannot come
    from a 10,000-resample permutation test; §3.3.1 attributes the same p to Mann–Whitney U (`mann_whitney`)."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if not (x.size and y.size) or np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("permutation_test_median_shift: both samples must be non-empty and free of NaN")
    if paired and x.size != y.size:
        raise ValueError("permutation_test_median_shift: paired samples must have equal length")
    statistic = relative_median_change if relative else _median_diff
    res = stats.permutation_test((x, y), statistic, permutation_type="samples" if paired else "independent",
                                 vectorized=True, n_resamples=n_resamples, alternative=alternative,
                                 batch=max(1, _BATCH_ELEMENTS // (x.size + y.size)),
                                 rng=np.random.default_rng(seed))
    return {"statistic": float(res.statistic), "p": float(res.pvalue), "paired": paired, "relative": relative,
            "n_resamples": int(n_resamples), "seed": seed}
