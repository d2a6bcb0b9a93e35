"""Throw-away certificates for the TLS tests, made with the ``openssl`` command (EC P-256, valid a day).

``make_test_pki`` writes, into one folder: a CA (``ca.crt``), a server certificate it signed for
``localhost``, ``127.0.0.1`` and ``SERVER_NAME`` (``server.crt``/``server.key``), a client certificate
it signed (``client.crt``/``client.key``), and a second, unrelated CA with a client certificate of its
own (``rogue-ca.crt``, ``rogue-client.crt``/``rogue-client.key``), which a mutual-TLS server must refuse.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVER_NAME = "model.polyspec.test"  # a name only the server certificate carries (no DNS needed)
_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


@dataclass(frozen=True)
class Pki:
    """Paths of the generated PEM files."""

    folder: Path

    @property
    def ca_crt(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def server_crt(self) -> Path:
        return self.folder / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.folder / "server.key"

    @property
    def client_crt(self) -> Path:
        return self.folder / "client.crt"

    @property
    def client_key(self) -> Path:
        return self.folder / "client.key"

    @property
    def rogue_client_crt(self) -> Path:
        return self.folder / "rogue-client.crt"

    @property
    def rogue_client_key(self) -> Path:
        return self.folder / "rogue-client.key"


def _openssl(folder: Path, *args: str) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=folder, capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr.strip()}")


def _ca(folder: Path, name: str) -> None:
    _openssl(
        folder,
        "req",
        "-x509",
        *_KEY,
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.crt",
        "-days",
        "1",
        "-subj",
        f"/CN={name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )


def _leaf(folder: Path, name: str, ca: str, extensions: str) -> None:
    _openssl(folder, "req", *_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
    (folder / f"{name}.ext").write_text(extensions)
    _openssl(
        folder,
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.crt",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-out",
        f"{name}.crt",
        "-days",
        "1",
        "-extfile",
        f"{name}.ext",
    )


def make_test_pki(folder: Path) -> Pki:
    """Writes the CA, server, client and rogue-client files into ``folder``."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    folder.mkdir(parents=True, exist_ok=True)
    leaf = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    _ca(folder, "ca")
    _leaf(
        folder,
        "server",
        "ca",
        leaf
        + "extendedKeyUsage=serverAuth\n"
        + f"subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:{SERVER_NAME}\n",
    )
    _leaf(folder, "client", "ca", leaf + "extendedKeyUsage=clientAuth\n")
    _ca(folder, "rogue-ca")
    _leaf(folder, "rogue-client", "rogue-ca", leaf + "extendedKeyUsage=clientAuth\n")
    return Pki(folder)
