"""One page with the whole study of a run: configuration, stage timings, LLM costs, every table and figure, notes.

Why: a reader should see a run's results, what produced them and what they cost without opening notebooks.
`python -m dart_utils.pipeline report` (`make report`, the last step of `make all`) writes

    reports/<run>/report.md     GitHub-renderable: tables inlined from tables/<run>/*.md, figures linked
    reports/<run>/report.html   the same content as a standalone page (images linked, not embedded)

from what the stages left behind — it runs nothing: stage manifests (runs/<run>/<stage>/manifest.json, whose
`outputs` say which stage wrote which table and figure), stamps, runs/<run>/stage_history.jsonl (every execution,
see core/artifacts.py), the tables and figures, README.md's reproduction notes and docs/*.md. The page carries no
timestamp of its own: unchanged artifacts give identical bytes. See docs/report.md.
"""
from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from ..core.artifacts import Run, project_relative, read_history
from ..core.hashing import sha256_file
from ..core.params import PROJECT_ROOT, Params
from ..core.stage import NOTEBOOKS_DIR, registry, status
from ..lm.llm import public_url

TABLE_EXTS = ("md", "csv", "tex")
FIGURE_EXTS = ("png", "pdf")
NOTES_HEADING = "## Reproduction notes"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "0.0.0.0", "[::1]")


