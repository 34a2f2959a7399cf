"""`make release` / `make seed-cache`: one finished run as a verified, archivable bundle, and its replay.

Why: a run is reproducible only with what it recorded. Its artifacts and manifests say what came out; the teacher and
judge answers in runs/cache/llm_cache.sqlite are the only way to get the same run again (API models are not
deterministic), and runs/cache/generations/ spares regenerating the student's outputs. A release puts these, the
run's tables, figures and report, CITATION.cff and a RELEASE.md into dist/dart-<run>-<commit>.tar.gz with a
SHA256SUMS, and checks every stage manifest's recorded output SHA-256 against the bundled files, so an archived bundle
can be trusted (and re-checked) without the machine that made it. Converted model weights (runs/cache/models) are
never bundled: they are large and `make all` rebuilds them.

    python -m dart_utils.release build --run cpu [--runs-dir runs] [--out dist] [--root .]
    python -m dart_utils.release verify dist/dart-cpu-<commit>.tar.gz
    python -m dart_utils.release seed-cache dist/dart-cpu-<commit>.tar.gz [--runs-dir runs]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import yaml

from .core.artifacts import CODE_PATHS
from .core.hashing import sha256_file
from .core.stage import STAGE_NAME, registry

CACHE_DB = "llm_cache.sqlite"
GENERATIONS = "generations"
SUMS = "SHA256SUMS"
OUTPUT_FOLDERS = ("tables", "figures", "reports")   # the run's committed outputs, each <dir>/<run>/
DEFAULT_DIRS = {"runs_dir": "runs", "tables_dir": "tables", "figures_dir": "figures", "reports_dir": "reports"}
BUNDLE_FOLDER = {"runs_dir": "run", "tables_dir": "tables", "figures_dir": "figures", "reports_dir": "reports"}
SUMS_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


class ReleaseError(RuntimeError):
    """The run cannot be released as it is, or a bundle cannot be used; the message says what to do."""


class VerifyError(ReleaseError):
    """A bundle does not match its SHA256SUMS or its stage manifests; .problems names each offending path."""

    def __init__(self, bundle: Path, problems: list[str]):
        self.problems = problems
        super().__init__(f"{bundle} failed verification ({len(problems)} problem(s)):\n- " + "\n- ".join(problems))


# ---- the run on disk ---------------------------------------------------------------------------------------------
@dataclass
class RunSource:
    """Where one run's pieces live: runs/<run>/, the shared cache, and <root>/{tables,figures,reports}/<run>/."""
    run: str
    runs_dir: Path
    root: Path
    cache_dir: Path
    params: dict = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.run

    def run_settings(self) -> dict:
        """The run section of the run's params.yaml (its runs/tables/figures/reports dirs), defaults filled in."""
        return {**DEFAULT_DIRS, **{k: v for k, v in (self.params.get("run") or {}).items() if k in DEFAULT_DIRS and v}}

    def output_dir(self, folder: str) -> Path:
        """<root>/<tables|figures|reports dir from params.yaml>/<run> (an absolute setting wins over root)."""
        return self.root / self.run_settings()[f"{folder}_dir"] / self.run

    def rerun(self, stage: str) -> str:
        student = self.params.get("student_file")
        return (f"make stage-{stage[:2]} PROFILE={self.params.get('profile', self.run)}"
                + (f" STUDENT={student}" if student else ""))

    def folder_sources(self) -> dict[str, Path]:
        return {"run": self.run_dir, **{f: self.output_dir(f) for f in OUTPUT_FOLDERS}}


def open_run(run: str, runs_dir: Path, root: Path, cache_dir: Path | None = None) -> RunSource:
    runs_dir, root = Path(runs_dir).resolve(), Path(root).resolve()
    src = RunSource(run, runs_dir, root, Path(cache_dir).resolve() if cache_dir else runs_dir / "cache")
    if not src.run_dir.is_dir():
        raise ReleaseError(f"run directory {src.run_dir} does not exist: finish the run first (`make all`), or "
                           f"point --runs-dir at the runs/ folder that holds '{run}'")
    params_file = src.run_dir / "params.yaml"
    if not params_file.is_file():
        raise ReleaseError(f"{params_file} is missing: {src.run_dir} is not a pipeline run (`make all` writes it)")
    src.params = yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}
    return src


