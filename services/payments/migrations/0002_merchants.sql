-- Merchants as orders announces them (orders.merchant.created|key_rotated): who may read
-- which balance with an X-API-Key. Only the key's SHA-256 is ever known here.
CREATE TABLE merchants (
    id            uuid        PRIMARY KEY,
    name          text        NOT NULL,
    api_key_hash  text        NOT NULL,
    -- When orders made the change; an older event never overwrites a newer key.
    changed_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX merchants_api_key_hash ON merchants (api_key_hash);

-- Admin listing by merchant, newest first.
CREATE INDEX payments_merchant_seq ON payments (merchant_id, seq DESC);
