"""The paper's figures, regenerated from a run's data, each titled with the configuration that produced it.

Why: a figure of a `cpu` run must never pass for the paper's. Every function here builds one figure from the
numbers a stage computed and a `label` (the run's description) and returns the matplotlib Figure; the stage saves it
with `StageContext.save_figure` (core/outputs.py: PNG and a PDF without a creation date, so a rerun changes no committed bytes).
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def figure_data_composition(summary: list[dict], label: str) -> plt.Figure:
    """Bar chart of records per benchmark, split and condition (the data composition of the run)."""
    df = pd.DataFrame(summary)
    df["split"] = pd.Categorical(df["split"], ["train", "val", "test"])
    sns.set_theme(style="whitegrid", context="paper")
    g = sns.catplot(data=df, kind="bar", x="benchmark", y="n", hue="split", col="condition",
                    order=sorted(df["benchmark"].unique()), height=3.2, aspect=1.5, palette="deep")
    g.set_axis_labels("benchmark", "records")
    g.figure.suptitle(f"Data composition — {label}", y=1.04, fontsize=10)
    return g.figure


def figure_loss_curve(log_history: list[dict], label: str, title: str) -> plt.Figure:
    """Training loss per logged step (Stage I / Stage III)."""
    steps = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    df = pd.DataFrame(steps, columns=["step", "loss"])
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    sns.lineplot(data=df, x="step", y="loss", marker="o", ax=ax)
    ax.set_title(f"{title}\n{label}", fontsize=9)
    return fig


def figure_drift_before_after(table: pd.DataFrame, label: str) -> plt.Figure:
    """Figure 4: drift cases by severity before (M_int vs M0) and after Stage III (M_DART vs M0); this run on the
    left, the paper's Llama-3-8B counts on the right (separate axes: the test sets differ in size)."""
    rows = table[table["severity"] != "total"]
    long = []
    for _, r in rows.iterrows():
        for who, b, a in (("this run", r["before"], r["after"]), ("paper", r["paper_before"], r["paper_after"])):
            long += [{"source": who, "severity": r["severity"], "when": "before repair (M_int)", "cases": b},
                     {"source": who, "severity": r["severity"], "when": "after repair (M_DART)", "cases": a}]
    df = pd.DataFrame(long)
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, who in zip(axes, ("this run", "paper")):
        sub = df[df["source"] == who]
        sns.barplot(data=sub, x="severity", y="cases", hue="when", ax=ax, palette=["#d95f02", "#1b9e77"])
        tot = table[table["severity"] == "total"].iloc[0]
        b, a = (tot["before"], tot["after"]) if who == "this run" else (tot["paper_before"], tot["paper_after"])
        change = f"{100 * (a - b) / b:+.1f}%" if b else "n/a"
        ax.set_title(f"{who}: {b} → {a} drift cases ({change})", fontsize=9)
        ax.set_xlabel("judge severity")
        ax.set_ylabel("drift cases (count)")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        for c in ax.containers:
            ax.bar_label(c, fontsize=7)
        ax.legend(fontsize=7, title=None)
    fig.suptitle(f"Harm drift cases before/after Stage III repair\n{label} | paper: Llama-3-8B, "
                 "DeepSeek-Chat judge, 1,624 test items", fontsize=9)
    fig.tight_layout()
    return fig


