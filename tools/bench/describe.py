"""The machine and the models a bench run used (for the JSON document)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
from pathlib import Path
from typing import Any


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_machine(threads: int | None) -> dict[str, Any]:
    """CPU count, torch threads, library versions (scikit-learn changes transformers' assisted generation)."""
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads() if threads is None else threads,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "polyspec": _version("polyspec"),
        "scikit_learn_importable": importlib.util.find_spec("sklearn") is not None,
        "dtype": "float32",
        "device": "cpu",
    }


def describe_model(requested: str, folder: Path) -> dict[str, Any]:
    """Name, folder and sha256: the GGUF sha256 of a model-store manifest, else of each weights file."""
    from services.modelstore.cache import read_manifest, sha256_file

    manifest = read_manifest(folder)
    description: dict[str, Any] = {"requested": requested, "folder": str(folder)}
    if manifest is not None and manifest.get("gguf_sha256"):
        description.update(
            name=manifest.get("name", folder.name),
            sha256=manifest["gguf_sha256"],
            sha256_of=f"{manifest.get('gguf_file', 'GGUF')} (model-store manifest)",
        )
        return description
    weights = sorted(folder.glob("*.safetensors"))
    description.update(
        name=folder.name,
        sha256={path.name: sha256_file(path) for path in weights},
        sha256_of="weights files (no model-store manifest)",
    )
    return description


def describe_disco_artifact(folder: Path) -> dict[str, Any]:
    """The stop classifier a run served: folder, sha256 of its files, and its spec's kind, threshold,
    regime, pair, validation metrics and trained draft length (``trained_k``: plain ``disco``'s cap; None
    for an artifact that does not record it) (read as JSON: the coordinator checks it at start-up)."""
    import json

    from core.disco.artifact import SPEC_FILE, WEIGHTS_FILE
    from services.modelstore.cache import sha256_file

    spec = json.loads((folder / SPEC_FILE).read_text(encoding="utf-8"))
    kept = ("kind", "threshold", "regime", "pair", "validation")
    return {
        "folder": str(folder),
        "sha256": {name: sha256_file(folder / name) for name in (SPEC_FILE, WEIGHTS_FILE)},
        **{key: spec.get(key) for key in kept},
        "trained_k": training.get("k") if isinstance(training := spec.get("training"), dict) else None,
    }
