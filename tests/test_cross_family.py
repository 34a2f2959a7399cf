"""Table 15 from finished runs' artifacts (dart_utils/analysis/cross_family.py): a full run, a run stopped after
Stage II, a missing run."""
import json

import pandas as pd
import pytest

from dart_utils.analysis import cross_family, safe_from_start
from dart_utils.core.stage import registry


def _write(run, name, rows):
    path = registry().artifact(name).location(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _preds(correct):
    """One prediction per flag: items alternate DIFF (gold YES) / EQUAL (gold NO); True = the gold label."""
    out = []
    for i, ok in enumerate(correct):
        gold = "YES" if i % 2 == 0 else "NO"
        pred = gold if ok else ("NO" if gold == "YES" else "YES")
        out.append({"id": f"x{i}", "benchmark": "D1", "category": "descriptive", "condition":
                    "DIFF" if gold == "YES" else "EQUAL", "gold": gold, "prediction": pred, "parsed": True})
    return out


def test_table15_rows_from_runs(tmp_path):
    full, half = tmp_path / "cpu", tmp_path / "cpu-large"
    _write(full, "predictions_m0", _preds([False] * 10))
    _write(full, "predictions_m_int", _preds([True] * 5 + [False] * 5))
    _write(full, "predictions_m_dart", _preds([True] * 10))
    _write(full, "drift_pool", [{"id": f"x{i}"} for i in range(4)])
    _write(full, "drift_pool_m_dart", [{"id": "x0"}])
    (full / "02_audit" / "manifest.json").write_text(json.dumps({"student": "tiny-a"}))
    _write(half, "predictions_m0", _preds([True] * 2 + [False] * 8))
    _write(half, "predictions_m_int", _preds([True] * 6 + [False] * 4))
    _write(half, "drift_pool", [])
    df = cross_family.table15([full, half])
    a, b = df.iloc[0], df.iloc[1]
    assert (a["student"], a["compared"], a["Δ acc (pp)"], a["Δ EQUAL (pp)"]) == ("tiny-a", "M_DART", 100.0, 100.0)
    assert a["McNemar p (acc)"] == pytest.approx(2 * 0.5 ** 10)
    assert (a["drift cases (II)"], a["remaining after repair"], a["drift reduction %"]) == (4, 1, 75.0)
    assert b["compared"] == "M_int (no M_DART)" and b["Δ acc (pp)"] == 40.0 and pd.isna(b["drift reduction %"])
    assert list(df["run"])[2:] == ["paper"] * 3 and df.iloc[3]["acc M_DART"] == 0.688
    paths = cross_family.save(df, tmp_path / "out", ["cpu", "cpu-large"])
    assert "make compare RUNS=\"cpu cpu-large\"" in paths["md"].read_text()
    assert cross_family.main(["nope", "--runs-dir", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    with pytest.raises(ValueError, match="at least one run"):
        cross_family.table15([])


def test_safe_from_start_rows_name_each_runs_variant_beside_the_paper(tmp_path):
    for run, variant, n_drift in (("cpu", None, 4), ("cpu-safe", "safe", 2)):
        root = tmp_path / run
        _write(root, "predictions_m0", _preds([False] * 10))
        _write(root, "predictions_m_int", _preds([True] * 6 + [False] * 4))
        _write(root, "drift_pool", [{"id": f"x{i}"} for i in range(n_drift)])
        (root / "params.yaml").write_text("distill: {variant: safe}\n" if variant else "distill: {}\n")  # old run
    df = safe_from_start.table([tmp_path / "cpu", tmp_path / "cpu-safe"])
    assert list(df["Stage I variant"]) == ["standard", "safe", "standard", "safe", "short"]
    assert list(df["drift cases (II)"][:2]) == [4, 2] and df.iloc[0]["EQUAL M_int"] == 0.6
    assert pd.isna(df.iloc[0]["acc M_DART"])                                      # Stage III not run: shown as such
    assert list(df["drift cases (II)"][2:]) == [435, 182, 95] and df.iloc[3]["EQUAL M_DART"] == 0.607
    paths = cross_family.save(df, tmp_path / "out", ["cpu", "cpu-safe"], safe_from_start.NAME, safe_from_start.TITLE,
                              "safe_from_start")
    assert 'make compare RUNS="cpu cpu-safe" TABLE=safe_from_start' in paths["md"].read_text()
    assert safe_from_start.main(["nope", "--runs-dir", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
