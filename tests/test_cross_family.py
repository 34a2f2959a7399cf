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
    for run, variant, n_drift, m_int in (("cpu", None, 4, [True] * 10),
                                         ("cpu-safe", "safe", 2, [True] * 6 + [False] * 4)):
        root = tmp_path / run
        _write(root, "predictions_m0", _preds([False] * 10))
        _write(root, "predictions_m_int", _preds(m_int))
        _write(root, "drift_pool", [{"id": f"x{i}"} for i in range(n_drift)])
        shift = 0.5 if variant else 0.0                                 # the safe run's rationales: more toxic
        _write(root, "harm_scores", [{"id": f"x{i}", "model": m, "toxicity": i / 100 + (shift if m == "m_int" else 9)}
                                     for i in range(10) for m in ("m0", "m_int")])
        (root / "params.yaml").write_text("distill: {variant: safe}\nrun: {seed: 43}\n" if variant
                                          else "distill: {}\n")                            # an old run
    df = safe_from_start.table([tmp_path / "cpu", tmp_path / "cpu-safe"])
    assert pd.isna(df.iloc[0]["seed"]) and df.iloc[1]["seed"] == 43
    assert list(df["tox. median M_int"][:2]) == pytest.approx([0.045, 0.545])        # M_int's rows only, not M0's
    assert pd.isna(df.iloc[0]["p tox. M_int"]) and df.iloc[1]["p tox. M_int"] < 0.05
    same = tmp_path / "cpu-same"                                   # identical scores: no shift, p = 1
    for name in ("predictions_m0", "predictions_m_int", "drift_pool", "harm_scores"):
        _write(same, name, [json.loads(l) for l in registry().artifact(name).location(tmp_path / "cpu").open()])
    (same / "params.yaml").write_text("distill: {}\n")
    assert safe_from_start.table([tmp_path / "cpu", same]).iloc[1]["p tox. M_int"] == 1.0
    assert list(df["Stage I variant"]) == ["standard", "safe", "standard", "safe", "short"]
    assert list(df["drift cases (II)"][:2]) == [4, 2] and list(df["EQUAL M_int"][:2]) == [1.0, 0.6]
    # paired against the first run: EQUAL items x7, x9 flip to wrong (b = 2, c = 0); drift flags x2, x3 (b = 2)
    assert pd.isna(df.iloc[0]["p EQUAL M_int"]) and df.iloc[1]["p EQUAL M_int"] == pytest.approx(0.5)
    assert df.iloc[1]["p acc M_int"] == pytest.approx(2 * 0.5 ** 4)                 # x6..x9 wrong: b = 4, c = 0
    assert df.iloc[1]["p drift (II)"] == pytest.approx(0.5) and pd.isna(df.iloc[1]["p EQUAL M_DART"])
    other = tmp_path / "cpu-other"                                 # another test split: not paired, so no p
    _write(other, "predictions_m0", [dict(r, id="y" + r["id"]) for r in _preds([False] * 10)])
    _write(other, "predictions_m_int", [dict(r, id="y" + r["id"]) for r in _preds([True] * 10)])
    _write(other, "drift_pool", [])
    (other / "params.yaml").write_text("distill: {}\n")
    unpaired = safe_from_start.table([tmp_path / "cpu", other]).iloc[1]
    assert pd.isna(unpaired["p EQUAL M_int"]) and pd.isna(unpaired["p acc M_int"])
    assert pd.isna(unpaired["p drift (II)"]) and pd.isna(unpaired["p tox. M_int"])    # no harm scores: no p
    assert pd.isna(df.iloc[0]["acc M_DART"])                                      # Stage III not run: shown as such
    assert list(df["drift cases (II)"][2:]) == [435, 182, 95] and df.iloc[3]["EQUAL M_DART"] == 0.607
    paths = cross_family.save(df, tmp_path / "out", ["cpu", "cpu-safe"], safe_from_start.NAME, safe_from_start.TITLE,
                              "safe_from_start")
    assert 'make compare RUNS="cpu cpu-safe" TABLE=safe_from_start' in paths["md"].read_text()
    assert safe_from_start.main(["nope", "--runs-dir", str(tmp_path), "--out", str(tmp_path / "o")]) == 2


