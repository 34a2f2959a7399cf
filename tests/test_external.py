"""External safety suites (dart_utils.data.external): counts on the real staged data, schema, sampling (the
allocator and the sampler themselves: test_sampling.py; abstention: test_safety_eval.py)."""
import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import datasets
import pytest

from dart_utils.data import external as E
from dart_utils.data.suite import DataError

EXT = E.external_dir()
needs_data = pytest.mark.skipif(
    not EXT.is_dir(), reason=f"external suites not found at {EXT} (set {E.DIR_ENV} to where they are staged)")

# documented sizes: paper §3.4 / App. O.1 / App. P and the staged files' SOURCE.md
EXPECTED = {"BOLD": 1000, "HolisticBias": 192, "RTP": 1000, "HateCheck": 3728, "HateCheck-1000": 1000}
GROUP_FIELDS = {"BOLD": ["domain", "dimension", "group", "entity"],
                "HolisticBias": ["category", "noun_phrase", "template", "prompt_dart", "prompt_clean"],
                "RTP": ["prompt_toxicity", "toxicity_bin", "challenging", "filename"],
                "HateCheck": ["case_id", "functionality", "target_ident", "label_gold", "direction"]}


@pytest.fixture(scope="module")
def suites():
    return {name: load() for name, load in E.LOADERS.items()}


@needs_data
def test_counts_equal_documented_sizes(suites):
    assert {k: len(v) for k, v in suites.items()} == EXPECTED
    assert sum(len(suites[k]) for k in E.BENCHMARKS) == 5920   # §3.4
    assert E.PAPER_SIZES == {k: EXPECTED[k] for k in E.BENCHMARKS}


@needs_data
def test_larger_files_load():
    assert len(E.load_bold(full=True)) == 23679 - 5   # 5 prompts are empty after stripping
    pool = E.load_rtp(pool=True)
    assert len(pool) == 2392 and len(set(pool["id"])) == 2392
    assert pool.to_pandas().dart_sample_id.duplicated().sum() == 7


@needs_data
@pytest.mark.parametrize("name", list(EXPECTED))
def test_fields_present_nonempty_unique(suites, name):
    ds = suites[name]
    bench = name.split("-")[0]
    assert list(ds.features)[:5] == ["id", "benchmark", "prompt", "stratum", "dart_sample_id"]
    assert set(GROUP_FIELDS[bench]) <= set(ds.features)
    df = ds.to_pandas()
    assert (df.benchmark == bench).all()
    for col in ("id", "prompt", "stratum", "dart_sample_id"):
        assert df[col].map(lambda s: isinstance(s, str) and s.strip() != "").all(), col
    assert df.id.is_unique
    # the authors' RTP id (RealToxicityPrompts:<filename>) collides when one document gives two prompts
    assert df.dart_sample_id.duplicated().sum() == (1 if bench == "RTP" else 0)


@needs_data
def test_ids_unique_across_suites(suites):
    ids = [i for k in E.BENCHMARKS for i in suites[k]["id"]]
    assert len(ids) == len(set(ids))


@needs_data
def test_group_fields_kept(suites):
    assert Counter(suites["BOLD"]["dimension"]) == {"profession": 459, "race": 320, "gender": 130,
                                                    "political_ideology": 70, "religion": 21}
    hb = Counter(suites["HolisticBias"]["category"])
    assert len(hb) == 10 and hb["ability"] == 50 and hb["age"] == 2     # App. P's 10 categories
    assert sum(suites["HolisticBias"]["has_unfilled_placeholders"]) == 94
    assert not any("{" in p for p in suites["HolisticBias"]["prompt"])  # filled by default
    assert sum("{article}" in p for p in E.load_holisticbias(fill_placeholders=False)["prompt"]) == 94
    rtp = suites["RTP"].to_pandas()
    assert Counter(rtp.stratum) == {E.RTP_BINS[0]: 296, E.RTP_BINS[1]: 296, E.RTP_BINS[2]: 113, E.RTP_BINS[3]: 295}
    assert ((rtp.prompt_toxicity * 4).clip(upper=3.999).astype(int) == rtp.toxicity_bin).all()
    hc = suites["HateCheck"].to_pandas()
    assert hc.functionality.nunique() == 29 and Counter(hc.label_gold) == {"hateful": 2563, "non-hateful": 1165}
    assert hc.target_ident.isna().sum() == 292 and hc.target_ident.nunique() == 7
    assert hc.in_dart_subset1000.sum() == 1000
    sub = suites["HateCheck-1000"].to_pandas()
    assert (sub.stratum == "none").sum() == 88                         # Table 41: 88 cases without a target
    assert set(sub.id) == set(hc.id[hc.in_dart_subset1000])


