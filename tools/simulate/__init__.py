"""``polyspec simulate``: DSI / SI / non-SI speedup heatmaps from ``coordinator.dsimodel``.

``cli`` registers the command (argparse only), ``grid`` computes the heatmaps (pure), ``plot`` draws them
(matplotlib, from the ``bench`` extra, imported when a PNG is written).
"""
