"""Text-to-speech engines: text in, one complete WAV file out.

Guarantee: `synthesize` either leaves a complete, valid WAV file at `dest` (written to a temporary
file in the same directory and renamed into place, so readers never see a partial file) or raises
EngineError and leaves `dest` untouched. EngineError messages are short and safe to show a client.
Unknown voices are refused up front by `check_voice` with domain.InvalidInput.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import wave
from array import array
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from taskmon.config import ConfigError, EngineName, Settings
from taskmon.domain import MAX_VOICE_CHARS, InvalidInput

log = logging.getLogger(__name__)

# Listing voices is a quick local call; a hang here means espeak-ng is broken, not busy.
_LIST_TIMEOUT_S = 10.0
_MAX_REASON_CHARS = 160


class EngineError(RuntimeError):
    """Synthesis failed; the message is safe to show a client (no paths, no stderr dumps)."""


class EngineCancelled(EngineError):
    """The synthesis was stopped from outside (its permit's lease ended); no output was left."""


# How often a running synthesis looks at its cancel event: the bound on "stops at once".
CANCEL_POLL_S = 0.05


class Engine(Protocol):
    # Read-only properties so implementations may use plain attributes or computed values.
    @property
    def name(self) -> str: ...  # "espeak" or "tone"

    @property
    def default_voice(self) -> str: ...

    def voices(self) -> frozenset[str]:
        """The accepted voice names, lowercase."""

    def check_voice(self, voice: str | None) -> str:
        """The canonical voice for `voice` (None means the default); InvalidInput if unknown."""

    def synthesize(
        self, text: str, voice: str, dest: Path, *, cancel: threading.Event | None = None
    ) -> None:
        """Write a complete WAV file at dest, or raise EngineError and leave dest untouched.

        Once `cancel` is set the synthesis stops (its process killed) within about
        CANCEL_POLL_S and raises EngineCancelled, leaving nothing at dest.
        """

    def available(self) -> bool:
        """Whether the engine can run now (for /readyz)."""


def _unknown_voice(voice: str, hint: str) -> InvalidInput:
    return InvalidInput("voice", f"unknown voice {voice[:MAX_VOICE_CHARS]!r}; {hint}")


@contextlib.contextmanager
def _atomic_temp(dest: Path) -> Iterator[Path]:
    """A temp path beside dest; renamed onto dest if the block succeeds, removed otherwise."""
    try:
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    except OSError as exc:
        raise EngineError(f"cannot create the output file ({exc.strerror})") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, dest)
    except OSError as exc:
        raise EngineError(f"cannot write the output file ({exc.strerror})") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def death_tied_launcher() -> list[str]:
    """A prefix that makes a child process die with the thread that started it: util-linux's
    `setpriv --pdeathsig KILL` (Linux's PR_SET_PDEATHSIG, set after fork and kept across exec).

    Without it, the espeak-ng child of a SIGKILLed worker runs on after the worker's permit has
    returned to the pool, so one more synthesis runs than the cap allows. setpriv does it with
    no Python code between fork and exec (a preexec_fn is unsafe in a threaded worker). Where
    setpriv is missing (not Linux, no util-linux), the prefix is empty and the engine says so
    once at start.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


class EspeakEngine:
    """espeak-ng run as a subprocess with a fixed argument list; the text goes in on stdin.

    The process dies with its worker (death_tied_launcher), so a killed worker leaves no
    synthesis running past its permit.
    """

    name = "espeak"

    def __init__(self, *, binary: str = "espeak-ng", timeout_s: float = 120.0) -> None:
        self._binary = binary
        self._timeout_s = timeout_s
        self._launcher = death_tied_launcher()
        if not self._launcher:
            log.warning(
                "setpriv (util-linux) not found: an espeak-ng process may outlive a killed "
                "worker and run past its permit; install util-linux to tie it to the worker"
            )
        self._lock = threading.Lock()
        # accepted lowercase name -> the value passed to -v; None until a listing succeeds.
        self._table: dict[str, str] | None = None

    def _load(self) -> dict[str, str] | None:
        # Only success is cached, so an engine installed after start-up is picked up.
        with self._lock:
            if self._table is None:
                self._table = self._list_voices()
            return self._table

    def _list_voices(self) -> dict[str, str] | None:
        try:
            proc = subprocess.run(
                [self._binary, "--voices"], capture_output=True, timeout=_LIST_TIMEOUT_S, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return parse_voice_list(proc.stdout.decode("utf-8", "replace")) or None

    @property
    def default_voice(self) -> str:
        table = self._load()
        if table is None or "en" in table:
            return "en"
        return next(iter(table.values()))

    def voices(self) -> frozenset[str]:
        table = self._load()
        return frozenset(table) if table else frozenset({self.default_voice})

    def check_voice(self, voice: str | None) -> str:
        if voice is None:
            return self.default_voice
        table = self._load() or {self.default_voice: self.default_voice}
        canonical = table.get(voice.lower())
        if canonical is None:
            examples = [v for v in ("en", "en-us", "fr", "de", "es") if v in table]
            hint = f"use a language code such as {', '.join(examples or [self.default_voice])}"
            raise _unknown_voice(voice, hint)
        return canonical

    def available(self) -> bool:
        return shutil.which(self._binary) is not None and self._load() is not None

    def synthesize(
        self, text: str, voice: str, dest: Path, *, cancel: threading.Event | None = None
    ) -> None:
        # Lone surrogates can arrive through JSON; espeak would only read them as noise anyway.
        data = text.encode("utf-8", "replace")
        # Callers may pass the voice as the client spelt it; espeak-ng rejects printed names.
        voice = (self._load() or {}).get(voice.lower(), voice)
        with _atomic_temp(dest) as tmp:
            # -b 1: the input is UTF-8 whatever the locale; --stdin: no text is ever an option.
            # -w gets the bare file name, run in its directory: espeak-ng silently writes
            # nothing to a path of 200 characters or more (a deep TASKMON_RESULT_DIR).
            cmd = [
                *self._launcher, self._binary, "-b", "1", "-v", voice, "-w", tmp.name, "--stdin"
            ]  # fmt: skip
            returncode, stderr = self._run(cmd, data, cancel, cwd=tmp.parent)
            reason = _first_line(stderr, scrub=(str(tmp), str(dest.parent)))
            # setpriv exits 126/127 when it cannot exec (its message is translated, its name
            # is not): the launcher ran, espeak-ng did not, as an OSError from exec would say.
            if self._launcher and returncode in (126, 127) and stderr.startswith(b"setpriv"):
                why = reason.rsplit(": ", 1)[-1] if ": " in reason else f"exit {returncode}"
                raise EngineError(f"espeak-ng could not be started ({why})")
            if returncode != 0:
                raise EngineError(f"espeak-ng failed: {reason or f'exit {returncode}'}")
            # espeak-ng exits 0 even when it cannot write the file, so the file is the verdict.
            if not _valid_wav(tmp):
                raise EngineError(f"espeak-ng produced no audio{f': {reason}' if reason else ''}")

    def _run(
        self, cmd: list[str], data: bytes, cancel: threading.Event | None, *, cwd: Path
    ) -> tuple[int, bytes]:
        """espeak-ng to its end: (exit code, stderr). Killed, and reaped, on timeout or cancel.

        The text goes in from a file and stderr out to one, not through pipes: the process
        then never waits on this thread, which only polls it (a pipe's writer would have to
        keep writing between polls, and a partial write leaves espeak-ng waiting for input).
        """
        with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stderr:
            stdin.write(data)
            stdin.seek(0)
            try:
                proc = subprocess.Popen(
                    cmd, stdin=stdin, stdout=subprocess.DEVNULL, stderr=stderr, cwd=cwd
                )
            except OSError as exc:
                raise EngineError(f"espeak-ng could not be started ({exc.strerror})") from None
            deadline = time.monotonic() + self._timeout_s
            while True:
                try:
                    returncode = proc.wait(timeout=CANCEL_POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if cancel is not None and cancel.is_set():
                    _kill(proc)
                    raise EngineCancelled("the synthesis was stopped: its permit's lease ended")
                if time.monotonic() >= deadline:
                    _kill(proc)
                    raise EngineError(f"espeak-ng timed out after {self._timeout_s:g} s")
            stderr.seek(0)
            return returncode, stderr.read(64 * 1024)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def parse_voice_list(listing: str) -> dict[str, str]:
    """Map each accepted name in `espeak-ng --voices` output to the value to pass to -v.

    Accepted: the Language column ("en-us"), the Other Languages codes ("en" in "(en 2)") which
    espeak-ng resolves by priority, and the VoiceName column ("english_(america)") mapped to its
    row's language because espeak-ng prints names with spaces turned into underscores and will not
    accept them back in that form.
    """
    table: dict[str, str] = {}
    names: list[tuple[str, str]] = []
    for line in listing.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 5 or not parts[0].isdigit():
            continue
        language = parts[1].lower()
        table[language] = language
        for other in re.findall(r"\(([^\s()]+) \d+\)", " ".join(parts[5:])):
            table.setdefault(other.lower(), other.lower())
        names.append((parts[3].lower(), language))
    # Names last, so a name never shadows a language code.
    for name, language in names:
        table.setdefault(name, language)
    return table


def _first_line(stderr: bytes, scrub: tuple[str, ...]) -> str:
    text = stderr.decode("utf-8", "replace")
    for secret in scrub:
        text = text.replace(secret, "<output>")
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line[:_MAX_REASON_CHARS]


def _valid_wav(path: Path) -> bool:
    try:
        with wave.open(str(path), "rb") as wav:
            return wav.getnframes() > 0 and wav.getframerate() > 0 and wav.getnchannels() > 0
    except (wave.Error, EOFError, OSError):
        return False


TONE_RATE = 16_000
# Every character, whitespace included, lasts exactly this long, so duration = len(text) * 60 ms.
TONE_CHAR_MS = 60
TONE_CHAR_FRAMES = TONE_RATE * TONE_CHAR_MS // 1000
_TONE_FADE_FRAMES = TONE_RATE * 5 // 1000  # 5 ms ramps: long enough to stop clicks
_TONE_AMPLITUDE = 0.3 * 32767  # about -10 dBFS: well clear of clipping
_TONE_VOICES = {"default": 1.0, "low": 0.5, "high": 2.0}


@lru_cache(maxsize=1024)
def _tone_bytes(frequency: float) -> bytes:
    """One character's samples as little-endian 16-bit PCM; frequency 0 means silence."""
    samples = array("h", bytes(2 * TONE_CHAR_FRAMES))
    if frequency > 0:
        for i in range(TONE_CHAR_FRAMES):
            edge = min(i, TONE_CHAR_FRAMES - 1 - i)
            gain = min(1.0, edge / _TONE_FADE_FRAMES)
            value = _TONE_AMPLITUDE * gain * math.sin(2 * math.pi * frequency * i / TONE_RATE)
            samples[i] = round(value)
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


