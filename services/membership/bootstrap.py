"""Composition root: infrastructure, the REST app, the gRPC server and the order consumer."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from marketplace.membership.v1 import membership_pb2_grpc as pb_grpc

from services.common import grpcutil, ratelimit, runtime, web
from services.common.runtime import Infra
from services.membership import batch, handlers, rpc
from services.membership import ratelimit as login_limits
from services.membership.api import router
from services.membership.api.deps import Context
from services.membership.keys import KeyRing, LocalVerifier
from services.membership.passwords import Passwords
from services.membership.sessions import TokenIssuer
from services.membership.settings import MembershipSettings
from services.membership.store import tokens


def build_context(
    settings: MembershipSettings, infra: Infra, clock: Callable[[], float] = time.monotonic
) -> Context:
    ring = KeyRing.from_files(
        settings.jwt_private_key_file,
        settings.jwt_previous_key_files,
        settings.jwt_retired_key_files,
    )
    return Context(
        pool=infra.pool,
        passwords=Passwords(concurrency=settings.password_hash_concurrency),
        issuer=TokenIssuer(
            ring=ring,
            access_ttl=timedelta(seconds=settings.access_token_ttl_s),
            refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_s),
        ),
        verifier=LocalVerifier(ring),
        logins_per_email=login_limits.per_email(settings, clock),
        logins_per_client=login_limits.per_client(settings, clock),
    )


async def start(
    settings: MembershipSettings, *, clock: Callable[[], float] = time.monotonic
) -> runtime.Service[Context]:
    """Everything but the serving loop; tests may pass the clock of the sign-in limits."""
    infra = await runtime.start_infra(settings, Path(__file__).parent)
    context = build_context(settings, infra, clock)
    app = web.create_app(
        title="Membership",
        description="Members, tokens, tiers and points.",
        readiness=infra.readiness,
        max_in_flight=settings.max_in_flight,
        context=context,
    )
    app.include_router(router)
    server = grpcutil.server(settings.internal_auth_secret.get_secret_value(),
                             rpc.ALLOWED_CALLERS)
    pb_grpc.add_MembershipServiceServicer_to_server(rpc.MembershipServicer(infra.pool), server)
    infra.consumers.append(
        batch.OrderConsumer(
            pool=infra.pool, bus=infra.bus, name=handlers.CONSUMER, stream=handlers.STREAM,
            subjects=handlers.SUBJECTS, handler=handlers.handle,
            linger_s=settings.consumer_linger_ms / 1000,
        )
    )
    infra.purges.append(tokens.purge(timedelta(days=settings.refresh_token_retention_days)))
    return runtime.Service(infra=infra, app=app, context=context, grpc_server=server,
                           grpc_port=settings.grpc_port, grpc_services=(rpc.SERVICE,),
                           tasks=[ratelimit.keep_purged(infra.pool)])

