"""The committed generated code must match proto/; and it must import as a package."""

from __future__ import annotations

import importlib

from services.common import protogen


def test_generated_code_is_up_to_date() -> None:
    stale = protogen.check()
    assert stale == [], f"gen/ is stale, run `make proto` and commit: {stale}"


def test_generated_modules_import_as_a_package() -> None:
    payments = importlib.import_module("marketplace.payments.v1.payments_pb2_grpc")
    membership = importlib.import_module("marketplace.membership.v1.membership_pb2_grpc")
    assert hasattr(payments, "PaymentServiceStub")
    assert hasattr(membership, "MembershipServiceStub")


def test_every_event_subject_has_a_message_and_a_stream() -> None:
    from services.common.events import SUBJECTS, stream_for

    for subject, message in SUBJECTS.items():
        assert subject.count(".") == 2, subject
        assert stream_for(subject) == subject.split(".")[0].upper()
        assert message().DESCRIPTOR.full_name.startswith("marketplace.events.v1.")
