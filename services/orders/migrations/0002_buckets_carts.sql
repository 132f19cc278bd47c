-- Hot SKUs (flash sales) keep their on-hand stock spread over bucket rows, so buyers lock
-- one of N rows instead of queueing on one. For a bucketed SKU, skus.stock stays the sum
-- of its buckets (both change in one transaction), so the per-row conservation check on
-- skus and the audit keep holding; losers of a sold-out race never touch the skus row.
ALTER TABLE skus ADD COLUMN bucketed boolean NOT NULL DEFAULT false;

CREATE TABLE sku_stock_buckets (
    sku_id uuid    NOT NULL REFERENCES skus (id),
    bucket integer NOT NULL CHECK (bucket >= 0),
    stock  integer NOT NULL CHECK (stock >= 0),
    PRIMARY KEY (sku_id, bucket)
);

-- Categories with product counts.
CREATE INDEX products_category ON products (category);

-- The signed-in member's cart: one line per SKU.
CREATE TABLE cart_items (
    member_id  uuid        NOT NULL,
    sku_id     uuid        NOT NULL REFERENCES skus (id),
    quantity   integer     NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    added_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (member_id, sku_id)
);

-- An order checked out from the cart empties those cart lines when it is confirmed.
ALTER TABLE orders ADD COLUMN from_cart boolean NOT NULL DEFAULT false;
