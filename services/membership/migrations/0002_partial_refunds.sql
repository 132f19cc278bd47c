-- Partial refunds reverse earned points step by step, so an order can hold several
-- `reverse` entries: each is keyed by the order's running refund (fen) it answers, and a
-- replayed event still can never apply the same change twice. Every other reason keeps
-- one entry per order (refunded_total 0).
ALTER TABLE points_ledger
    ADD COLUMN refunded_total bigint NOT NULL DEFAULT 0 CHECK (refunded_total >= 0);
-- Reversals made before this column existed answered the order's refund as it stood then.
UPDATE points_ledger l SET refunded_total = o.refunded
  FROM member_orders o WHERE o.order_id = l.order_id AND l.reason = 'reverse';
ALTER TABLE points_ledger DROP CONSTRAINT points_ledger_order_id_reason_key;
ALTER TABLE points_ledger
    ADD CONSTRAINT points_ledger_order_reason_refund_key UNIQUE (order_id, reason, refunded_total);
