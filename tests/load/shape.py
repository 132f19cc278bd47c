"""The peak day as a pure function of time: users and spawn rate at each second of the run.

A calm evening at the base rate, a jump to `peak_factor` times that within seconds at
"midnight", a plateau, then a slow decay back towards the base. The whole day is
compressed into `day_s` seconds; the phases keep their proportions at any length.
No Locust import here, so the shape can be unit-tested without gevent.
"""

from __future__ import annotations

from dataclasses import dataclass

# Share of the compressed day spent in each phase (they sum to 1).
EVENING, JUMP, PLATEAU = 0.25, 0.03, 0.30
DECAY = 1.0 - EVENING - JUMP - PLATEAU


@dataclass(frozen=True)
class PeakDay:
    """Scale (`base_users`) and duration (`day_s`) are the two options that matter."""

    base_users: int = 10
    peak_factor: float = 10.0
    day_s: float = 180.0
    # After the decay the rate is back to this multiple of the base (a busy morning).
    end_factor: float = 1.5

    def __post_init__(self) -> None:
        if self.base_users < 1 or self.peak_factor < 1 or self.day_s <= 0:
            raise ValueError("need base_users >= 1, peak_factor >= 1 and day_s > 0")

    @property
    def peak_users(self) -> int:
        return round(self.base_users * self.peak_factor)

    @property
    def midnight_s(self) -> float:
        return EVENING * self.day_s

    def phase(self, t: float) -> str:
        """evening, midnight (the jump), plateau, decay or over."""
        edges = (("evening", EVENING), ("midnight", JUMP), ("plateau", PLATEAU), ("decay", DECAY))
        start = 0.0
        for name, share in edges:
            start += share * self.day_s
            if t < start:
                return name
        return "over"

    def users_at(self, t: float) -> int:
        """How many simulated shoppers should be active t seconds into the run."""
        base, peak = float(self.base_users), float(self.peak_users)
        jump_start = self.midnight_s
        jump_end = jump_start + JUMP * self.day_s
        plateau_end = jump_end + PLATEAU * self.day_s
        end = base * self.end_factor
        name = self.phase(t)
        if name == "evening":
            value = base
        elif name == "midnight":
            value = base + (peak - base) * (t - jump_start) / (jump_end - jump_start)
        elif name == "plateau":
            value = peak
        elif name == "decay":
            # Exponential-looking decay: fast at first, then a long tail.
            x = (t - plateau_end) / (self.day_s - plateau_end)
            value = end + (peak - end) * (1.0 - x) ** 2
        else:
            value = end
        return max(1, round(value))

    def spawn_rate_at(self, t: float) -> float:
        """Users started (or stopped) per second: steep at midnight, gentle otherwise."""
        if self.phase(t) == "midnight":
            # The whole jump happens within the JUMP window (a few seconds).
            return max(1.0, (self.peak_users - self.base_users) / (JUMP * self.day_s))
        return max(1.0, self.base_users / 2)

    def tick(self, t: float) -> tuple[int, float] | None:
        """Locust's LoadTestShape.tick(): (users, spawn rate), or None when the day is over."""
        if t >= self.day_s:
            return None
        return self.users_at(t), self.spawn_rate_at(t)
