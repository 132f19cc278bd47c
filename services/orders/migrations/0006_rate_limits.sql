-- The per-member checkout limit counted for the whole cluster, not per replica: one row per
-- member (services/common/ratelimit.py), spent by the statement that places an order.
-- UNLOGGED: a crash or failover forgets the counts (every budget starts full again) rather
-- than writing WAL for each. No index beside the key, and room on each page, so that every
-- hit is a HOT update.
CREATE UNLOGGED TABLE rate_limits (
    name text NOT NULL,
    key text NOT NULL,
    tat timestamptz NOT NULL,
    ceiling timestamptz NOT NULL,
    PRIMARY KEY (name, key),
    CONSTRAINT rate_limits_budget CHECK (tat <= ceiling)
) WITH (fillfactor = 70);
