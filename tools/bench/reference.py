"""The in-process reference: transformers' own ``generate`` on the same pair and prompts (fp32, batch 1).

``ar`` is plain autoregressive decoding of the target; with a drafter of the same vocabulary size the
assisted variants pass it as ``assistant_model`` (transformers' rule for "same tokenizer"), otherwise
they run universal assisted generation with both tokenizers (``uag...``); ``lookup`` is prompt lookup
decoding (``prompt_lookup_num_tokens``, no drafter). The variants (``tools.bench.assistant``) set the
assistant's draft-length and confidence knobs; with scikit-learn installed (the ``bench`` extra)
transformers retunes the assistant's confidence threshold online, its best assisted variant. Each run
records the knobs it ran with and whether the threshold adapted. Only the ``generate`` call
is timed; each configuration gets one untimed warm-up first. Sampling seeds torch's global generator with
``seed + prompt index`` before each call (``generate`` takes no generator).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tools.bench.assistant import (
    ASSISTED_METHODS,
    CROSS_VOCABULARY_PREFIX,
    adapts_threshold,
    configuration_method,
    skip_reason,
    variant_of,
)
from tools.bench.options import BenchOptions, ReferenceMethod
from tools.bench.records import BenchPrompt, Configuration, ConfigurationRun, PromptRecord

WARMUP_TOKENS = 8


@dataclass
class LoadedModel:
    """A causal LM and its tokenizer, in eval mode on the CPU (fp32 unless asked otherwise)."""

    model: Any
    tokenizer: Any
    eos_token_ids: list[int]

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.get_text_config().vocab_size)


def load_model(folder: Path, dtype: str = "float32") -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.model.identity import eos_token_ids

    precision = getattr(torch, dtype)
    model: Any = AutoModelForCausalLM.from_pretrained(str(folder), dtype=precision, local_files_only=True)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    config = model.config.get_text_config()
    eos = eos_token_ids(config, model.generation_config, int(config.vocab_size))
    return LoadedModel(model, tokenizer, list(eos))


def vocabulary_size(folder: Path) -> int:
    """The model's vocabulary size (embedding rows) from its config."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    return int(config.get_text_config().vocab_size)


def reference_configurations(options: BenchOptions, same_vocabulary: bool) -> list[Configuration]:
    """Per temperature, the asked methods: ``ar``, the assisted variants (``uag...`` across
    vocabularies), ``lookup``."""
    return [
        Configuration("transformers", _method_name(method, same_vocabulary), temperature)
        for temperature in options.temperatures
        for method in options.reference_methods
    ]


def _method_name(method: ReferenceMethod, same_vocabulary: bool) -> str:
    assisted: dict[str, str] = {
        name: configuration_method(name, same_vocabulary) for name in ASSISTED_METHODS
    }
    return assisted.get(method, method)


def reference_skip_reason(method: str, *, same_vocabulary: bool, sklearn_importable: bool) -> str | None:
    """Why a transformers configuration's method cannot run as asked here (None: it can)."""
    for assisted in ASSISTED_METHODS:
        if method == configuration_method(assisted, same_vocabulary):
            return skip_reason(
                assisted, same_vocabulary=same_vocabulary, sklearn_importable=sklearn_importable
            )
    return None


def assistant_settings(drafter: LoadedModel, method: str, *, same_vocabulary: bool) -> dict[str, Any]:
    """Sets the variant's knobs on the drafter's generation config; returns what transformers will run
    with (its defaults filled in) and whether it adapts the confidence threshold."""
    import copy

    variant = variant_of(method)
    assert variant is not None
    config = drafter.model.generation_config
    for key, value in variant.settings().items():
        setattr(config, key, value)
    effective = copy.deepcopy(config)
    defaults = getattr(effective, "_get_default_generation_params", None)
    if defaults is not None:  # transformers fills the unset knobs from these (AssistedCandidateGenerator)
        effective.update(**defaults(), defaults_only=True)
    threshold = effective.assistant_confidence_threshold
    return {
        "num_assistant_tokens": effective.num_assistant_tokens,
        "num_assistant_tokens_schedule": effective.num_assistant_tokens_schedule,
        "assistant_confidence_threshold": threshold,
        "adaptive_threshold": adapts_threshold(
            threshold,
            same_vocabulary=same_vocabulary,
            sklearn_importable=importlib.util.find_spec("sklearn") is not None,
        ),
    }


