"""Numbers the documentation states about the profiles match the profiles."""
import re
from pathlib import Path

from dart_utils.core.params import load

ROOT = Path(__file__).resolve().parents[1]


def test_docs_splits_states_the_profiles_sizes():
    text = " ".join((ROOT / "docs" / "splits.md").read_text().split())
    for profile in ("cpu", "ci"):
        sp = load(profile).splits
        per = (sp.train_per_stratum, sp.val_per_stratum, sp.test_per_stratum)
        total = tuple(16 * n for n in per)
        stated = f"`{profile}` uses " if profile == "cpu" else f"`{profile}` "
        assert re.search(re.escape(stated + " / ".join(map(str, per))) + r"(?: per stratum)? \(" +
                         re.escape(" / ".join(map(str, total))) + r"\)", text), (profile, per, total)
