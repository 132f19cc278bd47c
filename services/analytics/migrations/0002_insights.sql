-- Per-second GMV beside the per-minute buckets: the big screen and `granularity=second`.
CREATE TABLE gmv_second (
    second  timestamptz PRIMARY KEY,
    gmv     bigint NOT NULL DEFAULT 0,
    refunds bigint NOT NULL DEFAULT 0,
    orders  int    NOT NULL DEFAULT 0
);
-- Orders confirmed before this migration: their GMV at the second of confirmation. Refunds
-- cannot be split per second from orders_fact; `marketplace analytics rebuild` restores them.
INSERT INTO gmv_second (second, gmv, orders)
SELECT date_trunc('second', confirmed_at), sum(total), count(*)
  FROM orders_fact WHERE confirmed_at IS NOT NULL
 GROUP BY 1;

-- Confirmed order lines with their buyer: brand insights (buyers, baskets, repeat purchases).
CREATE TABLE order_lines (
    order_id     uuid        NOT NULL,
    sku_id       uuid        NOT NULL,
    product_id   uuid        NOT NULL,
    merchant_id  uuid,
    member_id    uuid,
    category     text        NOT NULL DEFAULT '',
    units        bigint      NOT NULL,
    gmv          bigint      NOT NULL,
    confirmed_at timestamptz NOT NULL,
    PRIMARY KEY (order_id, sku_id)
);
CREATE INDEX order_lines_merchant ON order_lines (merchant_id, confirmed_at);

-- Merchants and the hash of their current API key (never the key), for insights' auth.
CREATE TABLE merchants (
    merchant_id  uuid        PRIMARY KEY,
    name         text        NOT NULL DEFAULT '',
    api_key_hash text        NOT NULL,
    key_set_at   timestamptz NOT NULL
);
CREATE INDEX merchants_key ON merchants (api_key_hash);
