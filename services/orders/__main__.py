"""`python -m services.orders`: catalog, checkout saga and order history."""

from __future__ import annotations

from services.common import runtime
from services.orders import bootstrap
from services.orders.settings import OrdersSettings

if __name__ == "__main__":
    settings = OrdersSettings()  # type: ignore[call-arg]  # fields come from the env
    runtime.run_main(bootstrap.start, settings)
