"""The SDK imports with grpcio, protobuf and the standard library only (never torch or transformers)."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import json, sys
import grpc, google.protobuf
before = {name.split(".")[0] for name in sys.modules}
import polyspec
from polyspec import AsyncClient, Client
import polyspec.client, polyspec.convert, polyspec.errors, polyspec.retry, polyspec.types
from polyspec.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc, model_pb2, model_pb2_grpc
after = {name.split(".")[0] for name in sys.modules}
print(json.dumps({"all": sorted(after), "added": sorted(after - before)}))
"""


def test_sdk_imports_without_torch_or_transformers() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], check=True, capture_output=True, text=True).stdout
    modules = json.loads(out)
    assert "torch" not in modules["all"] and "transformers" not in modules["all"]
    added_third_party = {
        name
        for name in modules["added"]
        if name not in sys.stdlib_module_names and name not in sys.builtin_module_names
    }
    assert added_third_party == {"polyspec"}
