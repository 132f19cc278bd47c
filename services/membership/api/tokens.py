"""Sign-in and refresh (`POST /v1/auth/token`) and the public keys that verify tokens."""

from __future__ import annotations

from fastapi import APIRouter, Response

from services.common.errors import problems, validation_error
from services.membership import accounts
from services.membership.api.deps import ClientAddress, Ctx
from services.membership.api.models import TokenRequest, TokenResponse
from services.membership.domain.profile import normalize_email
from services.membership.ratelimit import rate_limited
from services.membership.sessions import TokenPair

router = APIRouter(tags=["auth"])


@router.post("/v1/auth/token", response_model=TokenResponse, responses=problems(401, 429),
             summary="Sign in, or refresh a token pair", operation_id="issueToken")
async def token(body: TokenRequest, ctx: Ctx, client: ClientAddress) -> TokenResponse:
    if wait := await ctx.logins_per_client.hit(ctx.pool, client):
        raise rate_limited(wait, "client")
    if body.grant_type == "refresh_token":
        if not body.refresh_token:
            raise validation_error("refresh_token", "refresh_token is required")
        pair = await ctx.issuer.rotate(ctx.pool, body.refresh_token)
    else:
        pair = await _sign_in(body, ctx)
    return TokenResponse(access_token=pair.access_token, expires_in=pair.expires_in,
                         refresh_token=pair.refresh_token)


async def _sign_in(body: TokenRequest, ctx: Ctx) -> TokenPair:
    if not body.email:
        raise validation_error("email", "email is required")
    if body.password is None:
        raise validation_error("password", "password is required")
    if wait := await ctx.logins_per_email.hit(ctx.pool, normalize_email(body.email)):
        raise rate_limited(wait, "email")
    return await accounts.sign_in(pool=ctx.pool, passwords=ctx.passwords, issuer=ctx.issuer,
                                  email=body.email, password=body.password)


# How long the other services may trust the published keys before fetching them again:
# a key retired here (at a restart) is still accepted elsewhere for about this long.
JWKS_MAX_AGE_S = 60


@router.get("/.well-known/jwks.json", include_in_schema=False)
async def jwks(ctx: Ctx, response: Response) -> dict[str, list[dict[str, str]]]:
    response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE_S}"
    return ctx.issuer.ring.jwks()
