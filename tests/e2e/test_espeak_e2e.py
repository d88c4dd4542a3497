"""Real speech through real processes: espeak-ng under `gunicorn -w 4`."""

from __future__ import annotations

import array
import math
import wave
from pathlib import Path

import pytest

from taskmon.harness.stack import GunicornInstance
from tests.support.http import PinnedClient

pytestmark = [pytest.mark.e2e, pytest.mark.espeak]


def test_espeak_synthesizes_real_speech(tmp_path: Path) -> None:
    env = {"TASKMON_BACKEND": "memory", "TASKMON_ENGINE": "espeak"}
    with GunicornInstance(workers=4, env=env, workdir=tmp_path / "stack") as stack:
        client = PinnedClient(stack.base_url)
        try:
            status, body = client.json(
                "POST",
                "/api/tts",
                {"text": "The cap is the same in every worker.", "voice": "en-us"},
            )
            assert status == 202, body
            final = client.wait_terminal(body["task_id"])
            assert final["state"] == "done", final
            code, headers, data = client.request("GET", body["result_url"])
        finally:
            client.close()
    assert code == 200
    assert headers["Content-Type"] == "audio/wav"
    path = tmp_path / "speech.wav"
    path.write_bytes(data)
    with wave.open(str(path)) as wav:
        assert wav.getnchannels() == 1
        assert wav.getsampwidth() == 2
        seconds = wav.getnframes() / wav.getframerate()
        samples = array.array("h", wav.readframes(wav.getnframes()))
    rms = math.sqrt(sum(s * s for s in samples) / len(samples))
    assert 1.0 < seconds < 10.0
    assert rms > 200, "speech, not silence"
