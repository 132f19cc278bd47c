-- As payments' 0005: the points ledger's BRIN index summarizes each block range as it fills,
-- so `audit --since` never reads the pages appended since the last autovacuum.
ALTER INDEX points_ledger_created_at SET (autosummarize = on);
