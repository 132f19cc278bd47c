"""The `Idempotency-Key` header of every state-changing POST (IETF draft semantics).

Declared required, so clients and their generators see it as such; a request without it
answers 400 (`errors.install`: a required header left out), one with an empty or too long
key 422 naming the header. A key reused with another body (422) or still in flight (409)
is the route's to decide, against what it stored under the key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Header

from services.common.inputs import Text

HEADER = "Idempotency-Key"


def key_header(max_length: int = 255) -> Callable[..., Awaitable[str]]:
    """The dependency that hands a route the request's key:
    `key: Annotated[str, Depends(idempotency.key_header())]`."""

    # The bound is a default, not an annotation: annotations are resolved by name in this
    # module (`from __future__ import annotations`), where `max_length` is not one.
    async def idempotency_key(
        key: Text = Header(  # noqa: B008 (FastAPI reads it from the signature)
            alias=HEADER, min_length=1, max_length=max_length,
            description="any unique string per operation: a retry with the same key and "
                        "body repeats the first answer instead of acting twice",
        ),
    ) -> str:
        return key

    return idempotency_key
