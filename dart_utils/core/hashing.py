"""Content hashes: how stages, caches and stamps know whether their inputs changed."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _jsonable(obj: Any) -> Any:
    """Paths as strings; sequences that JSON does not know (a `datasets` Column, numpy arrays, tuples of them) as
    lists of their values. Anything else is an error: str() of a lazy column is a truncated preview
    ("Column(['a', 'b', ...])"), and a key built from it would miss changes beyond the first items."""
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    if hasattr(obj, "__iter__") and not isinstance(obj, (str, bytes, dict)):
        return list(obj)
    raise TypeError(f"content_key: cannot hash a {type(obj).__name__} faithfully; pass plain values")


def content_key(*parts: Any) -> str:
    """A short hash of anything JSON-able (parameters, ids, file hashes): the identity of an artifact's inputs."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=_jsonable).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def dir_hash(path: Path | None, pattern: str = "*") -> str | None:
    """Hash of the files under a directory matching pattern (e.g. a saved adapter), names included."""
    if path is None:
        return None
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob(pattern) if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()[:24]