class ToneEngine:
    """A deterministic pure-Python stand-in for a real engine: one sine tone per character.

    The same text and voice always give byte-identical output. Synthesis sleeps
    len(text) * ms_per_char ms first, to model a real engine's cost under load.
    """

    name = "tone"
    default_voice = "default"

    def __init__(
        self, *, ms_per_char: float = 10.0, sleep: Callable[[float], None] | None = None
    ) -> None:
        self._ms_per_char = ms_per_char
        self._sleep = sleep  # None: real time, cut short by a cancel

    def voices(self) -> frozenset[str]:
        return frozenset(_TONE_VOICES)

    def check_voice(self, voice: str | None) -> str:
        if voice is None:
            return self.default_voice
        canonical = voice.lower()
        if canonical not in _TONE_VOICES:
            raise _unknown_voice(voice, "the tone engine has default, low and high")
        return canonical

    def available(self) -> bool:
        return True

    def synthesize(
        self, text: str, voice: str, dest: Path, *, cancel: threading.Event | None = None
    ) -> None:
        shift = _TONE_VOICES.get(voice.lower())
        if shift is None:
            raise EngineError(f"unknown voice {voice[:MAX_VOICE_CHARS]!r}")
        self._work(len(text) * self._ms_per_char / 1000, cancel)
        frames = b"".join(
            _tone_bytes(0.0 if c.isspace() else (220 + (ord(c) % 48) * 15) * shift) for c in text
        )
        with _atomic_temp(dest) as tmp:
            with wave.open(str(tmp), "wb") as wav:
                wav.setnchannels(1)
                wav.setsampwidth(2)
                wav.setframerate(TONE_RATE)
                wav.writeframes(frames)
            if cancel is not None and cancel.is_set():  # stopped while writing: leave nothing
                raise EngineCancelled("the synthesis was stopped: its permit's lease ended")

    def _work(self, seconds: float, cancel: threading.Event | None) -> None:
        """The modelled cost of a synthesis, cut short when `cancel` is set."""
        if self._sleep is not None:  # an injected clock (tests): sleep through it, then look
            self._sleep(seconds)
            stopped = cancel is not None and cancel.is_set()
        elif cancel is not None:
            stopped = cancel.wait(seconds)
        else:
            time.sleep(seconds)
            stopped = False
        if stopped:
            raise EngineCancelled("the synthesis was stopped: its permit's lease ended")


def make_engine(settings: Settings) -> Engine:
    """The engine settings.engine names. ConfigError if espeak is chosen but not installed."""
    if settings.engine == EngineName.TONE:
        return ToneEngine(ms_per_char=settings.tone_ms_per_char)
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise ConfigError(
            "TASKMON_ENGINE=espeak but espeak-ng is not on PATH; "
            "install espeak-ng or set TASKMON_ENGINE=tone"
        )
    return EspeakEngine(binary=binary, timeout_s=settings.engine_timeout_s)
