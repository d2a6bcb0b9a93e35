"""``polyspec disco collect``, ``train``, ``calibrate`` and ``replay`` (``tools.disco.collect``, ``.train``,
``.calibrate``, ``.whatif``).

torch and the models are imported when a command runs, so ``polyspec --help`` stays light."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coordinator.pair import ModelPair
    from services.model.engine import ModelEngine
    from tools.disco.collect import CollectSettings
    from tools.disco.train import TrainInputs


def prompt_range(text: str) -> range:
    """``A-B`` (inclusive) as a range; argparse reports a bad one."""
    first, _, last = text.partition("-")
    try:
        start, stop = int(first), int(last or first)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A-B (prompt indexes), got {text!r}") from None
    if start < 0 or stop < start:
        raise argparse.ArgumentTypeError(f"expected 0 <= A <= B, got {text!r}")
    return range(start, stop + 1)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``polyspec disco`` with its ``collect``, ``train``, ``calibrate`` and ``replay`` commands."""
    disco = commands.add_parser("disco", help="train DISCO's stop classifier for a drafter/target pair")
    actions = disco.add_subparsers(dest="disco_command", required=True, metavar="ACTION")
    _register_collect(actions)
    _register_train(actions)
    _register_calibrate(actions)
    _register_replay(actions)