def split_recorded(recorded: str, run: str, settings: dict) -> tuple[str, str] | None:
    """A path recorded in a manifest ("runs/cpu/01_distill/x.jsonl", "tables/cpu/t.csv", or absolute when the run
    lived outside the project) as (bundle folder, path below <dir>/<run>/); None when it is under none of them."""
    names = {PurePosixPath(str(settings[k])).name: BUNDLE_FOLDER[k] for k in BUNDLE_FOLDER}
    parts = PurePosixPath(recorded).parts
    for i in range(1, len(parts) - 1):
        if parts[i] == run and parts[i - 1] in names:
            return names[parts[i - 1]], "/".join(parts[i + 1:])
    return None


def stamped_stages(src: RunSource) -> list[str]:
    return sorted(p.stem for p in (src.run_dir / "stamps").glob("*.json"))


def preflight(src: RunSource) -> tuple[list[str], list[str]]:
    """(problems, warnings): every stamped stage needs its manifest, and every output its manifest lists must
    exist (declared artifacts in the run directory, tables and figures under the root)."""
    problems, warnings = [], []
    stages = stamped_stages(src)
    if not stages:
        problems.append(f"no stage has finished in {src.run_dir} (stamps/ is empty): run `make all` first")
    reg = registry()
    sources = src.folder_sources()
    for stage in stages:
        manifest_file = src.run_dir / stage / "manifest.json"
        if not manifest_file.is_file():
            problems.append(f"stage {stage}: stamps/{stage}.json exists but {manifest_file} is missing: rerun the "
                            f"stage (`{src.rerun(stage)}`)")
            continue
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        for key, out in (manifest.get("outputs") or {}).items():
            where = split_recorded(out["path"], src.run, src.run_settings())
            if where is None:
                warnings.append(f"stage {stage}: output {key} ({out['path']}) is outside the run's folders: not "
                                f"bundled")
                continue
            path = sources[where[0]] / where[1]
            art = reg.artifacts.get(key)
            present = art.exists(src.run_dir) if art and art.stage == stage else path.exists()
            if not present:
                what = "declared artifact" if art else "recorded output"
                problems.append(f"stage {stage}: {what} {key} ({path}) is missing: rerun the stage "
                                f"(`{src.rerun(stage)}`)")
    known = {s.name for s in reg.stages}
    for stage in stages:
        if stage not in known:
            warnings.append(f"stage {stage} is stamped but not in dart_utils/stages.yaml (an older pipeline?)")
    if not (src.cache_dir / CACHE_DB).is_file():
        problems.append(f"the LLM response cache {src.cache_dir / CACHE_DB} is missing: without it the run cannot "
                        f"be replayed (pass --cache-dir if it lives elsewhere)")
    if not (src.root / "CITATION.cff").is_file():
        problems.append(f"{src.root / 'CITATION.cff'} is missing (pass --root: the project's clone)")
    if not src.output_dir("reports").is_dir():
        warnings.append(f"{src.output_dir('reports')} does not exist: run `make report` to include the report")
    return problems, warnings


def is_transient(rel: PurePosixPath) -> bool:
    """Training checkpoints (a stage's */trainer/ folders) and half-written files (*.tmp, *.tmp-<pid>)."""
    name = rel.name
    if name.endswith(".tmp") or ".tmp-" in name or ".ipynb_checkpoints" in rel.parts:
        return True
    return bool(STAGE_NAME.match(rel.parts[0])) and "trainer" in rel.parts[1:-1]


def files_under(folder: Path, arc_prefix: str) -> list[tuple[Path, str]]:
    """(file, name in the bundle) for every non-transient file under folder, in a stable order."""
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.rglob("*")):
        rel = PurePosixPath(p.relative_to(folder).as_posix())
        if p.is_file() and not is_transient(rel):
            out.append((p, f"{arc_prefix}/{rel}"))
    return out


def snapshot_llm_cache(src: Path, dst: Path) -> int:
    """A consistent single-file copy of the SQLite cache (the source is opened read-only; SQLite's backup reads a
    snapshot even while a pipeline writes it), in rollback-journal mode; returns its number of responses. (Like any
    reader of a WAL database, SQLite may create the -wal/-shm files beside the source if no writer has them open.)"""
    source = sqlite3.connect(f"{src.resolve().as_uri()}?mode=ro", uri=True)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")
        return target.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    finally:
        target.close()
        source.close()


