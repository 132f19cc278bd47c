-- How many times recovery has taken up a PENDING order: its next look is an exponential,
-- jittered, capped back-off from this (store.orders.claim_due), so an order whose payment
-- keeps failing is retried ever more rarely instead of on every pass. Constant default:
-- no table rewrite, and existing rows start from their first attempt.
ALTER TABLE orders ADD COLUMN recovery_attempts integer NOT NULL DEFAULT 0;
