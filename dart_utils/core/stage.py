"""Stage contracts: the registry (dart_utils/stages.yaml), the stage context every notebook opens, and fingerprints.

Why: a stage must read other stages' results only through declared artifacts, so that (1) a missing input stops it
at once with the stage that writes it and the command to run, (2) every output it declares is checked and recorded
with its SHA-256, and (3) "is this stage up to date?" is answered from what the stage really depends on: its
notebook, its parameter sections, the content of its inputs, the external data it read and the code its notebook
imports (the import closure inside dart_utils), nothing else.

A notebook::

    ctx = open_stage("02_audit", profile, student, extra_params, params)    # params, run dirs, input checks
    P = ctx.params                                   # only the sections the stage declares (others raise)
    preds = ctx.read_jsonl("predictions_m0")         # an input, by name
    with ctx.step("screen + judge"):                 # timed, and shown in the terminal under `make all`
        ...
    ctx.write_jsonl("drift_pool", pool.cases)        # an output, by name
    ctx.save_table(df, "table11_drift_severity", "Harm drift cases by severity (Table 11)", notes)
    ctx.finish()                                     # checks the outputs, writes manifest.json
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .artifacts import (
    Run,
    StageTimer,
    content_hash,
    project_relative,
    read_json,
    read_jsonl,
    write_jsonl,
    write_manifest,
)
from .hashing import content_key, sha256_file
from .outputs import save_figure, save_table
from .params import PROJECT_ROOT, Params, load, validate

PACKAGE_DIR = PROJECT_ROOT / "dart_utils"
REGISTRY_FILE = PACKAGE_DIR / "stages.yaml"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
ALWAYS_SECTIONS = ("run", "student")          # every stage names its run and student in its outputs
STAGE_NAME = re.compile(r"^\d\d_[a-z0-9_]+$")


GROUPS = ("dart", "dcr")


class StageContractError(RuntimeError):
    """A stage used something it does not declare in dart_utils/stages.yaml, or the registry is inconsistent."""


class InputMissing(FileNotFoundError):
    """A declared input does not exist; the message names the stage that writes it and the command to run."""


# ---- the registry ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Artifact:
    name: str
    stage: str                  # the stage that writes it
    path: str                   # relative to runs/<run>/<stage>/
    kind: str = "file"          # file | dir
    when: str | None = None     # dotted boolean parameter; the artifact exists only when it is true
    note: str = ""

    def location(self, run_root: Path) -> Path:
        return Path(run_root) / self.stage / self.path

    def required(self, params: Params) -> bool:
        return self.when is None or bool(_dotted(params, self.when))

    def exists(self, run_root: Path) -> bool:
        p = self.location(run_root)
        return p.is_dir() and any(p.iterdir()) if self.kind == "dir" else p.is_file()


@dataclass(frozen=True)
class StageSpec:
    name: str
    title: str
    params: tuple[str, ...]
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    group: str = "dart"         # dart | dcr: the method the stage belongs to (a selector: `--stage dcr`)

    @property
    def notebook(self) -> Path:
        return NOTEBOOKS_DIR / f"{self.name}.ipynb"

    @property
    def number(self) -> str:
        return self.name[:2]


@dataclass(frozen=True)
class Registry:
    stages: tuple[StageSpec, ...]
    artifacts: dict[str, Artifact]

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise StageContractError(f"no stage {name!r} in {REGISTRY_FILE.name}; stages: "
                                 f"{', '.join(s.name for s in self.stages)}")

    def artifact(self, name: str) -> Artifact:
        if name not in self.artifacts:
            raise StageContractError(f"no artifact {name!r} in {REGISTRY_FILE.name}")
        return self.artifacts[name]

    def consumers(self, artifact: str) -> list[str]:
        return [s.name for s in self.stages if artifact in s.reads]

    def select(self, selectors: list[str] | None) -> list[StageSpec]:
        """Stages by name, number ("02"), name prefix or group ("dart", "dcr"); all when selectors is empty; in
        pipeline order."""
        if not selectors:
            return list(self.stages)
        chosen = set()
        for sel in selectors:
            hits = [s.name for s in self.stages if s.name == sel or s.number == sel or s.name.startswith(f"{sel}_")
                    or s.group == sel]
            if not hits:
                raise SystemExit(f"no stage '{sel}'. Stages: {', '.join(s.name for s in self.stages)}")
            chosen.update(hits)
        return [s for s in self.stages if s.name in chosen]


def _dotted(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def load_registry(path: Path = REGISTRY_FILE, notebooks_dir: Path = NOTEBOOKS_DIR) -> Registry:
    """Read and check the registry: unique names, known parameter sections, every read written by an earlier stage,
    a notebook per stage and no numbered notebook without a stage."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    sections = set(Params.model_fields) - {"profile", "student_file"}
    stages, artifacts, problems = [], {}, []
    for entry in raw.get("stages", []):
        name = entry.get("name", "")
        if not STAGE_NAME.match(name):
            problems.append(f"stage name {name!r} must look like NN_name")
        bad = sorted(set(entry.get("params", [])) - sections)
        if bad:
            problems.append(f"{name}: unknown parameter sections {bad} (known: {', '.join(sorted(sections))})")
        for r in entry.get("reads", []):
            if r not in artifacts:
                problems.append(f"{name} reads {r!r}, which no earlier stage writes")
        writes = entry.get("writes") or {}
        for art, spec in writes.items():
            if art in artifacts:
                problems.append(f"{name} writes {art!r}, already written by {artifacts[art].stage}")
            spec = spec or {}
            unknown = sorted(set(spec) - {"path", "kind", "when", "note"})
            if unknown or "path" not in spec or spec.get("kind", "file") not in ("file", "dir"):
                problems.append(f"{name}.{art}: needs path, kind file|dir, optional when/note; got {spec}")
                continue
            if spec.get("when") and not _is_parameter(spec["when"]):
                problems.append(f"{name}.{art}: when {spec['when']!r} is not a parameter")
            artifacts[art] = Artifact(art, name, spec["path"], spec.get("kind", "file"), spec.get("when"),
                                      spec.get("note", ""))
        group = entry.get("group", "dart")
        if group not in GROUPS:
            problems.append(f"{name}: group {group!r} is not one of {', '.join(GROUPS)}")
        stages.append(StageSpec(name, entry.get("title", name), tuple(entry.get("params", [])),
                                tuple(entry.get("reads", [])), tuple(writes), group))
    names = [s.name for s in stages]
    if names != sorted(names) or len(set(names)) != len(names):
        problems.append(f"stages must be unique and in order: {names}")
    for s in stages:
        if not (Path(notebooks_dir) / f"{s.name}.ipynb").is_file():
            problems.append(f"{s.name}: no notebook {Path(notebooks_dir) / (s.name + '.ipynb')}")
    for nb in sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb")):
        if nb.stem not in names:
            problems.append(f"notebook {nb.name} has no stage in {Path(path).name}")
    if problems:
        raise StageContractError(f"{path}:\n- " + "\n- ".join(problems))
    return Registry(tuple(stages), artifacts)


