"""Real tokenizer vocabularies (no weights), taken from the ``llama-cpp-python`` source archive.

The archive ships ``vendor/llama.cpp/models/ggml-vocab-*.gguf``: GGUF files holding only a tokenizer.
``fetch_vocab(name)`` downloads the archive once (pip, no dependencies, sha256-checked), keeps the few
vocabulary files it needs under ``CACHE/sources``, and converts one into a transformers tokenizer folder
``CACHE/vocabs/NAME`` (fast to load afterwards). Idempotent, atomic and safe to run concurrently.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path, PurePosixPath

from services.modelstore.cache import (
    file_lock,
    files_intact,
    list_files,
    publish,
    read_manifest,
    remove_orphans,
    resolve_cache_dir,
    sha256_file,
    staging_dir,
    write_manifest,
)
from services.modelstore.errors import ChecksumMismatchError, ModelStoreError, UnknownModelError
from services.modelstore.pip_download import pip_download

SOURCE_REQUIREMENT = "llama-cpp-python==0.3.36"
SOURCE_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
SOURCE_MEMBER_DIR = "vendor/llama.cpp/models"
SOURCES_SUBDIR = "sources/llama-cpp-python-0.3.36-vocabs"
VOCABS_SUBDIR = "vocabs"
FORMAT_VERSION = 1

# vocabulary name -> GGUF file in the archive
VOCAB_FILES: dict[str, str] = {
    "gpt2": "ggml-vocab-gpt-2.gguf",
    "llama-spm": "ggml-vocab-llama-spm.gguf",
    "llama-bpe": "ggml-vocab-llama-bpe.gguf",
    "qwen2": "ggml-vocab-qwen2.gguf",
    "starcoder": "ggml-vocab-starcoder.gguf",
    "phi-3": "ggml-vocab-phi-3.gguf",
    "deepseek-coder": "ggml-vocab-deepseek-coder.gguf",
}

# vocabulary name -> len(tokenizer) after conversion (checked before a folder is published)
VOCAB_LENGTHS: dict[str, int] = {
    "gpt2": 50257,
    "llama-spm": 32000,
    "llama-bpe": 128257,
    "qwen2": 151936,
    "starcoder": 49152,
    "phi-3": 32064,
    "deepseek-coder": 32259,
}


def vocab_names() -> tuple[str, ...]:
    """The names ``fetch_vocab`` accepts."""
    return tuple(VOCAB_FILES)


def vocab_dir(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The tokenizer folder of vocabulary ``name`` (whether or not fetched yet)."""
    return resolve_cache_dir(cache_dir) / VOCABS_SUBDIR / name


def _is_ready(folder: Path, name: str | None) -> bool:
    manifest = read_manifest(folder)
    return bool(
        manifest is not None
        and manifest.get("format_version") == FORMAT_VERSION
        and manifest.get("source_sha256") == SOURCE_SHA256
        and (name is None or manifest.get("name") == name)
        and files_intact(folder, manifest.get("files"))
    )


def fetch_vocab(name: str, cache_dir: str | os.PathLike[str] | None = None, progress: bool = True) -> Path:
    """The transformers tokenizer folder of vocabulary ``name``; downloads and converts it when missing."""
    if name not in VOCAB_FILES:
        raise UnknownModelError("vocab", name, vocab_names())
    root = resolve_cache_dir(cache_dir)
    target = root / VOCABS_SUBDIR / name
    if _is_ready(target, name):
        return target
    with file_lock(root / VOCABS_SUBDIR / f".{name}.lock"):
        if _is_ready(target, name):
            return target
        remove_orphans(target)
        gguf_path = fetch_vocab_sources(root, progress) / VOCAB_FILES[name]
        with staging_dir(target) as staging:
            length = _convert_tokenizer(gguf_path, staging)
            if length != VOCAB_LENGTHS[name]:
                raise ModelStoreError(f"vocab {name}: expected {VOCAB_LENGTHS[name]} tokens, got {length}")
            manifest = {
                "format_version": FORMAT_VERSION,
                "name": name,
                "gguf_file": gguf_path.name,
                "gguf_sha256": sha256_file(gguf_path),
                "source": SOURCE_REQUIREMENT,
                "source_sha256": SOURCE_SHA256,
                "tokenizer_len": length,
                "files": list_files(staging),
            }
            write_manifest(staging, manifest)
            publish(staging, target)
    return target


def _convert_tokenizer(gguf_path: Path, out_dir: Path) -> int:
    """Load the tokenizer of a GGUF file and save it as a transformers folder; returns its length."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, local_files_only=True
    )
    tokenizer.save_pretrained(out_dir)
    return len(tokenizer)


def fetch_vocab_sources(cache_dir: Path, progress: bool = True) -> Path:
    """The folder of every ``VOCAB_FILES`` GGUF, extracted from the verified source archive (once)."""
    target = cache_dir / SOURCES_SUBDIR
    if _is_ready(target, None):
        return target
    with file_lock(target.parent / f".{target.name}.lock"):
        if _is_ready(target, None):
            return target
        remove_orphans(target)
        with staging_dir(target) as staging:
            archive = _download_source(staging / ".sdist", progress)
            _extract_vocab_files(archive, staging)
            archive.unlink()
            archive.parent.rmdir()
            manifest = {
                "format_version": FORMAT_VERSION,
                "source": SOURCE_REQUIREMENT,
                "source_sha256": SOURCE_SHA256,
                "files": list_files(staging),
            }
            write_manifest(staging, manifest)
            publish(staging, target)
    return target


def _download_source(dest: Path, progress: bool) -> Path:
    files = pip_download([SOURCE_REQUIREMENT], dest, source=True, progress=progress, label="source archive")
    archives = [path for path in files if path.name.endswith(".tar.gz")]
    if len(archives) != 1:
        raise ModelStoreError(f"pip did not produce one source archive for {SOURCE_REQUIREMENT}: {files}")
    actual = sha256_file(archives[0])
    if actual != SOURCE_SHA256:
        archives[0].unlink()
        raise ChecksumMismatchError(SOURCE_REQUIREMENT, SOURCE_SHA256, actual)
    return archives[0]


def _extract_vocab_files(archive: Path, dest: Path) -> None:
    """Copy the wanted ``ggml-vocab-*.gguf`` members (by base name only) out of the source archive."""
    wanted = set(VOCAB_FILES.values())
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            path = PurePosixPath(member.name)
            if (
                not member.isfile()
                or path.name not in wanted
                or not str(path.parent).endswith(SOURCE_MEMBER_DIR)
            ):
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            with handle:
                (dest / path.name).write_bytes(handle.read())
    missing = sorted(wanted - {path.name for path in dest.iterdir()})
    if missing:
        raise ModelStoreError(f"{SOURCE_REQUIREMENT} source archive lacks {', '.join(missing)}")