def git_state(root: Path) -> tuple[str, bool]:
    """(HEAD, dirty): dirty when the code, notebooks or parameters differ from HEAD (as in the manifests)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    try:
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=normal", "--",
                                                  *CODE_PATHS))
    except (OSError, subprocess.CalledProcessError):
        raise ReleaseError(f"{root} is not a git checkout: a release names the commit of the code that made it; "
                           f"pass --root (the project's clone)") from None


# ---- writing the bundle ------------------------------------------------------------------------------------------
class _HashingReader:
    """Feeds a file to tarfile while hashing exactly the bytes that go into the bundle (at most `size`: a file that
    grows meanwhile is cut where its tar header says, and its hash with it)."""

    def __init__(self, f, size: int):
        self.f, self.left, self.h = f, size, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(self.left if n is None or n < 0 else min(n, self.left))
        self.left -= len(data)
        self.h.update(data)
        return data


def _tarinfo(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def add_file(tar: tarfile.TarFile, path: Path, arc: str, sums: dict[str, str]) -> int:
    st = path.stat()
    with open(path, "rb") as f:
        reader = _HashingReader(f, st.st_size)
        tar.addfile(_tarinfo(arc, st.st_size, st.st_mtime), reader)
    sums[arc.split("/", 1)[1]] = reader.h.hexdigest()
    return st.st_size


def add_bytes(tar: tarfile.TarFile, data: bytes, arc: str, sums: dict[str, str] | None) -> int:
    tar.addfile(_tarinfo(arc, len(data), datetime.now(UTC).timestamp()), io.BytesIO(data))
    if sums is not None:
        sums[arc.split("/", 1)[1]] = hashlib.sha256(data).hexdigest()
    return len(data)


def stage_commits(src: RunSource) -> dict[str, str]:
    """{stage: the git commit its manifest records ("<sha>-dirty" when the code differed from it)}."""
    return {stage: json.loads((src.run_dir / stage / "manifest.json").read_text(encoding="utf-8")).get("git_commit")
            or "?" for stage in stamped_stages(src)}


def stage_table(src: RunSource) -> list[str]:
    rows = []
    for stage, made_by in stage_commits(src).items():
        m = json.loads((src.run_dir / stage / "manifest.json").read_text(encoding="utf-8"))
        short = made_by[:12] + ("-dirty" if made_by.endswith("-dirty") else "")
        rows.append(f"| {stage} | {m.get('finished_utc', '?')} | {short} |")
    return ["| stage | finished (UTC) | code commit |", "|---|---|---|", *rows]


def other_commits(src: RunSource, commit: str) -> list[str]:
    """Stages whose manifest records another commit (or a dirty tree) than the one the bundle is named after."""
    return [s for s, c in stage_commits(src).items() if c != commit]


def release_md(src: RunSource, commit: str, dirty: bool, command: str, counts: dict[str, tuple[int, int]],
               n_responses: int, bundle_name: str) -> str:
    profile = src.params.get("profile", src.run)
    student = src.params.get("student_file")
    make_all = f"make all PROFILE={profile}" + (f" STUDENT={student}" if student else "")
    tree = ("dirty: dart_utils/, notebooks/, params/ or pyproject.toml had uncommitted changes, so this commit alone "
            "does not reproduce the outputs exactly" if dirty else "clean")
    stages = "\n".join(stage_table(src))
    others = other_commits(src, commit)
    drift = (f"\nStages {', '.join(others)} ran at another commit than `{commit[:12]}` (or with uncommitted changes): "
             f"at this commit `make all` may rerun those whose code changed. For an exact replay, check out the "
             f"commit in their row.\n" if others else "")
    folders = "\n".join(f"| `{k}` | {n} | {b / 1e6:.1f} MB |" for k, (n, b) in counts.items())
    return f"""# DART reproduction: release of run `{src.run}`

- run: `{src.run}` (profile `{profile}`{f", student `{student}`" if student else ""})
- code: git commit `{commit}`, working tree {tree}
- built: {datetime.now(UTC).isoformat(timespec="seconds")} (UTC)
- command: `{command}`

