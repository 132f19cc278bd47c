"""`python -m services.payments`: the payments service."""

from __future__ import annotations

from services.common import runtime
from services.payments import bootstrap
from services.payments.settings import PaymentsSettings

if __name__ == "__main__":
    settings = PaymentsSettings()  # type: ignore[call-arg]  # fields come from the environment
    runtime.run_main(bootstrap.start, settings)