def _is_parameter(dotted: str) -> bool:
    model: Any = Params
    for part in dotted.split("."):
        field_ = getattr(model, "model_fields", {}).get(part)
        if field_ is None:
            return False
        model = field_.annotation
    return True


@lru_cache(maxsize=1)
def registry() -> Registry:
    return load_registry()


def make_command(stage: StageSpec | str, params: Params) -> str:
    name = stage.name if isinstance(stage, StageSpec) else stage
    cmd = f"make stage-{name[:2]} PROFILE={params.profile}"
    return cmd + (f" STUDENT={params.student_file}" if params.student_file else "")


def missing_inputs(spec: StageSpec, run: Run, reg: Registry | None = None) -> list[str]:
    """One line per declared input that does not exist: the artifact, its path, the stage that writes it and the
    command that runs that stage."""
    reg = reg or registry()
    out = []
    for name in spec.reads:
        art = reg.artifact(name)
        if not art.exists(run.root):
            out.append(f"{name} ({project_relative(art.location(run.root))}) is written by stage {art.stage}: run "
                       f"`{make_command(art.stage, run.params)}` (or `make all`)")
    return out


def missing_outputs(spec: StageSpec, run: Run, reg: Registry | None = None) -> list[str]:
    reg = reg or registry()
    return [n for n in spec.writes if reg.artifact(n).required(run.params)
            and not reg.artifact(n).exists(run.root)]


