-- Per-order state: every order event merges in here, whatever order they arrive in.
CREATE TABLE orders_fact (
    order_id     uuid        PRIMARY KEY,
    member_id    uuid,
    status       text        NOT NULL DEFAULT 'PENDING',
    total        bigint      NOT NULL DEFAULT 0,
    confirmed_at timestamptz,
    refunded     bigint      NOT NULL DEFAULT 0,
    refunded_at  timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_fact_confirmed_at ON orders_fact (confirmed_at)
    WHERE confirmed_at IS NOT NULL;

-- Live GMV: what per-order transitions added to each UTC minute (amounts in fen).
CREATE TABLE gmv_minute (
    minute  timestamptz PRIMARY KEY,
    gmv     bigint NOT NULL DEFAULT 0,
    refunds bigint NOT NULL DEFAULT 0,
    orders  int    NOT NULL DEFAULT 0
);

-- Units and GMV of confirmed order lines per SKU and minute (gross: refunds carry no lines).
CREATE TABLE product_sales (
    minute      timestamptz NOT NULL,
    sku_id      uuid        NOT NULL,
    product_id  uuid        NOT NULL,
    merchant_id uuid,
    category    text        NOT NULL DEFAULT '',
    units       bigint      NOT NULL DEFAULT 0,
    gmv         bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, sku_id)
);
CREATE INDEX product_sales_product ON product_sales (product_id, minute);

-- Demographics for brand insights; never an email or a name.
CREATE TABLE members_dim (
    member_id       uuid PRIMARY KEY,
    age_band        text,
    region          text,
    gender          text,
    registered_at   timestamptz,
    tier            text,
    tier_changed_at timestamptz
);

-- One row per payment, for the payment success rate; status only ever moves forward.
CREATE TABLE payments_fact (
    payment_id    uuid        PRIMARY KEY,
    order_id      uuid,
    member_id     uuid,
    status        text        NOT NULL,
    status_rank   smallint    NOT NULL,
    amount        bigint      NOT NULL DEFAULT 0,
    captured      bigint      NOT NULL DEFAULT 0,
    refunded      bigint      NOT NULL DEFAULT 0,
    decline_code  text        NOT NULL DEFAULT '',
    first_seen_at timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX payments_fact_first_seen ON payments_fact (first_seen_at);
