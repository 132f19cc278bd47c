-- Catalog: merchants, products and their SKUs (the unit that is priced and stocked).
CREATE TABLE merchants (
    id           uuid PRIMARY KEY,
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    api_key_hash text        NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE products (
    id          uuid PRIMARY KEY,
    merchant_id uuid        NOT NULL REFERENCES merchants (id),
    title       text        NOT NULL,
    description text        NOT NULL DEFAULT '',
    category    text        NOT NULL,
    hot         boolean     NOT NULL DEFAULT false,
    search      tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', title), 'A')
        || setweight(to_tsvector('english', category), 'B')
        || setweight(to_tsvector('english', description), 'C')
    ) STORED,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- Browsing pages newest first, on its own or within a category or a merchant.
CREATE INDEX products_newest ON products (created_at DESC, id DESC);
CREATE INDEX products_category_newest ON products (category, created_at DESC, id DESC);
CREATE INDEX products_merchant_newest ON products (merchant_id, created_at DESC, id DESC);
CREATE INDEX products_search ON products USING gin (search);

-- Stock conservation holds per row and is enforced here, not only in code:
-- initial_stock + restocked = stock (on hand) + held (pending orders) + sold (confirmed).
CREATE TABLE skus (
    id            uuid PRIMARY KEY,
    product_id    uuid        NOT NULL REFERENCES products (id),
    attributes    jsonb       NOT NULL DEFAULT '{}',
    price         bigint      NOT NULL CHECK (price > 0),
    currency      text        NOT NULL DEFAULT 'CNY' CHECK (currency ~ '^[A-Z]{3}$'),
    stock         integer     NOT NULL CHECK (stock >= 0),
    initial_stock integer     NOT NULL CHECK (initial_stock >= 0),
    restocked     bigint      NOT NULL DEFAULT 0 CHECK (restocked >= 0),
    held          integer     NOT NULL DEFAULT 0 CHECK (held >= 0),
    sold          bigint      NOT NULL DEFAULT 0 CHECK (sold >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT skus_stock_conserved CHECK (initial_stock + restocked = stock + held + sold)
);
CREATE INDEX skus_product ON skus (product_id);
-- Price filters: "does the product have a SKU in this price range (and in stock)?"
CREATE INDEX skus_product_price ON skus (product_id, price) INCLUDE (stock);

CREATE TABLE orders (
    id               uuid PRIMARY KEY,
    member_id        uuid        NOT NULL,
    status           text        NOT NULL
        CHECK (status IN ('PENDING', 'CONFIRMED', 'CANCELLED', 'REFUNDED')),
    subtotal         bigint      NOT NULL CHECK (subtotal >= 0),
    discount         bigint      NOT NULL CHECK (discount >= 0),
    points_redeemed  bigint      NOT NULL CHECK (points_redeemed >= 0),
    total            bigint      NOT NULL CHECK (total >= 0),
    currency         text        NOT NULL DEFAULT 'CNY',
    -- The storefront's card token, kept so recovery can authorize again with the same key.
    payment_token    text        NOT NULL,
    payment_id       uuid,
    cancel_reason    text,
    idempotency_key  text        NOT NULL,
    payment_deadline timestamptz NOT NULL,
    -- When recovery may next look at a PENDING order (a lease: one replica at a time).
    retry_at         timestamptz NOT NULL,
    -- Points still to commit (confirmed) or release (cancelled) in membership.
    points_pending   boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (total = subtotal - discount - points_redeemed)
);
CREATE INDEX orders_member_newest ON orders (member_id, created_at DESC, id DESC);
-- Recovery scans only the (few) PENDING orders, oldest first.
CREATE INDEX orders_pending ON orders (created_at) WHERE status = 'PENDING';
CREATE INDEX orders_points_pending ON orders (updated_at) WHERE points_pending;

CREATE TABLE order_lines (
    order_id    uuid    NOT NULL REFERENCES orders (id),
    line_no     integer NOT NULL,
    sku_id      uuid    NOT NULL REFERENCES skus (id),
    product_id  uuid    NOT NULL,
    merchant_id uuid    NOT NULL,
    category    text    NOT NULL,
    quantity    integer NOT NULL CHECK (quantity > 0),
    unit_price  bigint  NOT NULL CHECK (unit_price >= 0),
    line_total  bigint  NOT NULL CHECK (line_total = unit_price * quantity),
    PRIMARY KEY (order_id, line_no),
    UNIQUE (order_id, sku_id)
);
CREATE INDEX order_lines_sku ON order_lines (sku_id);

-- Idempotency-Key per member: the first response is replayed byte for byte.
CREATE TABLE idempotency_keys (
    member_id       uuid        NOT NULL,
    key             text        NOT NULL,
    request_hash    text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('in_flight', 'done')),
    order_id        uuid        UNIQUE,
    response_status integer,
    response_body   bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL DEFAULT now() + interval '24 hours',
    PRIMARY KEY (member_id, key),
    CHECK (status = 'in_flight' OR (response_status IS NOT NULL AND response_body IS NOT NULL))
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
