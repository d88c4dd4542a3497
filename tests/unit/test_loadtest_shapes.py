"""The load shapes: their stages in order, and scaling that keeps their form."""

from __future__ import annotations

import pytest
from loadtests.shapes import SHAPES, Stage, shape_from_env


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_every_shape_has_stages_in_order(name: str) -> None:
    ends = [stage.until_s for stage in SHAPES[name].stages]
    assert ends == sorted(ends)
    assert all(stage.users >= 1 for stage in SHAPES[name].stages)


def test_the_smoke_shape_fits_in_ci() -> None:
    assert SHAPES["smoke"].duration_s <= 60


def test_scaling_keeps_the_form() -> None:
    spike = SHAPES["spike"].scaled(users=40, duration_s=75)
    assert spike.peak_users == 40
    assert spike.duration_s == pytest.approx(75)
    assert [s.users for s in spike.stages] == [5, 40, 40, 5]


def test_the_stage_in_force_and_the_end() -> None:
    smoke = SHAPES["smoke"]
    assert smoke.at(0) == smoke.stages[0]
    assert smoke.at(smoke.duration_s) is None


def test_the_shape_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKMON_LOADTEST_SHAPE", "average")
    monkeypatch.setenv("TASKMON_LOADTEST_USERS", "8")
    monkeypatch.setenv("TASKMON_LOADTEST_DURATION_S", "30")
    shape = shape_from_env()
    assert (shape.name, shape.peak_users, shape.duration_s) == ("average", 8, 30)
    assert isinstance(shape.stages[0], Stage)
    monkeypatch.setenv("TASKMON_LOADTEST_SHAPE", "nope")
    with pytest.raises(ValueError, match="choose one of"):
        shape_from_env()
