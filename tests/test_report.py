"""The run report (dart_utils/reporting/page.py) and the stage history (core/artifacts.py), on a small fabricated run: fake
manifests, stamps, history, a table and a figure in tmp_path. Nothing runs a notebook or a model."""
from __future__ import annotations

import json
import os
import time

import pytest

from dart_utils import pipeline
from dart_utils.core import artifacts
from dart_utils.core.artifacts import Run
from dart_utils.core.hashing import sha256_file
from dart_utils.core.params import load
from dart_utils.reporting import page as report

STAGES = ["00_alpha", "01_beta", "02_gamma", "03_delta"]     # no such notebooks: titles fall back to the names
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


def _table(tables, name, title, value):
    (tables / f"{name}.md").write_text(
        f"# {title}\n\nOurs: run 'cpu' (profile cpu). NOT the paper's configuration.\nA note about {name}.\n\n"
        f"| metric   |   ours |   paper |\n|:---------|-------:|--------:|\n| accuracy | {value} |   0.682 |\n")
    (tables / f"{name}.csv").write_text(f"metric,ours,paper\naccuracy,{value},0.682\n")
    return [tables / f"{name}.md", tables / f"{name}.csv"]


def _manifest(run, stage, outputs, fingerprint, **extra):
    d = run.root / stage
    d.mkdir(parents=True, exist_ok=True)
    m = {"stage": stage, "run": run.name, "profile": "cpu", "student": "smollm2-135m-instruct",
         "finished_utc": f"2026-02-0{STAGES.index(stage) + 1}T12:00:00+00:00", "params_fingerprint": fingerprint,
         "seeds": {"run": 42, "splits": 42}, "inputs": {},
         "outputs": {p.name: {"path": str(p), "sha256": sha256_file(p)} for p in outputs},
         "packages": {"python": "3.11.7", "torch": "2.13.0+cpu"}, "git_commit": "abcdef1234567890", **extra}
    (d / "manifest.json").write_text(json.dumps(m, indent=2))


