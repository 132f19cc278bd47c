"""What to say when an optional part of the install is missing.

pyproject.toml's `local` extra holds what only the local stack needs (the embedded Postgres,
the NATS server binary, protoc); the image and `requirements/runtime.txt` leave it out.
"""

from __future__ import annotations

LOCAL = "local"


def missing_extra(what: str, extra: str = LOCAL) -> str:
    """The message for `what`, which comes with the project's `extra`, not being installed."""
    return (
        f"{what} is not installed: it comes with the project's `{extra}` extra, which the "
        f"image leaves out; `make run` installs it (or `pip install -e '.[{extra}]'`)"
    )
