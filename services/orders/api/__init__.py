"""REST routers: catalog (browse), orders (checkout, history, cancel), merchants (admin)."""

from __future__ import annotations

from fastapi import APIRouter

from services.orders.api import catalog, merchants, orders


def router() -> APIRouter:
    root = APIRouter()
    for module in (catalog, orders, merchants):
        root.include_router(module.router)
    return root
