-- The purge (services/common/purge.py) deletes by age in small batches; each batch finds its
-- rows through these instead of scanning the table. outbox_published_at serves the outbox.
CREATE INDEX IF NOT EXISTS inbox_processed_at ON inbox (processed_at);
CREATE INDEX IF NOT EXISTS dead_letter_retried_at ON dead_letter (retried_at)
    WHERE retried_at IS NOT NULL;
