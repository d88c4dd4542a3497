"""The fault proxy a chaos run drives, whichever it is: a real Toxiproxy or taskmon's own.

Chosen in this order: TOXIPROXY_URL (a running Toxiproxy, e.g. the Compose `chaos` profile's),
`toxiproxy-server` on PATH (started here on a free port), else `taskmon fault-proxy` (started
here the same way). Every call goes through toxiproxy-python with a timeout, so the scenarios
drive either one unchanged.

Teardown is guaranteed: `reset_everything()` resets a proxy this run started (every toxic
removed, every proxy enabled) and deletes this run's proxies from a shared one; if the control
API does not answer within its timeout, a proxy this run started is killed (its faults die with
it), and for one it did not start the trouble says so, with the command that cleans up by hand.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from taskmon.harness.processes import ManagedProcess, free_port, wait_until
from taskmon.harness.toxiproxy_client import connect

CONTROL_TIMEOUT_S = 3.0


@dataclass
class FaultProxyControl:
    url: str
    kind: str  # "toxiproxy (external)", "toxiproxy-server", "taskmon fault-proxy"
    process: ManagedProcess | None = None
    version: str = ""
    proxies: dict[str, Any] = field(default_factory=dict)  # name -> toxiproxy Proxy
    trouble: list[str] = field(default_factory=list)

    @property
    def client(self) -> Any:
        return connect(self.url, timeout_s=CONTROL_TIMEOUT_S)

    def create(self, name: str, upstream: str) -> int:
        """A proxy to `upstream` on an ephemeral port of 127.0.0.1; the port it listens on."""
        unique = f"{name}_{uuid.uuid4().hex[:6]}"  # never another run's proxy on a shared API
        proxy = self.client.create(upstream=upstream, name=unique, listen="127.0.0.1:0")
        self.proxies[name] = proxy
        return int(str(proxy.listen).rsplit(":", 1)[1])

    def proxy(self, name: str) -> Any:
        return self.proxies[name]

    def details(self, name: str) -> dict[str, Any]:
        """The proxy as the API shows it now (with `stats` on taskmon's, not on Toxiproxy)."""
        proxy_name = self.proxies[name].name
        answer = requests.get(f"{self.url}/proxies/{proxy_name}", timeout=CONTROL_TIMEOUT_S)
        answer.raise_for_status()
        found: dict[str, Any] = answer.json()
        return found

    def reset_everything(self) -> bool:
        """No fault of this run left: False (and `trouble` says why) if that could not be
        made sure of through the API, in which case a proxy this run started is killed.

        A proxy this run started gets `POST /reset` (every toxic removed, every proxy
        enabled); a shared Toxiproxy (TOXIPROXY_URL) only loses this run's own proxies,
        toxics with them, so another user's faults are left alone.
        """
        try:
            if self.process is not None:
                requests.post(f"{self.url}/reset", timeout=CONTROL_TIMEOUT_S).raise_for_status()
            else:
                self.remove_proxies(strict=True)
            return True
        except requests.RequestException as exc:
            if self.process is not None:
                self.process.stop(grace_s=1.0)
                self.trouble.append(
                    f"the fault proxy's API did not reset ({exc}): its process was killed, "
                    "so no fault outlives the run"
                )
            else:
                names = ", ".join(p.name for p in self.proxies.values())
                self.trouble.append(
                    f"Toxiproxy at {self.url} did not remove this run's proxies ({exc}): "
                    f"their toxics may still be active; remove them by hand: curl -X DELETE "
                    f"{self.url}/proxies/NAME for {names}"
                )
            return False

    def remove_proxies(self, *, strict: bool = False) -> None:
        """Delete this run's proxies (`strict`: raise on the first that does not go)."""
        for key, proxy in list(self.proxies.items()):
            try:
                answer = requests.delete(
                    f"{self.url}/proxies/{proxy.name}", timeout=CONTROL_TIMEOUT_S
                )
                if answer.status_code not in (204, 404):
                    answer.raise_for_status()
            except requests.RequestException:
                if strict:
                    raise
                continue
            del self.proxies[key]


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/version", timeout=1.0).ok
    except requests.RequestException:
        return False


def _taskmon_command() -> list[str]:
    script = shutil.which("taskmon", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "taskmon.cli"]


def _start(argv: list[str], url: str, log: Path, what: str) -> ManagedProcess:
    process = ManagedProcess(argv, log_path=log)
    try:

        def up() -> bool:
            if not process.alive():
                raise RuntimeError(f"{what} exited:\n{process.log_tail()}")
            return _answers(url)

        wait_until(up, timeout=20, what=f"{what}'s API at {url}")
    except BaseException:
        process.stop()
        raise
    return process


def chosen_kind(choose: str = "auto") -> str:
    """Which proxy `running_fault_proxy(choose=...)` will drive: "toxiproxy" or "ours"."""
    if choose == "ours":
        return "ours"
    real = os.environ.get("TOXIPROXY_URL") or shutil.which("toxiproxy-server")
    return "toxiproxy" if real or choose == "toxiproxy" else "ours"


@contextlib.contextmanager
def running_fault_proxy(workdir: Path, *, choose: str = "auto") -> Iterator[FaultProxyControl]:
    """The run's fault proxy (`choose`: auto, toxiproxy, ours), reset and emptied on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    external = os.environ.get("TOXIPROXY_URL")
    binary = shutil.which("toxiproxy-server")
    if choose == "toxiproxy" and not (external or binary):
        raise RuntimeError("--proxy toxiproxy: set TOXIPROXY_URL or put toxiproxy-server on PATH")
    if external and choose != "ours":
        control = FaultProxyControl(external.rstrip("/"), "toxiproxy (TOXIPROXY_URL)")
    else:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = workdir / "fault-proxy.log"
        if binary and choose != "ours":
            argv = [binary, "-host", "127.0.0.1", "-port", str(port)]
            control = FaultProxyControl(url, "toxiproxy-server", _start(argv, url, log, binary))
        else:
            argv = [*_taskmon_command(), "fault-proxy", "--port", str(port)]
            control = FaultProxyControl(
                url, "taskmon fault-proxy", _start(argv, url, log, "taskmon")
            )
    try:
        answer = requests.get(f"{control.url}/version", timeout=CONTROL_TIMEOUT_S)
        answer.raise_for_status()
        # Toxiproxy 2.x answers {"version": ...}; older ones a bare string.
        try:
            control.version = str(answer.json()["version"])
        except (ValueError, KeyError, TypeError):
            control.version = answer.text.strip()
    except Exception as exc:
        if control.process:
            control.process.stop()
        raise RuntimeError(f"the fault proxy at {control.url} did not answer: {exc}") from exc
    try:
        yield control
    finally:
        try:
            if control.reset_everything():
                control.remove_proxies()
        finally:
            if control.process is not None:
                control.process.stop()
