"""`marketplace up`'s restart back-off and how it names a child's death (pure logic)."""

from __future__ import annotations

import signal

from services.cli.supervisor import BACKOFF_MAX_S, STABLE_AFTER_S, Backoff, exit_reason


def test_the_backoff_doubles_with_each_quick_death_up_to_the_cap() -> None:
    backoff = Backoff()
    waits = [backoff.after(ran_for=0.5) for _ in range(8)]
    assert waits == [1, 2, 4, 8, 16, 30, 30, 30]
    assert max(waits) == BACKOFF_MAX_S


def test_a_stable_run_starts_the_backoff_over() -> None:
    backoff = Backoff()
    for _ in range(4):
        backoff.after(ran_for=1)
    assert backoff.after(ran_for=STABLE_AFTER_S) == 1
    assert backoff.after(ran_for=1) == 2


def test_a_death_is_named_by_exit_code_or_signal() -> None:
    assert exit_reason(3) == "exited with code 3"
    assert exit_reason(-signal.SIGKILL) == "killed by SIGKILL"
    assert exit_reason(-200) == "killed by signal 200"
