"""Content keys must change when any input changes (they decide whether an artifact is reused)."""
from pathlib import Path

import datasets
import numpy as np
import pytest

from dart_utils.core.hashing import content_key


def test_dataset_column_is_hashed_in_full():
    ids = [f"id-{i}" for i in range(20)]
    col = datasets.Dataset.from_dict({"id": ids})["id"]
    changed = datasets.Dataset.from_dict({"id": ids[:-1] + ["other"]})["id"]
    assert content_key(col) == content_key(ids)            # a lazy Column hashes as its values
    assert content_key(col) != content_key(changed)         # a change after the 5th item changes the key


def test_paths_arrays_and_sets():
    assert content_key(Path("a/b")) == content_key("a/b")
    assert content_key(np.array([1, 2])) == content_key([1, 2])
    assert content_key({"b", "a"}) == content_key(["a", "b"])


def test_unknown_objects_are_refused():
    with pytest.raises(TypeError, match="cannot hash"):
        content_key(object())
