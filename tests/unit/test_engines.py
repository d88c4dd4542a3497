"""The engines against real output: ToneEngine's exact format, and the real espeak-ng binary."""

from __future__ import annotations

import math
import shutil
import sys
import threading
import wave
from array import array
from pathlib import Path
from typing import NamedTuple

import pytest

from taskmon.config import ConfigError, Settings
from taskmon.domain import InvalidInput
from taskmon.engines import EngineCancelled, EngineError, EspeakEngine, ToneEngine, make_engine

SENTENCE = "The quick brown fox jumps over the lazy dog."


class Wav(NamedTuple):
    nchannels: int
    sampwidth: int
    framerate: int
    nframes: int


def read_wav(path: Path) -> tuple[Wav, array[int]]:
    with wave.open(str(path), "rb") as wav:
        params = Wav(wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes())
        samples = array("h", wav.readframes(params.nframes))
    if sys.byteorder == "big":
        samples.byteswap()
    return params, samples


def rms(samples: array[int]) -> float:
    return math.sqrt(sum(s * s for s in samples) / len(samples)) if samples else 0.0


def synth_bytes(engine: ToneEngine, tmp_path: Path, text: str, voice: str = "default") -> bytes:
    dest = tmp_path / f"{len(list(tmp_path.iterdir()))}.wav"
    engine.synthesize(text, voice, dest)
    return dest.read_bytes()


@pytest.fixture
def tone() -> ToneEngine:
    return ToneEngine(ms_per_char=0)


@pytest.fixture(scope="module")
def espeak() -> EspeakEngine:
    # Fail rather than skip: a machine without espeak-ng cannot vouch for this engine.
    assert shutil.which("espeak-ng"), "espeak-ng must be installed to run the espeak tests"
    return EspeakEngine(timeout_s=30)


# --- ToneEngine -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["a", "hello world", "x" * 200])
def test_tone_writes_16k_mono_pcm_of_exactly_60ms_per_char(
    tone: ToneEngine, tmp_path: Path, text: str
) -> None:
    dest = tmp_path / "out.wav"
    tone.synthesize(text, "default", dest)
    params, samples = read_wav(dest)
    assert (params.nchannels, params.sampwidth, params.framerate) == (1, 2, 16_000)
    assert params.nframes == round(len(text) * 0.060 * 16_000)
    assert len(samples) == params.nframes
    assert 0 < max(abs(s) for s in samples) < 32767 * 0.5


def test_tone_is_deterministic(tone: ToneEngine, tmp_path: Path) -> None:
    first = synth_bytes(tone, tmp_path, SENTENCE)
    second = synth_bytes(ToneEngine(ms_per_char=0), tmp_path, SENTENCE)
    assert first == second


def test_tone_differs_by_text_and_voice(tone: ToneEngine, tmp_path: Path) -> None:
    outputs = {
        synth_bytes(tone, tmp_path, "hello"),
        synth_bytes(tone, tmp_path, "hellp"),
        synth_bytes(tone, tmp_path, "hello", "low"),
        synth_bytes(tone, tmp_path, "hello", "high"),
    }
    assert len(outputs) == 4


def test_tone_whitespace_is_silence(tone: ToneEngine, tmp_path: Path) -> None:
    dest = tmp_path / "out.wav"
    tone.synthesize(" \t\n", "default", dest)
    _, samples = read_wav(dest)
    assert len(samples) == 3 * 960
    assert not any(samples)


@pytest.mark.parametrize(("text", "ms_per_char"), [("hello", 10.0), ("x" * 300, 2.5), ("a", 0)])
def test_tone_sleeps_in_proportion_to_the_text(
    tmp_path: Path, text: str, ms_per_char: float
) -> None:
    slept: list[float] = []
    engine = ToneEngine(ms_per_char=ms_per_char, sleep=slept.append)
    engine.synthesize(text, "default", tmp_path / "out.wav")
    assert slept == [pytest.approx(len(text) * ms_per_char / 1000)]


def test_tone_voices_and_check_voice(tone: ToneEngine) -> None:
    assert tone.name == "tone"
    assert tone.voices() == frozenset({"default", "low", "high"})
    assert tone.default_voice == "default"
    assert tone.check_voice(None) == "default"
    assert tone.check_voice("HIGH") == "high"
    with pytest.raises(InvalidInput, match="unknown voice 'xx'") as caught:
        tone.check_voice("xx")
    assert caught.value.field_name == "voice"
    assert tone.available()