The stages, as their manifests record them:

{stages}
{drift}
## What is in it

| folder | files | size |
|---|---|---|
{folders}

- `run/`: `runs/{src.run}/` — `params.yaml` (merged parameters), `notebooks/` (the executed notebooks), one folder
  per stage with its declared artifacts (predictions JSONL, LoRA adapters, training logs) and `manifest.json`
  (parameters, seeds, SHA-256 of inputs and outputs, package versions, git commit), `stamps/`,
  `stage_history.jsonl`. Training checkpoints (`*/trainer/`) and temporary files are left out.
- `cache/llm_cache.sqlite`: every teacher and judge answer ({n_responses} responses), keyed by the full request.
  API models are not deterministic: these recorded answers are the only way to replay the run exactly.
- `cache/generations/`: the student generation cache (raw outputs, keyed by weights, adapter, prompt tokens and
  decoding). Both caches are shared by all runs of the machine that made the bundle and may hold other runs' entries.
- `tables/`, `figures/`, `reports/`: the run's regenerated tables, figures and one-page report.
- `CITATION.cff`: how to cite this software and the papers it reproduces.
- `SHA256SUMS`: the SHA-256 of every other file (`sha256sum -c SHA256SUMS` in this folder).

Not included: converted model weights (`runs/cache/models/`): `make all` rebuilds them.

## Check it

    python -m dart_utils.release verify {bundle_name}

checks every file against `SHA256SUMS` and every stage manifest's recorded output SHA-256 against the bundled files.

## Reuse it

In a clone of the project at commit `{commit}` (`git checkout {commit}`):

    make seed-cache BUNDLE=path/to/{bundle_name}
    {make_all}

`seed-cache` verifies the bundle, then adds its LLM answers and generations to `runs/cache/` (existing entries are
never overwritten), so `make all` replays the teacher and judge from the recorded answers instead of calling them.
"""


def _bundle_name(run: str, commit: str) -> str:
    return f"dart-{run}-{commit[:7]}"


def build(run: str, runs_dir: Path = Path("runs"), out: Path = Path("dist"), root: Path = Path("."),
          cache_dir: Path | None = None, command: str = "", log=print) -> Path:
    """Write out/dart-<run>-<commit>.tar.gz (via a temporary file, renamed only once it verifies); returns it."""
    src = open_run(run, runs_dir, root, cache_dir)
    problems, warnings = preflight(src)
    for w in warnings:
        log(f"[release] note: {w}")
    if problems:
        raise ReleaseError(f"cannot release run '{run}' ({src.run_dir}):\n- " + "\n- ".join(problems))
    commit, dirty = git_state(src.root)
    if dirty:
        log("[release] note: the working tree has uncommitted code/notebook/parameter changes (RELEASE.md says so)")
    others = other_commits(src, commit)
    if others:
        log(f"[release] note: stages {', '.join(others)} ran at another commit than {commit[:12]} (RELEASE.md lists "
            f"each stage's commit)")
    top = _bundle_name(run, commit)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    final = out / f"{top}.tar.gz"
    tmp = out / f".{top}.tar.gz.partial-{os.getpid()}"
    try:
        with tempfile.TemporaryDirectory(dir=out, prefix=".release-") as scratch:
            db = Path(scratch) / CACHE_DB
            n_responses = snapshot_llm_cache(src.cache_dir / CACHE_DB, db)
            groups = {"run/": files_under(src.run_dir, f"{top}/run"),
                      "cache/": [(db, f"{top}/cache/{CACHE_DB}"),
                                 *files_under(src.cache_dir / GENERATIONS, f"{top}/cache/{GENERATIONS}")],
                      **{f"{f}/": files_under(src.output_dir(f), f"{top}/{f}") for f in OUTPUT_FOLDERS},
                      "CITATION.cff": [(src.root / "CITATION.cff", f"{top}/CITATION.cff")]}
            counts = {k: (len(v), sum(p.stat().st_size for p, _ in v)) for k, v in groups.items()}
            readme = release_md(src, commit, dirty, command, counts, n_responses, final.name).encode()
            _write_tar(tmp, top, groups, readme, log)
        log(f"[release] verifying {tmp.name} ...")
        report = verify(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    log(f"[release] verified: {report['files']} files match SHA256SUMS, {report['outputs']} manifest outputs match")
    log(f"[release] bundle: {final} ({final.stat().st_size / 1e6:.1f} MB)")
    log(f"[release] sha256: {sha256_file(final)}  {final.name}")
    return final


def _write_tar(path: Path, top: str, groups: dict[str, list[tuple[Path, str]]], readme: bytes, log) -> None:
    sums: dict[str, str] = {}
    files = total = 0
    with tarfile.open(path, "w:gz", compresslevel=6, format=tarfile.PAX_FORMAT) as tar:
        total += add_bytes(tar, readme, f"{top}/RELEASE.md", sums)
        for label, entries in groups.items():
            size = sum(add_file(tar, p, arc, sums) for p, arc in entries)
            files += len(entries)
            total += size
            log(f"[release] + {label:<14} {len(entries):5d} files {size / 1e6:9.1f} MB   (total {files} files, "
                f"{total / 1e6:.1f} MB)")
        add_bytes(tar, "".join(f"{h}  {p}\n" for p, h in sorted(sums.items())).encode(), f"{top}/{SUMS}", None)


# ---- checking a bundle -------------------------------------------------------------------------------------------
def _safe_name(name: str) -> bool:
    p = PurePosixPath(name)
    return not p.is_absolute() and ".." not in p.parts and "\n" not in name


def _read_member(f, keep: bool) -> tuple[str, bytes | None]:
    """A member's SHA-256, and its content when it is one of the small files verify reads."""
    h, chunks = hashlib.sha256(), []
    while chunk := f.read(1 << 20):
        h.update(chunk)
        if keep:
            chunks.append(chunk)
    return h.hexdigest(), b"".join(chunks) if keep else None