@needs_data
def test_load_external_defaults_and_sizes():
    full = E.load_external()
    assert {k: len(v) for k, v in full.items()} == E.PAPER_SIZES
    small = E.load_external(sizes={"BOLD": 40, "HolisticBias": 40, "RTP": 40, "HateCheck-1000": 40, "HateCheck": None})
    assert {k: len(v) for k, v in small.items()} == {"BOLD": 40, "HolisticBias": 40, "RTP": 40,
                                                      "HateCheck-1000": 40, "HateCheck": 3728}
    assert len(set(small["HolisticBias"]["stratum"])) == 10            # every category kept
    with pytest.raises(ValueError, match="unknown external suites"):
        E.load_external(sizes={"XSTest": 10})
    with pytest.raises(ValueError, match="only 192 are staged"):
        E.load_external(sizes={"HolisticBias": 500})


@needs_data
@pytest.mark.parametrize("name", list(EXPECTED))
def test_real_sample_is_stratified(suites, name):
    ds = suites[name]
    got = Counter(E.sample(ds, 40, seed=42)["stratum"])
    total = Counter(ds["stratum"])
    assert sum(got.values()) == 40 and set(got) == set(total)           # every stratum kept
    for k, size in total.items():
        assert abs(got[k] - 40 * size / len(ds)) <= 1, (k, got[k], 40 * size / len(ds))


@pytest.fixture
def hb_copy(tmp_path, monkeypatch):
    """A copy of the smallest suite in a temporary directory, reached through the environment variable."""
    if not EXT.is_dir():
        pytest.skip(f"external suites not found at {EXT} (set {E.DIR_ENV} to where they are staged)")
    rel = E.FILES["holisticbias"][0]
    (tmp_path / rel).parent.mkdir(parents=True)
    shutil.copy(EXT / rel, tmp_path / rel)
    monkeypatch.setenv(E.DIR_ENV, str(tmp_path))
    return tmp_path / rel


def test_env_var_points_elsewhere(hb_copy):
    assert E.external_dir() == hb_copy.parents[1]
    assert E.external_dir("/somewhere/else") == Path("/somewhere/else")   # an explicit root wins over the variable
    assert len(E.load_holisticbias()) == 192


def test_corrupted_file_is_named(hb_copy):
    hb_copy.write_bytes(hb_copy.read_bytes().replace(b"wheelchair", b"wheelchairs", 1))
    with pytest.raises(DataError, match=r"checksum mismatch for .*holisticbias_dart192\.jsonl"):
        E.load_holisticbias()


def test_missing_file_says_what_to_do(hb_copy):
    with pytest.raises(DataError, match=r"(?s)bold_dart_sample1000\.jsonl.*DART_EXTERNAL_DIR"):
        E.load_bold()


def test_malformed_records_are_located(hb_copy):
    lines = hb_copy.read_text().splitlines(keepends=True)
    hb_copy.write_text("".join(lines[:5] + [lines[4]] + lines[6:]))   # line 6 duplicates line 5
    with pytest.raises(DataError, match=r"holisticbias_dart192\.jsonl:6: duplicate id"):
        E.load_holisticbias(verify=False)
    hb_copy.write_text("".join(lines[:-1]))
    with pytest.raises(DataError, match="191 records, expected 192"):
        E.load_holisticbias(verify=False)


# --- sample / allocate on synthetic data: no files needed ---

def toy(sizes: dict[str, int]) -> datasets.Dataset:
    rows = [{"id": f"{k}-{i:03d}", "stratum": k, "label": "ab"[i % 2]} for k, n in sizes.items() for i in range(n)]
    return datasets.Dataset.from_list(rows)


def test_sample_is_deterministic_and_seeded():
    ds = toy({"a": 50, "b": 30, "c": 20})
    one, two = E.sample(ds, 10, seed=1), E.sample(ds, 10, seed=1)
    assert one["id"] == two["id"]
    assert one["id"] != E.sample(ds, 10, seed=2)["id"]
    shuffled = ds.shuffle(seed=0)                                       # row order does not change the draw
    assert sorted(E.sample(shuffled, 10, seed=1)["id"]) == sorted(one["id"])
    assert Counter(one["stratum"]) == {"a": 5, "b": 3, "c": 2}


def test_sample_returns_everything_when_n_is_large():
    ds = toy({"a": 3, "b": 2})
    assert E.sample(ds, 5, seed=0) is ds and E.sample(ds, 99, seed=0) is ds
    assert len(E.sample(ds, 0, seed=0)) == 0
    with pytest.raises(ValueError):
        E.sample(ds, -1, seed=0)


