"""The history generator's members, written once their history is done: membership's rows
(balance, lifetime spend and tier as their orders left them), orders' projection of their
tiers and analytics' demographics. They sign in as history-<seed>-<n>@example.com with
PASSWORD; member 0 of a run of 2,000 orders or more is the one with 1,000 orders."""

from __future__ import annotations

from datetime import datetime

from services.cli.history_model import Members
from services.membership.domain.profile import age_band
from services.membership.passwords import Passwords

PASSWORD = "History-Shopper-2015"
REGIONS = ("CN-BJ", "CN-SH", "CN-GD", "CN-ZJ", "CN-SC", "CN-JS")
GENDERS = ("female", "male", "female", "male", "other")

COLUMNS: dict[str, tuple[str, ...]] = {
    "membership.members": ("id", "email", "password_hash", "name", "birth_year", "region",
                           "gender", "tier", "lifetime_spend", "points_balance", "created_at"),
    "orders.member_tiers": ("member_id", "tier", "changed_at", "stream_seq", "updated_at"),
    "analytics.members_dim": ("member_id", "age_band", "region", "gender", "registered_at",
                              "tier", "tier_changed_at"),
}


def email(seed: int, n: int) -> str:
    return f"history-{seed}-{n}@example.com"


async def password_hash() -> str:
    """One hash for every member of a run: an argon2 hash costs ~90 ms of a core each."""
    return await Passwords(concurrency=1).hash(PASSWORD)


def rows(members: Members, *, password_hash: str, seed: int,
         now: datetime) -> dict[str, list[tuple[object, ...]]]:
    out: dict[str, list[tuple[object, ...]]] = {table: [] for table in COLUMNS}
    for n, member_id in enumerate(members.ids):
        tier, registered = members.tier(n), members.registered[n]
        changed = members.tier_changed[n] or registered
        region, gender = REGIONS[n % len(REGIONS)], GENDERS[n % len(GENDERS)]
        born = members.birth_years[n]
        out["membership.members"].append((
            member_id, email(seed, n), password_hash, f"History Shopper {n}", born, region,
            gender, tier, members.spend[n], members.balance[n], registered))
        out["orders.member_tiers"].append((member_id, tier, changed, 0, changed))
        out["analytics.members_dim"].append((
            member_id, age_band(born, now.year), region, gender, registered, tier, changed))
    return out
