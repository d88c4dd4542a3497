"""TLS for a test Redis: a throw-away CA, a server certificate and a client certificate, made
with the `openssl` command line, and the `rediss://` URL options that use them.

The server certificate names `localhost` and `127.0.0.1` (subjectAltName), so a client that
checks the host name accepts it on either. The keys are P-256 (each made in milliseconds);
nothing is encrypted, and every file lives in the folder given, which the caller owns.

Failure mode: `TlsFiles.generate` raises RuntimeError with openssl's own words when the
command is missing or refuses.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

# What redis-server demands of a client: `yes` a certificate signed by the CA, `optional`
# one if the client offers it, `no` none (any offered is ignored).
AuthClients = Literal["no", "optional", "yes"]

_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_DAYS = "2"


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("the openssl command is needed to make test certificates")
    done = subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=30
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files of one test CA and the two certificates it signed."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def generate(cls, folder: Path, *, name: str = "taskmon test") -> TlsFiles:
        """A new CA in `folder` (made if missing), a server certificate for localhost and
        127.0.0.1, and a client certificate; `name` goes in the subjects."""
        folder.mkdir(parents=True, exist_ok=True)
        files = cls(*(folder / f for f in ("ca.crt", "server.crt", "server.key",
                                             "client.crt", "client.key")))  # fmt: skip
        ca_key = folder / "ca.key"
        _openssl("req", "-x509", *_KEY, "-keyout", str(ca_key), "-out", str(files.ca_cert),
                 "-days", _DAYS, "-subj", f"/CN={name} CA", cwd=folder)  # fmt: skip
        san = folder / "server.ext"
        san.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        client_ext = folder / "client.ext"
        client_ext.write_text("extendedKeyUsage=clientAuth\n")
        for cert, key, subject, ext in (
            (files.server_cert, files.server_key, "localhost", san),
            (files.client_cert, files.client_key, f"{name} client", client_ext),
        ):
            request = cert.with_suffix(".csr")
            _openssl("req", *_KEY, "-keyout", str(key), "-out", str(request),
                     "-subj", f"/CN={subject}", cwd=folder)  # fmt: skip
            _openssl("x509", "-req", "-in", str(request), "-CA", str(files.ca_cert),
                     "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert),
                     "-days", _DAYS, "-extfile", str(ext), cwd=folder)  # fmt: skip
        return files

    def url_query(self, *, client_cert: bool = True, ca_cert: Path | None = None) -> str:
        """The query of a `rediss://` URL trusting this CA (or `ca_cert`), with the client
        certificate unless `client_cert` is False."""
        options = {"ssl_ca_certs": ca_cert or self.ca_cert}
        if client_cert:
            options |= {"ssl_certfile": self.client_cert, "ssl_keyfile": self.client_key}
        return "&".join(f"{key}={quote(str(path), safe='/')}" for key, path in options.items())


@dataclass(frozen=True)
class RedisTls:
    """How a test redis-server serves TLS: its files, and whether it demands client
    certificates. The server then listens on TLS only (`--port 0`)."""

    files: TlsFiles
    auth_clients: AuthClients = "optional"

    def server_args(self, port: int) -> list[str]:
        return [
            "--port", "0", "--tls-port", str(port),
            "--tls-cert-file", str(self.files.server_cert),
            "--tls-key-file", str(self.files.server_key),
            "--tls-ca-cert-file", str(self.files.ca_cert),
            "--tls-auth-clients", self.auth_clients,
        ]  # fmt: skip