def test_sample_keeps_small_strata_and_several_fields():
    ds = toy({"big": 97, "tiny1": 2, "tiny2": 1})
    got = Counter(E.sample(ds, 10, seed=0)["stratum"])
    assert got == {"big": 8, "tiny1": 1, "tiny2": 1}
    both = Counter(zip(*[E.sample(ds, 20, seed=0, stratify_by=["stratum", "label"])[c] for c in ("stratum", "label")]))
    assert len(both) == 5 and sum(both.values()) == 20                 # 5 (stratum, label) cells, all kept
    assert len(E.sample(ds, 7, seed=0, stratify_by=None)) == 7


# Ids that external.sample drew BEFORE it moved onto core.sampling (computed with the old code on the staged suites):
# the move must not change a single drawn prompt, or every cached generation of stage 05 would be for other prompts.
OLD_SAMPLE_IDS = {
    ("HolisticBias", 7): ["holisticbias:ability:58cb309f57", "holisticbias:ability:35ed1bfe0f",
                          "holisticbias:body_type:25e11f7c97", "holisticbias:characteristics:13e271a921",
                          "holisticbias:characteristics:0081fd9858", "holisticbias:religion:a2da1d3bdd",
                          "holisticbias:religion:a6f31390ec"],
    ("HateCheck-1000", 7): ["hatecheck:2177", "hatecheck:140", "hatecheck:783", "hatecheck:1460", "hatecheck:276",
                            "hatecheck:576", "hatecheck:116"],
    ("BOLD", 7): ["bold:race:European_Americans:John_Wayles_Eppes:0", "bold:political_ideology:right-wing:New_Right:3",
                  "bold:profession:theatre_personnel:Musical_theatre:4", "bold:religious_ideology:judaism:Judaism:22",
                  "bold:race:African_Americans:Doug_Glanville:0", "bold:gender:American_actors:Ron_Randell:1",
                  "bold:profession:nursing_specialties:Wound_care:0"],
}
# sha256 (first 16 hex) of json.dumps(list of drawn ids) from the old code; (suite, n, seed, stratify_by)
OLD_SAMPLE_HASHES = {
    ("BOLD", 40, 42, "stratum"): "c333c99b77de178b", ("BOLD", 100, 42, "stratum"): "12588cc8df42e670",
    ("HolisticBias", 40, 42, "stratum"): "9b9831aaade7f5bf", ("HolisticBias", 100, 42, "stratum"): "2b5e45fb1d6c0481",
    ("RTP", 7, 42, "stratum"): "b539b921559fc6bf", ("RTP", 40, 42, "stratum"): "bef0af81ef3b450f",
    ("RTP", 100, 42, "stratum"): "f94343b928b6decd", ("HateCheck", 7, 42, "stratum"): "ebc7784e10efacf7",
    ("HateCheck", 40, 42, "stratum"): "472bc13641483f06", ("HateCheck", 100, 42, "stratum"): "e735399e636d0ca7",
    ("HateCheck", 50, 3, ("stratum", "label_gold")): "b3a2cabc73d57e85",
    ("HateCheck", 25, 42, None): "42d79a798ed1c8f5",
    ("HateCheck-1000", 40, 42, "stratum"): "669c6762a53dfe93",
    ("HateCheck-1000", 100, 42, "stratum"): "454b9ac5e229178a",
}


@needs_data
def test_sample_draws_what_the_old_sampler_drew(suites):
    for (name, n), ids in OLD_SAMPLE_IDS.items():
        assert list(E.sample(suites[name], n, seed=42)["id"]) == ids, name
    for (name, n, seed, by), digest in OLD_SAMPLE_HASHES.items():
        by = list(by) if isinstance(by, tuple) else by
        got = list(E.sample(suites[name], n, seed=seed, stratify_by=by)["id"])
        assert hashlib.sha256(json.dumps(got).encode()).hexdigest()[:16] == digest, (name, n, seed, by)


def test_external_does_not_import_dart():
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(E))
    modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not any(m.startswith("dart") or m.startswith("..dart") or ".dart" in m for m in modules), modules
    assert not hasattr(E, "abstention") and not hasattr(E, "allocate")


def test_suite_files_name_the_staged_files(tmp_path):
    paths = E.suite_files(tmp_path, {"BOLD": 40, "HateCheck-1000": 40})
    assert paths == [tmp_path / E.FILES["bold"][0], tmp_path / E.FILES["hatecheck_1000"][0]]
    assert E.suite_files(tmp_path, ["RTP"]) == [tmp_path / E.FILES["rtp"][0]]
    with pytest.raises(ValueError, match="unknown external suites"):
        E.suite_files(tmp_path, ["XSTest"])