# ---- small formatting helpers ----------------------------------------------------------------------------------
def _slug(text: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def _secs(v) -> str:
    if not isinstance(v, (int, float)):
        return "—"
    if v >= 90:
        return f"{v:,.1f} s ({v / 60:.1f} min)"
    return f"{v:.1f} s" if v >= 1 else f"{v:.2f} s"


def _int(v) -> str:
    return f"{int(v):,}" if isinstance(v, (int, float)) else "—"


def _rate(v) -> str:
    return f"{v:,.1f}" if isinstance(v, (int, float)) else "—"


def _cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _rel(target: Path, start: Path) -> str:
    return Path(os.path.relpath(Path(target).resolve(), Path(start).resolve())).as_posix()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _day(utc: str | None) -> str:
    return (utc or "")[:16].replace("T", " ") or "—"


def parse_prices(specs: list[str] | None) -> dict[str, tuple[float, float]]:
    """'judge=0.27/1.10' -> {'judge': (0.27, 1.10)}: USD per million prompt / completion tokens."""
    out = {}
    for spec in specs or []:
        m = re.fullmatch(r"\s*(\w+)\s*=\s*([0-9.]+)\s*/\s*([0-9.]+)\s*", spec)
        if not m:
            raise ValueError(f"--price '{spec}': expected ROLE=IN/OUT in USD per million tokens, e.g. judge=0.27/1.10")
        out[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    return out


# ---- what the run left behind ----------------------------------------------------------------------------------
@dataclass
class Stage:
    name: str
    title: str
    manifest: dict | None
    stamp: dict | None
    history: list[dict]
    status: str = ""
    tables: list[str] = field(default_factory=list)      # stems, in the order the stage wrote them
    figures: list[str] = field(default_factory=list)
    recorded: dict[str, str] = field(default_factory=dict)   # resolved output path -> sha256 in the manifest


def _title(stage: str, run_root: Path) -> str:
    """The notebook's first Markdown heading ('00 · Data and splits (paper §3.1, Appendix A)'), else the name."""
    for nb in (NOTEBOOKS_DIR / f"{stage}.ipynb", run_root / "notebooks" / f"{stage}.ipynb"):
        nbj = _read_json(nb)
        for cell in (nbj or {}).get("cells", []):
            if cell.get("cell_type") == "markdown":
                first = "".join(cell.get("source", "")).strip().splitlines()
                if first and first[0].startswith("#"):
                    return first[0].lstrip("#").strip()
                break
    return stage


def _status(run: Run, names: list[str], manifests: dict) -> dict[str, str]:
    """Each stage against what `make all` would do now (core.stage.status): 'up to date', 'outdated (why)' or
    'not run'; a stage with a manifest but no entry in the registry any more is reported as such."""
    specs = {s.name: s for s in registry().stages}
    out = {}
    for name in names:
        if manifests.get(name) is None:
            out[name] = "not run"
        elif name not in specs:
            out[name] = "ran (no longer in the registry)"
        else:
            state, why = status(specs[name], run)
            out[name] = state if state == "up to date" else f"{state} ({why})"
    return out


def _resolve(p: str) -> Path:
    path = Path(p)
    return (path if path.is_absolute() else PROJECT_ROOT / path).resolve()


def collect(params: Params, stages: list[str] | None = None) -> tuple[list[Stage], Path, Path]:
    run = Run(params)
    tables_dir = (PROJECT_ROOT / params.run.tables_dir / run.name).resolve()
    figures_dir = (PROJECT_ROOT / params.run.figures_dir / run.name).resolve()
    names = list(stages) if stages is not None else [s.name for s in registry().stages]
    if run.root.is_dir():   # stages with a manifest but no notebook any more are still reported
        names += [d.name for d in run.root.iterdir() if re.match(r"\d\d_", d.name) and (d / "manifest.json").is_file()]
    names = sorted(set(names))
    manifests = {n: _read_json(run.root / n / "manifest.json") for n in names}
    stamps = {n: _read_json(run.root / "stamps" / f"{n}.json") for n in names}
    history = read_history(run.root)
    states = _status(run, names, manifests) if stages is None else {
        n: ("not run" if manifests[n] is None else "ran") for n in names}
    out = []
    for n in names:
        st = Stage(n, _title(n, run.root), manifests[n], stamps[n], [h for h in history if h.get("stage") == n],
                   states[n])
        for o in (st.manifest or {}).get("outputs", {}).values():
            path = _resolve(o["path"])
            st.recorded[str(path)] = o.get("sha256", "")
            if path.parent == tables_dir and path.suffix[1:] in TABLE_EXTS and path.stem not in st.tables:
                st.tables.append(path.stem)
            if path.parent == figures_dir and path.suffix[1:] in FIGURE_EXTS and path.stem not in st.figures:
                st.figures.append(path.stem)
        out.append(st)
    return out, tables_dir, figures_dir


# ---- sections ------------------------------------------------------------------------------------------------------
@dataclass
class Raw:
    """A block whose HTML is written by hand (Markdown renderers would escape it)."""
    md: str
    html: str


def _llm_desc(cfg) -> str:
    where = ("in-process llama.cpp" if cfg.backend == "llama_cpp"
             else f"OpenAI-compatible API {public_url(cfg.base_url)}")
    return f"`{cfg.model}` ({where}, temperature {cfg.temperature}, max {cfg.max_tokens} tokens)"


def _banner(params: Params, run: Run, stages: list[Stage]) -> list:
    s = params.student
    who = (f"run **{run.name}**: profile `{params.profile}`, student `{s.name}` ({s.model_id}), "
           f"teacher `{params.teacher.model}`, judge `{params.judge.model}`, harm scorer `{params.harm.scorer}`")
    if params.profile != "paper":
        verdict = ("**These are NOT the paper's numbers.** The `" + params.profile + "` profile uses much smaller "
                   "models and data (see Configuration and the reproduction notes): compare directions and ratios "
                   "with the paper's columns, not absolute values.")
    elif params.student_file:
        verdict = "The paper's profile with a different student than the paper's primary one (Llama-3-8B-Instruct)."
    else:
        verdict = ("The paper's configuration (profile `paper`); remaining deviations are listed in the reproduction "
                   "notes.")
    lines = [f"> Numbers on this page were produced by {who}.", ">", f"> {verdict}"]
    fp = params.fingerprint()
    other = [st.name for st in stages if st.manifest and st.manifest.get("params_fingerprint") not in (None, fp)]
    if other:
        lines += [">", (f"> ⚠ Stage(s) {', '.join(other)} ran with other parameters than the ones this report was "
                        f"built with (fingerprint {fp}); see Configuration.")]
    return ["\n".join(lines)]


def _configuration(params: Params, run: Run, stages: list[Stage]) -> list:
    p = params
    ms = {st.name: st.manifest for st in stages if st.manifest}
    sizes = next((m["sizes"] for m in ms.values() if isinstance(m.get("sizes"), dict)), None)
    leakage = next((m["leakage"] for m in ms.values() if isinstance(m.get("leakage"), dict)), None)
    scorer = next((m["scorers"]["toxicity"] for m in ms.values()
                   if isinstance(m.get("scorers"), dict) and isinstance(m["scorers"].get("toxicity"), dict)), None)
    t = p.training
    rows = [
        ["run", f"`{run.name}` (profile `{p.profile}`, student file `{p.student_file or 'profile default'}`)"],
        ["student", (f"`{p.student.name}` — `{p.student.model_id}` (source {p.student.source}, "
                     f"dtype {p.student.dtype})")],
        ["teacher", _llm_desc(p.teacher)],
        ["judge", _llm_desc(p.judge)],
        ["harm scorer", f"`{p.harm.scorer}`" + (f" — {scorer['model']}" if scorer and scorer.get("model") else "")
         + (f"; τ_Δ {p.harm.tau_delta}")],
        ["splits (records)", (" / ".join(f"{k} {v:,}" for k, v in sizes.items()) if sizes else "— (stage 00 not run)")
         + (f"; leakage {leakage}" if leakage else "")],
        ["LoRA training", (f"r {t.lora_r}, α {t.lora_alpha}, dropout {t.lora_dropout}, lr {t.learning_rate}, "
                           f"{t.epochs:g} epochs, batch {t.batch_size} ({t.per_device_batch_size} per device), "
                           f"max length {t.max_length}, {t.lr_scheduler} schedule")],
        ["student decoding", f"max {p.generation.max_new_tokens} new tokens, "
                             + ("sampling T " + str(p.generation.temperature) + f", top-p {p.generation.top_p}"
                                if p.generation.do_sample else "greedy")],
        ["audit", (f"judge on {'every pair' if p.audit.mode == 'all' else 'screened pairs'} (`audit.mode: "
                   f"{p.audit.mode}`), {p.audit.judge_retries} retry; repair weights {p.repair.severity_weights}")],
        ["external suites", ", ".join(f"{k} {v}" for k, v in p.external.sizes.items() if v) or "off"],
    ]
    seeds = sorted({json.dumps(m.get("seeds"), sort_keys=True) for m in ms.values() if m.get("seeds")})
    rows.append(["seeds", "; ".join(seeds) if seeds else f"run {p.run.seed}, splits {p.splits.seed} (parameters)"])
    fps = {}
    for name, m in ms.items():
        fps.setdefault(m.get("params_fingerprint") or "—", []).append(name[:2])
    ran_with = "; ".join(f"`{k}` ({', '.join(v)})" for k, v in sorted(fps.items()))
    rows.append(["parameter fingerprint",
                 f"`{p.fingerprint()}` now" + (f"; stages ran with {ran_with}" if fps else "")])
    commits = {}
    for name, m in ms.items():
        commits.setdefault(short_commit(m.get("git_commit")), []).append(name[:2])
    rows.append(["git commit", "; ".join(f"`{k}` ({', '.join(v)})" for k, v in sorted(commits.items())) or "—"])
    latest = max(ms.values(), key=lambda m: m.get("finished_utc") or "", default=None)
    if latest and isinstance(latest.get("packages"), dict):
        pk = latest["packages"]
        differ = sorted(n for n, m in ms.items() if isinstance(m.get("packages"), dict) and m["packages"] != pk)
        rows.append(["packages", ", ".join(f"{k} {v}" for k, v in pk.items())
                     + (f" (stage {latest['stage'][:2]}; stages {', '.join(d[:2] for d in differ)} used other "
                        "versions)" if differ else "")])
    out = ["## Configuration", _md_table(["", "value"], rows)]
    saved = run.root / "params.yaml"
    if saved.is_file():
        try:
            same = yaml.safe_load(saved.read_text()) == p.to_dict()
        except yaml.YAMLError:
            same = False
        if not same:
            out.append(f"⚠ `{project_relative(saved)}` (the parameters of the last pipeline call) differs from the "
                       "parameters this report was built with.")
    dump = yaml.safe_dump(p.to_dict(), sort_keys=False, allow_unicode=True).rstrip()
    out.append(Raw(f"<details><summary>All merged parameters</summary>\n\n```yaml\n{dump}\n```\n\n</details>",
                   f"<details><summary>All merged parameters</summary>\n<pre>{html.escape(dump)}</pre>\n</details>\n"))
    return out


def _ran(history: list[dict]) -> list[dict]:
    return [h for h in history if h.get("status", "ran") == "ran" and isinstance(h.get("wall_time_s"), (int, float))]


def _latest_generation(history: list[dict], name: str) -> dict | None:
    """The latest history entry in which generation `name` ran (not reused from the cache)."""
    made = [h for h in history if isinstance((h.get("generation") or {}).get(name), dict)
            and not h["generation"][name].get("reused")]
    return max(made, key=lambda h: h.get("utc") or "", default=None)


def _timings(stages: list[Stage]) -> list:
    rows, steps, generations = [], [], []
    any_history = any(st.history for st in stages)
    for st in stages:
        m, stamp = st.manifest or {}, st.stamp or {}
        last = stamp.get("wall_time_s", (m.get("wall_time_s") or {}).get("total") if m else None)
        ran = _ran(st.history)
        cold = max(ran, key=lambda h: h["wall_time_s"], default=None)
        if cold and isinstance(last, (int, float)) and last > cold["wall_time_s"]:
            cold = None   # the last execution (not in the history) was the longest
        if not st.manifest:
            longest = "—"
        elif cold:
            longest = f"{_secs(cold['wall_time_s'])} on {_day(cold.get('utc'))}"
        elif ran:
            longest = "the last run"
        else:
            longest = "no history yet"
        fails = len([h for h in st.history if h.get("status") == "failed"])
        gen = m.get("generation")
        gen_s = "—"
        if isinstance(gen, dict) and gen:
            made = {k: v for k, v in gen.items() if isinstance(v, dict) and not v.get("reused")}
            gen_s = ", ".join(x for x in (f"{len(made)} generated" if made else "",
                                          f"{len(gen) - len(made)} reused" if len(gen) > len(made) else "") if x)
            for k in gen:
                if k in made:
                    v, how = made[k], "this run"
                else:   # the latest recorded run that generated it: the generation now in the cache
                    h = _latest_generation(ran, k)
                    v = h["generation"][k] if h else None
                    how = f"reused; generated {_day(h.get('utc'))}" if h else "reused; no recorded run generated it"
                generations.append([st.name, k, how] + (["—", "—", "—"] if not v else
                                   [_int(v.get("new_tokens")), _secs(v.get("wall_time_s")),
                                    _rate(v.get("tokens_per_s"))]))
        rows.append([st.name, st.status, _secs(last) if st.manifest else "—", _day(m.get("finished_utc")), longest,
                     f"{len(ran)}" + (f" (+{fails} failed)" if fails else ""), gen_s])
        cold_steps = (cold or {}).get("steps") or {}
        for k, v in (m.get("wall_time_s") or {}).items():
            steps.append([st.name, k, _secs(v), _secs(cold_steps.get(k)) if cold_steps else "—"])
    out = ["## Stage timings",
           "Last run: the pipeline's stamp (notebook start to end; the manifest total if the notebook was run by "
           "hand). Stages reuse cached LLM answers, adapters and predictions, so a rerun after a code change can take "
           "seconds: the longest run recorded in `runs/<run>/stage_history.jsonl` estimates the cold (empty-cache) "
           "cost." + ("" if any_history else " **No history yet** for this run (the history file starts with the "
                      "next pipeline execution): the times below are the last executions only, which may have "
                      "reused caches."),
           _md_table(["stage", "status", "last run", "finished (UTC)", "longest recorded run", "runs recorded",
                      "student generation"], rows)]
    if generations:
        out += ["### Student generation (last run)",
                "New tokens include each output's stop token; tokens/s = new tokens / wall time of the whole "
                "generation (batched). A reused generation was read from `runs/cache/generations/` (nothing ran): "
                "its numbers are those of the latest recorded run of the stage that generated it.",
                _md_table(["stage", "generation", "numbers from", "new tokens", "wall time", "tokens/s"],
                          generations)]
    if steps:
        out += ["### Steps (from the manifests)",
                _md_table(["stage", "step", "last run", "in the longest recorded run"], steps)]
    return out


_FRESH = ("prompt_tokens", "completion_tokens")
_CACHED = ("cached_prompt_tokens", "cached_completion_tokens")


def _cold_tokens(s: dict) -> tuple[int, int] | None:
    if not all(k in s for k in _CACHED):
        return None
    return (int((s.get("prompt_tokens") or 0) + s["cached_prompt_tokens"]),
            int((s.get("completion_tokens") or 0) + s["cached_completion_tokens"]))


def _price(params: Params, role: str, tokens: tuple[int, int] | None, prices: dict) -> str:
    cfg = getattr(params, role, None)
    if role in prices:
        if tokens is None:
            return "— (tokens unknown)"
        pin, pout = prices[role]
        return f"${(tokens[0] * pin + tokens[1] * pout) / 1e6:,.2f} (at ${pin:g} / ${pout:g} per M)"
    if cfg is not None and (cfg.backend == "llama_cpp" or any(h in str(cfg.base_url or "") for h in LOCAL_HOSTS)):
        return "local (0)"
    return "tokens only (no price set)"


def _costs(params: Params, stages: list[Stage], prices: dict) -> list:
    rows, total = [], [0, 0, 0, 0, 0, 0]
    unknown = False
    for st in stages:
        m = st.manifest or {}
        for key, s in m.items():
            if not (key.endswith("_llm") and isinstance(s, dict) and "calls" in s):
                continue
            role = key[: -len("_llm")]
            cold, source = _cold_tokens(s), ""
            for h in _ran(st.history):          # a recorded execution that spent more (e.g. before a cache reset)
                hs = (h.get("llm") or {}).get(key) or {}
                ht = _cold_tokens(hs) or (int(hs.get("prompt_tokens") or 0), int(hs.get("completion_tokens") or 0))
                if sum(ht) > sum(cold or (0, 0)):
                    cold, source = ht, f" (run of {_day(h.get('utc'))[:10]})"
            unknown |= cold is None
            cfg = getattr(params, role, None)
            fresh_s, cached_s = s.get("seconds"), s.get("cached_seconds")
            rows.append([
                st.name, role, f"`{cfg.model}`" if cfg is not None else "—", _int(s.get("calls")),
                _int(s.get("cache_hits")), _int(s.get("errors")),
                f"{_int(s.get('prompt_tokens'))} / {_int(s.get('completion_tokens'))}",
                f"{_int(s.get(_CACHED[0]))} / {_int(s.get(_CACHED[1]))}" if _cold_tokens(s) else "n/a",
                f"{_int(cold[0])} / {_int(cold[1])}{source}" if cold else "n/a",
                f"{_secs(fresh_s)} / {_secs(cached_s)}", _price(params, role, cold, prices)])
            total[0] += int(s.get("calls") or 0)
            total[1] += int(s.get("cache_hits") or 0)
            total[2] += int(s.get("prompt_tokens") or 0)
            total[3] += int(s.get("completion_tokens") or 0)
            total[4] += cold[0] if cold else 0
            total[5] += cold[1] if cold else 0
    out = ["## LLM costs (teacher and judge)",
           ("Per stage and role, from the manifests' client stats. *Fresh*: calls made and tokens spent by the last "
            "execution. *From cache*: the distinct answers served by the response cache, with the tokens recorded "
            "when they were first made. *Cold run* = fresh + from cache (or a larger execution in the history): what "
            "the stage costs with an empty cache. LLM time: seconds of the live calls / of the original calls behind "
            "the cached answers. Price: local models cost nothing; API roles are priced only when given "
            "(`make report PRICES=\"judge=IN/OUT\"`, USD per million prompt/completion tokens).")]
    if not rows:
        return out + ["No stage recorded LLM calls."]
    rows.append(["**total**", "", "", _int(total[0]), _int(total[1]), "", f"{_int(total[2])} / {_int(total[3])}", "",
                 ("n/a" if unknown and not any(total[4:]) else f"{_int(total[4])} / {_int(total[5])}"
                  + (" + n/a" if unknown else "")), "", ""])
    out.append(_md_table(["stage", "role", "model", "calls", "cache hits", "errors", "fresh tokens in / out",
                          "from cache in / out", "cold run in / out", "LLM time fresh / cached", "price (cold run)"],
                         rows))
    if unknown:
        out.append("n/a: the manifest predates the cached-token stats (`cached_*` keys of `LLMClient.stats()`) and the "
                   "history has no larger execution; the next execution of the stage fills it in.")
    return out


def _table_block(stem: str, tables_dir: Path, out_dir: Path, recorded: dict) -> list:
    files = {ext: tables_dir / f"{stem}.{ext}" for ext in TABLE_EXTS if (tables_dir / f"{stem}.{ext}").is_file()}
    if not files:
        return [f"### {stem}", f"⚠ listed in the manifest but missing: `{_rel(tables_dir, out_dir)}/{stem}.*`"]
    title, notes, body = stem, [], ""
    if "md" in files:
        lines = files["md"].read_text(encoding="utf-8").splitlines()
        start = next((i for i, ln in enumerate(lines) if ln.startswith("|")), len(lines))
        head, body = lines[:start], "\n".join(lines[start:]).strip()
        if head and head[0].startswith("# "):
            title, head = head[0][2:].strip(), head[1:]
        notes = [ln.strip() for ln in head if ln.strip()]
    elif "csv" in files:
        body = pd.read_csv(files["csv"]).to_markdown(index=False)
    out = [f"### {title}"]
    if notes:
        out.append("\n".join(f"- {n}" for n in notes))
    if body:
        out.append(body)
    changed = [ext for ext, p in files.items() if recorded.get(str(p.resolve())) not in (None, "", sha256_file(p))]
    links = " · ".join(f"[{ext}]({_rel(p, out_dir)})" for ext, p in files.items())
    out.append(f"`{stem}`: {links}" + (f" — ⚠ {', '.join(changed)} changed since the stage wrote it" if changed
                                        else ""))
    return out


def _figure_block(stem: str, figures_dir: Path, out_dir: Path, recorded: dict) -> list:
    files = {ext: figures_dir / f"{stem}.{ext}" for ext in FIGURE_EXTS if (figures_dir / f"{stem}.{ext}").is_file()}
    if not files:
        return [f"### Figure: {stem}",
                f"⚠ listed in the manifest but missing: `{_rel(figures_dir, out_dir)}/{stem}.*`"]
    out = [f"### Figure: {stem}"]
    if "png" in files:
        out.append(f"![{stem}]({_rel(files['png'], out_dir)})")
    changed = [ext for ext, p in files.items() if recorded.get(str(p.resolve())) not in (None, "", sha256_file(p))]
    out.append(" · ".join(f"[{ext}]({_rel(p, out_dir)})" for ext, p in files.items())
               + (f" — ⚠ {', '.join(changed)} changed since the stage wrote it" if changed else ""))
    return out


def _results(stages: list[Stage], tables_dir: Path, figures_dir: Path, out_dir: Path) -> list:
    out = []
    for st in stages:
        out.append(f"## {st.title}")
        if not st.manifest:
            out.append(f"*Not run* — no `{st.name}/manifest.json` in this run.")
            continue
        m = st.manifest
        out.append(f"`{st.name}` · finished {_day(m.get('finished_utc'))} UTC · commit "
                   f"`{short_commit(m.get('git_commit'))}` · {len(st.tables)} table(s), {len(st.figures)} figure(s)")
        for stem in st.tables:
            out += _table_block(stem, tables_dir, out_dir, st.recorded)
        for stem in st.figures:
            out += _figure_block(stem, figures_dir, out_dir, st.recorded)
    claimed_t = {t for st in stages for t in st.tables}
    claimed_f = {f for st in stages for f in st.figures}
    other_t = sorted({p.stem for ext in TABLE_EXTS for p in tables_dir.glob(f"*.{ext}")} - claimed_t) \
        if tables_dir.is_dir() else []
    other_f = sorted({p.stem for ext in FIGURE_EXTS for p in figures_dir.glob(f"*.{ext}")} - claimed_f) \
        if figures_dir.is_dir() else []
    if other_t or other_f:
        out += ["## Other", ("Tables and figures of this run that no stage manifest lists (left by an older version "
                             "of a notebook, or written by hand).")]
        for stem in other_t:
            out += _table_block(stem, tables_dir, out_dir, {})
        for stem in other_f:
            out += _figure_block(stem, figures_dir, out_dir, {})
    return out


# `make compare RUNS="..." [TABLE=...]` writes them (analysis/cross_family.py, safe_from_start.py, teacher_choice.py)
COMPARE_TABLES = ("table15_cross_family", "safe_from_start", "table32_teacher_choice")


def _across_runs(run: Run, tables_dir: Path, out_dir: Path) -> list:
    """Table 15, the safe-from-start table and Table 32 from tables/compare/, each when it was assembled with this run
    among its runs (`make compare`)."""
    compare, out = tables_dir.parent / "compare", []
    for stem in COMPARE_TABLES:
        md = compare / f"{stem}.md"
        if not md.is_file():
            continue
        runs_line = next((ln for ln in md.read_text(encoding="utf-8").splitlines() if ln.startswith("Runs: ")), "")
        if run.name in [r.strip() for r in runs_line[len("Runs: "):].split("(")[0].split(",")]:
            out += _table_block(stem, compare, out_dir, {})
    if not out:
        return []
    return ["## Across runs", "`make compare` assembled these tables from several finished runs, this one among "
                              "them."] + out


def _missing(stages: list[Stage]) -> list:
    missing = [st for st in stages if not st.manifest]
    if not missing:
        return ["## Stages not run", "Every stage has a manifest."]
    return ["## Stages not run",
            "\n".join(f"- `{st.name}` — {st.title}: not run (no manifest)" for st in missing)]


def _notes(readme: Path, docs_dir: Path, out_dir: Path) -> list:
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith(NOTES_HEADING)), None)
    out = []
    if start is None:
        out += [NOTES_HEADING, f"⚠ `{readme.name}` has no '{NOTES_HEADING}' section."]
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        out += [lines[start], "\n".join(lines[start + 1:end]).strip()]
    docs = sorted(docs_dir.glob("*.md")) if docs_dir.is_dir() else []
    if docs:
        items = []
        for d in docs:
            first = next((ln for ln in d.read_text(encoding="utf-8").splitlines() if ln.startswith("# ")), "")
            items.append(f"- [docs/{d.name}]({_rel(d, out_dir)})" + (f" — {first[2:].strip()}" if first else ""))
        out += ["### Details", "\n".join(items)]
    return out


