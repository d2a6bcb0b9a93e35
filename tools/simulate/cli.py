"""``polyspec simulate``: argparse only at import time; the handler computes and writes the heatmaps."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from tools.extras import require_bench_extra

EXIT_USAGE = 2
MODEL_CHOICES = ("paper", "event")
DEFAULT_DIR = Path("bench-results") / "simulate"


def _number_list(low: float, high: float, closed_high: bool) -> Callable[[str], tuple[float, ...]]:
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
        bad = [v for v in values if not (low < v <= high if closed_high else low <= v < high)]
        if not values or bad:
            interval = f"({low}, {high}]" if closed_high else f"[{low}, {high})"
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers in {interval}, got {text!r}")
        return values

    return parse


def _lookahead(text: str) -> int | None:
    if text == "best":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'best' or an integer in [1, 20], got {text!r}") from None
    if not 1 <= value <= 20:
        raise argparse.ArgumentTypeError(f"expected 'best' or an integer in [1, 20], got {text!r}")
    return value


def _models(text: str) -> tuple[str, ...]:
    models = tuple(part.strip() for part in text.split(",") if part.strip())
    if not models or any(model not in MODEL_CHOICES for model in models):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(MODEL_CHOICES)}")
    return models


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``polyspec simulate``."""
    parser = commands.add_parser(
        "simulate",
        help="DSI / SI / non-SI speedup heatmaps from the paper's model and the scheduler's event model",
        description=(
            "Speedups of DSI, SI and target-only decoding (non-SI) over a grid of drafter cost c (target "
            "forward = 1) and i.i.d. acceptance rate a. The paper's model (Timor et al., ICLR 2025) is "
            "solved exactly; cells where the servers do not suffice for DSI are blank. The event model "
            "simulates a DSI scheduler over the given servers (seeded Monte-Carlo) with the knobs its policy "
            "picks (block size, depth, plain target steps). Writes JSON and a PNG, prints a summary."
        ),
    )
    add = parser.add_argument
    add(
        "--drafter-costs",
        type=_number_list(0.0, 1.0, closed_high=True),
        default=(0.05, 0.13, 0.3, 0.6),
        metavar="LIST",
        help="comma-separated drafter costs c in (0, 1] (default: 0.05,0.13,0.3,0.6)",
    )
    add(
        "--acceptances",
        type=_number_list(0.0, 1.0, closed_high=False),
        default=(0.3, 0.5, 0.75, 0.9),
        metavar="LIST",
        help="comma-separated acceptance rates a in [0, 1) (default: 0.3,0.5,0.75,0.9)",
    )
    add("--lookahead", type=_lookahead, default=None, metavar="K|best", help="k, or best per cell (default)")
    add("--servers", type=_positive_int, default=4, metavar="SP", help="target servers (default: 4)")
    add(
        "--models",
        type=_models,
        default=MODEL_CHOICES,
        metavar="LIST",
        help="comma-separated: paper, event (default: both)",
    )
    add("--seed", type=int, default=0, help="seed of the event model (default: 0)")
    add(
        "--out", type=Path, default=DEFAULT_DIR, metavar="DIR", help=f"output folder (default: {DEFAULT_DIR})"
    )
    add("--plot", action=argparse.BooleanOptionalAction, default=True, help="write the PNG (default: on)")
    parser.set_defaults(handler=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    if args.plot:
        missing = require_bench_extra("simulate --plot", {"matplotlib": "matplotlib"})
        if missing is not None:
            return missing
    from core.errors import InvalidArgumentError
    from tools.simulate.grid import GridSpec, compute, summary_lines

    spec = GridSpec(
        drafter_costs=args.drafter_costs,
        acceptances=args.acceptances,
        servers=args.servers,
        lookahead=args.lookahead,
        models=args.models,
        seed=args.seed,
    )
    try:
        result = compute(spec)
    except InvalidArgumentError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "dsi-heatmaps.json"
    json_path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    written = [json_path]
    if args.plot:
        from tools.simulate.plot import write_heatmaps

        write_heatmaps(args.out / "dsi-heatmaps.png", result)
        written.append(args.out / "dsi-heatmaps.png")
    for line in summary_lines(result):
        print(line)
    print("wrote " + ", ".join(str(path) for path in written))
    return 0
