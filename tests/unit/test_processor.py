from __future__ import annotations

import asyncio
import random
import time

import pytest

from services.payments.processor import (
    CardProcessor,
    ProcessorResult,
    ProcessorUnavailable,
    SimulatedProcessor,
)


class FakeSleep:
    """Records the delays a processor asks for instead of waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def processor(sleep: FakeSleep) -> CardProcessor:
    return SimulatedProcessor(sleep=sleep)


async def test_visa_approves(processor: CardProcessor, sleep: FakeSleep) -> None:
    result = await processor.authorize("tok_visa", 12_999, "order-1")

    assert result.approved and result.decline_code is None
    assert result.reference.startswith("sim_auth_")
    assert sleep.delays == []


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("tok_chargeDeclined", "card_declined"),
        ("tok_insufficientFunds", "insufficient_funds"),
        ("tok_nonsense", "invalid_token"),
        ("", "invalid_token"),
    ],
)
async def test_declines_by_token(processor: CardProcessor, token: str, code: str) -> None:
    result = await processor.authorize(token, 12_999, "order-1")

    assert (result.approved, result.decline_code) == (False, code)


async def test_slow_token_approves_after_three_seconds(
    processor: CardProcessor, sleep: FakeSleep
) -> None:
    result = await processor.authorize("tok_slow", 12_999, "order-1")

    assert result.approved
    assert sleep.delays == [3.0]


async def test_same_key_same_reference_other_key_other_reference(
    processor: CardProcessor,
) -> None:
    first = await processor.authorize("tok_visa", 100, "order-1")
    replay = await processor.authorize("tok_visa", 100, "order-1")
    other = await processor.authorize("tok_visa", 100, "order-2")

    assert first == replay
    assert other.reference != first.reference


async def test_capture_void_and_refund_approve(processor: CardProcessor) -> None:
    auth = await processor.authorize("tok_visa", 10_000, "order-1")

    results = [
        await processor.capture(auth.reference, 10_000, "order-1:capture"),
        await processor.refund(auth.reference, 2_500, "order-1:refund:1"),
        await processor.void(auth.reference, "order-1:void"),
    ]

    assert all(r.approved and r.decline_code is None for r in results)
    assert [r.reference[:8] for r in results] == ["sim_cap_", "sim_ref_", "sim_void"]


async def test_a_non_positive_amount_is_declined(processor: CardProcessor) -> None:
    assert (await processor.authorize("tok_visa", 0, "k")).decline_code == "invalid_amount"
    assert (await processor.capture("ref", 0, "k")).decline_code == "invalid_amount"
    assert (await processor.refund("ref", -1, "k")).decline_code == "invalid_amount"


async def test_latency_applies_to_every_call(sleep: FakeSleep) -> None:
    processor = SimulatedProcessor(latency_s=0.25, sleep=sleep)

    await processor.authorize("tok_visa", 100, "a")
    await processor.authorize("tok_slow", 100, "b")
    await processor.capture("ref", 100, "c")
    await processor.void("ref", "d")
    await processor.refund("ref", 100, "e")

    assert sleep.delays == [0.25, 3.25, 0.25, 0.25, 0.25]


async def test_the_default_sleep_really_waits() -> None:
    processor = SimulatedProcessor(latency_s=0.05)

    started = time.monotonic()
    await processor.authorize("tok_visa", 100, "a")

    assert time.monotonic() - started >= 0.045


async def test_full_failure_rate_makes_every_call_unavailable(sleep: FakeSleep) -> None:
    processor = SimulatedProcessor(failure_rate=1.0, sleep=sleep)

    calls = [
        processor.authorize("tok_visa", 100, "a"),
        processor.capture("ref", 100, "b"),
        processor.void("ref", "c"),
        processor.refund("ref", 100, "d"),
    ]
    for call in calls:
        with pytest.raises(ProcessorUnavailable):
            await call


async def test_a_seeded_failure_rate_is_reproducible_and_roughly_right() -> None:
    async def outcomes(seed: int) -> list[bool]:
        processor = SimulatedProcessor(failure_rate=0.3, rng=random.Random(seed))
        seen = []
        for i in range(1_000):
            try:
                await processor.authorize("tok_visa", 100, str(i))
                seen.append(True)
            except ProcessorUnavailable:
                seen.append(False)
        return seen

    first, again = await outcomes(7), await outcomes(7)

    assert first == again
    assert 230 <= first.count(False) <= 370


async def test_a_failure_is_not_a_decline() -> None:
    processor = SimulatedProcessor(failure_rate=1.0)

    with pytest.raises(ProcessorUnavailable):
        await processor.authorize("tok_chargeDeclined", 100, "a")


@pytest.mark.parametrize(("latency_s", "failure_rate"), [(-0.1, 0.0), (0.0, -0.01), (0.0, 1.01)])
def test_nonsense_settings_are_refused(latency_s: float, failure_rate: float) -> None:
    with pytest.raises(ValueError):
        SimulatedProcessor(latency_s=latency_s, failure_rate=failure_rate)


def test_results_are_immutable() -> None:
    result = ProcessorResult(True, None, "sim_auth_x")

    with pytest.raises(AttributeError):
        result.approved = False  # type: ignore[misc]


async def test_no_real_waiting_with_an_injected_sleep(sleep: FakeSleep) -> None:
    processor = SimulatedProcessor(latency_s=60.0, sleep=sleep)

    await asyncio.wait_for(processor.authorize("tok_slow", 100, "a"), timeout=1.0)

    assert sleep.delays == [63.0]
