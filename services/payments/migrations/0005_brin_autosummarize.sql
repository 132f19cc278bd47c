-- A BRIN index only finds rows in the block ranges it has summarized; new ranges are
-- summarized by VACUUM, so between two autovacuum runs `audit --since` read every page
-- appended since the last one. With autosummarize each range is summarized as soon as it
-- fills (an autovacuum work item), and the window read stays a few pages.
ALTER INDEX journal_entries_created_at SET (autosummarize = on);
