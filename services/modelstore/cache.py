"""The cache folder: where it is, exclusive locks, atomic publication of built folders, checksums."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

CACHE_DIR_ENV = "POLYSPEC_CACHE_DIR"
MANIFEST_NAME = "manifest.json"
HASH_BLOCK_BYTES = 1 << 20


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$POLYSPEC_CACHE_DIR`` when set (and not empty), else ``~/.cache/polyspec``."""
    env = os.environ if environ is None else environ
    configured = env.get(CACHE_DIR_ENV, "")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "polyspec"


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    """The given cache folder (user-expanded), or the default one."""
    return default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block; waits for other holders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """A fresh hidden folder beside ``target`` (same file system: a rename publishes it); removed on exit."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_orphans(target: Path) -> None:
    """Delete staging / stale folders of ``target`` left by a builder that died; call holding its lock."""
    if not target.parent.is_dir():
        return
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.stale-*"):
        for orphan in target.parent.glob(pattern):
            shutil.rmtree(orphan, ignore_errors=True)


def publish(staging: Path, target: Path) -> None:
    """Move ``staging`` to ``target`` by rename; a stale ``target`` is moved aside first and then deleted."""
    _make_readable(staging)
    stale: Path | None = None
    if target.exists():
        stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.stale-", dir=target.parent))
        os.replace(target, stale / target.name)
    os.replace(staging, target)
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)


def _make_readable(folder: Path) -> None:
    """Folders 0755 and files 0644 (temporary folders and some writers default to owner-only)."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def folder_size(folder: Path) -> int:
    """Bytes of all regular files under ``folder`` (0 when it does not exist)."""
    if not folder.is_dir():
        return 0
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The JSON object in ``folder/manifest.json``, or None when missing or unreadable."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    """Write ``folder/manifest.json`` (sorted keys, indented)."""
    text = json.dumps(dict(manifest), indent=2, sort_keys=True) + "\n"
    (folder / MANIFEST_NAME).write_text(text, encoding="utf-8")


def list_files(folder: Path) -> dict[str, int]:
    """Relative POSIX path -> size of every regular file under ``folder``, sorted by path."""
    return {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def files_intact(folder: Path, files: object) -> bool:
    """Whether ``files`` (a ``list_files`` mapping from a manifest) still matches what is in ``folder``."""
    if not isinstance(files, dict) or not files:
        return False
    for relative, size in files.items():
        path = folder / str(relative)
        if not path.is_file() or path.stat().st_size != size:
            return False
    return True
