import shutil

import pytest

from dart_utils.core import params as P
from dart_utils.data import suite as data


def test_counts(suite):
    df = suite.to_pandas()
    assert len(df) == 16_000
    counts = df.groupby(["benchmark", "condition"]).size()
    assert set(counts.index.get_level_values(0)) == {"D1", "D2", "D3", "D4", "N1", "N2", "N3", "N4"}
    assert (counts == 1000).all() and len(counts) == 16


def test_schema_and_labels(suite):
    df = suite.to_pandas()
    assert list(suite.features)[:6] == ["id", "benchmark", "category", "condition", "gold", "question"]
    assert ((df.condition == "DIFF") == (df.gold == "YES")).all()
    assert ((df.benchmark.str[0] == "D") == (df.category == "descriptive")).all()
    assert df.id.is_unique and df.question.is_unique


def test_checksums_pass(paper_params):
    hashes = data.verify_checksums(paper_params)
    assert hashes == paper_params.data.expected_sha256


@pytest.fixture
def data_copy(tmp_path, paper_params, monkeypatch):
    copy = tmp_path / "suite"
    shutil.copytree(data.data_dir(paper_params), copy)
    monkeypatch.setenv("DART_DATA_DIR", str(copy))  # the environment variable wins over the parameter
    return copy


def test_env_var_points_elsewhere(data_copy, paper_params):
    assert data.data_dir(paper_params) == data_copy


def test_corrupted_file_is_named(data_copy, paper_params):
    f = data_copy / "N3.jsonl"
    f.write_bytes(f.read_bytes().replace(b"Americans", b"Amerikans", 1))
    with pytest.raises(data.DataError, match=r"checksum mismatch for .*N3\.jsonl"):
        data.load_suite(paper_params)


def test_missing_file_says_what_to_do(data_copy, paper_params):
    (data_copy / "D2.jsonl").unlink()
    with pytest.raises(data.DataError, match=r"(?s)D2\.jsonl.*DART_DATA_DIR.*make data"):
        data.load_records(paper_params)


def test_malformed_record_is_located(data_copy, paper_params):
    f = data_copy / "D1.jsonl"
    lines = f.read_text().splitlines(keepends=True)
    lines[4] = lines[4].replace('"gold": "YES"', '"gold": "NO"')
    f.write_text("".join(lines))
    p = P.load("paper", overrides={"data": {"verify_checksums": False}})
    with pytest.raises(data.DataError, match=r"D1\.jsonl:5: condition 'DIFF' with gold 'NO'"):
        data.load_records(p)


def test_question_group_ignores_option_order():
    a = "Which is worse?\n(a) cats (b) dogs (c) Both equally"
    b = "Which is worse?\n(a) Dogs (b) cats (c) They are equal"
    c = "Which is worse?\n(a) cats (b) mice (c) Both equally"
    assert data.question_group(a) == data.question_group(b) != data.question_group(c)
    assert data.question_group("(1) x (b) y (c) z") == data.question_group("(a) y (b) x (c) z")


def test_known_swapped_pairs_share_a_group(suite):
    group = dict(zip(suite["id"], suite["question_group"]))
    for a, b in [("N2-diff-0059", "N2-diff-0490"), ("N2-diff-0684", "N2-diff-0889"), ("N1-diff-0063", "N1-diff-0972"),
                 ("D3-diff-0000", "D3-diff-0287")]:
        assert group[a] == group[b]
    assert group["D1-diff-0000"] != group["D1-diff-0001"]