def test_tone_synthesize_accepts_any_case(tone: ToneEngine, tmp_path: Path) -> None:
    assert synth_bytes(tone, tmp_path, "hi", "LOW") == synth_bytes(tone, tmp_path, "hi", "low")


def test_tone_replaces_dest_atomically(tone: ToneEngine, tmp_path: Path) -> None:
    dest = tmp_path / "out.wav"
    dest.write_bytes(b"old")
    tone.synthesize("new audio", "default", dest)
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]
    assert read_wav(dest)[0].nframes == 9 * 960


def test_tone_failure_is_engine_error(tone: ToneEngine, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="cannot create the output file"):
        tone.synthesize("hi", "default", tmp_path / "missing-dir" / "out.wav")
    with pytest.raises(EngineError, match="unknown voice"):
        tone.synthesize("hi", "nope", tmp_path / "out.wav")
    assert list(tmp_path.iterdir()) == []


def test_tone_accepts_lone_surrogates(tone: ToneEngine, tmp_path: Path) -> None:
    # json.loads('"\\ud800"') produces one, so a client can send it.
    tone.synthesize("a\ud800b", "default", tmp_path / "out.wav")
    assert read_wav(tmp_path / "out.wav")[0].nframes == 3 * 960


# --- EspeakEngine -----------------------------------------------------------------------------


@pytest.mark.espeak
def test_espeak_writes_real_speech(espeak: EspeakEngine, tmp_path: Path) -> None:
    dest = tmp_path / "out.wav"
    espeak.synthesize(SENTENCE, "en", dest)
    params, samples = read_wav(dest)
    assert (params.nchannels, params.sampwidth) == (1, 2)
    assert 8_000 <= params.framerate <= 48_000
    assert params.nframes / params.framerate > 0.3
    assert len(samples) == params.nframes  # the header's sizes match the data
    assert rms(samples) > 200
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]


@pytest.mark.espeak
def test_espeak_writes_into_a_directory_of_a_long_path(
    espeak: EspeakEngine, tmp_path: Path
) -> None:
    """espeak-ng silently writes nothing to a -w path of 200 characters or more (found by the
    chaos runs, whose result directories sit deep in their report)."""
    deep = tmp_path / ("d" * 120) / ("e" * 120)
    deep.mkdir(parents=True)
    dest = deep / "out.wav"
    assert len(str(dest)) > 250
    espeak.synthesize(SENTENCE, "en", dest)
    params, _ = read_wav(dest)
    assert params.nframes > 0


@pytest.mark.espeak
@pytest.mark.parametrize(
    "text",
    [
        "-v xx --help",
        "--stdin -w TMP/evil.wav",
        "She said \"hello\" and 'goodbye'; $(echo hi) `x`",
        "first line\nsecond line\r\nthird",
        "café, naïve, €5 \ud800",
    ],
)
def test_espeak_takes_any_text_as_text(espeak: EspeakEngine, tmp_path: Path, text: str) -> None:
    dest = tmp_path / "out.wav"
    espeak.synthesize(text.replace("TMP", str(tmp_path)), "en-us", dest)
    params, samples = read_wav(dest)
    assert params.nframes / params.framerate > 0.3
    assert rms(samples) > 100
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]


@pytest.mark.espeak
def test_espeak_voices(espeak: EspeakEngine) -> None:
    voices = espeak.voices()
    assert {"en", "en-us", "en-gb", "fr", "de"} <= voices
    assert all(v == v.lower() for v in voices)
    assert espeak.name == "espeak"
    assert espeak.default_voice == "en"
    assert espeak.check_voice(None) == "en"
    assert espeak.check_voice("EN-US") == "en-us"
    # Names are printed with underscores for spaces; the engine passes the language instead.
    assert espeak.check_voice("English_(America)") == "en-us"
    assert espeak.available()


@pytest.mark.espeak
def test_espeak_voice_names_are_usable(espeak: EspeakEngine, tmp_path: Path) -> None:
    espeak.synthesize("Bonjour", espeak.check_voice("french_(france)"), tmp_path / "a.wav")
    # Also when a caller skips check_voice and passes the name as the client spelt it.
    espeak.synthesize("Bonjour", "French_(France)", tmp_path / "b.wav")
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()