def _kept(rel: str) -> bool:
    return rel in (SUMS, "run/params.yaml") or bool(re.fullmatch(r"run/\d\d_[a-z0-9_]+/manifest\.json", rel))


def scan(bundle: Path) -> tuple[str, dict[str, str], dict[str, bytes], list[str]]:
    """One pass over the tar.gz: (top folder, {path: sha256}, {path: content} of SHA256SUMS, params.yaml and the
    stage manifests, problems with the members themselves)."""
    top, hashes, texts, problems = None, {}, {}, []
    try:
        with tarfile.open(bundle, "r|gz") as tar:
            for m in tar:
                first, _, rel = m.name.partition("/")
                top = top or first
                if not _safe_name(m.name) or first != top or not first.startswith("dart-"):
                    problems.append(f"{m.name}: outside the bundle's top folder {top!r} (or an unsafe name)")
                elif m.isfile():
                    if rel in hashes:
                        problems.append(f"{rel}: appears twice in the bundle")
                    hashes[rel], content = _read_member(tar.extractfile(m), _kept(rel))
                    if content is not None:
                        texts[rel] = content
                elif not m.isdir():
                    problems.append(f"{rel}: not a regular file (links and devices are not allowed)")
    except (OSError, EOFError, tarfile.TarError) as e:
        if top is None:
            raise ReleaseError(f"cannot read {bundle} as a tar.gz: {e}") from None
        problems.append(f"the archive is truncated or corrupt after {len(hashes)} files: {e}")
    if top is None:
        raise ReleaseError(f"{bundle} is empty")
    return top, hashes, texts, problems


def check_sums(hashes: dict[str, str], sums_text: bytes | None) -> list[str]:
    if sums_text is None:
        return [f"{SUMS}: missing from the bundle"]
    listed, problems = {}, []
    for i, line in enumerate(sums_text.decode("utf-8", "replace").splitlines(), 1):
        m = SUMS_LINE.match(line)
        if not m:
            problems.append(f"{SUMS} line {i}: not '<sha256>  <path>': {line[:80]!r}")
            continue
        listed[m.group(2)] = m.group(1)
    for path, digest in sorted(listed.items()):
        if path not in hashes:
            problems.append(f"{path}: listed in {SUMS} but not in the bundle")
        elif hashes[path] != digest:
            problems.append(f"{path}: content does not match its SHA-256 in {SUMS} (changed or corrupt)")
    problems += [f"{p}: in the bundle but not listed in {SUMS}" for p in sorted(set(hashes) - set(listed) - {SUMS})]
    return problems


