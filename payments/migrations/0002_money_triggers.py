"""PostgreSQL guards for payments and refunds, so the rules hold even for raw SQL:

- a payment's status may only change along the contract's table (and starts as `created`);
- a refund starts `pending` and may only become `succeeded` or `failed`;
- pending + succeeded refunds never exceed the captured amount (the trigger takes the payment's
  row lock itself, so two concurrent inserts cannot both pass);
- `amount_refunded` equals the sum of succeeded refunds at COMMIT (deferred constraint trigger).
"""

from django.db import migrations

# The contract's table as of this migration (payments.models.PAYMENT_TRANSITIONS); a change to
# the table needs a new migration that replaces the function.
_ALLOWED = (
    "('created','authorization_requested'), ('authorization_requested','authorized'), ('authorization_requested','captured'), ('authorization_requested','failed'), ('authorized','captured'), ('created','canceled'), ('authorized','canceled'), ('captured','settled'), ('captured','refunded'), ('settled','refunded'), ('captured','charged_back'), ('settled','charged_back'), ('refunded','charged_back')"
)

SQL = f"""
CREATE FUNCTION payments_payment_guard_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'created' THEN
            RAISE EXCEPTION 'payment % must be created in status created, not %', NEW.id, NEW.status
                USING ERRCODE = 'check_violation';
        END IF;
    ELSIF NEW.status IS DISTINCT FROM OLD.status
          AND (OLD.status, NEW.status) NOT IN (VALUES {_ALLOWED}) THEN
        RAISE EXCEPTION 'payment %: transition % -> % is not allowed', NEW.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER payments_payment_guard_status
    BEFORE INSERT OR UPDATE OF status ON payments_payment
    FOR EACH ROW EXECUTE FUNCTION payments_payment_guard_status();

CREATE FUNCTION payments_refund_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    captured bigint;
    reserved bigint;
BEGIN
    IF TG_OP = 'INSERT' AND NEW.status <> 'pending' THEN
        RAISE EXCEPTION 'refund % must be created pending', NEW.id USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NEW.payment_id <> OLD.payment_id OR NEW.amount <> OLD.amount OR NEW.currency <> OLD.currency THEN
            RAISE EXCEPTION 'refund %: payment, amount and currency are immutable', NEW.id
                USING ERRCODE = 'check_violation';
        END IF;
        IF NEW.status IS DISTINCT FROM OLD.status
           AND NOT (OLD.status = 'pending' AND NEW.status IN ('succeeded', 'failed')) THEN
            RAISE EXCEPTION 'refund %: transition % -> % is not allowed', NEW.id, OLD.status, NEW.status
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    -- Serialise refunds of one payment on its row lock, then check the sum.
    SELECT amount_captured INTO captured FROM payments_payment WHERE id = NEW.payment_id FOR UPDATE;
    SELECT COALESCE(SUM(amount), 0) INTO reserved FROM payments_refund
     WHERE payment_id = NEW.payment_id AND status IN ('pending', 'succeeded') AND id <> NEW.id;
    IF NEW.status IN ('pending', 'succeeded') THEN
        reserved := reserved + NEW.amount;
    END IF;
    IF reserved > captured THEN
        RAISE EXCEPTION 'refunds of payment % would reach % but only % was captured',
            NEW.payment_id, reserved, captured USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER payments_refund_guard
    BEFORE INSERT OR UPDATE ON payments_refund
    FOR EACH ROW EXECUTE FUNCTION payments_refund_guard();

CREATE FUNCTION payments_check_amount_refunded_of(pid varchar) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    stored bigint;
    actual bigint;
BEGIN
    SELECT amount_refunded INTO stored FROM payments_payment WHERE id = pid;
    SELECT COALESCE(SUM(amount), 0) INTO actual FROM payments_refund
     WHERE payment_id = pid AND status = 'succeeded';
    IF stored <> actual THEN
        RAISE EXCEPTION 'payment %: amount_refunded % differs from succeeded refunds %', pid, stored, actual
            USING ERRCODE = 'check_violation';
    END IF;
END $$;

CREATE FUNCTION payments_payment_check_amount_refunded() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM payments_check_amount_refunded_of(NEW.id);
    RETURN NULL;
END $$;

CREATE FUNCTION payments_refund_check_amount_refunded() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM payments_check_amount_refunded_of(NEW.payment_id);
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER payments_payment_amount_refunded
    AFTER UPDATE OF amount_refunded ON payments_payment DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION payments_payment_check_amount_refunded();

CREATE CONSTRAINT TRIGGER payments_refund_amount_refunded
    AFTER INSERT OR UPDATE OF status ON payments_refund DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION payments_refund_check_amount_refunded();
"""

REVERSE = """
DROP TRIGGER IF EXISTS payments_refund_amount_refunded ON payments_refund;
DROP TRIGGER IF EXISTS payments_payment_amount_refunded ON payments_payment;
DROP FUNCTION IF EXISTS payments_refund_check_amount_refunded();
DROP FUNCTION IF EXISTS payments_payment_check_amount_refunded();
DROP FUNCTION IF EXISTS payments_check_amount_refunded_of(varchar);
DROP TRIGGER IF EXISTS payments_refund_guard ON payments_refund;
DROP FUNCTION IF EXISTS payments_refund_guard();
DROP TRIGGER IF EXISTS payments_payment_guard_status ON payments_payment;
DROP FUNCTION IF EXISTS payments_payment_guard_status();
"""


class Migration(migrations.Migration):
    dependencies = [("payments", "0001_initial")]
    operations = [migrations.RunSQL(SQL, REVERSE)]
