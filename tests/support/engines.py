"""Fake engines implementing the Engine port, for tests that need an engine to misbehave.

Each one writes real audio through ToneEngine when it does succeed, so a task they finish has
a valid WAV file like any other.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from taskmon.domain import InvalidInput
from taskmon.engines import Engine, EngineError, ToneEngine
from tests.support.timing import WAIT_S


class FakeEngine:
    """Succeeds like the tone engine, except for texts listed in `failures`."""

    name = "fake"
    default_voice = "default"

    def __init__(self, failures: dict[str, BaseException] | None = None) -> None:
        self.failures = failures or {}
        self.calls: list[str] = []
        self._tone = ToneEngine(ms_per_char=0)
        self._calls_lock = threading.Lock()

    def voices(self) -> frozenset[str]:
        return frozenset({"default"})

    def check_voice(self, voice: str | None) -> str:
        if voice is None or voice.lower() == "default":
            return "default"
        raise InvalidInput("voice", f"unknown voice {voice!r}")

    def available(self) -> bool:
        return True

    def synthesize(
        self, text: str, voice: str, dest: Path, *, cancel: threading.Event | None = None
    ) -> None:
        with self._calls_lock:
            self.calls.append(text)
        failure = self.failures.get(text)
        if failure is not None:
            raise failure
        self._tone.synthesize(text, voice, dest, cancel=cancel)


class GatedEngine(FakeEngine):
    """Blocks every synthesis until `gate` is set; counts who is inside at any moment."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self._cond = threading.Condition()
        self.active = 0
        self.max_active = 0
        self.entered = 0

    def synthesize(
        self, text: str, voice: str, dest: Path, *, cancel: threading.Event | None = None
    ) -> None:
        with self._cond:
            self.active += 1
            self.entered += 1
            self.max_active = max(self.max_active, self.active)
            self._cond.notify_all()
        try:
            # Bounded, so a test that forgets to open the gate fails instead of hanging.
            if not self.gate.wait(WAIT_S * 3):
                raise EngineError("the test never opened the gate")
            super().synthesize(text, voice, dest, cancel=cancel)
        finally:
            with self._cond:
                self.active -= 1
                self._cond.notify_all()

    def wait_entered(self, n: int, timeout: float = WAIT_S) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.entered >= n, timeout), (
                f"only {self.entered} of {n} syntheses started"
            )


if TYPE_CHECKING:
    # mypy proves here that the fakes implement the port.
    _FAKES: tuple[Engine, ...] = (FakeEngine(), GatedEngine())
