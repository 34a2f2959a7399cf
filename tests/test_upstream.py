"""Offline tests for dart_utils.upstream: safe unpickling, schema, hashing, conversion."""
import hashlib
import io
import json
import os
import pickle
import subprocess
from pathlib import Path

import pytest

from dart_utils.data import upstream as up

np = pytest.importorskip("numpy")
SHARED = Path("/work/shared/data/difference_awareness")


def _sample(n=3, numpy_ints=False):
    conv = np.int64 if numpy_ints else int
    diff = [[f"diff q{i} – é", conv(i % 2), conv(i)] for i in range(n)]
    equal = [[f"equal q{i}", conv(2), f"scen-{i}"] for i in range(n)]
    return [diff, equal]


def _big_endian_scalar(value, code="i8", module="numpy.core.multiarray"):
    """Hand-built pickle as a big-endian machine would write numpy.int64(value)."""
    size = int(code[1:])
    return (b"\x80\x03c" + module.encode() + b"\nscalar\ncnumpy\ndtype\nX" + len(code).to_bytes(4, "little")
            + code.encode() + b"\x89\x88\x87R(K\x03X\x01\x00\x00\x00>NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
            + b"C" + bytes([size]) + value.to_bytes(size, "big", signed=code[0] == "i") + b"\x86R.")


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("numpy_ints", [False, True])
def test_roundtrip_plain_and_numpy(protocol, numpy_ints):
    obj = _sample(numpy_ints=numpy_ints)
    got = up.restricted_loads(pickle.dumps(obj, protocol=protocol))
    assert got == _sample()
    assert all(type(x) is int for half in got for item in half for x in item[1:] if not isinstance(x, str))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("value", [np.int64(-5), np.int64(2**62), np.uint32(4000000000), np.int8(-2),
                                   np.uint8(255), np.int16(-300), np.int32(123456)])
def test_numpy_scalar_kinds(protocol, value):
    obj = [[["q", value, value]], []]
    got = up.restricted_loads(pickle.dumps(obj, protocol=protocol))[0][0]
    assert got[1] == int(value) and type(got[1]) is int and type(got[2]) is int


