-- Members: credentials, the profile analytics reports on, tier and points.
CREATE TABLE members (
    id              uuid        PRIMARY KEY,
    email           text        NOT NULL,
    password_hash   text        NOT NULL,
    name            text        NOT NULL,
    birth_year      int         NOT NULL,
    region          text        NOT NULL,
    gender          text,
    tier            text        NOT NULL DEFAULT 'BRONZE'
                                CHECK (tier IN ('BRONZE', 'SILVER', 'GOLD', 'PLATINUM')),
    -- Confirmed spend net of refunds, in fen; the tier follows it.
    lifetime_spend  bigint      NOT NULL DEFAULT 0,
    points_balance  bigint      NOT NULL DEFAULT 0 CHECK (points_balance >= 0),
    -- Points reserved for orders in flight: never more than the balance.
    points_held     bigint      NOT NULL DEFAULT 0 CHECK (points_held >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (points_held <= points_balance)
);
-- Emails are stored normalized; the index on lower() also guards direct inserts.
CREATE UNIQUE INDEX members_email_key ON members (lower(email));

-- Every change of a balance is one entry: sum(delta) per member = points_balance.
CREATE TABLE points_ledger (
    id             bigserial   PRIMARY KEY,
    member_id      uuid        NOT NULL REFERENCES members (id),
    delta          bigint      NOT NULL CHECK (delta <> 0),
    balance_after  bigint      NOT NULL CHECK (balance_after >= 0),
    -- earn: order confirmed; reverse: earned points taken back on refund;
    -- redeem: reserved points spent; restore: redeemed points given back on refund.
    reason         text        NOT NULL CHECK (reason IN ('earn', 'reverse', 'redeem', 'restore')),
    order_id       uuid        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- A replayed event or call can never apply the same change to an order twice.
    UNIQUE (order_id, reason)
);
CREATE INDEX points_ledger_member ON points_ledger (member_id, id DESC);

-- Points held for an order by the checkout saga (ReservePoints .. Commit/Release).
-- A release of an unknown order leaves a tombstone (member_id NULL, points 0), so a
-- ReservePoints that arrives late cannot hold points for an order already given up.
CREATE TABLE points_reservations (
    order_id    uuid        PRIMARY KEY,
    member_id   uuid        REFERENCES members (id),
    points      bigint      NOT NULL CHECK (points >= 0),
    status      text        NOT NULL
                            CHECK (status IN ('reserved', 'committed', 'released', 'restored')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Confirmed orders as membership saw them, so a refund reverses exactly what was applied.
CREATE TABLE member_orders (
    order_id       uuid        PRIMARY KEY,
    member_id      uuid        NOT NULL REFERENCES members (id),
    total          bigint      NOT NULL CHECK (total >= 0),
    refunded       bigint      NOT NULL DEFAULT 0 CHECK (refunded >= 0 AND refunded <= total),
    tier_at_order  text        NOT NULL,
    points_earned  bigint      NOT NULL CHECK (points_earned >= 0),
    confirmed_at   timestamptz NOT NULL,
    refunded_at    timestamptz
);
CREATE INDEX member_orders_member ON member_orders (member_id);

-- Refresh tokens: only a hash is stored. Each login starts a family; a rotated token
-- presented again means it leaked, and the whole family is revoked.
CREATE TABLE refresh_tokens (
    token_hash  text        PRIMARY KEY,
    member_id   uuid        NOT NULL REFERENCES members (id),
    family_id   uuid        NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
