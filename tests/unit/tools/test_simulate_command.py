"""``polyspec simulate`` on a tiny grid: JSON and PNG written, summary printed, bad flags refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.tools.test_main import run_cli


def test_simulate_writes_json_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    argv = ["simulate", "--drafter-costs", "0.1,0.5", "--acceptances", "0.3,0.9", "--servers", "2"]
    assert run_cli([*argv, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "dsi-heatmaps.json").read_text())
    png = (tmp_path / "dsi-heatmaps.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) < 150_000
    assert result["servers"] == 2 and result["lookahead"] == "best"
    assert result["drafter_costs"] == [0.1, 0.5] and result["acceptances"] == [0.3, 0.9]
    paper, event = result["paper"], result["event"]
    # rows are acceptance rates, columns drafter costs; c=0.5 a=0.3 is row 0, column 1
    assert paper["si_vs_nonsi"][0][1] == pytest.approx(1 / ((1 * 0.5 + 1) / 1.3))  # SI at its best k = 1
    for row in range(2):
        for column in range(2):
            assert event["dsi_vs_nonsi"][row][column] >= 1.0 - 1e-9  # plain steps or target-only
            assert event["scheduler"][row][column] in {"dsi", "si", "target-only"}
    assert event["dsi_vs_si"][1][0] > 1.0  # c=0.1, a=0.9, 2 servers: DSI pays
    checks = {(c["c"], c["a"]): c for c in result["published_checks"]}
    assert checks[0.5, 0.3]["model_dsi_vs_nonsi"] == pytest.approx(1.021, abs=5e-4)
    out = capsys.readouterr().out
    assert "published c=0.5 a=0.3 k=2" in out and "wrote " in out


def test_simulate_fixed_lookahead_paper_only(tmp_path: Path) -> None:
    argv = ["simulate", "--drafter-costs", "0.05,0.5", "--acceptances", "0.5", "--lookahead", "2"]
    assert run_cli([*argv, "--servers", "4", "--models", "paper", "--no-plot", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "dsi-heatmaps.json").read_text())
    assert "event" not in result and not (tmp_path / "dsi-heatmaps.png").exists()
    assert result["paper"]["dsi_vs_si"][0][0] is None  # c=0.05, k=2 needs 10 servers: blank cell
    assert result["paper"]["dsi_vs_si"][0][1] > 1.0


@pytest.mark.parametrize(
    "flags",
    [
        ["--drafter-costs", "0"],
        ["--drafter-costs", "x"],
        ["--acceptances", "1.0"],
        ["--lookahead", "0"],
        ["--servers", "0"],
        ["--models", "exact"],
    ],
)
def test_simulate_refuses_bad_flags(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run_cli(["simulate", *flags])
    assert exited.value.code == 2
    assert flags[0] in capsys.readouterr().err
