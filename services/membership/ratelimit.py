"""Sign-in limits per e-mail and per client address, counted for the whole cluster."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from services.common.errors import Problem
from services.common.ratelimit import Rate, SharedLimit, too_many
from services.membership.settings import MembershipSettings


def per_email(
    settings: MembershipSettings, clock: Callable[[], float] = time.monotonic
) -> SharedLimit:
    return SharedLimit("login-email", Rate.per_window(settings.login_attempts_per_email,
                                                      settings.login_window_s), clock=clock)


def per_client(
    settings: MembershipSettings, clock: Callable[[], float] = time.monotonic
) -> SharedLimit:
    return SharedLimit("login-client", Rate.per_window(settings.login_attempts_per_client,
                                                       settings.login_window_s), clock=clock)


def rate_limited(retry_after_s: float, what: str) -> Problem:
    seconds = max(1, math.ceil(retry_after_s))
    return too_many(seconds, f"too many sign-in attempts for this {what}; "
                             f"retry after {seconds} s")
