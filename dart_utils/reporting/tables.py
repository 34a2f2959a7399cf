"""How numbers look in the regenerated tables: rounding that never hides a small p-value, "—" for what is missing.

Why: tables are compared with the paper's by eye; a p of 3e-9 must not print as 0 and a toxicity of 3.5e-5 must keep
its significant digits. The files themselves are written by `StageContext.save_table` (core/outputs.py).
"""
from __future__ import annotations

import pandas as pd


def round_table(df: pd.DataFrame, digits: int = 4, p_columns=("p",)) -> pd.DataFrame:
    """Numbers rounded for display; p-values kept to 2 significant digits (a p of 3e-9 must not print as 0)."""
    out = df.copy()
    for c in out.columns:
        if c in p_columns:
            out[c] = [float(f"{v:.2g}") if pd.notna(v) else v for v in out[c]]
        elif pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].round(digits)
    return out


def _sig(v, digits: int):
    return float(f"{v:.{digits}g}") if pd.notna(v) else v


def tidy(df: pd.DataFrame, digits: int = 4, p_columns=(), sig_columns=()) -> pd.DataFrame:
    """A table for display and saving: numbers rounded (p-values to 2 significant digits as `reporting.round_table`;
    `sig_columns`, e.g. toxicities of ~1e-5, to 3 significant digits; other floats to `digits` decimals), missing
    values shown as "—" (not stated by the paper, or not computable here)."""
    out = round_table(df.drop(columns=list(sig_columns)), digits=digits, p_columns=p_columns)
    for c in sig_columns:
        out.insert(list(df.columns).index(c), c, [_sig(v, 3) for v in df[c]])
    for c in out.columns:
        if out[c].isna().any():
            out[c] = out[c].astype(object).where(out[c].notna(), "—")
    return out
