"""The paper's reported numbers: the one way any module or notebook reaches them.

Why: a number printed beside ours must come from one transcription with its source, never from a constant typed
into a module. `paper_reported.yaml` (next to this file) holds every number the paper states, each section with a
`source` (where in arXiv 2604.16845v1 it is stated); `null` means the paper's text does not state it.

    from dart_utils.core.paper import reported
    reported("audit")["table11"]["severe"]      # 283
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

PAPER = "arXiv 2604.16845v1"
PAPER_FILE = Path(__file__).with_name("paper_reported.yaml")


@lru_cache(maxsize=1)
def _all() -> dict:
    return yaml.safe_load(PAPER_FILE.read_text(encoding="utf-8"))


def reported(section: str) -> dict:
    """One section of paper_reported.yaml (e.g. "table2", "audit", "policy"); a KeyError names the known ones."""
    data = _all()
    if section not in data:
        raise KeyError(f"paper_reported.yaml has no section {section!r}; sections: {', '.join(data)}")
    return data[section]


def sections() -> list[str]:
    return list(_all())
