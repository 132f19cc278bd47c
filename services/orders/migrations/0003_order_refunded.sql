-- What payments has refunded of a confirmed order, in minor units: partial refunds leave the
-- order CONFIRMED (money only), a full one makes it REFUNDED with refunded = total.
ALTER TABLE orders ADD COLUMN refunded bigint NOT NULL DEFAULT 0;
-- Orders refunded before this column existed were always refunded in full.
UPDATE orders SET refunded = total WHERE status = 'REFUNDED';
ALTER TABLE orders ADD CONSTRAINT orders_refunded_range CHECK (refunded BETWEEN 0 AND total);
