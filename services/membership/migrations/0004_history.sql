-- `marketplace audit --since` reads the points ledger entries written in its window; the
-- ledger is append-only and in time order, so a BRIN index finds them.
CREATE INDEX IF NOT EXISTS points_ledger_created_at ON points_ledger USING brin (created_at);
-- The purge deletes refresh tokens long expired (MEMBERSHIP_REFRESH_TOKEN_RETENTION_DAYS).
CREATE INDEX IF NOT EXISTS refresh_tokens_expires_at ON refresh_tokens (expires_at);
