"""Tiny randomly initialised causal LMs on real tokenizers: cheap drafters and targets for tests.

Weights are drawn from a ``torch.Generator`` seeded by the caller, so a (tokenizer, shape, seed) triple
always gives the same model. The output head is untied and scaled so that next-token distributions are
peaked (logit standard deviation ``logit_std``) and differ from seed to seed: such a drafter disagrees
with any other model, which exercises every rejection path. The folder holds the weights, the tokenizer
and ``tiny.json`` (the build recipe); building is idempotent and publishes the folder atomically.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from core.errors import InvalidArgumentError
from services.modelstore.cache import file_lock, publish, remove_orphans, staging_dir

TinyArch = Literal["llama", "qwen2", "gpt_bigcode"]
TINY_ARCHS: tuple[TinyArch, ...] = ("llama", "qwen2", "gpt_bigcode")
RECIPE_NAME = "tiny.json"
RECIPE_VERSION = 2


@dataclass(frozen=True)
class TinyRecipe:
    """Everything that determines a tiny model's weights."""

    arch: TinyArch
    seed: int
    vocab_size: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    max_positions: int
    init_std: float
    logit_std: float
    tokenizer_len: int
    version: int = RECIPE_VERSION


def _check_shape(recipe: TinyRecipe) -> None:
    if recipe.arch not in TINY_ARCHS:
        raise InvalidArgumentError("arch", f"must be one of {', '.join(TINY_ARCHS)}, got {recipe.arch!r}")
    if recipe.vocab_size < recipe.tokenizer_len:
        raise InvalidArgumentError(
            "vocab_size", f"must be >= the tokenizer's {recipe.tokenizer_len} tokens, got {recipe.vocab_size}"
        )
    for field in ("hidden", "layers", "heads", "kv_heads", "intermediate", "max_positions"):
        if getattr(recipe, field) < 1:
            raise InvalidArgumentError(field, f"must be >= 1, got {getattr(recipe, field)}")
    if recipe.hidden % recipe.heads or recipe.heads % recipe.kv_heads:
        raise InvalidArgumentError(
            "heads", f"hidden ({recipe.hidden}) % heads ({recipe.heads}) and heads % kv_heads must be 0"
        )
    if recipe.init_std <= 0:
        raise InvalidArgumentError("init_std", f"must be > 0, got {recipe.init_std}")
    if recipe.logit_std <= 0:
        raise InvalidArgumentError("logit_std", f"must be > 0, got {recipe.logit_std}")


def _special_ids(tokenizer: Any) -> dict[str, Any]:
    eos = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id
    pad = tokenizer.pad_token_id
    return {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": eos if pad is None else pad}


def make_config(recipe: TinyRecipe, tokenizer: Any) -> Any:
    """The transformers config of a tiny model (untied output head)."""
    from transformers import GPTBigCodeConfig, LlamaConfig, Qwen2Config

    special = _special_ids(tokenizer)
    if recipe.arch == "gpt_bigcode":
        return GPTBigCodeConfig(
            vocab_size=recipe.vocab_size,
            n_embd=recipe.hidden,
            n_layer=recipe.layers,
            n_head=recipe.heads,
            n_inner=recipe.intermediate,
            n_positions=recipe.max_positions,
            multi_query=recipe.kv_heads == 1,
            tie_word_embeddings=False,
            **special,
        )
    config_class = LlamaConfig if recipe.arch == "llama" else Qwen2Config
    return config_class(
        vocab_size=recipe.vocab_size,
        hidden_size=recipe.hidden,
        num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.heads,
        num_key_value_heads=recipe.kv_heads,
        intermediate_size=recipe.intermediate,
        max_position_embeddings=recipe.max_positions,
        tie_word_embeddings=False,
        **special,
    )


def init_weights(model: Any, seed: int, init_std: float, head_std: float) -> None:
    """Redraw every parameter from a generator seeded with ``seed``, in parameter-name order.

    The output head ~ N(0, head_std^2); other matrices ~ N(0, init_std^2); biases 0; other vectors
    (norm scales) 1.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
            if name == "lm_head.weight":
                param.normal_(0.0, head_std, generator=generator)
            elif param.dim() >= 2:
                param.normal_(0.0, init_std, generator=generator)
            elif name.endswith("bias"):
                param.zero_()
            else:
                param.fill_(1.0)


def _recipe_matches(folder: Path, recipe: TinyRecipe) -> bool:
    try:
        saved = json.loads((folder / RECIPE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(saved.get("recipe") == asdict(recipe) and (folder / "config.json").is_file())


def build_tiny_model(
    tokenizer_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    arch: TinyArch = "llama",
    *,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int | None = None,
    max_positions: int = 4096,
    vocab_size: int | None = None,
    init_std: float = 0.02,
    logit_std: float = 4.0,
) -> Path:
    """Build (or reuse) a tiny random ``arch`` model on the tokenizer in ``tokenizer_dir`` into ``out_dir``.

    ``vocab_size`` defaults to ``len(tokenizer)``; a larger value pads the embedding like real checkpoints.
    ``intermediate`` defaults to ``4 * hidden``. Hidden states leave the final norm with unit scale, so
    the head's weights get standard deviation ``logit_std / sqrt(hidden)``. GPTBigCode uses multi-query
    attention when ``kv_heads == 1`` (otherwise multi-head, with ``kv_heads`` ignored).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    recipe = TinyRecipe(
        arch=arch,
        seed=seed,
        vocab_size=len(tokenizer) if vocab_size is None else vocab_size,
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        intermediate=4 * hidden if intermediate is None else intermediate,
        max_positions=max_positions,
        init_std=init_std,
        logit_std=logit_std,
        tokenizer_len=len(tokenizer),
    )
    _check_shape(recipe)
    target = Path(out_dir).expanduser()
    if _recipe_matches(target, recipe):
        return target
    with file_lock(target.parent / f".{target.name}.lock"):
        if not _recipe_matches(target, recipe):
            remove_orphans(target)
            with staging_dir(target) as staging:
                _save_tiny(recipe, tokenizer, Path(tokenizer_dir), staging)
                publish(staging, target)
    return target


def _save_tiny(recipe: TinyRecipe, tokenizer: Any, tokenizer_dir: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    config = make_config(recipe, tokenizer)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    init_weights(model, recipe.seed, recipe.init_std, recipe.logit_std / math.sqrt(recipe.hidden))
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    recipe_doc = {"recipe": asdict(recipe), "tokenizer_source": str(tokenizer_dir)}
    (out_dir / RECIPE_NAME).write_text(
        json.dumps(recipe_doc, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