@pytest.fixture
def fake_run(tmp_path):
    params = load("cpu", overrides={"run": {"runs_dir": str(tmp_path / "runs"), "tables_dir": str(tmp_path / "tables"),
                                            "figures_dir": str(tmp_path / "figures")}})
    run = Run(params)
    tables, figures = run.tables_dir, run.figures_dir
    fp = params.fingerprint()
    (figures / "fig_alpha.png").write_bytes(PNG)
    _manifest(run, "00_alpha", [*_table(tables, "splits_alpha", "Table A: the splits", "0.4242"),
                                figures / "fig_alpha.png"], fp, sizes={"train": 128, "val": 64, "test": 128},
              wall_time_s={"total": 2.0, "split": 0.5})
    _manifest(run, "01_beta", _table(tables, "beta_table", "Table B: stage one", "0.5151"), "an-older-fingerprint",
              wall_time_s={"total": 3.0},
              generation={"m0": "reused", "m_int": {"new_tokens": 1234, "tokens_per_s": 56.7, "wall_time_s": 21.8}},
              teacher_llm={"calls": 0, "cache_hits": 244, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0,
                           "seconds": 0.0})                                  # an old manifest: no cached_* keys
    _manifest(run, "02_gamma", _table(tables, "gamma_table", "Table C: the audit", "0.6161"), fp,
              wall_time_s={"total": 0.4, "screen + judge": 0.05},
              judge_llm={"calls": 2, "cache_hits": 138, "errors": 1, "prompt_tokens": 300, "completion_tokens": 50,
                         "seconds": 4.0, "cached_calls": 136, "cached_prompt_tokens": 1_999_700,
                         "cached_completion_tokens": 499_950, "cached_seconds": 955.0})
    _table(tables, "stray_table", "Table Z: written by hand", "0.9999")       # claimed by no manifest
    (run.root / "stamps").mkdir(parents=True)
    for stage, wall in (("00_alpha", 4.9), ("01_beta", 8.9), ("02_gamma", 0.4)):
        (run.root / "stamps" / f"{stage}.json").write_text(json.dumps({"fingerprint": "x", "wall_time_s": wall}))
    history = [
        {"utc": "2026-01-01T10:00:00+00:00", "stage": "01_beta", "status": "ran", "wall_time_s": 1350.0,
         "llm": {"teacher_llm": {"calls": 242, "prompt_tokens": 70_000, "completion_tokens": 7_000,
                                 "cached_calls": 0, "cached_prompt_tokens": 0, "cached_completion_tokens": 0}},
         "generation": {"m0": {"new_tokens": 5545, "tokens_per_s": 44.3125, "wall_time_s": 125.1},
                        "m_int": {"new_tokens": 1, "tokens_per_s": 1.0, "wall_time_s": 1.0}}},
        {"utc": "2026-01-01T12:00:00+00:00", "stage": "01_beta", "status": "ran", "wall_time_s": 20.0,
         "generation": {"m0": {"new_tokens": 999, "tokens_per_s": 9.0, "wall_time_s": 111.0, "reused": True}}},
        {"utc": "2025-12-01T12:00:00+00:00", "stage": "01_beta", "status": "ran", "wall_time_s": 30.0,
         "generation": {"m0": {"new_tokens": 1, "tokens_per_s": 1.0, "wall_time_s": 1.0}}},
        {"utc": "2026-01-01T11:00:00+00:00", "stage": "02_gamma", "status": "ran", "wall_time_s": 961.3,
         "steps": {"total": 955.0, "screen + judge": 950.0}},
        {"utc": "2026-01-02T09:00:00+00:00", "stage": "02_gamma", "status": "failed", "wall_time_s": 5000.0},
        {"utc": "2026-02-03T12:00:00+00:00", "stage": "02_gamma", "status": "ran", "wall_time_s": 0.4},
    ]
    (run.root / artifacts.HISTORY_FILE).write_text("".join(json.dumps(h) + "\n" for h in history) + "not json\n")
    readme = tmp_path / "README.md"
    readme.write_text("# X\n\n## Reproduction notes (every deviation from the paper)\n\n1. **Fake note.** Seeds are "
                      "42 (`docs/a.md`).\n\n## After the notes\n\nnot part of the report\n")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Doc A: how splits work\n\ntext\n")
    out = tmp_path / "reports" / "cpu"
    return params, {"out_dir": out, "stages": STAGES, "readme": readme, "docs_dir": docs}


def _build(params, kw, **more):
    paths = report.build_report(params, **kw, **more)
    return paths, paths["md"].read_text(), paths["html"].read_text()


def _section(md, heading):
    start = md.index(f"\n## {heading}")
    end = md.find("\n## ", start + 1)
    return md[start:end if end > 0 else None]


def test_sections_in_order_with_tables_figures_and_notes(fake_run):
    params, kw = fake_run
    paths, md, page = _build(params, kw)
    assert paths == {"md": kw["out_dir"] / "report.md", "html": kw["out_dir"] / "report.html"}
    assert md.startswith("# DART reproduction — run cpu\n")
    banner = md[:md.index("**Contents**")]
    assert "NOT the paper's numbers" in banner and "`cpu`" in banner and "smollm2-135m-instruct" in banner
    assert "01_beta ran with other parameters" in banner            # its manifest has another fingerprint
    order = ["Configuration", "Stage timings", "LLM costs", "00_alpha", "01_beta", "02_gamma", "03_delta", "Other",
             "Stages not run", "Reproduction notes"]
    positions = [md.index(f"\n## {h}") for h in order]
    assert positions == sorted(positions)
    for h in order:                                                   # each section is in the contents
        assert f"- [{h}" in md[:positions[0]]
    # tables inlined under the stage whose manifest lists them, with title, notes and file links
    alpha = _section(md, "00_alpha")
    assert "### Table A: the splits" in alpha and "| accuracy | 0.4242 |" in alpha
    assert "- A note about splits_alpha" in alpha and "[csv](../../tables/cpu/splits_alpha.csv)" in alpha
    assert "![fig_alpha](../../figures/cpu/fig_alpha.png)" in alpha
    assert "0.5151" in _section(md, "01_beta") and "0.6161" in _section(md, "02_gamma")
    assert "*Not run*" in _section(md, "03_delta")
    assert "0.9999" in _section(md, "Other") and "0.9999" not in md[:md.index("\n## Other")]
    assert "`03_delta`" in _section(md, "Stages not run") and "not run" in _section(md, "Stages not run")
    assert "`01_beta`" not in _section(md, "Stages not run")
    notes = _section(md, "Reproduction notes")
    assert "**Fake note.** Seeds are 42" in notes and "not part of the report" not in md
    assert "[docs/a.md](../../docs/a.md) — Doc A: how splits work" in notes
    conf = _section(md, "Configuration")
    assert "train 128 / val 64 / test 128" in conf and "qwen2.5-coder-1.5b-instruct-q4_k_m" in conf
    assert "`abcdef123456`" in conf and "torch 2.13.0+cpu" in conf and "All merged parameters" in conf
    # the HTML page: same content, tables rendered, images linked (not embedded), anchors for the contents
    assert page.startswith("<!DOCTYPE html>") and page.count("<table>") == md.count("\n|---") + md.count("\n|:--")
    assert '<img src="../../figures/cpu/fig_alpha.png"' in page and "data:image" not in page
    assert '<h2 id="stage-timings">' in page and 'href="#stage-timings"' in page and "<details>" in page
    assert "0.4242" in page and "Fake note." in page