def figure_roc(roc: dict, label: str) -> plt.Figure:
    """Figure 5 (App. M.1): ROC of the toxicity delta as a drift detector against human labels, with the F1-best
    threshold; the paper's AUC in the legend for comparison."""
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot(roc["fpr"], roc["tpr"], marker=".", label=f"this run: AUC {roc['auc']:.2f} (n={roc['n']})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8, label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"Toxicity delta vs human drift labels; F1-best tau {roc['best_tau']:.3g}\n"
                 f"(paper: AUC {roc['paper']['auc']}, tau {roc['paper']['tau']})\n{label}", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def figure_score_distributions(df: pd.DataFrame, score: str, label: str,
                               floor: float = 1e-6) -> plt.Figure:
    """Per-suite distributions of a harm score for M0 and M_DART (the external safety figure). Log axis, values
    below `floor` (e.g. empty outputs scored 0) drawn at the floor, as the title says."""
    long = pd.concat([pd.DataFrame({"benchmark": df["benchmark"], "model": label,
                                    score: df[f"{score}_{m}"].clip(lower=floor)})
                      for m, label in (("m0", "M0"), ("m_dart", "M_DART"))], ignore_index=True)
    counts = df.groupby("benchmark").size()
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(7, 3.6))
    sns.boxplot(data=long, x="benchmark", y=score, hue="model", order=list(counts.index), ax=ax,
                palette=["#7570b3", "#1b9e77"], fliersize=2)
    ax.set_yscale("log")
    ax.set_ylabel(f"{score} of the analysis (log scale)")
    ax.set_xlabel("")
    ax.set_xticks(range(len(counts)), [f"{b}\n(n={n})" for b, n in counts.items()])
    ax.set_title(f"External safety suites: {score} of M0 vs M_DART outputs (scores < {floor:g} drawn at {floor:g})\n"
                 f"{label}", fontsize=9)
    ax.legend(fontsize=8, title=None)
    fig.tight_layout()
    return fig


