"""PostgreSQL guards for the ledger, so its rules hold even for raw SQL:

- every journal entry has at least two postings summing to zero per currency, checked at COMMIT
  by DEFERRABLE INITIALLY DEFERRED constraint triggers on both tables;
- postings and entries are immutable: UPDATE and DELETE are rejected (fix with a reversal);
- inserting a posting applies it to its account under the row lock (`balance += amount`,
  `version += 1`) and checks currency, merchant and `balance_after` against the account;
- an `available` balance may only be taken below zero by refund, dispute and reversal entries
  (never by a payout); `reserved` never goes below zero (CHECK constraint in 0001);
- account balances change only through a posting, and an account's identity never changes;
- an entry's `prev_hash` is the hash of the entry before it in the chain.

TRUNCATE is deliberately not trapped: the test runner flushes tables with it, and in production
the application role must simply not own these tables (`ledger_verify` would catch it anyway).
"""

from django.db import migrations

ZERO_HASH = "0" * 64
# ledger.models.ENTRY_KINDS_MAY_OVERDRAW_AVAILABLE as of this migration.
_MAY_OVERDRAW = "'dispute_opened', 'refund_created', 'reversal'"

SQL = f"""
CREATE FUNCTION ledger_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % is not allowed: ledger rows are immutable; post a reversing entry',
        TG_OP, TG_TABLE_NAME USING ERRCODE = 'integrity_constraint_violation';
END $$;

CREATE TRIGGER ledger_posting_immutable BEFORE UPDATE OR DELETE ON ledger_posting
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER ledger_journalentry_immutable BEFORE UPDATE OR DELETE ON ledger_journalentry
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();

CREATE FUNCTION ledger_check_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    eid varchar;
    n bigint := 0;
    r record;
    bad_currency varchar;
    bad_total bigint;
BEGIN
    IF TG_TABLE_NAME = 'ledger_journalentry' THEN
        eid := NEW.id;
    ELSE
        eid := NEW.entry_id;
    END IF;
    -- One pass over the entry's postings (index on entry_id): count them, find a bad currency.
    FOR r IN SELECT currency, sum(amount) AS total, count(*) AS postings
               FROM ledger_posting WHERE entry_id = eid GROUP BY currency ORDER BY currency LOOP
        n := n + r.postings;
        IF r.total <> 0 AND bad_currency IS NULL THEN
            bad_currency := r.currency;
            bad_total := r.total;
        END IF;
    END LOOP;
    IF n < 2 THEN
        RAISE EXCEPTION 'journal entry % has % posting(s); an entry needs at least two', eid, n
            USING ERRCODE = 'check_violation';
    END IF;
    IF bad_currency IS NOT NULL THEN
        RAISE EXCEPTION 'journal entry %: % postings sum to %, not zero', eid, bad_currency, bad_total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER ledger_journalentry_balanced
    AFTER INSERT ON ledger_journalentry DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_entry_balanced();
CREATE CONSTRAINT TRIGGER ledger_posting_balanced
    AFTER INSERT ON ledger_posting DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_entry_balanced();

CREATE FUNCTION ledger_posting_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    acct record;
    entry_kind varchar;
BEGIN
    -- The UPDATE takes (or reuses) the account's row lock, so concurrent postings serialise.
    UPDATE ledger_account SET balance = balance + NEW.amount, version = version + 1
     WHERE id = NEW.account_id
     RETURNING currency, kind, merchant_id, balance INTO acct;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'posting %: account % does not exist', NEW.id, NEW.account_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF acct.currency <> NEW.currency THEN
        RAISE EXCEPTION 'posting %: currency % differs from account % currency %',
            NEW.id, NEW.currency, NEW.account_id, acct.currency USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.merchant_id IS DISTINCT FROM acct.merchant_id THEN
        RAISE EXCEPTION 'posting %: merchant % differs from account % merchant %',
            NEW.id, NEW.merchant_id, NEW.account_id, acct.merchant_id
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.balance_after <> acct.balance THEN
        RAISE EXCEPTION 'posting %: balance_after % but account % balance becomes %',
            NEW.id, NEW.balance_after, NEW.account_id, acct.balance USING ERRCODE = 'check_violation';
    END IF;
    IF acct.kind = 'available' AND acct.balance < 0 AND NEW.amount < 0 THEN
        SELECT kind INTO entry_kind FROM ledger_journalentry WHERE id = NEW.entry_id;
        IF entry_kind IS NULL OR entry_kind NOT IN ({_MAY_OVERDRAW}) THEN
            RAISE EXCEPTION 'posting %: a % entry may not take available account % below zero (to %)',
                NEW.id, entry_kind, NEW.account_id, acct.balance USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER ledger_posting_apply BEFORE INSERT ON ledger_posting
    FOR EACH ROW EXECUTE FUNCTION ledger_posting_apply();

CREATE FUNCTION ledger_account_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.merchant_id IS DISTINCT FROM OLD.merchant_id OR NEW.currency <> OLD.currency
       OR NEW.kind <> OLD.kind OR NEW.provider <> OLD.provider THEN
        RAISE EXCEPTION 'account %: owner, currency, kind and provider are immutable', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    -- Depth 1 is a direct UPDATE; the posting trigger's own UPDATE runs at depth 2.
    IF (NEW.balance <> OLD.balance OR NEW.version <> OLD.version) AND pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION 'account %: balances change only by inserting postings', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER ledger_account_guard BEFORE UPDATE ON ledger_account
    FOR EACH ROW EXECUTE FUNCTION ledger_account_guard();

CREATE FUNCTION ledger_account_guard_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.balance <> 0 OR NEW.version <> 0 THEN
        RAISE EXCEPTION 'account % must start with balance 0 and version 0', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER ledger_account_guard_insert BEFORE INSERT ON ledger_account
    FOR EACH ROW EXECUTE FUNCTION ledger_account_guard_insert();

CREATE FUNCTION ledger_entry_link() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    expected varchar;
BEGIN
    IF NEW.sequence = 1 THEN
        expected := '{ZERO_HASH}';
    ELSE
        SELECT hash INTO expected FROM ledger_journalentry WHERE sequence = NEW.sequence - 1;
    END IF;
    IF expected IS NULL OR NEW.prev_hash <> expected THEN
        RAISE EXCEPTION 'journal entry % (sequence %): prev_hash does not match entry %',
            NEW.id, NEW.sequence, NEW.sequence - 1 USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER ledger_entry_link BEFORE INSERT ON ledger_journalentry
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_link();
"""