class ForwardCounter:
    """Counts a module's forward calls (the target forwards of one ``generate``)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: object) -> None:
        self.calls += 1


@contextmanager
def counting_forwards(model: Any) -> Iterator[ForwardCounter]:
    counter = ForwardCounter()
    handle = model.register_forward_hook(counter)
    try:
        yield counter
    finally:
        handle.remove()


def run_reference(
    drafter_dir: Path,
    target_dir: Path,
    prompts: Sequence[BenchPrompt],
    options: BenchOptions,
    out: IO[str],
) -> list[ConfigurationRun]:
    """Every transformers configuration on every prompt."""
    import torch

    print("transformers reference: loading the target ...", file=out, flush=True)
    target = load_model(target_dir, options.target_dtype)
    same_vocabulary = vocabulary_size(drafter_dir) == target.vocab_size
    sklearn_importable = importlib.util.find_spec("sklearn") is not None
    runs = []
    with torch.inference_mode(), torch_threads(options.threads):
        for configuration in reference_configurations(options, same_vocabulary):
            reason = reference_skip_reason(
                configuration.method, same_vocabulary=same_vocabulary, sklearn_importable=sklearn_importable
            )
            if reason is not None:
                print(f"  {configuration.label}: skipped ({reason})", file=out, flush=True)
                runs.append(ConfigurationRun(configuration, skipped=reason))
                continue
            # A fresh drafter per configuration: transformers may prune or retune the assistant in place.
            drafter = None if configuration.method in ("ar", "lookup") else load_model(drafter_dir)
            settings = (
                {}
                if drafter is None
                else assistant_settings(drafter, configuration.method, same_vocabulary=same_vocabulary)
            )
            run = _run_configuration(target, drafter, configuration, prompts, options=options, out=out)
            run.settings.update(settings)
            runs.append(run)
    return runs


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` for the block (None: unchanged)."""
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _run_configuration(
    target: LoadedModel,
    drafter: LoadedModel | None,
    configuration: Configuration,
    prompts: Sequence[BenchPrompt],
    *,
    options: BenchOptions,
    out: IO[str],
) -> ConfigurationRun:
    run = ConfigurationRun(configuration)
    print(f"  {configuration.label}: ", end="", file=out, flush=True)
    warmup_tokens = min(WARMUP_TOKENS, options.max_new_tokens)
    inputs = target.tokenizer(prompts[0].text, return_tensors="pt")
    _generate(
        target, drafter, configuration, inputs, options, max_new_tokens=warmup_tokens, seed=options.seed
    )
    for prompt in prompts:
        run.records.append(_timed(target, drafter, configuration, prompt, options))
        print(".", end="", file=out, flush=True)
    print(" done", file=out, flush=True)
    return run


def _timed(
    target: LoadedModel,
    drafter: LoadedModel | None,
    configuration: Configuration,
    prompt: BenchPrompt,
    options: BenchOptions,
) -> PromptRecord:
    seed = options.seed + prompt.index
    inputs = target.tokenizer(prompt.text, return_tensors="pt")
    with counting_forwards(target.model) as counter:
        started = time.perf_counter()
        output = _generate(
            target, drafter, configuration, inputs, options, max_new_tokens=options.max_new_tokens, seed=seed
        )
        seconds = time.perf_counter() - started
    tokens = len(output)
    eos = set(target.eos_token_ids)
    return PromptRecord(
        prompt_index=prompt.index,
        task_id=prompt.task_id,
        output_tokens=tokens,
        seconds=seconds,
        tokens_per_second=tokens / seconds if seconds > 0 else 0.0,
        finish_reason="stop" if output and output[-1] in eos else "length",
        token_ids=tuple(output),
        target_forwards=counter.calls,
        seed=seed,
    )


def _pad_token_id(model: LoadedModel) -> int | None:
    pad = model.model.generation_config.pad_token_id
    if pad is not None:
        return int(pad)
    return model.eos_token_ids[0] if model.eos_token_ids else None


def _generate(
    target: LoadedModel,
    drafter: LoadedModel | None,
    configuration: Configuration,
    inputs: Any,
    options: BenchOptions,
    *,
    max_new_tokens: int,
    seed: int,
) -> list[int]:
    """The new token ids of one ``generate`` call on the tokenized prompt ``inputs``."""
    import torch

    sampling = configuration.temperature > 0
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": sampling,
        "eos_token_id": target.eos_token_ids,
        "pad_token_id": _pad_token_id(target),
    }
    if sampling:
        # top_k=0: transformers defaults to 50, the services apply no top-k unless asked.
        kwargs.update(temperature=configuration.temperature, top_k=0, top_p=1.0)
    if configuration.method == "lookup":
        kwargs["prompt_lookup_num_tokens"] = options.prompt_lookup_tokens
    if drafter is not None:
        kwargs["assistant_model"] = drafter.model
        if configuration.method.startswith(CROSS_VOCABULARY_PREFIX):
            kwargs["tokenizer"] = target.tokenizer
            kwargs["assistant_tokenizer"] = drafter.tokenizer
    torch.manual_seed(seed)
    sequences = target.model.generate(**inputs, **kwargs)
    prompt_length = int(inputs["input_ids"].shape[1])
    return [int(token) for token in sequences[0, prompt_length:]]
