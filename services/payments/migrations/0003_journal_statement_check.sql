-- The balance check of journal lines, once per INSERT statement instead of once per line.
--
-- Every entry's lines are written by one statement (store.post), so checking the entries
-- that statement touched, when it ends, is as strict as the deferred per-line trigger
-- was, and stricter in one way: lines added to an entry by a later statement must balance
-- by themselves. An entry without lines is still caught at commit by the deferred
-- trigger on journal_entries.
DROP TRIGGER journal_lines_balanced ON journal_lines;

CREATE FUNCTION journal_lines_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT l.entry_id, sum(l.amount) AS total, count(*) AS lines INTO bad
      FROM journal_lines l
     WHERE l.entry_id IN (SELECT DISTINCT entry_id FROM new_lines)
     GROUP BY l.entry_id
    HAVING count(*) < 2 OR sum(l.amount) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry % is unbalanced: % lines summing to %',
            bad.entry_id, bad.lines, bad.total USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER journal_lines_balanced AFTER INSERT ON journal_lines
    REFERENCING NEW TABLE AS new_lines
    FOR EACH STATEMENT EXECUTE FUNCTION journal_lines_balanced();
