"""The external safety suites (paper §3.4, App. O, App. P): BOLD, HolisticBias, RealToxicityPrompts, HateCheck.

Why: M0 and M_DART are compared on 5,920 held-out prompts (1,000 + 192 + 1,000 + 3,728), and App. P breaks the
results down by demographic group. So every prompt must keep its group fields, and a corrupted or substituted file
must stop the run before any generation, with the file and both hashes named. The SHA-256 values are pinned from the
SOURCE.md files next to the data. The data is read from ../shared/data/external, or from the directory named in
$DART_EXTERNAL_DIR. It is never copied into the project. docs/external_safety.md says which files reproduce the
paper's samples and which do not. In short: HolisticBias 192 and the HateCheck 1,000 subset are confirmed. BOLD 1,000
is the authors' code path but does not match the paper's Table 42. The RTP 1,000 sample is NOT the paper's sample.

Every loader returns a `datasets.Dataset` that starts with the same fields for every suite:
  id              the staged file's `id`, unique within and across suites ("bold:...", "rtp:...", ...)
  benchmark       BOLD | HolisticBias | RTP | HateCheck
  prompt          the text that goes into the prompt template (see each loader)
  stratum         the App. P slice and the default `sample` stratum: BOLD dimension, HolisticBias category,
                  RTP prompt-toxicity bin, HateCheck target identity ("none" when the case has no target)
  dart_sample_id  the id the authors' code gives the same prompt, for joining with their outputs. It is not
                  always unique: for RTP it is the document's filename, and one document can give two prompts
                  (1 collision in the 1,000 sample, 7 in the pool). Key on `id`.
These are followed by the suite's own group and label fields, which are listed in each loader's docstring.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import datasets

from ..core import sampling
from ..core.hashing import sha256_file
from ..core.params import PROJECT_ROOT
from .suite import DataError

DIR_ENV = "DART_EXTERNAL_DIR"
DEFAULT_DIR = "../shared/data/external"   # relative to the project root
BENCHMARKS = ("BOLD", "HolisticBias", "RTP", "HateCheck")
# §3.4 / App. O.1: 1,000 + 192 + 1,000 + 3,728 = 5,920. "HateCheck-1000" is App. P's "1,000-sample HateCheck subset".
PAPER_SIZES: dict[str, int] = {"BOLD": 1000, "HolisticBias": 192, "RTP": 1000, "HateCheck": 3728}
# file key -> (path under the external dir, sha256 from its SOURCE.md / SHA256SUMS, rows)
FILES: dict[str, tuple[str, str, int]] = {
    "bold": ("bold/bold_dart_sample1000.jsonl",
             "8d5868e97505bbb3a650f18d016ee9255b35ae29cad04e75e0cc4f0963e271e4", 1000),
    "bold_all": ("bold/bold_all.jsonl",
                 "5e2a618f7e5f801a4cfe2ba68d7137512b153558bdb60e9d40f4aea980d9f405", 23679),
    "holisticbias": ("holisticbias/holisticbias_dart192.jsonl",
                     "65d4f824bfeabc75d575cab229c0fcbcee81ce7cafac752a26ab735649c77a09", 192),
    "rtp": ("realtoxicityprompts/rtp_sample1000_stratified.jsonl",
            "e60bbccc2498ebe1298a9e3393135856910e9f8610e59d08b954b68ff95a3bd2", 1000),
    "rtp_pool": ("realtoxicityprompts/rtp_decodingtrust_pool.jsonl",
                 "c8f3dfc380c3bd6f4c02c48e3f0de180dab821b200cf0fd677d7b023d6b34e82", 2392),
    "hatecheck": ("hatecheck/hatecheck_all3728.jsonl",
                  "2c67c9dc2a2b47331cba942d404b954ec4b6922ea70ee8b072a3e4a50b826fe0", 3728),
    "hatecheck_1000": ("hatecheck/hatecheck_dart_subset1000.jsonl",
                       "6ec6f71f14215238719a08dfc0b2b46ee187f09b5062b7a6367ef51942f2a8af", 1000),
}
RTP_BINS = ("[0.00,0.25)", "[0.25,0.50)", "[0.50,0.75)", "[0.75,1.00]")   # toxicity_bin 0..3, as in SOURCE.md

_S, _I, _F, _B = (datasets.Value(t) for t in ("string", "int64", "float64", "bool"))
COMMON = {"id": _S, "benchmark": _S, "prompt": _S, "stratum": _S, "dart_sample_id": _S}
FEATURES = {
    "BOLD": datasets.Features({**COMMON, "domain": _S, "dimension": _S, "group": _S, "entity": _S}),
    "HolisticBias": datasets.Features({**COMMON, "category": _S, "noun_phrase": _S, "template": _S,
                                       "preference": _S, "has_unfilled_placeholders": _B,
                                       "prompt_dart": _S, "prompt_clean": _S}),
    "RTP": datasets.Features({**COMMON, "prompt_toxicity": _F, "toxicity_bin": _I, "challenging": _B,
                              "filename": _S}),
    "HateCheck": datasets.Features({**COMMON, "case_id": _I, "functionality": _S, "target_ident": _S,
                                    "label_gold": _S, "direction": _S, "in_dart_subset1000": _B}),
}


def external_dir(root: str | Path | None = None) -> Path:
    """The suites' directory. An explicit `root` wins; otherwise $DART_EXTERNAL_DIR wins over ../shared/data/external.
    Relative paths are taken from the project root."""
    env = os.environ.get(DIR_ENV)
    path = Path(root) if root is not None else Path(env) if env else Path(DEFAULT_DIR)
    return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()


def dir_from_params(ep) -> Path:
    """The directory for `params.external` (ExternalParams): the variable named in `dir_env` when set, else `dir`."""
    return external_dir(os.environ.get(ep.dir_env) or ep.dir)


def _path(directory: Path, key: str) -> Path:
    path = directory / FILES[key][0]
    if not path.is_file():
        raise DataError(
            f"external suite file not found: {path}\nThe suites are read from {DEFAULT_DIR} by default (relative "
            f"to the project root). Point elsewhere with the {DIR_ENV} environment variable or the `root` argument. "
            f"How each file was built is described in the SOURCE.md beside it.")
    return path


def verify_file(directory: Path, key: str) -> str:
    """SHA-256 of one staged file against its pinned value; returns the hash."""
    path = _path(directory, key)
    actual, expected = sha256_file(path), FILES[key][1]
    if actual != expected:
        raise DataError(
            f"checksum mismatch for {path}:\n  expected {expected}\n  actual   {actual}\n"
            f"The file is corrupted or is not the staged version. Restore it (its SOURCE.md says how it was built), "
            f"or, if you rebuilt it on purpose, load it with verify=False and record why.")
    return actual


def _read(root: str | Path | None, key: str, verify: bool) -> list[tuple[int, dict]]:
    """(line number, record) for every line of a staged file, after the checksum and a row-count check."""
    directory = external_dir(root)
    if verify:
        verify_file(directory, key)
    path = _path(directory, key)
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            try:
                rows.append((i, json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{i}: not valid JSON ({e})") from None
    if len(rows) != FILES[key][2]:
        raise DataError(f"{path}: {len(rows)} records, expected {FILES[key][2]} (see its SOURCE.md)")
    return rows


def _build(root: str | Path | None, key: str, benchmark: str, verify: bool, fields: dict[str, str],
           derived, skip_empty: bool = False) -> datasets.Dataset:
    """Generic loader: `fields` maps output field -> source field; `derived(rec)` returns prompt, stratum and any
    computed fields. Checks that every source field is present, that prompts are non-empty and that ids are unique."""
    path, out, seen = FILES[key][0], [], set()
    for i, rec in _read(root, key, verify):
        where = f"{path}:{i}"
        missing = [s for s in ("id", "dart_sample_id", *fields.values()) if s not in rec]
        if missing:
            raise DataError(f"{where}: record lacks {missing}")
        row = {"id": rec["id"], "benchmark": benchmark, "dart_sample_id": rec["dart_sample_id"],
               **{k: rec[s] for k, s in fields.items()}, **derived(rec)}
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            if skip_empty:
                continue
            raise DataError(f"{where}: empty prompt")
        if row["id"] in seen:
            raise DataError(f"{where}: duplicate id {row['id']}")
        seen.add(row["id"])
        out.append({k: row[k] for k in FEATURES[benchmark]})
    return datasets.Dataset.from_list(out, features=FEATURES[benchmark])


def load_bold(root: str | Path | None = None, full: bool = False, verify: bool = True) -> datasets.Dataset:
    """BOLD: by default the 1,000-prompt sample the authors' code draws (seed-42 shuffle, `bold_dart_sample1000.jsonl`).

    prompt = the BOLD prompt with its whitespace stripped, with no Wikipedia context (the authors' default).
    domain = the BOLD file (gender, race, profession, religious_ideology, political_ideology). dimension = the same,
    in the paper's naming (religious_ideology -> religion). This is the App. P slice and the stratum.
    group = BOLD's group inside the domain (e.g. American_actors, engineering_branches). entity = the Wikipedia page.
    full=True loads all 23,679 BOLD prompts (`bold_all.jsonl`) minus the 5 that are empty after stripping
    (23,674 rows). Use it to draw a truly dimension-stratified sample, which the paper claims and the code never did.
    """
    fields = {"domain": "domain", "dimension": "dimension", "group": "group", "entity": "entity"}
    return _build(root, "bold_all" if full else "bold", "BOLD", verify, fields,
                  lambda r: {"prompt": r["prompt"], "stratum": r["dimension"]}, skip_empty=full)


def load_holisticbias(root: str | Path | None = None, fill_placeholders: bool = True,
                      verify: bool = True) -> datasets.Dataset:
    """HolisticBias: the 192 prompts (v1.1 standalone noun phrases, one template each, `holisticbias_dart192.jsonl`).

    prompt = `prompt_clean` when fill_placeholders (the default), otherwise `prompt`, the authors' exact string.
    94 of the authors' prompts contain literal "{article} {noun}" slots that their code never fills;
    `prompt_clean` fills them with "a person" / "people". Both are kept as prompt_clean and prompt_dart.
    category = the HolisticBias axis (ability, age, body_type, characteristics, cultural, gender_and_sex,
    race_ethnicity, religion, sexual_orientation, socioeconomic_class). These are App. P's 10 categories, and
    category is the stratum. noun_phrase = the standalone descriptor phrase. template = the sentence template.
    preference = HolisticBias's "reviewed" / "dispreferred" flag, or None when the phrase has no flag.
    """
    fields = {"category": "category", "noun_phrase": "noun_phrase", "template": "template",
              "preference": "preference", "has_unfilled_placeholders": "has_unfilled_placeholders",
              "prompt_dart": "prompt", "prompt_clean": "prompt_clean"}
    return _build(root, "holisticbias", "HolisticBias", verify, fields,
                  lambda r: {"prompt": r["prompt_clean"] if fill_placeholders else r["prompt"],
                             "stratum": r["category"]})


def load_rtp(root: str | Path | None = None, pool: bool = False, verify: bool = True) -> datasets.Dataset:
    """RealToxicityPrompts: a 1,000-prompt sample stratified by toxicity. It is NOT the paper's sample.

    The full 99k RTP file was not available, so the paper's sample cannot be rebuilt. This file (`rtp_sample1000_
    stratified.jsonl`) draws 1,000 prompts from the 2,392 RTP prompts that DecodingTrust redistributes. Four prompt-
    toxicity bins were filled as equally as the pool allows (296/296/113/295). Its mix is far more toxic than RTP
    overall. pool=True loads all 2,392 pool prompts instead.
    prompt = RTP's `prompt.text`. The authors' loader would have used str() of the nested dict (a bug we do not
    copy). prompt_toxicity = the prompt's Perspective API toxicity score (2020). toxicity_bin = 0..3 over [0, .25,
    .5, .75, 1]; its label in RTP_BINS is the stratum. challenging = RTP's "challenging" flag. filename = RTP's
    document key.
    """
    fields = {"prompt_toxicity": "prompt_toxicity", "toxicity_bin": "toxicity_bin", "challenging": "challenging",
              "filename": "filename"}
    return _build(root, "rtp_pool" if pool else "rtp", "RTP", verify, fields,
                  lambda r: {"prompt": r["prompt"], "stratum": RTP_BINS[r["toxicity_bin"]]})


def load_hatecheck(root: str | Path | None = None, subset1000: bool = False, verify: bool = True) -> datasets.Dataset:
    """HateCheck: all 3,728 test cases (`hatecheck_all3728.jsonl`, file order). The counts match §3.4's total.

    subset1000=True loads the 1,000 cases that the authors' code keeps with seed 42 (`hatecheck_dart_subset1000.jsonl`,
    in their shuffled order). This is App. P's "1,000-sample subset". It is confirmed: exactly 88 of its cases have
    no target, as in Table 41.
    prompt = HateCheck's `test_case`, verbatim (3,470 cases keep a trailing space, as the authors' code passes it).
    case_id = HateCheck's case id. functionality = one of 29 functional tests (App. O.5). target_ident = the target
    group (7 groups, None for 292 cases); it is the stratum, with "none" for those cases. label_gold = hateful /
    non-hateful. direction = HateCheck's direction field. in_dart_subset1000 = whether the case is in that subset.
    """
    fields = {"case_id": "case_id", "functionality": "functionality", "target_ident": "target_ident",
              "label_gold": "label_gold", "direction": "direction", "in_dart_subset1000": "in_dart_subset1000"}
    return _build(root, "hatecheck_1000" if subset1000 else "hatecheck", "HateCheck", verify, fields,
                  lambda r: {"prompt": r["prompt"], "stratum": r["target_ident"] or "none"})


LOADERS = {"BOLD": load_bold, "HolisticBias": load_holisticbias, "RTP": load_rtp, "HateCheck": load_hatecheck,
           "HateCheck-1000": partial(load_hatecheck, subset1000=True)}


# The staged file each suite name reads with the loader's defaults (what `load_external` loads).
SUITE_FILES = {"BOLD": "bold", "HolisticBias": "holisticbias", "RTP": "rtp", "HateCheck": "hatecheck",
               "HateCheck-1000": "hatecheck_1000"}


def suite_files(directory: str | Path | None, names) -> list[Path]:
    """The staged files `load_external(directory, sizes)` reads for the suites in `names` (suite names, or the
    `sizes` dict itself), for a stage's record of the data it read (`StageContext.source`)."""
    unknown = [n for n in names if n not in SUITE_FILES]
    if unknown:
        raise ValueError(f"unknown external suites {sorted(unknown)}; known: {sorted(SUITE_FILES)}")
    root = external_dir(directory)
    return [root / FILES[SUITE_FILES[n]][0] for n in names]


def sample(ds: datasets.Dataset, n: int, seed: int, stratify_by: str | Sequence[str] | None = "stratum"
           ) -> datasets.Dataset:
    """A seeded, stratified subsample of n rows. It is proportional (`core.sampling.allocate`), and rows keep the
    dataset's order.

    `core.sampling.stratified_sample`: each stratum is shuffled by its own RNG, seeded with "{seed}:{stratum}" over
    rows sorted by id (the stratum is the JSON list of the row's `stratify_by` values), and its first rows are kept.
    So the result depends only on the seed and the data, and a larger n (almost always) extends a smaller one.
    stratify_by takes one field, several fields (strata = their combinations), or None for a simple random sample.
    If n >= len(ds), ds is returned unchanged.
    """
    if n < 0:
        raise ValueError(f"sample size must be >= 0, got {n}")
    if n >= len(ds):
        return ds
    cols = [stratify_by] if isinstance(stratify_by, str) else list(stratify_by or ())
    values = [list(ds[c]) for c in cols]
    strata = [json.dumps([v[i] for v in values]) for i in range(len(ds))]
    return ds.select(sampling.stratified_sample(list(ds["id"]), strata, n, seed))


def load_external(root: str | Path | None = None, sizes: dict[str, int | None] | None = None, seed: int = 42,
                  verify: bool = True) -> dict[str, datasets.Dataset]:
    """The suites named in `sizes`, each subsampled by `sample` (stratified by `stratum`) to its size.

    sizes=None gives the paper's four suites at the paper's sizes (PAPER_SIZES, 5,920 prompts, i.e. every staged
    row). A size of None means the suite's full staged size. Keys: BOLD, HolisticBias, RTP, HateCheck (3,728), and
    HateCheck-1000 (App. P's subset). A CPU profile might pass {"BOLD": 40, "HolisticBias": 40, "RTP": 40,
    "HateCheck-1000": 40}. Asking for more rows than are staged is an error, not a silent cap.
    """
    sizes = dict(PAPER_SIZES) if sizes is None else sizes
    unknown = set(sizes) - set(LOADERS)
    if unknown:
        raise ValueError(f"unknown external suites {sorted(unknown)}; known: {sorted(LOADERS)}")
    out = {}
    for name, n in sizes.items():
        ds = LOADERS[name](root, verify=verify)
        if n is not None and n > len(ds):
            raise ValueError(f"{name}: {n} prompts requested but only {len(ds)} are staged")
        out[name] = ds if n is None else sample(ds, n, seed)
    return out
