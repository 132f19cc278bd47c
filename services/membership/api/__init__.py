"""REST for storefronts: registration, sign-in, the member's own profile and points."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.membership.api import members, tokens

# Explicit, so it wins over the app-wide ORJSONResponse that FastAPI now deprecates.
router = APIRouter(default_response_class=JSONResponse)
router.include_router(members.router)
router.include_router(tokens.router)
