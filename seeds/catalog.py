"""The demo catalog, generated from a fixed random seed: same input, same rows, every time."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

SEED = 20151111  # Singles' Day
MERCHANTS = 50
PRODUCTS = 2_000
SKUS = 5_000
HOT_SHARE = 0.01
# The newest product is this old; each next one a minute older (a stable browse order).
NEWEST = datetime(2025, 11, 11, tzinfo=UTC)

# category -> (nouns, price range in fen, colours, sizes)
CATEGORIES: dict[str, tuple[tuple[str, ...], tuple[int, int], tuple[str, ...], tuple[str, ...]]] = {
    "apparel": (("T-Shirt", "Hoodie", "Down Jacket", "Linen Shirt", "Qipao Dress"),
                (4_900, 89_900), ("black", "white", "red", "navy"), ("S", "M", "L", "XL")),
    "shoes": (("Running Shoes", "Sneakers", "Leather Boots", "Sandals"),
              (9_900, 129_900), ("black", "white", "grey"), ("38", "40", "42", "44")),
    "electronics": (("Wireless Earbuds", "Power Bank", "Smart Watch", "Bluetooth Speaker"),
                    (9_900, 299_900), ("black", "white", "silver"), ("standard",)),
    "phones": (("Smartphone", "Phone Case", "Fast Charger", "Screen Protector"),
               (1_900, 899_900), ("black", "blue", "gold"), ("128GB", "256GB", "512GB")),
    "home": (("Silk Duvet", "Ceramic Teapot", "Bamboo Towel Set", "Floor Lamp"),
             (2_900, 159_900), ("white", "beige", "green"), ("single", "double", "king")),
    "kitchen": (("Rice Cooker", "Wok", "Air Fryer", "Knife Set"),
                (3_900, 99_900), ("black", "red", "steel"), ("small", "large")),
    "beauty": (("Face Serum", "Sheet Masks", "Lipstick", "Sunscreen"),
               (1_900, 59_900), ("rose", "nude", "coral"), ("30ml", "50ml", "100ml")),
    "sports": (("Yoga Mat", "Badminton Racket", "Dumbbells", "Cycling Helmet"),
               (2_900, 199_900), ("black", "blue", "orange"), ("S", "M", "L")),
    "toys": (("Building Blocks", "Plush Panda", "RC Car", "Puzzle"),
             (1_900, 69_900), ("red", "yellow", "green"), ("3+", "6+", "12+")),
    "books": (("Novel", "Cookbook", "Travel Guide", "Comic Box Set"),
              (1_500, 29_900), ("paperback", "hardcover"), ("standard",)),
    "grocery": (("Green Tea", "Dried Mango", "Sichuan Peppercorns", "Instant Noodles"),
                (500, 19_900), ("classic", "spicy"), ("250g", "500g", "1kg")),
    "luggage": (("Carry-on Suitcase", "Backpack", "Travel Duffel", "Laptop Bag"),
                (9_900, 249_900), ("black", "navy", "olive"), ("20in", "24in", "28in")),
}
ADJECTIVES = ("Classic", "Ultra", "Everyday", "Premium", "Lightweight", "Eco", "Pro", "Mini",
              "Deluxe", "Urban", "Vintage", "Smart")
BRANDS = ("Lotus", "Jade", "Panda", "Dragon", "Silk Road", "Bamboo", "Golden", "Peony",
          "Crane", "Lantern", "Phoenix", "Harbor", "Summit", "Maple", "Orchid", "Tide",
          "Comet", "Willow", "Aurora", "Cedar", "Pearl", "Koi", "Nimbus", "Tiger", "Plum")


@dataclass(frozen=True)
class Catalog:
    """Rows ready for COPY, in the column order of COLUMNS."""

    merchants: list[tuple[Any, ...]]
    products: list[tuple[Any, ...]]
    skus: list[tuple[Any, ...]]


COLUMNS = {
    "merchants": ("id", "name", "api_key_hash", "created_at"),
    "products": ("id", "merchant_id", "title", "description", "category", "hot",
                 "created_at", "updated_at"),
    "skus": ("id", "product_id", "attributes", "price", "currency", "stock", "initial_stock"),
}


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _sku_counts(rng: random.Random, caps: list[int]) -> list[int]:
    """1 to `caps[i]` SKUs for product i, SKUS in all."""
    counts = [1] * PRODUCTS
    extra = SKUS - PRODUCTS
    while extra:
        i = rng.randrange(PRODUCTS)
        if counts[i] < caps[i]:
            counts[i] += 1
            extra -= 1
    return counts


def generate(api_key_hashes: list[str]) -> Catalog:
    """The demo catalog; merchants' key hashes come from outside (their keys are secret)."""
    rng = random.Random(SEED)
    merchants = [
        (_uuid(rng), f"{BRANDS[i % len(BRANDS)]} {('Official Store', 'Outlet')[i // len(BRANDS)]}",
         api_key_hashes[i], NEWEST - timedelta(days=30))
        for i in range(MERCHANTS)
    ]
    names = list(CATEGORIES)
    categories = [names[i % len(names)] for i in range(PRODUCTS)]
    caps = [min(4, len(CATEGORIES[c][2]) * len(CATEGORIES[c][3])) for c in categories]
    products, skus = [], []
    for i, n_skus in enumerate(_sku_counts(rng, caps)):
        category = categories[i]
        nouns, (low, high), colours, sizes = CATEGORIES[category]
        merchant = merchants[rng.randrange(MERCHANTS)]
        brand = merchant[1].split(" ")[0]
        title = f"{brand} {rng.choice(ADJECTIVES)} {rng.choice(nouns)}"
        product_id, created = _uuid(rng), NEWEST - timedelta(minutes=i)
        description = (f"{title} from {merchant[1]}, one of our {category} favourites; "
                       f"ships within 48 hours.")
        products.append((product_id, merchant[0], title, description, category,
                         rng.random() < HOT_SHARE, created, created))
        base = rng.randrange(low, high) // 100 * 100 + 99  # prices end in .99
        variants = [(c, s) for c in colours for s in sizes]
        for colour, size in rng.sample(variants, n_skus):
            stock = 0 if rng.random() < 0.05 else rng.randrange(5, 500)
            price = base + rng.randrange(0, 4) * 1_000
            skus.append((_uuid(rng), product_id, {"colour": colour, "size": size}, price,
                         "CNY", stock, stock))
    return Catalog(merchants=merchants, products=products, skus=skus)