@pytest.mark.parametrize("code,value", [("i8", -5), ("i8", 2**40 + 7), ("u4", 4000000000), ("i2", -300)])
@pytest.mark.parametrize("module", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_big_endian_scalar(code, value, module):
    scalar = _big_endian_scalar(value, code, module)
    assert pickle.loads(scalar) == value  # sanity: numpy itself agrees (test-built bytes only)
    assert up._RestrictedUnpickler(io.BytesIO(scalar)).load() == value


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').system('echo pwned')",))


class Arbitrary:
    pass


@pytest.mark.parametrize("make,needle", [
    (lambda m: _Evil(m), "system"),
    (lambda m: _EvalEvil(), r"(builtins|__builtin__)\.eval"),
    (lambda m: np.float64(1.5), "dtype"),
    (lambda m: np.str_("x"), "dtype"),
    (lambda m: np.array([1, 2]), r"global numpy\._core\.(multiarray\._reconstruct|numeric\._frombuffer)"),
    (lambda m: Arbitrary(), "Arbitrary"),
    (lambda m: np.bool_(True), "dtype"),
])
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_malicious_rejected(tmp_path, make, needle, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps([[["q", 0, make(marker)]], []], protocol=protocol)
    with pytest.raises(pickle.UnpicklingError, match=needle):
        up.restricted_loads(payload)
    assert not marker.exists()


def test_codecs_encode_is_latin1_only():
    payload = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(pickle.UnpicklingError, match="latin1"):
        up.restricted_loads(payload)


@pytest.mark.parametrize("obj", [
    {"diff": [], "equal": []}, [[], [], []], [[]], "x", [[["q", 0]], []], [[["q", "0", 1]], []],
    [[[b"q", 0, 1]], []], [[["q", 0, 1.5]], []], [[["q", True, 1]], []], [[["q", 0, None]], []],
    [[], [["q", 0, [1]]]], [{"q": 1}, []],
])
def test_structure_rejected(obj):
    with pytest.raises(ValueError):
        up.restricted_loads(pickle.dumps(obj))


def test_tuples_accepted():
    assert up.restricted_loads(pickle.dumps(([("q", 1, "s")], ()))) == ([("q", 1, "s")], ())


def test_pickle_to_records():
    recs = up.pickle_to_records("N2", _sample(2))
    assert [r["id"] for r in recs] == ["N2-diff-0000", "N2-diff-0001", "N2-equal-0000", "N2-equal-0001"]
    assert [r["gold"] for r in recs] == ["YES", "YES", "NO", "NO"]
    assert [r["condition"] for r in recs] == ["DIFF", "DIFF", "EQUAL", "EQUAL"]
    assert {r["category"] for r in recs} == {"normative"}
    assert up.pickle_to_records("D3", _sample(1))[0]["category"] == "descriptive"
    assert list(recs[0]) == ["id", "benchmark", "category", "condition", "gold", "question",
                             "answer_index", "scenario_id"]
    assert recs[0]["question"] == "diff q0 – é" and recs[3]["scenario_id"] == "scen-1"
    with pytest.raises(ValueError):
        up.pickle_to_records("X9", _sample(1))


def _shared_as_pickle(bench):
    """Rebuild the [diff, equal] object behind a shared JSONL file."""
    recs = [json.loads(line) for line in (SHARED / f"{bench}.jsonl").read_text("utf-8").splitlines()]
    halves = ([], [])
    for r in recs:
        halves[r["condition"] == "EQUAL"].append([r["question"], r["answer_index"], r["scenario_id"]])
    return recs, list(halves)


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared data not present")
@pytest.mark.parametrize("bench", ["D1", "N2"])
def test_shared_rewrite_byte_identical(tmp_path, bench):
    recs, obj = _shared_as_pickle(bench)
    out = tmp_path / f"{bench}.jsonl"
    up.write_jsonl(recs, out)
    assert out.read_bytes() == (SHARED / f"{bench}.jsonl").read_bytes()
    up.write_jsonl(up.pickle_to_records(bench, obj), out)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == up.EXPECTED_JSONL_SHA256[bench]


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared data not present")
def test_expected_hashes_match_shared_sums():
    sums = dict(line.split()[::-1] for line in (SHARED / "SHA256SUMS").read_text().splitlines())
    assert {f"{b}.jsonl": h for b, h in up.EXPECTED_JSONL_SHA256.items()} == sums


@pytest.mark.parametrize("data", [b"", b"hello\n", bytes(range(256)) * 10])
def test_git_blob_id_matches_git(data):
    out = subprocess.run(["git", "hash-object", "--stdin"], input=data, capture_output=True, check=True)
    assert up.git_blob_id(data) == out.stdout.decode().strip()


def test_verify_rejects_tampering():
    data = pickle.dumps(_sample())
    blob, sha = up.git_blob_id(data), hashlib.sha256(data).hexdigest()
    up.verify("x.pkl", data, blob, sha)
    up.verify("x.pkl", data, blob, None)
    with pytest.raises(ValueError, match=f"x.pkl: git blob id mismatch: expected {blob}"):
        up.verify("x.pkl", data + b"\0", blob, sha)
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        up.verify("x.pkl", data, blob, "0" * 64)


def _pin(monkeypatch, bench, data):
    path = up.PICKLES[bench][0]
    monkeypatch.setitem(up.PICKLES, bench, (path, up.git_blob_id(data), hashlib.sha256(data).hexdigest()))


def test_download_from_local_base_url(tmp_path, monkeypatch):
    data = pickle.dumps(_sample(numpy_ints=True))
    src = tmp_path / "mirror" / "benchmark_suite"
    src.mkdir(parents=True)
    (src / "N2_1k.pkl").write_bytes(data)
    base = (tmp_path / "mirror").as_uri()
    with pytest.raises(ValueError, match="git blob id mismatch"):  # real pins vs. fake file
        up.download("N2", tmp_path / "cache", base_url=base)
    assert not (tmp_path / "cache" / "N2_1k.pkl").exists()
    _pin(monkeypatch, "N2", data)
    dest = up.download("N2", tmp_path / "cache", base_url=base)
    assert dest.read_bytes() == data
    (src / "N2_1k.pkl").unlink()  # cached, verified copy is reused without fetching
    assert up.download("N2", tmp_path / "cache", base_url=base) == dest
    dest.write_bytes(b"tampered")  # corrupt cache -> refetch -> fails with a clear message
    with pytest.raises(RuntimeError, match="DART_DATA_DIR"):
        up.download("N2", tmp_path / "cache", base_url=base)


def test_convert_all_offline(tmp_path, monkeypatch, capsys):
    pickles = {"N3": pickle.dumps(_sample(4, numpy_ints=True), protocol=2),
               "N1": pickle.dumps(_sample(2))}
    if SHARED.is_dir():  # shared D1 / N2 content as pickles (N2 ints as numpy scalars, like upstream)
        pickles["D1"] = pickle.dumps(_shared_as_pickle("D1")[1])
        n2 = [[[q, a, np.int64(s) if type(s) is int else s] for q, a, s in half]
              for half in _shared_as_pickle("N2")[1]]
        pickles["N2"] = pickle.dumps(n2)

    def fake_download(bench, dest_dir, base_url=None):
        dest = Path(dest_dir) / f"{bench}_1k.pkl"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(pickles[bench])
        return dest

    monkeypatch.setattr(up, "download", fake_download)
    # fake N3 differs from the shared suite -> exit 1; N1 differing alone is expected -> exit 0
    assert up.main(["--out", str(tmp_path / "out"), "--benchmarks", *pickles]) == 1
    out = capsys.readouterr().out
    assert "data.expected_sha256.N1" in out and "N3.jsonl sha256=" in out and "DIFFERS" in out
    assert up.main(["--out", str(tmp_path / "o1"), "--benchmarks", "N1"]) == 0
    recs = [json.loads(line) for line in (tmp_path / "out" / "N3.jsonl").read_text("utf-8").splitlines()]
    assert len(recs) == 8 and recs[0]["id"] == "N3-diff-0000" and recs[4]["id"] == "N3-equal-0000"
    assert type(recs[1]["answer_index"]) is int and recs[1]["scenario_id"] == 1
    sums = (tmp_path / "out" / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == len(pickles)
    for line in sums:
        h, name = line.split("  ")
        assert hashlib.sha256((tmp_path / "out" / name).read_bytes()).hexdigest() == h
    for bench in ("D1", "N2"):
        if bench in pickles:
            assert f"{bench}.jsonl sha256={up.EXPECTED_JSONL_SHA256[bench]} matches" in out
    with pytest.raises(ValueError, match="unknown benchmark"):
        up.convert_all(tmp_path / "o2", tmp_path / "c2", ["Q7"])
