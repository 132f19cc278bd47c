-- Payments: one per order, with its amounts in minor units.
CREATE TABLE payments (
    id            uuid        PRIMARY KEY,
    seq           bigserial   NOT NULL UNIQUE,  -- stable order for cursor pagination
    order_id      uuid        NOT NULL UNIQUE,
    member_id     uuid        NOT NULL,
    merchant_id   uuid        NOT NULL,
    status        text        NOT NULL CHECK (status IN (
                      'AUTHORIZED', 'CAPTURED', 'PARTIALLY_REFUNDED', 'REFUNDED',
                      'VOIDED', 'FAILED')),
    currency      text        NOT NULL,
    amount        bigint      NOT NULL CHECK (amount >= 0),
    captured      bigint      NOT NULL DEFAULT 0,
    refunded      bigint      NOT NULL DEFAULT 0,
    -- The platform's share taken at capture; refunds return it proportionally.
    commission    bigint      NOT NULL DEFAULT 0 CHECK (commission >= 0),
    decline_code  text,
    processor_ref text,
    -- Fingerprint of the Authorize request, so a retry with another key can be recognised.
    request_hash  text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (0 <= refunded AND refunded <= captured AND captured <= amount),
    CHECK (commission <= captured)
);
CREATE INDEX payments_member ON payments (member_id);

CREATE TABLE refunds (
    id          uuid        PRIMARY KEY,
    payment_id  uuid        NOT NULL REFERENCES payments (id),
    amount      bigint      NOT NULL CHECK (amount > 0),
    reason      text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_payment ON refunds (payment_id);

-- The first answer to each state-changing call, replayed for the same key and request.
CREATE TABLE idempotency_keys (
    method       text        NOT NULL,
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    payment_id   uuid        NOT NULL REFERENCES payments (id),
    response     bytea       NOT NULL,  -- the serialized marketplace.payments.v1.Payment
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (method, key)
);

-- Double-entry ledger: append-only, and the lines of every entry sum to zero.
CREATE TABLE journal_entries (
    id          bigserial   PRIMARY KEY,
    payment_id  uuid        NOT NULL REFERENCES payments (id),
    kind        text        NOT NULL CHECK (kind IN ('authorize', 'capture', 'void', 'refund')),
    currency    text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX journal_entries_payment ON journal_entries (payment_id);

CREATE TABLE journal_lines (
    id        bigserial PRIMARY KEY,
    entry_id  bigint    NOT NULL REFERENCES journal_entries (id),
    account   text      NOT NULL,
    amount    bigint    NOT NULL CHECK (amount <> 0)
);
CREATE INDEX journal_lines_entry ON journal_lines (entry_id);
CREATE INDEX journal_lines_account ON journal_lines (account);

CREATE FUNCTION journal_check_entry(entry bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    total numeric;
    lines int;
BEGIN
    SELECT coalesce(sum(amount), 0), count(*) INTO total, lines
      FROM journal_lines WHERE entry_id = entry;
    IF lines < 2 OR total <> 0 THEN
        RAISE EXCEPTION 'journal entry % is unbalanced: % lines summing to %', entry, lines, total
            USING ERRCODE = 'check_violation';
    END IF;
END $$;

CREATE FUNCTION journal_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'journal_entries' THEN
        PERFORM journal_check_entry(NEW.id);
    ELSE
        PERFORM journal_check_entry(NEW.entry_id);
    END IF;
    RETURN NULL;
END $$;

-- Deferred to commit, so an entry's lines can be inserted one by one in its transaction.
CREATE CONSTRAINT TRIGGER journal_entries_balanced AFTER INSERT ON journal_entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION journal_entry_balanced();
CREATE CONSTRAINT TRIGGER journal_lines_balanced AFTER INSERT ON journal_lines
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION journal_entry_balanced();

CREATE FUNCTION journal_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the journal is append-only: post a reversing entry instead'
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER journal_entries_append_only BEFORE UPDATE OR DELETE ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION journal_append_only();
CREATE TRIGGER journal_lines_append_only BEFORE UPDATE OR DELETE ON journal_lines
    FOR EACH ROW EXECUTE FUNCTION journal_append_only();
CREATE TRIGGER journal_entries_no_truncate BEFORE TRUNCATE ON journal_entries
    FOR EACH STATEMENT EXECUTE FUNCTION journal_append_only();
CREATE TRIGGER journal_lines_no_truncate BEFORE TRUNCATE ON journal_lines
    FOR EACH STATEMENT EXECUTE FUNCTION journal_append_only();