def check_inputs(spec: StageSpec, run: Run, reg: Registry | None = None) -> None:
    missing = missing_inputs(spec, run, reg)
    if missing:
        raise InputMissing(f"stage {spec.name} cannot start for {run.describe()}: declared input(s) missing:\n- "
                           + "\n- ".join(missing))


# ---- fingerprints ------------------------------------------------------------------------------------------------
def notebook_code(path: Path) -> list[str]:
    """The code cells' sources (outputs and metadata touched by JupyterLab do not count)."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    return ["".join(c.get("source", "")) for c in nb["cells"] if c.get("cell_type") == "code"]


def _module_file(dotted: str) -> Path | None:
    base = PROJECT_ROOT / Path(*dotted.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Dotted names a module (or notebook, module "") imports, relative imports resolved; candidates only."""
    out = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[:len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return {n for n in out if n == "dart_utils" or n.startswith("dart_utils.")}


def _parse(source: str) -> ast.AST:
    try:
        return ast.parse(source)
    except SyntaxError:            # IPython magics: drop them and try again
        return ast.parse("\n".join(ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))))


def code_closure(sources: list[str]) -> list[Path]:
    """The dart_utils files that code (e.g. a notebook's cells) imports, directly or through other dart_utils
    modules (every parent package's __init__ included), and the YAML files beside them (registry, paper numbers)."""
    todo = set()
    for src in sources:
        todo |= _imported(_parse(src), "", False)
    seen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        parts = name.split(".")
        todo |= {".".join(parts[:k]) for k in range(1, len(parts))} - set(seen)   # parent packages' __init__
        path = _module_file(name)
        if path is None:
            continue                                 # an attribute, not a module (from x import function)
        seen[name] = path
        todo |= _imported(_parse(path.read_text(encoding="utf-8")), name, path.name == "__init__.py") - set(seen)
    files = set(seen.values())
    files |= {y for f in list(files) for y in f.parent.glob("*.yaml")}
    return sorted(files)


