"""PostgreSQL guards for deposits and payouts, so the rules hold even for raw SQL:

- a deposit starts `pending` and ends `succeeded` or `failed`; a payout starts `pending` and moves
  only along `wallet.models.PAYOUT_TRANSITIONS`; an ended one never changes;
- merchant, amount, currency and destination/method are immutable, and so are the provider and
  its reference once the provider has answered with one;
- at COMMIT (deferred constraint triggers) every status has its ledger entries: a payout its
  `payout_created` reserve, an in-transit one its `payout_in_transit`, a paid one `payout_paid`
  and never `payout_failed` (and the reverse); a succeeded deposit its `deposit_confirmed`, any
  other deposit none.
"""

from django.db import migrations

# The tables as of this migration (wallet.models); a change needs a migration that replaces
# the functions.
_PAYOUT_ALLOWED = (
    "('pending','in_transit'), ('pending','failed'), ('in_transit','paid'), ('in_transit','failed')"
)
_DEPOSIT_ALLOWED = "('pending','succeeded'), ('pending','failed')"

_GUARD = """
CREATE FUNCTION wallet_{table}_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'pending' THEN
            RAISE EXCEPTION '{table} % must be created pending, not %', NEW.id, NEW.status
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.merchant_id <> OLD.merchant_id OR NEW.amount <> OLD.amount
       OR NEW.currency <> OLD.currency OR NEW.{target} <> OLD.{target} THEN
        RAISE EXCEPTION '{table} %: merchant, amount, currency and {target} are immutable', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    IF OLD.provider_reference <> ''
       AND (NEW.provider <> OLD.provider OR NEW.provider_reference <> OLD.provider_reference) THEN
        RAISE EXCEPTION '{table} %: provider and provider_reference are immutable once set', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status
       AND (OLD.status, NEW.status) NOT IN (VALUES {allowed}) THEN
        RAISE EXCEPTION '{table} %: transition % -> % is not allowed', NEW.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER wallet_{table}_guard
    BEFORE INSERT OR UPDATE ON wallet_{table}
    FOR EACH ROW EXECUTE FUNCTION wallet_{table}_guard();
"""

SQL = _GUARD.format(table="payout", target="destination", allowed=_PAYOUT_ALLOWED) + \
    _GUARD.format(table="deposit", target="method", allowed=_DEPOSIT_ALLOWED) + """
CREATE FUNCTION wallet_entry_exists(ref_type varchar, ref_id varchar, entry_kind varchar)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM ledger_journalentry
                    WHERE reference_type = ref_type AND reference_id = ref_id AND kind = entry_kind)
$$;

CREATE FUNCTION wallet_payout_check_entries() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    current varchar;
BEGIN
    -- The row as it is now, at COMMIT: a payout may pass several states in one transaction.
    SELECT status INTO current FROM wallet_payout WHERE id = NEW.id;
    IF current IS NULL THEN
        RETURN NULL;
    END IF;
    IF NOT wallet_entry_exists('payout', NEW.id, 'payout_created')
       OR (current = 'in_transit' AND NOT wallet_entry_exists('payout', NEW.id, 'payout_in_transit'))
       OR (current = 'paid' AND NOT wallet_entry_exists('payout', NEW.id, 'payout_paid'))
       OR (current = 'failed' AND NOT wallet_entry_exists('payout', NEW.id, 'payout_failed'))
       OR (current <> 'paid' AND wallet_entry_exists('payout', NEW.id, 'payout_paid'))
       OR (current <> 'failed' AND wallet_entry_exists('payout', NEW.id, 'payout_failed')) THEN
        RAISE EXCEPTION 'payout % is % but its ledger entries do not say so', NEW.id, current
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER wallet_payout_entries
    AFTER INSERT OR UPDATE OF status ON wallet_payout DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION wallet_payout_check_entries();

CREATE FUNCTION wallet_deposit_check_entries() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    current varchar;
BEGIN
    SELECT status INTO current FROM wallet_deposit WHERE id = NEW.id;
    IF current IS NULL THEN
        RETURN NULL;
    END IF;
    IF (current = 'succeeded') <> wallet_entry_exists('deposit', NEW.id, 'deposit_confirmed') THEN
        RAISE EXCEPTION 'deposit % is % but its ledger entries do not say so', NEW.id, current
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER wallet_deposit_entries
    AFTER INSERT OR UPDATE OF status ON wallet_deposit DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION wallet_deposit_check_entries();
"""

REVERSE = """
DROP TRIGGER IF EXISTS wallet_deposit_entries ON wallet_deposit;
DROP FUNCTION IF EXISTS wallet_deposit_check_entries();
DROP TRIGGER IF EXISTS wallet_payout_entries ON wallet_payout;
DROP FUNCTION IF EXISTS wallet_payout_check_entries();
DROP FUNCTION IF EXISTS wallet_entry_exists(varchar, varchar, varchar);
DROP TRIGGER IF EXISTS wallet_deposit_guard ON wallet_deposit;
DROP FUNCTION IF EXISTS wallet_deposit_guard();
DROP TRIGGER IF EXISTS wallet_payout_guard ON wallet_payout;
DROP FUNCTION IF EXISTS wallet_payout_guard();
"""


class Migration(migrations.Migration):
    dependencies = [("wallet", "0001_initial"), ("ledger", "0002_ledger_triggers")]
    operations = [migrations.RunSQL(SQL, REVERSE)]
