from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.analytics.domain.kanon import OTHER, Bucket, K, fold
from services.analytics.domain.window import WindowError, check_granularity, floor_to


def test_groups_under_k_merge_into_other() -> None:
    groups = [Bucket("CN-31", 6, 600), Bucket("CN-44", 4, 400), Bucket("CN-11", 1, 100)]
    assert fold(groups) == [Bucket("CN-31", 6, 600), Bucket(OTHER, 5, 500)]


def test_other_still_under_k_is_left_out() -> None:
    assert fold([Bucket("CN-31", 9, 900), Bucket("CN-44", 4, 400)]) == [Bucket("CN-31", 9, 900)]


def test_a_real_group_called_other_is_folded_too() -> None:
    assert fold([Bucket(OTHER, 3, 30), Bucket("x", 2, 20)]) == [Bucket(OTHER, 5, 50)]


@given(st.lists(st.tuples(st.text(min_size=1, max_size=3), st.integers(1, 12)), max_size=12,
                unique_by=lambda t: t[0]))
def test_no_group_shown_has_fewer_than_k_buyers(raw: list[tuple[str, int]]) -> None:
    groups = [Bucket(name, buyers, buyers * 10) for name, buyers in raw]
    shown = fold(groups)
    assert all(g.buyers >= K for g in shown)
    assert sum(g.buyers for g in shown) <= sum(g.buyers for g in groups)
    kept = {g.group for g in shown} - {OTHER}
    assert kept == {g.group for g in groups if g.buyers >= K and g.group != OTHER}


def test_buckets_per_second_and_minute() -> None:
    t = datetime(2025, 11, 11, 0, 0, 59, 999_000, tzinfo=UTC)
    assert floor_to(t, "second") == t.replace(microsecond=0)
    assert floor_to(t, "minute") == t.replace(second=0, microsecond=0)
    with pytest.raises(ValueError):
        floor_to(t, "hour")


def test_per_second_series_are_bounded() -> None:
    t = datetime(2025, 11, 11, tzinfo=UTC)
    check_granularity(t, t + timedelta(hours=6), "second")
    check_granularity(t, t + timedelta(days=31), "minute")
    with pytest.raises(WindowError) as err:
        check_granularity(t, t + timedelta(hours=7), "second")
    assert err.value.field == "granularity"
