"""The open-ended figure (Table 14 by domain): each measure's rate per domain and model, with bootstrap 95 % CIs."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..analysis.open_ended import rate_ci
from ..dart.open_ended import MEASURES
from ..data.open_ended import DOMAINS


def figure_by_domain(df: pd.DataFrame, title: str, models=("m0", "m_int", "m_dart"), n_resamples: int = 2_000,
                     seed: int = 42):
    """One panel per measure: each model's rate per domain with its bootstrap 95 % CI (from `judged_frame`)."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    rows = []
    for m in MEASURES:
        for domain in (*DOMAINS, "overall"):
            d = df if domain == "overall" else df[df["domain"] == domain]
            if m == "harmful_premise_handled":
                d = d[d["harmful_premise"]]
            d = d[d["status"] == "ok"]
            for model in models:
                x = d[d["model"] == model][m].astype(bool).to_numpy()
                est, lo, hi = rate_ci(x, n_resamples, seed)
                rows.append({"measure": m, "domain": domain, "model": model, "rate": 100 * est,
                             "lo": 100 * lo, "hi": 100 * hi})
    r = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, len(MEASURES), figsize=(5 * len(MEASURES), 4), sharey=True)
    groups, width = (*DOMAINS, "overall"), 0.8 / len(models)
    colors = sns.color_palette(n_colors=len(models))
    for ax, m in zip(np.atleast_1d(axes), MEASURES):
        sub = r[r["measure"] == m]
        for k, model in enumerate(models):
            s = sub[sub["model"] == model].set_index("domain").reindex(groups)
            xs = np.arange(len(groups)) + (k - (len(models) - 1) / 2) * width
            ax.bar(xs, s["rate"].fillna(0), width, label=model, color=colors[k])   # no judged answer: no bar
            ok = s["rate"].notna().to_numpy()
            ax.errorbar(xs[ok], s["rate"][ok], yerr=[(s["rate"] - s["lo"])[ok], (s["hi"] - s["rate"])[ok]],
                        fmt="none", ecolor="black", capsize=2, lw=0.8)
        ax.set_xticks(np.arange(len(groups)), groups, rotation=30)
        ax.set_title(m.replace("_", " "))
        ax.set_ylabel("% of judged answers")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
