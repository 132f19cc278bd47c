-- `marketplace audit --since` reads the payments changed in its window (every write sets
-- updated_at) and the journal entries posted in it; the journal is append-only and in time
-- order, so a BRIN index (a few pages for millions of rows) finds them.
CREATE INDEX IF NOT EXISTS payments_updated_at ON payments (updated_at);
CREATE INDEX IF NOT EXISTS journal_entries_created_at ON journal_entries USING brin (created_at);
-- Answers to state-changing calls are replayed while a retry can still come; the purge
-- deletes older ones by age (PAYMENTS_IDEMPOTENCY_RETENTION_DAYS).
CREATE INDEX IF NOT EXISTS idempotency_keys_created_at ON idempotency_keys (created_at);
