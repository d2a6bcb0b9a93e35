"""The PNG of ``polyspec simulate``: one heatmap per speedup, rows = acceptance, columns = drafter cost."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

PANELS = (
    ("paper", "si_vs_nonsi", "paper model: SI / non-SI"),
    ("paper", "dsi_vs_nonsi", "paper model: DSI / non-SI"),
    ("paper", "dsi_vs_si", "paper model: DSI / SI"),
    ("event", "dsi_vs_nonsi", "event model: DSI / non-SI"),
    ("event", "dsi_vs_si", "event model: DSI / SI"),
)


def write_heatmaps(path: Path, result: dict[str, Any]) -> None:
    """One panel per speedup of the models in ``result``; each cell labelled, blank where infeasible."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    panels = [panel for panel in PANELS if panel[0] in result]
    figure = Figure(figsize=(3.2 * len(panels) + 1.0, 3.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes_row = figure.subplots(1, len(panels), squeeze=False)[0]
    costs, rates = result["drafter_costs"], result["acceptances"]
    for axes, (model, name, title) in zip(axes_row, panels, strict=True):
        values = [[float("nan") if v is None else v for v in row] for row in result[model][name]]
        norm = TwoSlopeNorm(vcenter=1.0, vmin=0.5, vmax=2.5)  # red: slower than the baseline
        image = axes.imshow(values, origin="lower", cmap="RdYlGn", norm=norm, aspect="auto")
        for row, line in enumerate(values):
            for column, value in enumerate(line):
                if not math.isnan(value):
                    axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7)
        axes.set_xticks(range(len(costs)), [f"{c:g}" for c in costs], fontsize=7)
        axes.set_yticks(range(len(rates)), [f"{a:g}" for a in rates], fontsize=7)
        axes.set_xlabel("drafter cost c (target forward = 1)", fontsize=8)
        if axes is axes_row[0]:
            axes.set_ylabel("acceptance rate a", fontsize=8)
        axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=list(axes_row), shrink=0.8, label="speedup (x), capped at 2.5")
    lookahead = result["lookahead"]
    figure.suptitle(f"{result['servers']} target servers, lookahead {lookahead}", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