def _hash_files(paths) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(project_relative(p).encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def fingerprint_parts(spec: StageSpec, params: Params, run: Run | None = None, reg: Registry | None = None) -> dict:
    """What the stage depends on (see the module docstring); missing inputs hash as None."""
    reg = reg or registry()
    run = run or Run(params)
    sources = notebook_code(spec.notebook)
    dump = params.to_dict()
    inputs = {}
    for name in spec.reads:
        art = reg.artifact(name)
        inputs[name] = content_hash(art.location(run.root)) if art.exists(run.root) else None
    return {
        "stage": spec.name,
        "notebook": hashlib.sha256(json.dumps(sources).encode()).hexdigest(),
        "params": {"profile": params.profile, "student_file": params.student_file,
                   **{s: dump[s] for s in (*ALWAYS_SECTIONS, *spec.params)}},
        "inputs": inputs,
        "code": _hash_files(code_closure(sources)),
    }


def fingerprint(spec: StageSpec, params: Params, run: Run | None = None, reg: Registry | None = None) -> str:
    return content_key(fingerprint_parts(spec, params, run, reg))


def sources_changed(manifest: dict) -> list[str]:
    """External data files a stage read (recorded in its manifest) that changed or vanished since."""
    changed = []
    for rel, digest in (manifest.get("sources") or {}).items():
        p = Path(rel) if Path(rel).is_absolute() else PROJECT_ROOT / rel
        if digest == "absent":
            if p.exists():
                changed.append(rel)
        elif not p.is_file() or sha256_file(p) != digest:
            changed.append(rel)
    return changed


def stamp_path(run: Run, stage: str) -> Path:
    """What the pipeline last ran successfully for a stage: its fingerprint and wall time."""
    return run.root / "stamps" / f"{stage}.json"


def status(spec: StageSpec, run: Run, reg: Registry | None = None) -> tuple[str, str]:
    """(state, why): "up to date", or "outdated" / "not run" with the reason — what `pipeline run` would rerun and
    why: a missing manifest or stamp, a missing input, a new fingerprint, a changed data file, a missing output."""
    reg = reg or registry()
    manifest = read_json(run.root / spec.name / "manifest.json")
    stamp = read_json(stamp_path(run, spec.name))
    if manifest is None or stamp is None:
        return "not run", "no manifest" if manifest is None else "no stamp (ran outside the pipeline)"
    if missing_inputs(spec, run, reg):
        return "outdated", "a declared input is missing"
    if stamp.get("fingerprint") != fingerprint(spec, run.params, run, reg):
        return "outdated", "its notebook, parameters, inputs or code changed"
    changed = sources_changed(manifest)
    if changed:
        return "outdated", f"data files changed: {', '.join(changed[:3])}"
    gone = missing_outputs(spec, run, reg)
    if gone:
        return "outdated", f"declared outputs missing: {', '.join(gone)}"
    return "up to date", ""


# ---- the stage context -------------------------------------------------------------------------------------------
class GuardedParams:
    """The merged parameters, restricted to the sections a stage declares (plus profile, run, student): reading
    another section raises, so the stage's fingerprint can never miss a parameter it uses."""

    __slots__ = ("_params", "_allowed", "_stage")

    def __init__(self, params: Params, allowed: set[str], stage: str):
        object.__setattr__(self, "_params", params)
        object.__setattr__(self, "_allowed", allowed)
        object.__setattr__(self, "_stage", stage)

    def __getattr__(self, name: str):
        if name in Params.model_fields and name not in self._allowed and name not in ("profile", "student_file"):
            raise StageContractError(
                f"stage {self._stage} reads params.{name}, which it does not declare: add '{name}' to its params in "
                f"{REGISTRY_FILE.relative_to(PROJECT_ROOT)} (so that changing it reruns the stage)")
        return getattr(self._params, name)

    def __setattr__(self, name, value):
        raise AttributeError("parameters are read-only")

    def __repr__(self) -> str:
        return f"GuardedParams({self._stage}: {', '.join(sorted(self._allowed))})"


@dataclass
class StageContext:
    spec: StageSpec
    run: Run
    reg: Registry
    timer: StageTimer = field(default_factory=StageTimer)
    recorded: dict[str, Path] = field(default_factory=dict)    # tables, figures, other files written
    sources_read: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    display: bool = True

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def params(self) -> GuardedParams:
        return GuardedParams(self.run.params, {*ALWAYS_SECTIONS, *self.spec.params}, self.spec.name)

    @property
    def dir(self) -> Path:
        return self.run.stage_dir(self.spec.name)

    @property
    def cache_dir(self) -> Path:
        return self.run.cache_dir

    # -- artifacts
    def path(self, artifact: str) -> Path:
        """Where a declared input or output lives (outputs: parent directories created)."""
        if artifact in self.spec.reads:
            return self.reg.artifact(artifact).location(self.run.root)
        if artifact in self.spec.writes:
            p = self.reg.artifact(artifact).location(self.run.root)
            (p if self.reg.artifact(artifact).kind == "dir" else p.parent).mkdir(parents=True, exist_ok=True)
            return p
        raise StageContractError(f"stage {self.name} neither reads nor writes {artifact!r}: declare it in "
                                 f"{REGISTRY_FILE.relative_to(PROJECT_ROOT)}")

    def read_jsonl(self, artifact: str) -> list[dict]:
        return read_jsonl(self.path(artifact))

    def read_json(self, artifact: str):
        return json.loads(self.path(artifact).read_text(encoding="utf-8"))

    def write_jsonl(self, artifact: str, rows) -> Path:
        return write_jsonl(rows, self.path(artifact))

    def write_json(self, artifact: str, obj) -> Path:
        path = self.path(artifact)
        path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
        return path

    def source(self, *paths: Path) -> None:
        """Record external data files the stage reads (data suites, filled annotation sheets): their SHA-256 goes
        into the manifest, and a later change of one of them reruns the stage. A path that does not exist is
        recorded as absent (so that adding it later reruns the stage)."""
        for p in paths:
            p = Path(p)
            self.sources_read[project_relative(p)] = sha256_file(p) if p.is_file() else "absent"

    def record(self, **extra) -> None:
        """Values for the manifest (LLM call stats, generation stats, counts)."""
        self.extra.update(extra)

    # -- progress
    @contextlib.contextmanager
    def step(self, name: str):
        """A timed step; its start and end are printed (the terminal shows them under `make all`)."""
        print(f"[{self.name}] ▶ {name}", flush=True)
        t0 = time.perf_counter()
        with self.timer.step(name):
            yield
        print(f"[{self.name}] ✓ {name} ({time.perf_counter() - t0:.1f} s)", flush=True)

    # -- tables and figures
    def save_table(self, df, name: str, title: str, notes: list[str], show: bool = True) -> dict[str, Path]:
        """tables/<run>/<name>.{csv,md,tex} (core.outputs.save_table), recorded in the manifest and shown."""
        paths = save_table(df, self.run, name, title, notes)
        self.recorded.update({f"table/{name}/{k}": v for k, v in paths.items()})
        if show and self.display:
            _show_markdown(paths["md"].read_text(encoding="utf-8"))
        return paths

    def save_figure(self, fig, name: str, show: bool = True) -> dict[str, Path]:
        """figures/<run>/<name>.{png,pdf} (core.outputs.save_figure), recorded in the manifest and shown."""
        paths = save_figure(fig, self.run, name)
        self.recorded.update({f"figure/{name}/{k}": v for k, v in paths.items()})
        if show and self.display:
            _show_image(paths["png"])
        return paths

    def record_file(self, key: str, path: Path) -> None:
        """Another file the stage wrote outside its declared artifacts (recorded with its hash)."""
        self.recorded[key] = Path(path)

    # -- the end
    def finish(self):
        """Check that every declared output exists, write manifest.json, and return the step times (a DataFrame)."""
        import pandas as pd
        missing = missing_outputs(self.spec, self.run, self.reg)
        if missing:
            raise StageContractError(f"stage {self.name} did not write its declared output(s) {missing} "
                                     f"(see {REGISTRY_FILE.relative_to(PROJECT_ROOT)})")
        inputs = {n: self.reg.artifact(n).location(self.run.root) for n in self.spec.reads}
        outputs = {n: self.reg.artifact(n).location(self.run.root) for n in self.spec.writes
                   if self.reg.artifact(n).exists(self.run.root)}
        outputs |= {k: p for k, p in self.recorded.items() if Path(p).exists()}
        extra = {"sources": dict(sorted(self.sources_read.items())), **self.extra}
        path = write_manifest(self.run, self.name, inputs, outputs, self.timer, extra)
        print(f"[{self.name}] manifest: {project_relative(path)} ({len(outputs)} outputs, total "
              f"{self.timer.total:.1f} s)", flush=True)
        return pd.Series(self.timer.steps | {"total": self.timer.total}, name="wall time (s)").to_frame()


def _show_markdown(text: str) -> None:
    try:
        from IPython.display import Markdown, display
        display(Markdown(text))
    except ImportError:  # pragma: no cover
        print(text)


def _show_image(path: Path) -> None:
    try:
        from IPython.display import Image, display
        display(Image(filename=str(path)))
    except ImportError:  # pragma: no cover
        print(path)


def open_stage(name: str, profile: str = "cpu", student: str | None = None, extra_params=(),
               params: dict | None = None) -> StageContext:
    """The context of one stage: merged parameters (papermill's injected dict, else profile + student + files),
    the run's directories and the check that every declared input exists."""
    p = validate(params) if params else load(profile, student, list(extra_params or []))
    reg = registry()
    spec = reg.stage(name)
    run = Run(p)
    check_inputs(spec, run, reg)
    ctx = StageContext(spec, run, reg)
    print(f"{run.describe()} | stage {spec.name}: {spec.title}")
    return ctx
