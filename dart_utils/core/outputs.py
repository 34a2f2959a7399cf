"""Writing a stage's tables and figures: each carries the configuration that produced it.

Why: a reader must never mistake a CPU-run number for a paper number. Every table is written as CSV (data), Markdown
(reading) and LaTeX (papers) with a header naming the run, profile and student; every figure as PNG and as a PDF
without a creation date (a rerun changes no committed bytes). `StageContext.save_table` / `save_figure` call these and
record the files in the stage's manifest; the paper's numbers stand in columns of their own (core/paper.py).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .artifacts import Run


def provenance(run: Run) -> str:
    p = run.params
    line = f"Ours: {run.describe()}."
    if p.profile != "paper" or p.student_file:
        line += (" NOT the paper's configuration: compare directions and ratios, not absolute values."
                 if p.profile != "paper" else " Student differs from the paper's primary student.")
    return line


def save_table(df: pd.DataFrame, run: Run, name: str, title: str, notes: list[str]) -> dict[str, Path]:
    """Write tables/<run>/<name>.{csv,md,tex}; the Markdown and LaTeX carry title, provenance and notes."""
    out = run.tables_dir
    paths = {"csv": out / f"{name}.csv", "md": out / f"{name}.md", "tex": out / f"{name}.tex"}
    df.to_csv(paths["csv"], index=False)
    header = [f"# {title}", "", provenance(run), *[f"{n}" for n in notes], ""]
    shown = df.astype(object).where(df.notna(), None)      # a missing value reads "—", not "nan"
    paths["md"].write_text("\n".join(header) + "\n" + shown.to_markdown(index=False, missingval="—") + "\n")
    caption = f"{title}. {provenance(run)} " + " ".join(notes)
    latex = df.to_latex(index=False, caption=caption.replace("%", r"\%").replace("_", r"\_"),
                        label=f"tab:{name}", na_rep="--")
    paths["tex"].write_text(latex)
    return paths


def save_figure(fig, run: Run, name: str) -> dict[str, Path]:
    """figures/<run>/<name>.png and .pdf; the PDF without a creation date, so a rerun changes no committed bytes."""
    paths = {ext: run.figures_dir / f"{name}.{ext}" for ext in ("png", "pdf")}
    fig.savefig(paths["png"], bbox_inches="tight", dpi=150)
    fig.savefig(paths["pdf"], bbox_inches="tight", metadata={"CreationDate": None})
    import matplotlib.pyplot as plt
    plt.close(fig)
    return paths
