-- Sign-in limits counted for the whole cluster, not per replica: one row per limited key
-- (services/common/ratelimit.py). UNLOGGED: a crash or failover forgets the counts (every
-- budget starts full again) rather than making each sign-in attempt a durable write. No
-- index beside the key, and room on each page, so that every hit is a HOT update.
CREATE UNLOGGED TABLE rate_limits (
    name text NOT NULL,
    key text NOT NULL,
    tat timestamptz NOT NULL,
    ceiling timestamptz NOT NULL,
    PRIMARY KEY (name, key),
    CONSTRAINT rate_limits_budget CHECK (tat <= ceiling)
) WITH (fillfactor = 70);
