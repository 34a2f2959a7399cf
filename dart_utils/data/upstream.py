"""Rebuild the difference-awareness JSONL suite from Wang et al.'s pickles at a pinned commit.

`make data` path for users without /work/shared: download each pickle from GitHub, check it
against the git blob id / SHA-256 recorded in SOURCE.md, unpickle it with an allow-list
unpickler (pickle runs code, so plain pickle.load is never used on downloaded bytes), and
write the same JSONL records, byte for byte, as the shared suite.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pickle
import re
import sys
import urllib.request
from pathlib import Path

UPSTREAM_REPO = "Angelina-Wang/difference_awareness"
UPSTREAM_COMMIT = "2349531cafee07ea58a3e7e95827e8ad5f1a1a91"
# benchmark -> (path in repo, git blob id, sha256 or None); from SOURCE.md.
PICKLES = {
    "D1": ("benchmark_suite/D1_1k.pkl", "d16720a40b67b74d06d52fe05b084179eafd93c1",
           "465f85a31d54093cb8562c72e3a3ace4180c1b21ed7ad6ba9eadf53cd07f4a73"),
    "D2": ("benchmark_suite/D2_1k.pkl", "186984d91b753c82679907cc83fe6bbda4dd2993",
           "2ab788d3def87a24d5e117720bcbf0165644fcc4b6a604a05ddbd1b71ab46bb8"),
    "D3": ("benchmark_suite/D3_1k.pkl", "dddaf81d7df61bdb5bfe746f79e4d06aaf9d2f07",
           "47eae8e6b3bc1b4b23647a42e483c5d7f80cd3b49c4170cf3d91e603ea42b44c"),
    "D4": ("benchmark_suite/D4_1k.pkl", "8f630bee0845ae1924e0af390a547f1bb272ab5e",
           "dc588bd902380249dc96ecce71f350fd013adb9ee2d7d5372f445a8041d1d073"),
    "N1": ("benchmark_suite/N1_1k.pkl", "dd9ea776294795db39495f8e0fefe8df106c8cfc", None),
    "N2": ("benchmark_suite/N2_1k.pkl", "4189eb3b43a14075a2d8c1c093883b1800aca6bc",
           "556056bb77d0710758b8790cbaa012f18e8cf072c88b0f5eecba90473f9885d9"),
    "N3": ("benchmark_suite/N3_1k.pkl", "2aab78462e8885bef4db377b44e29b24edb5564b",
           "abfbdc3cec76a35e1c015a3b57f68ddbfac7c527f4be816ee439a217d90786c1"),
    "N4": ("benchmark_suite/N4_1k.pkl", "8b3e39053ab5ea524092cb9b1c4d2dbbe7a067ca",
           "f16a932b5ea96fa75a91b64f4167980f960802bda8ee30fe233187c5f2e8828d"),
}
# SHA-256 of the shared suite's JSONL files (SOURCE.md table). N1 there is a regenerated draw.
EXPECTED_JSONL_SHA256 = {
    "D1": "711312474e0e122206a992f429a422291989561f082efff3819adda1a042e760",
    "D2": "b238129a1a7b23b07480db218315724c4b8aed54bca50f9b39a00a2fcff5d015",
    "D3": "c2742544f8fdd9c5bcb852799e565b1dd2bd98fcb073ad7057bbe398f305a121",
    "D4": "d8fcb3d060577810931411b5dead170ca914549e241674b6661bda98a097f9b2",
    "N1": "62e1c077e480f8f40caaaf596846a9825f9fc48900517119b57f9d3d6c1c9b46",
    "N2": "97d3d082d26abdd3286fa4d0b713850034b3548c0aa39da022c6c9eb63875452",
    "N3": "2ec747ae0e4172a668b66792907a0b0dae96db8333b3897d980ba3734b2718f7",
    "N4": "cccbb03bace34f387c065ac8d83d6cdfce993ad9e788a99627162b3994467a92",
}
N1_NOTE = ("N1 is expected to differ: the shared N1.jsonl is a regenerated BBQ draw (the original "
           "N1_1k.pkl was unavailable; see SOURCE.md). If you use the original N1, override its "
           "expected hash with the parameter data.expected_sha256.N1 = <sha256 printed above>.")


def git_blob_id(data: bytes) -> str:
    """Git's object id for a file, so every pickle (N1 has no SHA-256) can be checked."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def verify(name: str, data: bytes, blob_id: str, sha256: str | None = None) -> None:
    """Raise ValueError unless `data` has the pinned git blob id (and SHA-256, if known)."""
    got = git_blob_id(data)
    if got != blob_id:
        raise ValueError(f"{name}: git blob id mismatch: expected {blob_id}, got {got}")
    if sha256 is not None and (got := hashlib.sha256(data).hexdigest()) != sha256:
        raise ValueError(f"{name}: SHA-256 mismatch: expected {sha256}, got {got}")


