"""Convert a GGUF file into a transformers folder: fp32 safetensors weights plus the tokenizer files."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from tqdm import tqdm  # type: ignore[import-untyped]

CONVERT_DTYPE = "float32"


def conversion_versions() -> dict[str, str]:
    """The versions of the libraries a conversion depends on (recorded in the manifest)."""
    from importlib import metadata

    import safetensors
    import tokenizers
    import torch
    import transformers

    return {
        "torch": str(torch.__version__),
        "transformers": str(transformers.__version__),
        "tokenizers": str(tokenizers.__version__),
        "safetensors": str(safetensors.__version__),
        "gguf": metadata.version("gguf"),
        "dtype": CONVERT_DTYPE,
    }


def _strip_quantization(model: Any) -> None:
    """Forget that the weights came from a quantized file, so they save as plain dense tensors."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def convert_gguf(gguf_path: Path, out_dir: Path, progress: bool = True) -> dict[str, str]:
    """Load ``gguf_path`` (dequantized to fp32) with its tokenizer and save both into ``out_dir``.

    Returns the conversion versions for the manifest. Reads nothing but local files.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, file_name = gguf_path.parent, gguf_path.name
    with tqdm(total=4, desc=f"convert {file_name}", unit="step", disable=not progress) as bar:
        bar.set_postfix_str("loading weights from GGUF")
        model = AutoModelForCausalLM.from_pretrained(
            source, gguf_file=file_name, dtype=torch.float32, local_files_only=True
        )
        bar.update()
        bar.set_postfix_str("loading tokenizer from GGUF")
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=file_name, local_files_only=True)
        bar.update()
        bar.set_postfix_str("saving safetensors")
        _strip_quantization(model)
        model.save_pretrained(out_dir)
        bar.update()
        bar.set_postfix_str("saving tokenizer")
        tokenizer.save_pretrained(out_dir)
        bar.update()
    del model, tokenizer
    gc.collect()
    return conversion_versions()