def bundled_dir_hash(hashes: dict[str, str], prefix: str) -> str:
    """core.hashing.dir_hash computed from the bundle's member hashes (same order: by path components)."""
    h = hashlib.sha256()
    below = sorted((p[len(prefix) + 1:] for p in hashes if p.startswith(prefix + "/")), key=lambda r: r.split("/"))
    for rel in below:
        h.update(rel.encode())
        h.update(hashes[f"{prefix}/{rel}"].encode())
    return h.hexdigest()[:24]


def check_manifests(hashes: dict[str, str], texts: dict[str, bytes]) -> tuple[list[str], int, list[str]]:
    """(problems, outputs checked, notes): each manifest output that maps into the bundle must match its record."""
    params = yaml.safe_load(texts.get("run/params.yaml", b"")) or {}
    settings = {**DEFAULT_DIRS, **{k: v for k, v in (params.get("run") or {}).items() if k in DEFAULT_DIRS and v}}
    problems, notes, checked = [], [], 0
    for name in sorted(n for n in texts if n.endswith("/manifest.json")):
        try:
            manifest = json.loads(texts[name])
        except ValueError as e:
            problems.append(f"{name}: not valid JSON ({e})")
            continue
        run = manifest.get("run") or ""
        for key, out in (manifest.get("outputs") or {}).items():
            where = split_recorded(out.get("path", ""), run, settings)
            if where is None:
                notes.append(f"{name}: output {key} ({out.get('path')}) is outside the run's folders: not checked")
                continue
            path, recorded = "/".join(where).rstrip("/"), str(out.get("sha256", ""))
            if recorded.startswith("dir:"):
                found = any(p.startswith(path + "/") for p in hashes)
                actual = f"dir:{bundled_dir_hash(hashes, path)}"
            else:
                found, actual = path in hashes, hashes.get(path)
            if not found:
                problems.append(f"{path}: output {key} recorded in {name} is not in the bundle")
            elif actual != recorded:
                problems.append(f"{path}: does not match the SHA-256 recorded for output {key} in {name}")
            checked += 1
    return problems, checked, notes


def verify(bundle: Path, log=print) -> dict:
    """Check a bundle: SHA256SUMS against every member (no member unlisted, none listed and absent) and the stage
    manifests' recorded output SHA-256 against the bundled files. Raises VerifyError naming the offending paths."""
    bundle = Path(bundle)
    if not bundle.is_file():
        raise ReleaseError(f"no bundle at {bundle}: build one with `make release RUN=<run>`")
    top, hashes, texts, problems = scan(bundle)
    problems += check_sums(hashes, texts.get(SUMS))
    manifest_problems, checked, notes = check_manifests(hashes, texts)
    problems += manifest_problems
    for n in notes:
        log(f"[verify] note: {n}")
    if problems:
        raise VerifyError(bundle, problems)
    return {"top": top, "files": len(hashes) - 1, "outputs": checked,
            "manifests": sum(n.endswith("/manifest.json") for n in texts)}