class _DTypeStub:
    """Inert stand-in for numpy.dtype; only integer codes ('i8', '<i8', 'u4', ...) are accepted."""
    code = kind = itemsize = byteorder = None

    def __init__(self, code, align=False, copy=False):
        m = re.fullmatch(r"([<>|=]?)([iu])([1248])", code) if isinstance(code, str) else None
        if not m:
            raise pickle.UnpicklingError(f"numpy dtype {code!r} refused: only integer scalars allowed")
        self.code, self.byteorder, self.kind, self.itemsize = code, m[1] or "=", m[2], int(m[3])

    def __setstate__(self, state):  # numpy state: (version, byteorder, ...)
        if not (isinstance(state, tuple) and len(state) >= 2 and state[1] in ("<", ">", "|", "=")):
            raise pickle.UnpicklingError(f"unexpected numpy dtype state {state!r}")
        self.byteorder = state[1]


def _int_scalar(dtype, data):
    """Replacement for numpy's scalar(): raw integer bytes -> plain Python int."""
    if not (isinstance(dtype, _DTypeStub) and dtype.kind in ("i", "u") and isinstance(data, bytes)
            and len(data) == dtype.itemsize):
        raise pickle.UnpicklingError("numpy scalar refused: only integer dtypes with raw bytes allowed")
    order = {"<": "little", ">": "big"}.get(dtype.byteorder, sys.byteorder)
    return int.from_bytes(data, order, signed=dtype.kind == "i")


def _latin1_encode(text, encoding="utf-8"):
    """Protocol-2 pickles store bytes as _codecs.encode(str, 'latin1'); allow only that."""
    if not (isinstance(text, str) and encoding in ("latin1", "latin-1")):
        raise pickle.UnpicklingError("_codecs.encode refused: only (str, 'latin1') allowed")
    return text.encode("latin1")


_ALLOWED = {("numpy.core.multiarray", "scalar"): _int_scalar,
            ("numpy._core.multiarray", "scalar"): _int_scalar,
            ("numpy", "dtype"): _DTypeStub,
            ("_codecs", "encode"): _latin1_encode}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves no real global: only the inert stand-ins in _ALLOWED."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from benchmark pickle")


def _validate(obj) -> None:
    """Require [diff, equal], each a list of [question: str, answer_choice: int, scenario_id: int|str]."""
    if not (isinstance(obj, (list, tuple)) and len(obj) == 2):
        raise ValueError(f"benchmark pickle must be [diff, equal], got {type(obj).__name__}")
    for half, items in zip(("diff", "equal"), obj):
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"{half} half must be a list, got {type(items).__name__}")
        for i, item in enumerate(items):
            ok = isinstance(item, (list, tuple)) and len(item) == 3
            if not (ok and isinstance(item[0], str) and type(item[1]) is int
                    and type(item[2]) in (int, str)):
                raise ValueError(f"{half}[{i}] must be [str, int, int|str], got {item!r:.200}")


def restricted_loads(data: bytes):
    """Unpickle a benchmark file without executing anything, then check its structure."""
    obj = _RestrictedUnpickler(io.BytesIO(data)).load()
    _validate(obj)
    return obj


