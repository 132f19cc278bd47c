"""Report windows and minute buckets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

DEFAULT_SPAN = timedelta(minutes=60)
MAX_SPAN = timedelta(days=31)
MINUTE = timedelta(minutes=1)


class WindowError(ValueError):
    """A report window a client asked for that cannot be answered; names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def minute_of(moment: datetime) -> datetime:
    """The UTC minute bucket `moment` falls in."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: event times must carry a UTC offset")
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def report_window(
    start: datetime | None, end: datetime | None, *, now: datetime
) -> tuple[datetime, datetime]:
    """The [from, to) window a report covers: default the last hour, at most 31 days."""
    for field, value in (("from", start), ("to", end)):
        if value is not None and value.tzinfo is None:
            raise WindowError(field, "needs a UTC offset (RFC 3339), e.g. 2025-11-11T00:00:00Z")
    end = (end or now).astimezone(UTC)
    start = (start or end - DEFAULT_SPAN).astimezone(UTC)
    if start >= end:
        raise WindowError("from", "must be earlier than to")
    if end - start > MAX_SPAN:
        raise WindowError("to", f"the window may span at most {MAX_SPAN.days} days")
    return start, end



# Per-second series are for the live view; longer ranges should ask per minute.
MAX_SECOND_SPAN = timedelta(hours=6)


def floor_to(moment: datetime, granularity: str) -> datetime:
    """The UTC bucket (`second` or `minute`) `moment` falls in."""
    if granularity == "minute":
        return minute_of(moment)
    if granularity == "second":
        if moment.tzinfo is None:
            raise ValueError(f"naive datetime {moment!r}: event times must carry a UTC offset")
        return moment.astimezone(UTC).replace(microsecond=0)
    raise ValueError(f"unknown granularity {granularity!r}")


def check_granularity(start: datetime, end: datetime, granularity: str) -> None:
    if granularity == "second" and end - start > MAX_SECOND_SPAN:
        hours = int(MAX_SECOND_SPAN.total_seconds() // 3600)
        raise WindowError("granularity", f"per-second series cover at most {hours} hours; "
                                         "use granularity=minute")