def test_timings_use_the_history_for_the_cold_run(fake_run):
    params, kw = fake_run
    _, md, _ = _build(params, kw)
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]]
            for r in _section(md, "Stage timings").split("### ")[0].splitlines() if r.startswith("| 0")}
    status, last, finished, longest, n_runs, gen = rows["02_gamma"][:6]
    assert (status, finished, gen) == ("ran", "2026-02-03 12:00", "—")
    assert last == "0.40 s" and longest == "961.3 s (16.0 min) on 2026-01-01 11:00"   # not the failed 5000 s
    assert n_runs == "2 (+1 failed)"
    assert rows["01_beta"][1] == "8.9 s" and rows["01_beta"][3].startswith("1,350.0 s")
    assert rows["01_beta"][5] == "1 generated, 1 reused"
    gen_rows = {r for r in _section(md, "Stage timings").split("### Student generation")[1].split("### Steps")[0]
            .splitlines() if r.startswith("| 0")}
    assert gen_rows == {   # readable columns, not a JSON cell; a reused generation shows the cold run's numbers
        "| 01_beta | m0 | reused; generated 2026-01-01 10:00 | 5,545 | 125.1 s (2.1 min) | 44.3 |",   # latest fresh
        "| 01_beta | m_int | this run | 1,234 | 21.8 s | 56.7 |"}
    assert rows["00_alpha"][3] == "no history yet" and rows["00_alpha"][1] == "4.9 s"
    assert rows["03_delta"][0] == "not run" and rows["03_delta"][1] == "—"
    assert "| 02_gamma | screen + judge | 0.05 s | 950.0 s (15.8 min) |" in md      # steps: last and cold run


def test_llm_costs_fresh_cached_cold_and_prices(fake_run):
    params, kw = fake_run
    _, md, _ = _build(params, kw)
    costs = _section(md, "LLM costs")
    judge = next(r for r in costs.splitlines() if r.startswith("| 02_gamma | judge"))
    cells = [c.strip() for c in judge.split("|")[1:-1]]
    assert cells[3:9] == ["2", "138", "1", "300 / 50", "1,999,700 / 499,950", "2,000,000 / 500,000"]
    assert cells[9] == "4.0 s / 955.0 s (15.9 min)" and cells[10] == "local (0)"      # llama.cpp on cpu
    teacher = next(r for r in costs.splitlines() if r.startswith("| 01_beta | teacher"))
    assert "| n/a | 70,000 / 7,000 (run of 2026-01-01) |" in teacher               # old manifest; the history knows
    total = next(r for r in costs.splitlines() if r.startswith("| **total**"))
    assert "| 2 | 138 + 244 |" not in total and "2,070,000 / 507,000" in total
    _, priced, _ = _build(params, kw, prices={"judge": (1.0, 2.0)})
    judge = next(r for r in _section(priced, "LLM costs").splitlines() if r.startswith("| 02_gamma | judge"))
    assert "$3.00 (at $1 / $2 per M)" in judge                                      # 2 M in x $1 + 0.5 M out x $2