def pickle_to_records(benchmark: str, obj) -> list[dict]:
    """[diff, equal] -> JSONL records (schema and order of SOURCE.md): DIFF first, pickle order."""
    if benchmark not in PICKLES:
        raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {sorted(PICKLES)}")
    _validate(obj)
    category = "descriptive" if benchmark.startswith("D") else "normative"
    records = []
    for half, condition, gold, items in (("diff", "DIFF", "YES", obj[0]), ("equal", "EQUAL", "NO", obj[1])):
        for i, (question, answer, scenario) in enumerate(items):
            records.append({"id": f"{benchmark}-{half}-{i:04d}", "benchmark": benchmark,
                            "category": category, "condition": condition, "gold": gold,
                            "question": question, "answer_index": answer, "scenario_id": scenario})
    return records


def write_jsonl(records, path) -> None:
    """Same bytes as the shared suite: ensure_ascii=False, UTF-8, '\\n' line endings."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def download(benchmark: str, dest_dir, base_url: str | None = None, timeout: float = 60) -> Path:
    """Fetch one pickle at the pinned commit into dest_dir (reused if it already verifies)."""
    path, blob_id, sha256 = PICKLES[benchmark]
    dest = Path(dest_dir) / Path(path).name
    if dest.exists():
        try:
            verify(str(dest), dest.read_bytes(), blob_id, sha256)
            return dest
        except ValueError:
            pass  # stale or corrupt cache: fetch again
    base = base_url or f"https://raw.githubusercontent.com/{UPSTREAM_REPO}/{UPSTREAM_COMMIT}"
    url = f"{base.rstrip('/')}/{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data = resp.read()
    except OSError as e:  # URLError, HTTPError and timeouts are all OSErrors
        raise RuntimeError(
            f"could not download {url}: {e}\nBuilding the data from upstream needs network access "
            "to raw.githubusercontent.com. If you already have the JSONL suite, skip this step and "
            "point the project at it: export DART_DATA_DIR=/path/to/difference_awareness") from e
    verify(url, data, blob_id, sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, dest)
    return dest


def convert_all(out_dir, cache_dir, benchmarks=tuple(PICKLES), base_url=None) -> dict[str, str]:
    """Download, verify and convert each benchmark; write <B>.jsonl + SHA256SUMS. Returns sha256s."""
    unknown = [b for b in benchmarks if b not in PICKLES]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; expected some of {sorted(PICKLES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        from tqdm import tqdm
        benchmarks = tqdm(benchmarks, desc="benchmarks")
    except ImportError:
        pass
    sums = {}
    for b in benchmarks:
        obj = restricted_loads(download(b, cache_dir, base_url).read_bytes())
        out = out_dir / f"{b}.jsonl"
        write_jsonl(pickle_to_records(b, obj), out)
        sums[b] = hashlib.sha256(out.read_bytes()).hexdigest()
    (out_dir / "SHA256SUMS").write_text("".join(f"{h}  {b}.jsonl\n" for b, h in sums.items()))
    return sums


def main(argv=None) -> int:
    """CLI: python -m dart_utils.upstream --out DIR [--cache DIR] [--benchmarks D1 N2 ...]."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="directory for <B>.jsonl and SHA256SUMS")
    ap.add_argument("--cache", help="directory for downloaded pickles (default: OUT/upstream_pickles)")
    ap.add_argument("--benchmarks", nargs="+", default=list(PICKLES), choices=list(PICKLES))
    args = ap.parse_args(argv)
    try:
        sums = convert_all(args.out, args.cache or Path(args.out) / "upstream_pickles", args.benchmarks)
    except (RuntimeError, ValueError, pickle.UnpicklingError) as e:  # no traceback for known failures
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    bad = []
    for b, h in sums.items():
        ok = h == EXPECTED_JSONL_SHA256[b]
        print(f"{b}.jsonl sha256={h} {'matches' if ok else 'DIFFERS from'} the shared suite")
        if not ok and b != "N1":
            bad.append(b)
    if "N1" in sums:
        print(N1_NOTE)
    if bad:
        print(f"ERROR: unexpected content for {bad}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
