"""deploy/e2e/kind-check.sh, short of a cluster: it parses, refuses to run without one, and reads the
helm test pod's log the way the chart's test pod writes it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.unit.deploy.chart import E2E_DIR

SCRIPT = E2E_DIR / "kind-check.sh"


def test_the_script_is_valid_bash_and_executable() -> None:
    assert os.access(SCRIPT, os.X_OK)
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_it_stops_early_without_the_cluster_tools(tmp_path: Path) -> None:
    for tool in ("dirname", "sed"):  # what the script uses before it looks for kubectl
        found = shutil.which(tool)
        assert found is not None
        (tmp_path / tool).symlink_to(found)
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}
    result = subprocess.run(["/bin/bash", str(SCRIPT)], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "'kubectl' is required" in result.stderr


def test_it_prints_the_text_of_the_generation_result() -> None:
    program = re.search(r"PRINT_RESULT='\n(.*?)\n'\n", SCRIPT.read_text(), re.S)
    assert program is not None
    result = {
        "text": "    if n < 2:\n        return n",
        "token_ids": [1, 2, 3],
        "finish_reason": "length",
        "stats": {"algorithm": "tli", "acceptance_rate": 0.5},
        "request_id": "r1",
    }
    log = '{"event": "client_log_line"}\n' + json.dumps(result) + "\n"
    shown = subprocess.run(
        [sys.executable, "-c", program.group(1)], input=log, capture_output=True, text=True, check=False
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == f"{result['text']}\n"
    assert "algorithm=tli tokens=3 acceptance=0.50" in shown.stderr
    empty = subprocess.run(
        [sys.executable, "-c", program.group(1)], input="", capture_output=True, text=True, check=False
    )
    assert empty.returncode != 0 and "no generation result" in empty.stderr