def _register_collect(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = actions.add_parser(
        "collect",
        help="run prompts through the pair (in-process models): each draft token's features and label",
    )
    add = parser.add_argument
    add("--drafter-model", type=Path, required=True, metavar="DIR", help="the drafter's transformers folder")
    add("--target-model", type=Path, required=True, metavar="DIR", help="the target's transformers folder")
    add("--out", type=Path, required=True, metavar="FILE", help="where the rounds go (JSON)")
    add(
        "--prompts",
        type=prompt_range,
        default=range(0, 150),
        metavar="A-B",
        help="HumanEval tasks (default: 0-149)",
    )
    add(
        "--prompts-file", type=Path, metavar="FILE", help="a JSON list of prompt strings instead of HumanEval"
    )
    add("--k", type=int, default=8, help="draft tokens per round (default: 8)")
    add("--max-new-tokens", type=int, default=64, help="output tokens per prompt (default: 64)")
    add(
        "--temperature",
        type=float,
        default=0.0,
        help="0 = greedy labels (SLEM labels when the tokenizers differ); else sampled soft labels, "
        "same tokenizer only (default: 0)",
    )
    add("--seed", type=int, default=0, help="seed of the draws (default: 0)")
    add("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    add("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="(default: float32)")
    add(
        "--drafter-dtype",
        choices=("float32", "bfloat16", "float16"),
        help="the drafter's dtype if not --dtype: collect with the precision the drafter is served in, "
        "since its probabilities (the features) and its step cost (the replay's) depend on it",
    )
    add(
        "--drafter-quantize",
        default="none",
        choices=("none", "int8-dynamic", "int8-weight-only"),
        help="the drafter's int8 linear layers, as serve model --quantize (default: none)",
    )
    parser.set_defaults(handler=_collect)


def _register_train(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = actions.add_parser(
        "train", help="fit logistic and MLP stop classifiers; keep the one with the best replayed tokens/s"
    )
    add = parser.add_argument
    add(
        "--data",
        type=Path,
        action="append",
        required=True,
        metavar="FILE",
        help="collected rounds (repeatable)",
    )
    add("--out", type=Path, required=True, metavar="DIR", help="the artifact's folder")
    add("--train-prompts", type=prompt_range, default=range(0, 100), metavar="A-B", help="(default: 0-99)")
    add(
        "--validation-prompts",
        type=prompt_range,
        default=range(100, 120),
        metavar="A-B",
        help="(default: 100-119)",
    )
    add("--seed", type=int, default=0, help="seed of the fits (default: 0)")
    add("--epochs", type=int, default=300, help="full-batch Adam steps (default: 300)")
    add("--hidden", type=int, default=16, help="the MLP's hidden units (default: 16)")
    parser.set_defaults(handler=_train)


def _prompts(args: argparse.Namespace) -> list[tuple[int, str]]:
    if args.prompts_file is not None:
        texts = json.loads(args.prompts_file.read_text(encoding="utf-8"))
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise SystemExit(f"{args.prompts_file}: expected a JSON list of strings")
        return list(enumerate(texts))
    from tools.bench.prompts import load_prompts

    chosen: range = args.prompts
    return [(p.index, p.text) for p in load_prompts(chosen.start, len(chosen))]


def caps_list(text: str) -> tuple[int, ...]:
    """``8,12,16`` as positive integers; argparse reports a bad list."""
    try:
        caps = tuple(int(item) for item in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated draft caps, got {text!r}") from None
    if not caps or min(caps) < 1:
        raise argparse.ArgumentTypeError(f"draft caps must be positive integers, got {text!r}")
    return caps


def _register_calibrate(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = actions.add_parser(
        "calibrate",
        help="replay an artifact on a greedy collection's paths at several draft caps, so that the "
        "coordinator chooses plain disco's cap and threshold for its costs",
    )
    add = parser.add_argument
    add("--artifact", type=Path, required=True, metavar="DIR", help="the artifact `disco train` wrote")
    add(
        "--data",
        type=Path,
        action="append",
        required=True,
        metavar="FILE",
        help="greedy collections of the pair with traced paths for the validation prompts (repeatable)",
    )
    add(
        "--validation-prompts",
        type=prompt_range,
        default=range(100, 120),
        metavar="A-B",
        help="(default: 100-119, as train)",
    )
    add(
        "--caps",
        type=caps_list,
        metavar="LIST",
        help="draft caps to replay at (default: every cap from the artifact's training.k to the "
        "collection's k)",
    )
    add("--out", type=Path, metavar="DIR", help="where the calibrated artifact goes (default: in place)")
    parser.set_defaults(handler=_calibrate)


def _calibrate(args: argparse.Namespace) -> int:
    from core.disco.artifact import DiscoArtifactError, load_artifact, write_artifact
    from tools.disco.calibrate import calibrated_spec, default_caps

    try:
        artifact = load_artifact(args.artifact)
        inputs = _load_inputs(args.data)
        artifact.check_pair(inputs.pair.drafter, inputs.pair.target)
        if not inputs.paths or not inputs.k:
            raise ValueError(
                "the collections hold no replay paths (greedy same-tokenizer collections trace them)"
            )
        caps = args.caps or default_caps(artifact.trained_k, inputs.k)
        spec = calibrated_spec(artifact, inputs.paths, inputs.k, prompts=args.validation_prompts, caps=caps)
        out = args.out or args.artifact
        calibrated = write_artifact(out, spec, artifact.weights)
    except (ValueError, DiscoArtifactError) as exc:
        raise SystemExit(f"disco calibrate: {exc}") from exc
    summary = {"out": str(out), "classifier_id": calibrated.classifier_id, "caps": list(sorted(set(caps)))}
    print(json.dumps(summary, indent=2))
    return 0


def _register_replay(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = actions.add_parser(
        "replay",
        help="replay static, confidence, classifier and oracle stops exactly on a greedy collection's "
        "paths, at its costs or a deployment's",
    )
    add = parser.add_argument
    add(
        "--data",
        type=Path,
        action="append",
        required=True,
        metavar="FILE",
        help="greedy collections (repeatable)",
    )
    add("--artifact", type=Path, metavar="DIR", help="a trained classifier of the pair to replay too")
    add(
        "--choose-prompts",
        type=prompt_range,
        default=range(100, 120),
        metavar="A-B",
        help="prompts that choose the static length and the thresholds (default: 100-119)",
    )
    add(
        "--test-prompts",
        type=prompt_range,
        default=range(120, 150),
        metavar="A-B",
        help="prompts the rules are reported on (default: 120-149)",
    )
    add("--draft-ms", type=float, metavar="MS", help="a drafter step (default: the collection's)")
    add("--verify-ms", type=float, metavar="MS", help="a verification's fixed cost (with --draft-ms)")
    add(
        "--verify-ms-per-token",
        type=float,
        default=0.0,
        metavar="MS",
        help="a verification's cost per token fed, draft + 1 (default: 0, as on a GPU)",
    )
    add(
        "--round-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="a round's cost beyond compute: wire, queueing, coordinator (default: 0)",
    )
    add(
        "--request-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="a request's cost outside its rounds, both models' prefill and start-up: with it the rates "
        "are end-to-end, as polyspec bench measures them (default: 0, the rounds alone)",
    )
    parser.set_defaults(handler=_replay)


def _replay(args: argparse.Namespace) -> int:
    from core.disco.artifact import DiscoArtifactError, load_artifact
    from tools.disco.whatif import deployment_costs, render, what_if, with_round_overhead

    if (args.draft_ms is None) != (args.verify_ms is None):
        raise SystemExit("disco replay: --draft-ms and --verify-ms go together (a deployment's costs)")
    for flag in ("draft_ms", "verify_ms", "verify_ms_per_token", "round_ms", "request_ms"):
        value = getattr(args, flag)
        if value is not None and not (value >= 0 and value < float("inf")):
            raise SystemExit(
                f"disco replay: --{flag.replace('_', '-')} must be a finite number >= 0, got {value}"
            )
    try:
        inputs = _load_inputs(args.data)
        k = inputs.k or 0
        if not inputs.paths or k < 1:
            raise ValueError(
                "the collections hold no replay paths (greedy same-tokenizer collections trace them)"
            )
        classifier = None
        if args.artifact is not None:
            artifact = load_artifact(args.artifact)
            artifact.check_pair(inputs.pair.drafter, inputs.pair.target)
            classifier = artifact.classifier
        if args.draft_ms is not None:
            costs = deployment_costs(
                args.draft_ms, args.verify_ms, args.verify_ms_per_token, args.round_ms, k
            )
        else:
            costs = with_round_overhead(inputs.costs, args.round_ms, k)
        result = what_if(
            inputs.paths,
            k,
            costs,
            choose_on=args.choose_prompts,
            test=args.test_prompts,
            classifier=classifier,
            request_seconds=args.request_ms / 1000,
        )
    except (ValueError, DiscoArtifactError) as exc:
        raise SystemExit(f"disco replay: {exc}") from exc
    print(render(result, costs, args.request_ms / 1000))
    return 0


def _collect(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from core.sampling import SamplingConfig
    from services.model.engine import ModelEngine
    from services.model.settings import DType, ModelServiceSettings, Quantize
    from tools.disco.collect import CollectSettings, collect, save_collection

    def engine(folder: Path, dtype: DType, quantize: Quantize = "none") -> ModelEngine:
        try:
            settings = ModelServiceSettings(
                model_dir=folder,
                device=args.device,
                dtype=dtype,
                quantize=quantize,
                max_draft_tokens=max(args.k, 1),
            )
        except ValueError as exc:
            raise SystemExit(f"disco collect: {exc}") from exc
        return ModelEngine.load(settings)

    drafter_dtype: DType = args.drafter_dtype or args.dtype
    drafter = engine(args.drafter_model, drafter_dtype, args.drafter_quantize)
    target = engine(args.target_model, args.dtype)
    settings = CollectSettings(
        k=args.k,
        max_new_tokens=args.max_new_tokens,
        sampling=SamplingConfig(args.temperature),
        seed=args.seed,
        stop_token_ids=frozenset(target.info.eos_token_ids),
    )
    texts = _prompts(args)
    pair = _cross_vocabulary_pair(drafter, target, settings)
    with tqdm(total=len(texts) * args.max_new_tokens, unit="tok", desc="disco collect") as bar:
        if pair is not None:
            from tools.disco.slem import collect_slem

            regime = "slem"
            collection = collect_slem(drafter, target, pair, texts, settings=settings, progress=bar.update)
        else:
            tokenizer = _tokenizer(args.target_model)
            prompts = [(index, tokenizer.encode(text)) for index, text in texts]
            regime = "greedy" if settings.sampling.is_greedy else "sampled"
            collection = collect(drafter, target, prompts, settings, progress=bar.update)
    header: dict[str, Any] = {
        "pair": {
            "drafter_fingerprint": drafter.info.model_fingerprint,
            "target_fingerprint": target.info.model_fingerprint,
            "drafter_model": drafter.info.model_name,
            "target_model": target.info.model_name,
        },
        "regime": regime,
        "settings": {
            "k": args.k,
            "max_new_tokens": args.max_new_tokens,
            "temperature": args.temperature,
            "seed": args.seed,
            "drafter_dtype": f"{drafter_dtype}+{args.drafter_quantize}",
            "target_dtype": args.dtype,
        },
    }
    save_collection(args.out, collection, header)
    costs = collection.costs()
    summary = {
        "rounds": len(collection.rounds),
        "paths": len(collection.paths),
        "costs": [costs.draft_seconds, costs.target_seconds],
        "verify_seconds": list(costs.verify_seconds),
    }
    print(json.dumps(summary))
    return 0


def _cross_vocabulary_pair(
    drafter: ModelEngine, target: ModelEngine, settings: CollectSettings
) -> ModelPair | None:
    """The aligned pair when the two vocabularies differ (SLEM labels, greedy only: a clear exit
    otherwise); None when they are one vocabulary."""
    if drafter.info.tokenizer_fingerprint == target.info.tokenizer_fingerprint:
        return None
    from tools.disco.slem import aligned_pair

    pair = aligned_pair(drafter.info, target.info)
    if pair.same_tokenizer:  # tokenizers that differ in padding only
        return None
    if not pair.cross_vocabulary:
        raise SystemExit(
            f"disco collect: the drafter's and the target's vocabularies cannot be aligned: "
            f"{pair.alignment_error}"
        )
    if not settings.sampling.is_greedy:
        raise SystemExit(
            "disco collect: the drafter and the target tokenize differently, so the labels are SLEM's "
            "(whether the drafted text was covered by accepted target tokens), which are greedy only: "
            "use --temperature 0"
        )
    return pair


def _tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def _load_inputs(files: list[Path]) -> TrainInputs:
    """The collection files' rounds and replay paths as one input (``ValueError`` names what is wrong)."""
    from tools.disco.collect import load_collection, load_paths
    from tools.disco.train import merge_collections

    return merge_collections(
        [(path, *load_collection(path)) for path in files],
        [item for path in files for item in load_paths(path)],
    )


def _train(args: argparse.Namespace) -> int:
    from core.disco.training import FitSettings
    from tools.disco.train import train_artifact

    try:
        inputs = _load_inputs(args.data)
    except ValueError as exc:
        raise SystemExit(f"disco train: {exc}") from exc
    settings = FitSettings(seed=args.seed, epochs=args.epochs, hidden=args.hidden)
    artifact = train_artifact(
        inputs, args.out, train=args.train_prompts, validation=args.validation_prompts, settings=settings
    )
    summary = {
        "out": str(args.out),
        "classifier_id": artifact.classifier_id,
        "kind": artifact.classifier.kind.value,
        "threshold": artifact.classifier.threshold,
        "trained_k": artifact.trained_k,
        "validation": dict(artifact.validation),
    }
    print(json.dumps(summary, indent=2))
    return 0
