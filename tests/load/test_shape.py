"""The peak-day shape, as Locust's tick() sees it (no Locust, no stack: pure logic)."""

from __future__ import annotations

import pytest

from tests.load.shape import PeakDay

DAY = PeakDay(base_users=10, peak_factor=10, day_s=200)


@pytest.mark.parametrize(
    ("t", "users", "phase"),
    [
        (0, 10, "evening"),
        (49.9, 10, "evening"),  # the calm evening is the first quarter of the day
        (53, 55, "midnight"),  # halfway through the 6-second jump
        (56, 100, "plateau"),  # ten times the base within seconds of midnight
        (115.9, 100, "plateau"),
        (116, 100, "decay"),
        (158, 36, "decay"),  # decays fast, then slowly, towards 1.5 x the base
        (199.9, 15, "decay"),
    ],
)
def test_users_follow_the_peak_day(t: float, users: int, phase: str) -> None:
    tick = DAY.tick(t)
    assert tick is not None
    assert (tick[0], DAY.phase(t)) == (users, phase)


def test_the_jump_spawns_fast_and_the_rest_gently() -> None:
    assert DAY.tick(53) == (55, 15.0)  # 90 users in 6 seconds
    assert DAY.tick(10) == (10, 5.0)
    assert DAY.tick(130) is not None and DAY.tick(130)[1] == 5.0  # type: ignore[index]


def test_the_day_ends_and_scales() -> None:
    assert DAY.tick(200) is None
    short = PeakDay(base_users=3, peak_factor=10, day_s=60)
    assert short.tick(0) == (3, 1.5)
    assert short.tick(30)[0] == 30  # type: ignore[index]
    with pytest.raises(ValueError):
        PeakDay(base_users=0)