# ---- seeding runs/cache from a bundle ----------------------------------------------------------------------------
def merge_llm_cache(bundle_db: Path, target: Path) -> tuple[int, int]:
    """Insert the bundle's responses that the target cache lacks (created with the bundle's schema if absent);
    existing keys are never overwritten. Returns (added, already present)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(target, timeout=60)
    try:
        con.execute("ATTACH DATABASE ? AS bundle", (str(bundle_db),))
        schema = con.execute("SELECT sql FROM bundle.sqlite_master WHERE type='table' AND name='responses'").fetchone()
        if schema is None:
            raise ReleaseError(f"the bundle's {CACHE_DB} has no responses table: not an LLM cache of this project")
        if con.execute("SELECT 1 FROM main.sqlite_master WHERE type='table' AND name='responses'").fetchone() is None:
            con.execute(schema[0])
        cols = [r[1] for r in con.execute("PRAGMA bundle.table_info(responses)")]
        mine = [r[1] for r in con.execute("PRAGMA main.table_info(responses)")]
        if cols != mine:
            raise ReleaseError(f"{target} has columns {mine}, the bundle's cache {cols}: the caches come from "
                               f"different versions of dart_utils/lm/llm.py; check out the bundle's commit")
        total = con.execute("SELECT COUNT(*) FROM bundle.responses").fetchone()[0]
        names = ", ".join(cols)
        with con:
            added = con.execute(f"INSERT OR IGNORE INTO main.responses ({names}) SELECT {names} "
                                f"FROM bundle.responses").rowcount
        return added, total - added
    finally:
        con.close()


def seed_cache(bundle: Path, runs_dir: Path = Path("runs"), cache_dir: Path | None = None, log=print) -> dict:
    """Verify the bundle, then add its LLM answers and generation files to the cache (never overwriting)."""
    report = verify(bundle, log)
    top = report["top"]
    cache = Path(cache_dir) if cache_dir else Path(runs_dir) / "cache"
    counts = {"llm_added": 0, "llm_present": 0, "gen_added": 0, "gen_present": 0, "gen_differ": 0}
    db, gen_prefix = f"{top}/cache/{CACHE_DB}", f"{top}/cache/{GENERATIONS}/"
    with tarfile.open(bundle, "r|gz") as tar, tempfile.TemporaryDirectory(prefix="dart-seed-") as scratch:
        copy = Path(scratch) / CACHE_DB
        for m in tar:
            if m.isfile() and m.name == db:
                with open(copy, "wb") as g:
                    shutil.copyfileobj(tar.extractfile(m), g)
            elif m.isfile() and m.name.startswith(gen_prefix):
                counts[_seed_generation(tar.extractfile(m).read(), cache / GENERATIONS / m.name[len(gen_prefix):])] += 1
        if not copy.is_file():
            raise ReleaseError(f"{bundle} has no cache/{CACHE_DB}: it was not made by `make release`")
        counts["llm_added"], counts["llm_present"] = merge_llm_cache(copy, cache / CACHE_DB)
    log(f"[seed-cache] {cache / CACHE_DB}: {counts['llm_added']} responses added, {counts['llm_present']} already "
        f"present")
    log(f"[seed-cache] {cache / GENERATIONS}: {counts['gen_added']} files added, {counts['gen_present']} already "
        f"present" + (f", {counts['gen_differ']} differ from the bundle's (yours kept)" if counts["gen_differ"] else ""))
    return counts


def _seed_generation(data: bytes, dest: Path) -> str:
    if dest.exists():
        return "gen_present" if dest.read_bytes() == data else "gen_differ"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(dest)
    return "gen_added"


# ---- command line ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(prog="python -m dart_utils.release", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="bundle one finished run into <out>/dart-<run>-<commit>.tar.gz, then verify it")
    b.add_argument("--run", required=True, help="the run's name: the profile, or <profile>-<student>")
    b.add_argument("--runs-dir", type=Path, default=Path("runs"))
    b.add_argument("--out", type=Path, default=Path("dist"))
    b.add_argument("--root", type=Path, default=Path("."), help="the project's clone (tables/, figures/, reports/, "
                                                                "CITATION.cff, git commit)")
    b.add_argument("--cache-dir", type=Path, default=None, help="default: <runs-dir>/cache")
    v = sub.add_parser("verify", help="check a bundle against its SHA256SUMS and its stage manifests")
    v.add_argument("bundle", type=Path)
    s = sub.add_parser("seed-cache", help="verify a bundle, then add its LLM answers and generations to the cache")
    s.add_argument("bundle", type=Path)
    s.add_argument("--runs-dir", type=Path, default=Path("runs"))
    s.add_argument("--cache-dir", type=Path, default=None, help="default: <runs-dir>/cache")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "build":
            build(args.run, args.runs_dir, args.out, args.root, args.cache_dir,
                  command=" ".join(["python -m dart_utils.release", *argv]))
        elif args.cmd == "verify":
            r = verify(args.bundle)
            print(f"[verify] OK: {args.bundle}: {r['files']} files match {SUMS}; {r['outputs']} outputs of "
                  f"{r['manifests']} stage manifests match their recorded SHA-256")
        else:
            seed_cache(args.bundle, args.runs_dir, args.cache_dir)
    except VerifyError as e:
        print(f"release: {e}", file=sys.stderr)
        return 1
    except ReleaseError as e:
        print(f"release: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
