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


def content_key(*parts: Any) -> str:
    """A short hash of anything JSON-able (parameters, ids, file hashes): the identity of an artifact's inputs."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode()
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
