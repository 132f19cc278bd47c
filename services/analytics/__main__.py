"""`python -m services.analytics`: live GMV, top products and payment health."""

from __future__ import annotations

from services.analytics import bootstrap
from services.analytics.settings import AnalyticsSettings
from services.common import runtime

if __name__ == "__main__":
    settings = AnalyticsSettings()  # type: ignore[call-arg]  # fields come from the env
    runtime.run_main(bootstrap.start, settings)
