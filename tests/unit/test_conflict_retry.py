"""A placing or settling step that loses a lock race is run again, a bounded number of times."""

from __future__ import annotations

import asyncpg
import pytest

from services.orders.pipeline import CONFLICT_ATTEMPTS, retried


def _losing(times: int, error: type[Exception]) -> tuple[list[int], object]:
    runs: list[int] = []

    async def attempt() -> str:
        runs.append(1)
        if len(runs) <= times:
            raise error("lost a lock race")
        return "settled"

    return runs, attempt


@pytest.mark.parametrize("error", [asyncpg.DeadlockDetectedError, asyncpg.SerializationError])
async def test_a_lost_lock_race_is_run_again(error: type[Exception]) -> None:
    runs, attempt = _losing(CONFLICT_ATTEMPTS - 1, error)
    assert await retried(attempt, what="settle") == "settled"  # type: ignore[arg-type]
    assert len(runs) == CONFLICT_ATTEMPTS


async def test_retries_are_bounded_and_other_errors_are_not_retried() -> None:
    runs, attempt = _losing(CONFLICT_ATTEMPTS, asyncpg.DeadlockDetectedError)
    with pytest.raises(asyncpg.DeadlockDetectedError):
        await retried(attempt, what="settle")  # type: ignore[arg-type]
    assert len(runs) == CONFLICT_ATTEMPTS
    runs, attempt = _losing(1, asyncpg.UniqueViolationError)
    with pytest.raises(asyncpg.UniqueViolationError):
        await retried(attempt, what="settle")  # type: ignore[arg-type]
    assert len(runs) == 1