def figure3(data: pd.DataFrame, label: str, tox_label: str, paper_label: str) -> plt.Figure:
    """Figure 3 (stage ablation): (a) accuracy overall / EQUAL / DIFF across M0 → M_int → M_DART with 95 % bootstrap
    CIs, the paper's stated values as hollow markers; (b) this run's median rationale toxicity with CIs; (c) the
    paper's median toxicity on its own axis (a different classifier and scale; CIs not stated). `data`: the long
    frame of `main_results.figure3_data` (model, metric, estimate, ci_lo, ci_hi, paper)."""
    models = ["M0", "M_int", "M_DART"]
    x = range(len(models))
    acc = {"acc_overall": ("overall", "#1b9e77"), "acc_equal": ("EQUAL", "#d95f02"), "acc_diff": ("DIFF", "#7570b3")}
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1.4, 1, 1]})
    ax = axes[0]
    for k, (metric, (series, color)) in enumerate(acc.items()):
        d = data[data["metric"] == metric].set_index("model").loc[models]
        off = (k - 1) * 0.06
        xs = [i + off for i in x]
        ax.errorbar(xs, d["estimate"], yerr=[d["estimate"] - d["ci_lo"], d["ci_hi"] - d["estimate"]], color=color,
                    marker="o", capsize=3, label=f"{series} (this run)")
        p = d["paper"].astype(float)
        if p.notna().any():
            ax.plot(xs, p, ls=":", marker="D", mfc="none", color=color, label=f"{series} (paper)")
    ax.set_xticks(list(x), models)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("accuracy (unparsed = wrong)")
    ax.set_title("(a) accuracy, 95% bootstrap CI", fontsize=9)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    tox = data[data["metric"] == "median_toxicity"].set_index("model").loc[models]
    ax = axes[1]
    ax.errorbar(list(x), tox["estimate"], yerr=[tox["estimate"] - tox["ci_lo"], tox["ci_hi"] - tox["estimate"]],
                color="#e7298a", marker="o", capsize=3)
    ax.set_xticks(list(x), models)
    ax.set_ylim(bottom=0)
    ax.set_ylabel(f"median toxicity of rationales\n({tox_label})")
    ax.set_title("(b) this run: median toxicity, 95% bootstrap CI", fontsize=9)
    ax = axes[2]
    p = tox["paper"].astype(float)
    if p.notna().any():
        ax.plot(list(x), p * 1e5, ls=":", marker="D", mfc="none", color="#e7298a")
        for i, v in zip(x, p):
            if pd.notna(v):
                ax.annotate(f"{v * 1e5:.2f}", (i, v * 1e5), textcoords="offset points", xytext=(0, 8), ha="center",
                            fontsize=7, bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none"})
        ax.set_ylim(p.min() * 1e5 * 0.85, p.max() * 1e5 * 1.1)
    ax.set_xticks(list(x), models)
    ax.set_ylabel("median toxicity (×1e-5, RoBERTa)")
    ax.set_title(f"(c) paper ({paper_label}): median toxicity\n(stated values; CIs not stated)", fontsize=9)
    fig.suptitle(f"Stage ablation (Figure 3): {label}\npaper markers: {paper_label}, DeepSeek-Chat teacher "
                 "(different model and classifier: compare directions, not values)", fontsize=9)
    fig.tight_layout()
    return fig


def figure_dcr_similarity(pairs_before: dict, pairs_after: dict, layer: int, label: str) -> plt.Figure:
    """DCR Stage A: distributions of layer-l cosine similarity (within each subset, across) before and after, one
    panel per probe."""
    rows = [{"probe": probe, "when": when, "pairs": kind, "cosine": x}
            for when, pairs in (("before", pairs_before), ("after", pairs_after))
            for probe, d in pairs.items() for kind, xs in d.items() for x in xs]
    df = pd.DataFrame(rows)
    sns.set_theme(style="whitegrid", context="paper")
    g = sns.catplot(data=df, kind="box", x="pairs", y="cosine", hue="when", col="probe", height=3.2, aspect=1.3,
                    order=["within_seemingly", "within_toxic", "cross"], hue_order=["before", "after"],
                    palette="deep", fliersize=1, sharey=True)
    g.set_axis_labels("prompt pairs", f"cosine similarity at block {layer}")
    g.figure.suptitle(f"DCR Stage A: layer-{layer} similarity before / after — {label}", y=1.04, fontsize=10)
    return g.figure


def figure_dcr_dynamics(dyn: pd.DataFrame, label: str) -> plt.Figure:
    """DCR Stage B: mean refusal probability of each probe group over the SFT steps, SFT only vs DCR + SFT."""
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    sns.lineplot(data=dyn, x="step", y="mean", hue="group", style="run", markers=True, ax=ax)
    ax.set_ylabel("P(answer opens with a refusal)")
    ax.set_xlabel("SFT optimizer step")
    ax.set_title(f"DCR: refusal probability during safety SFT\n{label}", fontsize=9)
    return fig


def figure_dcr_rates(table: pd.DataFrame, label: str) -> plt.Figure:
    """DCR evaluation: each set's rate of the expected behaviour (compliance / defence success) per model."""
    models = [c for c in ("base", "sft_only", "dcr_sft") if c in table.columns]
    df = table.melt(id_vars=["set", "metric"], value_vars=models, var_name="model", value_name="rate")
    sns.set_theme(style="whitegrid", context="paper")
    g = sns.catplot(data=df, kind="bar", y="set", x="rate", hue="model", col="metric", sharey=False, height=4,
                    aspect=1.1, palette="deep")
    g.set(xlim=(0, 1))
    g.figure.suptitle(f"DCR: over-refusal (compliance) and safety (defence success) — {label}", y=1.03, fontsize=10)
    return g.figure


def figure_dcr_ntk(results: dict, label: str) -> plt.Figure:
    """DCR mechanism: normalised first-token eNTK similarity per model, across the groups and within the
    seemingly-toxic group (each pair a point, the bar its mean)."""
    rows = [{"model": m, "pairs": kind, "similarity": x}
            for m, r in results.items() for kind, key in (("cross (seemingly toxic, toxic)", "cross_pairs"),
                                                           ("within seemingly toxic", "within_pairs"))
            for x in r[key]]
    df = pd.DataFrame(rows)
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    sns.barplot(data=df, x="model", y="similarity", hue="pairs", errorbar=("ci", 95), ax=ax, palette="deep")
    ax.set_ylabel("||K(x', x)||_F / ||K(x', x')||_F")
    ax.set_title(f"DCR: first-token eNTK similarity\n{label}", fontsize=9)
    return fig