# ---- rendering -----------------------------------------------------------------------------------------------------
CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;line-height:1.45;color:#1f2328}
h1,h2{border-bottom:1px solid #d0d7de;padding-bottom:.3em}h2{margin-top:2em}h3{margin-top:1.5em}
table{border-collapse:collapse;display:block;overflow-x:auto;font-size:.85em;margin:.8em 0}
th,td{border:1px solid #d0d7de;padding:3px 8px}tr:nth-child(2n){background:#f6f8fa}
blockquote{margin:1em 0;padding:.5em 1em;border-left:4px solid #d1242f;background:#fff5f5}
code{background:#eff1f3;padding:0 3px;border-radius:3px;font-size:.9em}pre{background:#f6f8fa;padding:1em;overflow:auto}
img{max-width:100%;border:1px solid #d0d7de}ul li{margin:.15em 0}"""


def _markdown_to_html(md: str) -> str:
    try:
        import mistune  # pinned in pyproject.toml (also a dependency of nbconvert)
    except ImportError:  # pragma: no cover
        return f"<pre>{html.escape(md)}</pre>\n"
    return mistune.create_markdown(escape=True, plugins=["table", "strikethrough"])(md)


def _heading_ids(body: str) -> str:
    seen: dict[str, int] = {}

    def add(m):
        slug = _slug(html.unescape(re.sub(r"<[^>]+>", "", m.group(2))))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        return f'<h{m.group(1)} id="{slug if n == 0 else f"{slug}-{n}"}">{m.group(2)}</h{m.group(1)}>'
    return re.sub(r"<h([1-6])>(.*?)</h\1>", add, body)


def render(blocks: list, title: str) -> tuple[str, str]:
    md = "\n\n".join(b.md if isinstance(b, Raw) else b for b in blocks).rstrip() + "\n"
    body = "".join(b.html if isinstance(b, Raw) else _markdown_to_html(b) for b in blocks)
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>\n{CSS}\n</style>\n</head>\n<body>\n{_heading_ids(body)}</body>\n</html>\n")
    return md, page


def short_commit(sha: str | None) -> str:
    """12 hex digits, keeping the "-dirty" mark of runs.git_commit (outputs made by uncommitted code)."""
    if not sha:
        return "—"
    return sha[:12] + ("-dirty" if sha.endswith("-dirty") else "")


def build_report(params: Params, out_dir: Path | None = None, stages: list[str] | None = None,
                 prices: dict[str, tuple[float, float]] | None = None, readme: Path | None = None,
                 docs_dir: Path | None = None) -> dict[str, Path]:
    """Write reports/<run>/report.md and report.html from the run's artifacts; returns {"md": path, "html": path}.
    `stages` defaults to the notebooks (plus any stage directory with a manifest); given explicitly, the
    up-to-date check against the notebooks is skipped."""
    run = Run(params)
    out_dir = Path(out_dir) if out_dir else run.reports_dir
    found, tables_dir, figures_dir = collect(params, stages)
    sections = [("Configuration", _configuration(params, run, found)),
                ("Stage timings", _timings(found)),
                ("LLM costs (teacher and judge)", _costs(params, found, prices or {})),
                ("Results by stage", _results(found, tables_dir, figures_dir, out_dir)),
                ("Across runs", _across_runs(run, tables_dir, out_dir)),
                ("Stages not run", _missing(found)),
                ("Reproduction notes", _notes(readme or PROJECT_ROOT / "README.md", docs_dir or PROJECT_ROOT / "docs",
                                              out_dir))]
    toc = []
    for _, blocks in sections:
        for b in blocks:
            if isinstance(b, str) and b.startswith("## "):
                toc.append(f"- [{b[3:]}](#{_slug(b[3:])})")
    title = f"DART reproduction — run {run.name}"
    blocks = [f"# {title}", *_banner(params, run, found), "**Contents**\n\n" + "\n".join(toc)]
    for _, section in sections:
        blocks += section
    md, page = render(blocks, title)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / "report.md", "html": out_dir / "report.html"}
    for key, text in (("md", md), ("html", page)):
        if not paths[key].is_file() or paths[key].read_text(encoding="utf-8") != text:
            paths[key].write_text(text, encoding="utf-8")
    return paths
