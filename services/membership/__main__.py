"""`python -m services.membership`: members, tokens, tiers and points."""

from __future__ import annotations

from services.common import runtime
from services.membership import bootstrap
from services.membership.settings import MembershipSettings

if __name__ == "__main__":
    settings = MembershipSettings()  # type: ignore[call-arg]  # fields come from the env
    runtime.run_main(bootstrap.start, settings)
