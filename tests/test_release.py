"""`make release` / `make seed-cache` (dart_utils/release.py) on a small fake run: no model, a few seconds.

The fake run is written with the project's own code (Run, write_manifest, the registry's artifact paths, LLMClient
for the LLM cache), so the manifests and the cache have the real structure. A bundle must verify; one changed byte,
an unlisted or a missing member, or a file that no longer matches its stage manifest must fail, naming the path.
"""
from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import tarfile
from pathlib import Path

import pytest
import yaml

from dart_utils import release as R
from dart_utils.core import params as P
from dart_utils.core.artifacts import Run, append_history, write_jsonl, write_manifest
from dart_utils.core.hashing import dir_hash, sha256_file
from dart_utils.core.params import PROJECT_ROOT, LLMParams
from dart_utils.core.stage import registry
from dart_utils.lm import llm

STAGES = ("00_data_splits", "01_distill")
PRED = "run/01_distill/predictions_m0.jsonl"
ADAPTER = "run/01_distill/stage1/adapter"


# ---- a fake finished run -----------------------------------------------------------------------------------------
def _answer(text: str):
    """A stand-in for the backend call: LLMClient.chat stores what it returns, exactly as for a real answer."""
    def call(request: dict) -> dict:
        return {"choices": [{"message": {"role": "assistant", "content": f"{text}: {request['messages'][0]['content']}"},
                             "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 2},
                "model": "fake"}
    return call


def _client(db: Path, text: str = "answer") -> llm.LLMClient:
    cfg = LLMParams(backend="openai", model="fake-judge", base_url="http://127.0.0.1:9/v1", api_key_env=None,
                    temperature=0.0, max_tokens=8, concurrency=1, max_retries=0, timeout_s=5.0, n_ctx=1024)
    client = llm.LLMClient(cfg, db)
    client._call = _answer(text)
    return client


def _user(q: str) -> list[dict]:
    return [{"role": "user", "content": q}]


def _fill_cache(db: Path, questions, text: str = "answer") -> None:
    with _client(db, text) as c:
        for q in questions:
            c.chat(_user(q))


def _cached_text(db: Path, q: str) -> str | None:
    """What the project's own client finds in a cache for a question (None: it would have to call)."""
    with _client(db) as c:
        hit = c._lookup(c.cache_key(_user(q)))
    return hit[0].text if hit else None


def _write_stage(run: Run, stage: str) -> None:
    reg = registry()
    spec = reg.stage(stage)
    outputs = {}
    for name in spec.writes:
        art = reg.artifact(name)
        path = art.location(run.root)
        if art.kind == "dir":
            (path / "sub").mkdir(parents=True)
            (path / "adapter_config.json").write_text(json.dumps({"r": 4, "artifact": name}))
            (path / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 4)
            (path / "sub-x.txt").write_text("sorts between sub/ and sub0 differently as a string")
        else:
            write_jsonl([{"id": i, "artifact": name} for i in range(3)], path)
        outputs[name] = path
    table = run.tables_dir / f"{stage}_table.csv"
    table.write_text("a,b\n1,2\n")
    outputs[f"table/{stage}/csv"] = table
    inputs = {n: reg.artifact(n).location(run.root) for n in spec.reads}
    write_manifest(run, stage, inputs, outputs)
    (run.root / "stamps").mkdir(exist_ok=True)
    (run.root / "stamps" / f"{stage}.json").write_text(json.dumps({"fingerprint": "f" * 24, "wall_time_s": 1.0}))
    append_history(run, {"stage": stage, "status": "ran", "wall_time_s": 1.0})
    run.notebooks_dir.mkdir(exist_ok=True)
    (run.notebooks_dir / f"{stage}.ipynb").write_text(json.dumps({"cells": []}))


@pytest.fixture
def fake_run(tmp_path, run_dirs) -> Path:
    """runs/ci with two finished stages, transient files that must stay out, tables/figures/reports, and a cache
    (three LLM answers, two generation files). Returns the runs directory."""
    run = Run(P.load("ci", None, [run_dirs]))
    run.write_params()
    for stage in STAGES:
        _write_stage(run, stage)
    trainer = run.root / "01_distill" / "stage1" / "trainer" / "checkpoint-2"
    trainer.mkdir(parents=True)
    (trainer / "optimizer.pt").write_bytes(b"\0" * 64)
    (run.root / "01_distill" / "predictions_m0.jsonl.tmp").write_text("half written")
    (run.figures_dir / "loss.png").write_bytes(b"\x89PNG fake")
    run.reports_dir.mkdir(parents=True)
    (run.reports_dir / "report.md").write_text("# report\n")
    cache = tmp_path / "runs" / "cache"
    _fill_cache(cache / R.CACHE_DB, ["q1", "q2", "q3"])
    (cache / "generations").mkdir()
    (cache / "generations" / "g1.json").write_text('{"texts": ["one"]}')
    (cache / "generations" / "g2.json").write_text('{"texts": ["two"]}')
    (cache / "generations" / "g3.json.tmp-123").write_text("partial")
    return tmp_path / "runs"


def _build(runs: Path, out: Path, lines: list | None = None) -> Path:
    return R.build("ci", runs_dir=runs, out=out, root=PROJECT_ROOT, log=(lines if lines is not None else []).append)


def _members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle) as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _rewrite(bundle: Path, out: Path, edit) -> Path:
    """A copy of the bundle with each member's content passed through edit(path, data) (None drops it)."""
    with tarfile.open(bundle) as src, tarfile.open(out, "w:gz") as dst:
        top = src.getmembers()[0].name.split("/")[0]
        for m in src.getmembers():
            data = edit(m.name.split("/", 1)[1], src.extractfile(m).read())
            if data is not None:
                info = tarfile.TarInfo(m.name)
                info.size = len(data)
                dst.addfile(info, io.BytesIO(data))
        extra = edit(None, None)            # edit may add one member
        if extra:
            info = tarfile.TarInfo(f"{top}/{extra[0]}")
            info.size = len(extra[1])
            dst.addfile(info, io.BytesIO(extra[1]))
    return out


def _flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


def _resum(members: dict[str, bytes]) -> bytes:
    return "".join(f"{hashlib.sha256(d).hexdigest()}  {p}\n" for p, d in sorted(members.items())
                   if p != R.SUMS).encode()


# ---- build and verify --------------------------------------------------------------------------------------------
def test_build_writes_a_complete_verified_bundle(fake_run, tmp_path):
    lines = []
    bundle = _build(fake_run, tmp_path / "dist", lines)
    commit, _ = R.git_state(PROJECT_ROOT)
    assert bundle.name == f"dart-ci-{commit[:7]}.tar.gz"
    assert [p.name for p in bundle.parent.iterdir()] == [bundle.name]         # no partial file, no scratch dir
    m = _members(bundle)
    for path in ("RELEASE.md", "CITATION.cff", "SHA256SUMS", "run/params.yaml", "run/stage_history.jsonl",
                 "run/stamps/01_distill.json", "run/notebooks/01_distill.ipynb", "run/00_data_splits/manifest.json",
                 PRED, f"{ADAPTER}/sub/weights.bin", "run/01_distill/stage1/train_log.json",
                 "cache/llm_cache.sqlite", "cache/generations/g1.json", "cache/generations/g2.json",
                 "tables/01_distill_table.csv", "figures/loss.png", "reports/report.md"):
        assert path in m, path
    assert not [p for p in m if "trainer" in p or ".tmp" in p]                  # checkpoints, half-written files
    assert not [p for p in m if p.startswith("cache/models")]
    # SHA256SUMS covers every other member, computed independently here
    assert m["SHA256SUMS"] == _resum(m)
    assert m["CITATION.cff"] == (PROJECT_ROOT / "CITATION.cff").read_bytes()
    readme = m["RELEASE.md"].decode()
    for text in (commit, "make seed-cache BUNDLE=", "make all PROFILE=ci", "working tree", "(UTC)",
                 "python -m dart_utils.release", "cache/llm_cache.sqlite", "3 responses"):
        assert text in readme, text
    report = R.verify(bundle)
    n_outputs = sum(len(json.loads(m[f"run/{s}/manifest.json"])["outputs"]) for s in STAGES)
    assert report["outputs"] == n_outputs and report["manifests"] == 2 and report["files"] == len(m) - 1
    assert f"[release] sha256: {sha256_file(bundle)}  {bundle.name}" in lines
    assert any(str(bundle) in line for line in lines)


def test_release_md_flags_stages_made_at_another_commit(fake_run, tmp_path):
    manifest = fake_run / "ci" / "01_distill" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["git_commit"] = "0123456789abcdef0123456789abcdef01234567-dirty"
    manifest.write_text(json.dumps(m))
    readme = _members(_build(fake_run, tmp_path / "dist"))["RELEASE.md"].decode()
    assert "| 01_distill | " in readme and "| 0123456789ab-dirty |" in readme
    drift = next(line for line in readme.splitlines() if "ran at another commit" in line)
    assert "01_distill" in drift


def test_bundled_llm_cache_is_a_readable_copy(fake_run, tmp_path):
    m = _members(_build(fake_run, tmp_path / "dist"))
    db = tmp_path / "copy.sqlite"
    db.write_bytes(m["cache/llm_cache.sqlite"])
    assert _cached_text(db, "q2") == "answer: q2"
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 3


def test_dir_hash_from_member_hashes_matches_core_hashing(tmp_path):
    d = tmp_path / "adapter"
    for rel in ("a/b.txt", "a-c.txt", "a0.txt", "z/y/x.bin", "B.txt"):
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(rel)
    hashes = {f"x/adapter/{p.relative_to(d).as_posix()}": sha256_file(p) for p in d.rglob("*") if p.is_file()}
    hashes["x/adapter-other/file"] = "0" * 64                                   # a sibling is not part of it
    assert R.bundled_dir_hash(hashes, "x/adapter") == dir_hash(d)


def test_one_changed_byte_fails_naming_the_member(fake_run, tmp_path, capsys):
    bundle = _build(fake_run, tmp_path / "dist")
    bad = _rewrite(bundle, tmp_path / "bad.tar.gz", lambda p, d: _flip(d) if p == PRED else d)
    with pytest.raises(R.VerifyError) as e:
        R.verify(bad)
    named = [p for p in e.value.problems if p.startswith(PRED)]
    assert len(named) == 2, e.value.problems              # against SHA256SUMS and against the 01_distill manifest
    assert len(e.value.problems) == 2
    assert R.main(["verify", str(bad)]) == 1
    assert PRED in capsys.readouterr().err


@pytest.mark.parametrize("target,expected", [(PRED, PRED), (f"{ADAPTER}/sub/weights.bin", ADAPTER)])
def test_a_file_that_no_longer_matches_its_manifest_fails_even_with_fresh_sums(fake_run, tmp_path, target, expected):
    """SHA256SUMS recomputed after the change (a bundle rebuilt from a modified run): the manifest check catches it."""
    bundle = _build(fake_run, tmp_path / "dist")
    m = _members(bundle)
    m[target] = _flip(m[target])
    sums = _resum(m)
    bad = _rewrite(bundle, tmp_path / "bad.tar.gz", lambda p, d: sums if p == R.SUMS else m.get(p, d) if p else None)
    with pytest.raises(R.VerifyError) as e:
        R.verify(bad)
    assert [p for p in e.value.problems if p.startswith(expected) and "manifest" in p], e.value.problems
    assert all("SHA256SUMS" not in p for p in e.value.problems)


def test_unlisted_and_missing_members_fail(fake_run, tmp_path):
    bundle = _build(fake_run, tmp_path / "dist")
    extra = _rewrite(bundle, tmp_path / "extra.tar.gz", lambda p, d: ("run/smuggled.txt", b"x") if p is None else d)
    with pytest.raises(R.VerifyError) as e:
        R.verify(extra)
    assert e.value.problems == ["run/smuggled.txt: in the bundle but not listed in SHA256SUMS"]
    gone = _rewrite(bundle, tmp_path / "gone.tar.gz", lambda p, d: None if p == "figures/loss.png" else d)
    with pytest.raises(R.VerifyError) as e:
        R.verify(gone)
    assert e.value.problems == ["figures/loss.png: listed in SHA256SUMS but not in the bundle"]


def test_truncated_bundle_fails(fake_run, tmp_path):
    bundle = _build(fake_run, tmp_path / "dist")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    with pytest.raises(R.ReleaseError):
        R.verify(cut)


# ---- refusals ----------------------------------------------------------------------------------------------------
def test_missing_manifest_is_refused_naming_the_stage(fake_run, tmp_path):
    (fake_run / "ci" / "01_distill" / "manifest.json").unlink()
    with pytest.raises(R.ReleaseError, match=r"stage 01_distill: .*manifest\.json is missing"):
        _build(fake_run, tmp_path / "dist")
    assert not list(tmp_path.glob("dist/*"))


def test_missing_declared_artifact_is_refused_naming_it(fake_run, tmp_path):
    (fake_run / "ci" / "01_distill" / "predictions_m0.jsonl").unlink()
    with pytest.raises(R.ReleaseError, match=r"stage 01_distill: declared artifact predictions_m0 \(.*missing"):
        _build(fake_run, tmp_path / "dist")


def test_missing_run_is_refused(fake_run, tmp_path, capsys):
    with pytest.raises(R.ReleaseError, match="does not exist"):
        R.build("nope", runs_dir=fake_run, out=tmp_path / "dist", root=PROJECT_ROOT, log=print)
    assert R.main(["build", "--run", "nope", "--runs-dir", str(fake_run), "--out", str(tmp_path / "dist")]) == 2
    assert "nope" in capsys.readouterr().err


def test_a_bundle_that_fails_verification_is_not_left_behind(fake_run, tmp_path, monkeypatch):
    def fail(path, log=print):
        raise R.VerifyError(path, ["run/x: broken"])
    monkeypatch.setattr(R, "verify", fail)
    with pytest.raises(R.VerifyError):
        _build(fake_run, tmp_path / "dist")
    assert not list((tmp_path / "dist").iterdir())


# ---- seed-cache ----------------------------------------------------------------------------------------------------
def test_seed_cache_into_an_empty_cache(fake_run, tmp_path):
    bundle = _build(fake_run, tmp_path / "dist")
    counts = R.seed_cache(bundle, runs_dir=tmp_path / "fresh", log=lambda *_: None)
    assert (counts["llm_added"], counts["llm_present"], counts["gen_added"], counts["gen_present"]) == (3, 0, 2, 0)
    db = tmp_path / "fresh" / "cache" / R.CACHE_DB
    assert [_cached_text(db, q) for q in ("q1", "q2", "q3")] == ["answer: q1", "answer: q2", "answer: q3"]
    assert (tmp_path / "fresh" / "cache" / "generations" / "g2.json").read_text() == '{"texts": ["two"]}'
    again = R.seed_cache(bundle, runs_dir=tmp_path / "fresh", log=lambda *_: None)
    assert (again["llm_added"], again["llm_present"], again["gen_added"], again["gen_present"]) == (0, 3, 0, 2)


def test_seed_cache_into_a_partly_filled_cache_adds_only_missing_rows(fake_run, tmp_path):
    bundle = _build(fake_run, tmp_path / "dist")
    cache = tmp_path / "mine" / "cache"
    _fill_cache(cache / R.CACHE_DB, ["q1"])                                    # same answer as the bundle's
    _fill_cache(cache / R.CACHE_DB, ["q2", "q9"], text="my own")               # a different answer, and another key
    (cache / "generations").mkdir()
    (cache / "generations" / "g1.json").write_text('{"texts": ["mine"]}')
    before = sqlite3.connect(cache / R.CACHE_DB).execute("SELECT * FROM responses ORDER BY key").fetchall()
    counts = R.seed_cache(bundle, runs_dir=tmp_path / "mine", log=lambda *_: None)
    assert (counts["llm_added"], counts["llm_present"]) == (1, 2)
    assert (counts["gen_added"], counts["gen_present"], counts["gen_differ"]) == (1, 0, 1)
    after = sqlite3.connect(cache / R.CACHE_DB).execute("SELECT * FROM responses ORDER BY key").fetchall()
    assert set(before) <= set(after) and len(after) == len(before) + 1       # nothing overwritten, one row added
    db = cache / R.CACHE_DB
    assert [_cached_text(db, q) for q in ("q1", "q2", "q3", "q9")] == ["answer: q1", "my own: q2", "answer: q3",
                                                                      "my own: q9"]
    assert (cache / "generations" / "g1.json").read_text() == '{"texts": ["mine"]}'
    assert (cache / "generations" / "g2.json").is_file()


def test_seed_cache_refuses_a_tampered_bundle(fake_run, tmp_path):
    bundle = _build(fake_run, tmp_path / "dist")
    bad = _rewrite(bundle, tmp_path / "bad.tar.gz", lambda p, d: _flip(d) if p == "cache/generations/g1.json" else d)
    with pytest.raises(R.VerifyError, match="cache/generations/g1.json"):
        R.seed_cache(bad, runs_dir=tmp_path / "fresh", log=lambda *_: None)
    assert not (tmp_path / "fresh").exists()


# ---- CITATION.cff ------------------------------------------------------------------------------------------------
def test_citation_cff_names_the_software_and_both_papers():
    cff = yaml.safe_load((PROJECT_ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert {"cff-version", "message", "title", "authors"} <= set(cff)
    assert cff["authors"] == [{"name": "DART reproduction contributors"}]
    assert "arXiv:2604.16845" in str(cff["preferred-citation"])
    refs = " ".join(str(r) for r in cff["references"])
    assert "arXiv:2604.16845" in refs and "arXiv:2603.03323" in refs
    for ref in [cff["preferred-citation"], *cff["references"]]:
        assert {"type", "title", "authors"} <= set(ref)                     # required by the CFF 1.2.0 schema
        assert all(set(a) == {"name"} for a in ref["authors"])             # no invented person names
        assert ref["url"].startswith("https://arxiv.org/abs/")
