-- Orders' projection of membership's tiers (membership.member.registered, .tier.changed),
-- so that a checkout without points prices its discount without a call to membership.
-- Each row keeps the version of the event that set it, (changed_at, stream_seq): an event
-- redelivered late, older than what the row holds, changes nothing. The stream sequence
-- breaks ties between two changes stamped in the same microsecond.
CREATE TABLE member_tiers (
    member_id uuid PRIMARY KEY,
    tier text NOT NULL,
    changed_at timestamptz NOT NULL,
    stream_seq bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The tier orders knew when it priced the order, and that tier's discount in basis points:
-- the audit checks `discount` against these, not against membership's tier of today.
-- NULL on orders placed before they were recorded. Nullable with no default: no rewrite.
ALTER TABLE orders ADD COLUMN tier text, ADD COLUMN discount_bps integer;
