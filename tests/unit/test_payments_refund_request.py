"""The admin refund body: Money or bare fen, positive, in the service's currency."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from services.common.errors import Problem
from services.payments.api.deps import MerchantCaller
from services.payments.api.models import RefundRequest


@pytest.mark.parametrize(
    ("body", "fen"),
    [
        ({"amount": {"amount": 1_250, "currency": "CNY"}, "reason": "r"}, 1_250),
        ({"amount": 1_250, "reason": "r"}, 1_250),
        ({"reason": "r"}, 0),  # everything still refundable
    ],
)
def test_the_amount_in_fen(body: dict, fen: int) -> None:
    assert RefundRequest.model_validate(body).fen("CNY") == fen


@pytest.mark.parametrize(
    ("amount", "field"),
    [(0, "amount"), (-5, "amount"), ({"amount": 100, "currency": "USD"}, "amount.currency")],
)
def test_refused_amounts_name_their_field(amount: object, field: str) -> None:
    with pytest.raises(Problem) as err:
        RefundRequest.model_validate({"amount": amount, "reason": "r"}).fen("CNY")
    assert (err.value.status, err.value.extra["field"]) == (422, field)


def test_a_reason_is_required() -> None:
    with pytest.raises(ValidationError):
        RefundRequest.model_validate({"amount": 100, "reason": ""})


def test_a_merchant_reads_only_itself_and_an_admin_reads_all() -> None:
    mine, other = uuid.uuid4(), uuid.uuid4()
    assert MerchantCaller(mine).may_read(mine)
    assert not MerchantCaller(mine).may_read(other)
    assert MerchantCaller(None).may_read(other)
