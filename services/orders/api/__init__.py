"""REST routers: catalog, orders (checkout, history, cancel), cart, merchants and their products."""

from __future__ import annotations

from fastapi import APIRouter

from services.orders.api import cart, catalog, merchant_products, merchants, orders


def router() -> APIRouter:
    root = APIRouter()
    for module in (catalog, orders, cart, merchants, merchant_products):
        root.include_router(module.router)
    return root
