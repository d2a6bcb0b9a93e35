"""Small stand-in wheels (real zip archives) and a local downloader, for testing the store without network."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

from services.modelstore.registry import ModelSpec, WheelFile


def wheel_name(distribution: str, version: str) -> str:
    return f"{distribution.replace('-', '_')}-{version}-py3-none-any.whl"


def write_wheel(folder: Path, distribution: str, version: str, members: dict[str, bytes]) -> Path:
    """A wheel-named zip holding ``members``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / wheel_name(distribution, version)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return path


class LocalDownloader:
    """Copies pre-built wheels from a folder instead of asking pip; counts its calls."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, requirements: Sequence[str], dest: Path, progress: bool) -> list[Path]:
        self.calls.append(tuple(requirements))
        dest.mkdir(parents=True, exist_ok=True)
        for requirement in requirements:
            distribution, version = requirement.split("==")
            shutil.copy(self.source / wheel_name(distribution, version), dest)
        return sorted(dest.iterdir())


class RecordingConverter:
    """Stands in for the GGUF converter (a separate component): records the GGUF bytes it was given."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def __call__(self, gguf_path: Path, out_dir: Path, progress: bool) -> dict[str, str]:
        data = gguf_path.read_bytes()
        self.seen.append(data)
        (out_dir / "config.json").write_text('{"model_type": "llama"}\n')
        (out_dir / "model.safetensors").write_bytes(data[::-1])
        return {"dtype": "float32"}


PART_BYTES = (b"GGUF-first-part-" * 100, b"second-part-" * 50, b"third")


def fake_model(folder: Path, sha256: str | None = None) -> ModelSpec:
    """A three-part model over two stand-in wheels (plus a notice), whose wheels are written to ``folder``."""
    write_wheel(folder, "fake-model-part1", "1.0", {"fake_model_part1/data/a.bin": PART_BYTES[0]})
    write_wheel(
        folder,
        "fake-model-part2",
        "1.0",
        {
            "fake_model_part2/data/b.bin": PART_BYTES[1],
            "fake_model_part2/data/c.bin": PART_BYTES[2],
            "fake_model_part2/LICENSE": b"license text",
        },
    )
    joined = b"".join(PART_BYTES)
    return ModelSpec(
        name="fake-model",
        title="Fake",
        architecture="llama",
        license="Apache-2.0",
        gguf_file="fake.gguf",
        gguf_sha256=hashlib.sha256(joined).hexdigest() if sha256 is None else sha256,
        parts=(
            WheelFile("fake-model-part1", "1.0", "fake_model_part1/data/a.bin"),
            WheelFile("fake-model-part2", "1.0", "fake_model_part2/data/b.bin"),
            WheelFile("fake-model-part2", "1.0", "fake_model_part2/data/c.bin"),
        ),
        notices=(WheelFile("fake-model-part2", "1.0", "fake_model_part2/LICENSE"),),
    )
