"""k-anonymity for brand insights: no demographic group with fewer than K distinct buyers.

Groups below K are merged into one "other" group (a real group that happens to be called
"other" goes there too). If "other" still has fewer than K buyers it is left out as well,
so the answer never shows a group of fewer than K buyers. The totals of the report may then
exceed the sum of the groups shown: that difference names no group, so it tells nothing
about any one of them. Every buyer belongs to exactly one group of a dimension (members_dim
holds one region, age band and gender per member), so buyer counts add up.
"""

from __future__ import annotations

from dataclasses import dataclass

K = 5
OTHER = "other"


@dataclass(frozen=True, slots=True)
class Bucket:
    group: str
    buyers: int
    gmv: int


def fold(groups: list[Bucket], k: int = K) -> list[Bucket]:
    """Groups of at least `k` buyers (most buyers first), then "other" if it reaches `k`."""
    shown = [g for g in groups if g.buyers >= k and g.group != OTHER]
    small = [g for g in groups if g not in shown]
    shown.sort(key=lambda g: (-g.buyers, -g.gmv, g.group))
    other = Bucket(OTHER, sum(g.buyers for g in small), sum(g.gmv for g in small))
    return [*shown, other] if other.buyers >= k else shown
