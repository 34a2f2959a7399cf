"""Stage contracts: the registry, declared inputs and outputs, guarded parameters, fingerprints from what a stage
really depends on."""
import json
import shutil

import pandas as pd
import pytest

from dart_utils.core import stage as ST
from dart_utils.core.artifacts import Run
from dart_utils.core.params import load


@pytest.fixture
def params(run_dirs):
    return load("ci", extra_files=[run_dirs])


def test_registry_matches_the_notebooks_and_is_consistent():
    reg = ST.registry()
    assert [s.name for s in reg.stages] == [p.stem for p in sorted(ST.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))]
    order = [s.name for s in reg.stages]
    for s in reg.stages:
        for name in s.reads:                                  # every input is written by an earlier stage
            assert order.index(reg.artifact(name).stage) < order.index(s.name)
    assert reg.artifact("predictions_m0").stage == "01_distill"
    assert reg.consumers("drift_pool") == ["03_repair", "06_baselines", "07_statistics"]


def test_every_parameter_section_a_notebook_reads_is_declared():
    """Static twin of the GuardedParams check: catches an undeclared `P.<section>` in seconds, not in the end-to-end
    run (a branch that the tiny profile skips would otherwise hide it)."""
    import re
    from dart_utils.core.params import Params
    reg = ST.registry()
    for s in reg.stages:
        cells = json.loads(s.notebook.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        used = set(re.findall(r"(?<![\w.])P\.([a-z_]+)", code)) & set(Params.model_fields)
        undeclared = used - {*ST.ALWAYS_SECTIONS, *s.params, "profile", "student_file"}
        assert not undeclared, f"{s.name} reads params {sorted(undeclared)} without declaring them in stages.yaml"


def _registry_file(tmp_path, text):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    for name in ("00_a", "01_b"):
        (nbs / f"{name}.ipynb").write_text(json.dumps({"cells": []}))
    path = tmp_path / "stages.yaml"
    path.write_text(text)
    return path, nbs


@pytest.mark.parametrize("body, message", [
    ("  - {name: 00_a, params: [data], reads: [], writes: {x: {path: x.jsonl}}}\n"
     "  - {name: 01_b, params: [], reads: [y], writes: {}}\n", "reads 'y', which no earlier stage writes"),
    ("  - {name: 00_a, params: [data], reads: [], writes: {x: {path: x.jsonl}}}\n"
     "  - {name: 01_b, params: [], reads: [], writes: {x: {path: x.jsonl}}}\n", "already written by 00_a"),
    ("  - {name: 00_a, params: [dataa], reads: [], writes: {}}\n"
     "  - {name: 01_b, params: [], reads: [], writes: {}}\n", "unknown parameter sections ['dataa']"),
    ("  - {name: 00_a, params: [], reads: [], writes: {x: {path: x, when: repair.nope}}}\n"
     "  - {name: 01_b, params: [], reads: [], writes: {}}\n", "is not a parameter"),
    ("  - {name: 00_a, params: [], reads: [], writes: {}}\n", "01_b.ipynb has no stage"),
])
def test_registry_errors_name_the_problem(tmp_path, body, message):
    path, nbs = _registry_file(tmp_path, "stages:\n" + body)
    with pytest.raises(ST.StageContractError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ST.load_registry(path, nbs)


def test_a_missing_input_names_the_stage_that_writes_it_and_the_command(params):
    with pytest.raises(ST.InputMissing) as e:
        ST.open_stage("02_audit", params=params.to_dict())
    msg = str(e.value)
    assert "predictions_m0" in msg and "written by stage 01_distill" in msg and "make stage-01 PROFILE=ci" in msg
    assert "split_test" in msg and "make stage-00 PROFILE=ci" in msg


def _fake_outputs(run, spec, reg):
    for name in spec.writes:
        art = reg.artifact(name)
        p = art.location(run.root)
        if art.kind == "dir":
            p.mkdir(parents=True, exist_ok=True)
            (p / "f.txt").write_text(name)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps({"name": name}) + "\n")


def test_context_guards_parameters_artifacts_and_outputs(params, capsys):
    ctx = ST.open_stage("00_data_splits", params=params.to_dict())
    ctx.display = False
    assert ctx.params.splits.seed == params.splits.seed and ctx.params.run.seed == params.run.seed
    with pytest.raises(ST.StageContractError, match="reads params.teacher, which it does not declare"):
        ctx.params.teacher
    with pytest.raises(ST.StageContractError, match="neither reads nor writes 'predictions_m0'"):
        ctx.path("predictions_m0")
    with ctx.step("a step"):
        pass
    assert "[00_data_splits] ▶ a step" in capsys.readouterr().out
    ctx.write_jsonl("split_train", [{"id": "x"}])
    ctx.save_table(pd.DataFrame({"a": [1]}), "t_contract", "A table", ["a note"])
    with pytest.raises(ST.StageContractError, match="did not write its declared output"):
        ctx.finish()
    _fake_outputs(ctx.run, ctx.spec, ctx.reg)
    ctx.source(ctx.run.root / "absent.csv")
    ctx.finish()
    manifest = json.loads((ctx.dir / "manifest.json").read_text())
    assert set(manifest["outputs"]) >= {"split_train", "split_val", "split_test", "cv_folds", "table/t_contract/md"}
    assert all(len(v["sha256"]) == 64 for v in manifest["outputs"].values())
    [(source, digest)] = manifest["sources"].items()
    assert source.endswith("absent.csv") and digest == "absent"
    (ctx.run.root / "absent.csv").write_text("now here")
    assert ST.sources_changed(manifest)                        # a source that appears reruns the stage


def test_fingerprint_depends_on_declared_sections_inputs_notebook_and_imported_code(params, tmp_path, monkeypatch):
    reg = ST.registry()
    s00, s01 = reg.stage("00_data_splits"), reg.stage("01_distill")
    run = Run(params)
    base = {s.name: ST.fingerprint(s, params, run, reg) for s in (s00, s01)}
    teacher = load("ci", extra_files=[], overrides={"run": params.run.model_dump(), "teacher": {"temperature": 0.7}})
    assert ST.fingerprint(s00, teacher, Run(teacher), reg) == base["00_data_splits"]      # 00 never reads teacher
    assert ST.fingerprint(s01, teacher, Run(teacher), reg) != base["01_distill"]
    seed = load("ci", overrides={"run": params.run.model_dump(), "splits": {"seed": 7}})
    assert ST.fingerprint(s00, seed, Run(seed), reg) != base["00_data_splits"]
    assert ST.fingerprint(s01, seed, Run(seed), reg) == base["01_distill"]                # only through its inputs
    # input content: 01 reads the splits
    _fake_outputs(run, s00, reg)
    with_inputs = ST.fingerprint(s01, params, run, reg)
    assert with_inputs != base["01_distill"]
    reg.artifact("split_test").location(run.root).write_text('{"id": "changed"}\n')
    assert ST.fingerprint(s01, params, run, reg) != with_inputs
    # notebook code (not outputs or metadata)
    nbs = tmp_path / "nbs"
    shutil.copytree(ST.NOTEBOOKS_DIR, nbs)
    monkeypatch.setattr(ST, "NOTEBOOKS_DIR", nbs)
    nb = json.loads((nbs / "00_data_splits.ipynb").read_text())
    nb["cells"][0]["source"] = ["# a changed title\n"]
    nb["metadata"]["touched"] = True
    (nbs / "00_data_splits.ipynb").write_text(json.dumps(nb))
    assert ST.fingerprint(s00, params, run, reg) == base["00_data_splits"]                 # markdown only
    code = next(c for c in nb["cells"] if c["cell_type"] == "code" and "open_stage" in "".join(c["source"]))
    code["source"] = code["source"] + ["\nprint('changed')"]
    (nbs / "00_data_splits.ipynb").write_text(json.dumps(nb))
    assert ST.fingerprint(s00, params, run, reg) != base["00_data_splits"]


def test_code_closure_follows_imports_not_the_whole_package():
    reg = ST.registry()
    rel = {s.name: {str(p.relative_to(ST.PACKAGE_DIR)) for p in ST.code_closure(ST.notebook_code(s.notebook))}
           for s in reg.stages}
    assert {"core/stage.py", "data/splits.py", "stages.yaml", "__init__.py", "core/__init__.py"} <= rel["00_data_splits"]
    assert "dart/judge.py" not in rel["00_data_splits"] and "lm/training.py" not in rel["00_data_splits"]
    assert {"dart/parsing.py", "dart/distill.py", "lm/training.py", "lm/generation.py"} <= rel["01_distill"]
    assert {"dart/judge.py", "dart/audit.py"} <= rel["02_audit"]
    assert "reporting/page.py" not in set().union(*rel.values())     # the report is no stage's code