REVERSE = """
DROP TRIGGER IF EXISTS ledger_entry_link ON ledger_journalentry;
DROP FUNCTION IF EXISTS ledger_entry_link();
DROP TRIGGER IF EXISTS ledger_account_guard_insert ON ledger_account;
DROP FUNCTION IF EXISTS ledger_account_guard_insert();
DROP TRIGGER IF EXISTS ledger_account_guard ON ledger_account;
DROP FUNCTION IF EXISTS ledger_account_guard();
DROP TRIGGER IF EXISTS ledger_posting_apply ON ledger_posting;
DROP FUNCTION IF EXISTS ledger_posting_apply();
DROP TRIGGER IF EXISTS ledger_posting_balanced ON ledger_posting;
DROP TRIGGER IF EXISTS ledger_journalentry_balanced ON ledger_journalentry;
DROP FUNCTION IF EXISTS ledger_check_entry_balanced();
DROP TRIGGER IF EXISTS ledger_journalentry_immutable ON ledger_journalentry;
DROP TRIGGER IF EXISTS ledger_posting_immutable ON ledger_posting;
DROP FUNCTION IF EXISTS ledger_reject_change();
"""


class Migration(migrations.Migration):
    dependencies = [("ledger", "0001_initial")]
    operations = [migrations.RunSQL(SQL, REVERSE)]