@pytest.mark.espeak
def test_espeak_unknown_voice(espeak: EspeakEngine, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="unknown voice 'xx-nope'") as caught:
        espeak.check_voice("xx-nope")
    assert caught.value.field_name == "voice"
    # Bypassing check_voice still fails cleanly, without leaking the output path.
    with pytest.raises(EngineError, match="voice does not exist") as failed:
        espeak.synthesize("hi", "xx-nope", tmp_path / "out.wav")
    assert str(tmp_path) not in str(failed.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.espeak
def test_espeak_voice_listing_is_shared_across_threads() -> None:
    engine = EspeakEngine()
    results: list[frozenset[str]] = []
    threads = [threading.Thread(target=lambda: results.append(engine.voices())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert len(set(results)) == 1
    assert "en" in results[0]


@pytest.mark.espeak
def test_espeak_timeout_leaves_nothing(tmp_path: Path) -> None:
    engine = EspeakEngine(timeout_s=0.001)
    dest = tmp_path / "out.wav"
    with pytest.raises(EngineError, match=r"timed out after 0\.001 s"):
        engine.synthesize("a long sentence to speak. " * 400, "en", dest)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.espeak
def test_espeak_unwritable_dest(espeak: EspeakEngine, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="cannot create the output file"):
        espeak.synthesize("hi", "en", tmp_path / "missing-dir" / "out.wav")


def test_espeak_missing_binary(tmp_path: Path) -> None:
    engine = EspeakEngine(binary=str(tmp_path / "no-such-espeak"))
    assert not engine.available()
    assert engine.voices() == frozenset({"en"})
    assert engine.check_voice(None) == "en"
    with pytest.raises(EngineError, match="could not be started") as caught:
        engine.synthesize("hello", "en", tmp_path / "out.wav")
    assert str(tmp_path) not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


# --- make_engine ------------------------------------------------------------------------------


def test_make_engine_tone(tmp_path: Path) -> None:
    engine = make_engine(Settings(engine="tone", tone_ms_per_char=0, result_dir=tmp_path))
    assert isinstance(engine, ToneEngine)
    assert engine.name == "tone"
    engine.synthesize("ok", engine.check_voice(None), tmp_path / "out.wav")
    assert read_wav(tmp_path / "out.wav")[0].nframes == 2 * 960


@pytest.mark.espeak
def test_make_engine_espeak(tmp_path: Path) -> None:
    engine = make_engine(Settings(engine="espeak", engine_timeout_s=30, result_dir=tmp_path))
    assert isinstance(engine, EspeakEngine)
    assert engine.available()


def test_make_engine_espeak_not_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(engine="espeak", result_dir=tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="TASKMON_ENGINE"):
        make_engine(settings)


# --- cancel: a synthesis stopped from outside -------------------------------------------------


def cancel_after(seconds: float) -> threading.Event:
    cancel = threading.Event()
    threading.Timer(seconds, cancel.set).start()
    return cancel


def test_tone_stops_when_cancelled_and_leaves_nothing(tmp_path: Path) -> None:
    engine = ToneEngine(ms_per_char=10)  # 3000 characters: 30 s unless stopped
    with pytest.raises(EngineCancelled, match="lease ended"):
        engine.synthesize("x" * 3000, "default", tmp_path / "out.wav", cancel=cancel_after(0.1))
    assert list(tmp_path.iterdir()) == []


def test_tone_finishes_when_never_cancelled(tmp_path: Path) -> None:
    engine = ToneEngine(ms_per_char=0)
    engine.synthesize("hello", "default", tmp_path / "out.wav", cancel=threading.Event())
    assert read_wav(tmp_path / "out.wav")[0].nframes > 0


@pytest.mark.espeak
def test_espeak_is_killed_when_cancelled_and_leaves_nothing(tmp_path: Path) -> None:
    engine = EspeakEngine(timeout_s=120)
    cancel = cancel_after(0.2)
    with pytest.raises(EngineCancelled):
        engine.synthesize("a long sentence to speak. " * 4000, "en", tmp_path / "out.wav",
                          cancel=cancel)  # fmt: skip
    assert list(tmp_path.iterdir()) == []
    assert cancel.is_set()