def test_teacher_choice_rows_name_each_runs_teacher_and_median_toxicity(tmp_path):
    from dart_utils.analysis import teacher_choice
    for run, teacher, n_drift, n_left, tox in (("cpu", "big-teacher", 4, 1, 0.2), ("cpu-t2", "small-teacher", 6, 3, 0.4)):
        root = tmp_path / run
        _write(root, "predictions_m0", _preds([False] * 10))
        _write(root, "predictions_m_int", _preds([True] * 6 + [False] * 4))
        _write(root, "predictions_m_dart", _preds([True] * 8 + [False] * 2))
        _write(root, "drift_pool", [{"id": f"x{i}"} for i in range(n_drift)])
        _write(root, "drift_pool_m_dart", [{"id": f"x{i}"} for i in range(n_left)])
        _write(root, "harm_scores", [{"id": f"x{i}", "model": m, "toxicity": t} for i, t in enumerate([0.5, 0.1, 0.9])
                                     for m in ("m0", "m_int")])
        _write(root, "harm_scores_m_dart", [{"id": f"x{i}", "model": "m_dart", "toxicity": tox + i} for i in range(3)]
               + [{"id": "x0", "model": "m_dart_uniform", "toxicity": 99.0}])       # another arm: not M_DART's
        (root / "params.yaml").write_text(f"teacher: {{model: {teacher}}}\n")
    df = teacher_choice.table([tmp_path / "cpu", tmp_path / "cpu-t2"])
    assert list(df["teacher"][:2]) == ["big-teacher", "small-teacher"]
    assert list(df["tox. median M_DART"][:2]) == pytest.approx([1.2, 1.4]) and df.iloc[0]["tox. median M0"] == 0.5
    assert list(df["drift cases (II)"][:2]) == [4, 6] and list(df["drift reduction %"][:2]) == [75.0, 50.0]
    assert df.iloc[0]["acc M_DART"] == 0.8
    paper = df[df["run"] == "paper (Llama-3-8B)"].set_index("teacher")
    assert paper.loc["gpt-4", "acc M_DART"] == 0.704 and paper.loc["deepseek-chat", "remaining after repair"] == 119
    assert paper.loc["llama-3-70b-instruct", "drift cases (II)"] == 487 and paper.loc["gpt-4", "acc M0"] == 0.39
    paths = cross_family.save(df, tmp_path / "out", ["cpu", "cpu-t2"], teacher_choice.NAME, teacher_choice.TITLE,
                              "teacher_choice")
    assert 'make compare RUNS="cpu cpu-t2" TABLE=teacher_choice' in paths["md"].read_text()
    (tmp_path / "bare").mkdir()
    _write(tmp_path / "bare", "predictions_m0", _preds([False] * 2))
    assert teacher_choice.main(["bare", "--runs-dir", str(tmp_path), "--out", str(tmp_path / "o")]) == 2  # no params


def test_teacher_studies_change_only_the_teacher_and_the_run_name():
    """Table 32's runs differ from the standard one in the teacher section (and their run directory) alone."""
    from dart_utils.core.params import PROJECT_ROOT, load
    base = load("cpu").model_dump()
    for study, profile in (("teacher_qwen05b", "cpu"), ("teacher_gpt4", "paper"), ("teacher_llama70b", "paper")):
        ref = load(profile).model_dump()
        p = load(profile, extra_files=[PROJECT_ROOT / "params" / "studies" / f"{study}.yaml"]).model_dump()
        changed = {k for k in ref if ref[k] != p[k]}
        assert changed == {"run", "teacher"}, (study, changed)
        assert p["run"]["tag"] == study and p["teacher"]["model"] != ref["teacher"]["model"]
        assert {k for k in ref["run"] if ref["run"][k] != p["run"][k]} == {"tag"}
    assert base["teacher"]["model"] == "qwen2.5-coder-1.5b-instruct-q4_k_m"


def test_make_compare_maps_each_table_to_its_module():
    """`make compare TABLE=...` picks the module that builds the table; an unknown TABLE names the known ones."""
    import subprocess

    from dart_utils.core.params import PROJECT_ROOT
    for table, module in (("table15", "cross_family"), ("safe_from_start", "safe_from_start"),
                          ("teacher_choice", "teacher_choice")):
        out = subprocess.run(["make", "-n", "compare", "RUNS=a b", f"TABLE={table}"], cwd=PROJECT_ROOT,
                             capture_output=True, text=True)
        assert out.returncode == 0 and f"-m dart_utils.analysis.{module} a b" in out.stdout, out.stderr
    bad = subprocess.run(["make", "-n", "compare", "RUNS=a", "TABLE=nope"], cwd=PROJECT_ROOT, capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "TABLE=nope" in bad.stderr and "teacher_choice" in bad.stderr
