"""The parent's end of the worker processes: start them, send commands, run common windows,
and always end every one of them (see worker.py for the other end of the pipes).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from .params import ACQUIRE_TIMEOUT_S, CALL_TIMEOUT_S, START_DELAY_S, STARTUP_TIMEOUT_S
from .window import Sample, WindowSpec
from .worker import worker_main


class Pool:
    """Worker processes driven over pipes; close() always ends every one of them."""

    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self.size = size
        self.procs: list[BaseProcess] = []
        self.conns: list[Connection] = []

    def start(self) -> None:
        ctx = mp.get_context("spawn")
        for index in range(self.size):
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main,
                args=(index, self.url, child_end),
                name=f"bench-worker-{index}",
                daemon=True,
            )
            proc.start()
            child_end.close()
            self.procs.append(proc)
            self.conns.append(parent_end)
        for index in range(self.size):
            self.recv(index, STARTUP_TIMEOUT_S)

    def send(self, index: int, command: str, args: Any = None) -> None:
        self.conns[index].send((command, args))

    def recv(self, index: int, timeout: float) -> Any:
        conn = self.conns[index]
        if not conn.poll(timeout):
            raise TimeoutError(f"worker {index} did not answer within {timeout:.0f} s")
        try:
            status, payload = conn.recv()
        except EOFError:
            code = self.procs[index].exitcode
            raise RuntimeError(f"worker {index} died (exit code {code})") from None
        if status != "ok":
            raise RuntimeError(f"worker {index}: {payload}")
        return payload

    def call(self, index: int, command: str, args: Any = None) -> Any:
        self.send(index, command, args)
        return self.recv(index, CALL_TIMEOUT_S)

    def window(self, workers: int, spec: WindowSpec, duration_s: float) -> list[Sample]:
        """Every worker sets up; once all are ready they run the same window of time."""
        for index in range(workers):
            self.send(index, "window", spec)
        for index in range(workers):
            self.recv(index, CALL_TIMEOUT_S)  # "ready": the start barrier
        start_ns = time.monotonic_ns() + round(START_DELAY_S * 1e9)
        end_ns = start_ns + round(duration_s * 1e9)
        for index in range(workers):
            self.send(index, "go", (start_ns, end_ns))
        timeout = START_DELAY_S + duration_s + ACQUIRE_TIMEOUT_S + CALL_TIMEOUT_S
        return [self.recv(index, timeout) for index in range(workers)]

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("exit", None))
        deadline = time.monotonic() + 10
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(3)
            if proc.is_alive():
                proc.kill()
                proc.join(3)
        for conn in self.conns:
            conn.close()