def test_paper_profile_shows_tokens_only(fake_run, tmp_path):
    params, kw = fake_run
    paper = load("paper", overrides={"run": params.run.model_dump(mode="json") | {"name": "cpu"}})
    _, md, _ = _build(paper, kw)
    assert "NOT the paper's numbers" not in md and "The paper's configuration" in md
    assert "tokens only (no price set)" in _section(md, "LLM costs")


def test_deterministic_and_follows_the_artifacts(fake_run):
    params, kw = fake_run
    paths, md1, html1 = _build(params, kw)
    mtime = paths["md"].stat().st_mtime_ns
    time.sleep(0.01)
    _, md2, html2 = _build(params, kw)
    assert (md1, html1) == (md2, html2) and paths["md"].stat().st_mtime_ns == mtime   # same bytes, not rewritten
    table = Run(params).tables_dir / "gamma_table.md"
    table.write_text(table.read_text().replace("0.6161", "0.7777"))
    _, md3, html3 = _build(params, kw)
    assert md3 != md1 and html3 != html1 and "0.7777" in md3 and "0.6161" not in md3
    assert "md changed since the stage wrote it" in _section(md3, "02_gamma")        # sha256 differs from manifest
    assert "changed since" not in _section(md1, "02_gamma")


def test_history_record_and_reader(fake_run):
    params, _ = fake_run
    run = Run(params)
    started = time.time()
    rec = artifacts.history_record(run, "02_gamma", "fp1", 12.5, "ran", started)
    assert rec["stage"] == "02_gamma" and rec["wall_time_s"] == 12.5 and rec["fingerprint"] == "fp1"
    assert "llm" not in rec                                      # the manifest predates this execution: not its stats
    manifest = run.root / "02_gamma" / "manifest.json"
    os.utime(manifest, (started + 1, started + 1))
    rec = artifacts.history_record(run, "02_gamma", "fp1", 12.5, "ran", started)
    assert rec["llm"]["judge_llm"]["cached_prompt_tokens"] == 1_999_700 and rec["steps"]["total"] == 0.4
    assert "llm" not in artifacts.history_record(run, "02_gamma", "fp1", 1.0, "failed", started)
    before = len(artifacts.read_history(run.root))
    artifacts.append_history(run, rec)
    history = artifacts.read_history(run.root)
    assert len(history) == before + 1 == 7 and history[-1] == json.loads(json.dumps(rec))


def test_prices_parse_and_reject():
    assert report.parse_prices(["judge=0.27/1.10", "teacher = 1/2"]) == {"judge": (0.27, 1.10), "teacher": (1.0, 2.0)}
    with pytest.raises(ValueError, match="ROLE=IN/OUT"):
        report.parse_prices(["judge=0.27"])
    assert pipeline.main(["report", "--price", "judge"]) == 2


def test_short_commit_keeps_the_dirty_mark():
    from dart_utils.reporting.page import short_commit
    assert short_commit("a" * 40) == "a" * 12
    assert short_commit("b" * 40 + "-dirty") == "b" * 12 + "-dirty"
    assert short_commit(None) == "—"


def test_table15_from_make_compare_is_in_the_reports_of_its_runs(fake_run):
    params, kw = fake_run
    compare = Run(params).tables_dir.parent / "compare"
    compare.mkdir(parents=True)
    body = "| run | acc M0 |\n|:--|--:|\n| cpu | 0.1234 |\n"
    (compare / "table15_cross_family.md").write_text(f"# Cross-family replication (Table 15)\n\nRuns: other, cpu "
                                                     f"(each row from runs/<run>).\n\n{body}")
    _, md, _ = _build(params, kw)
    assert "0.1234" in _section(md, "Across runs") and "- [Across runs]" in md
    (compare / "table15_cross_family.md").write_text(f"# Table 15\n\nRuns: other, cpu-large (x).\n\n{body}")
    _, md, _ = _build(params, kw)
    assert "Across runs" not in md                                # this run is not among them
