"""PostgreSQL guards for disputes:

- a dispute starts `needs_response`, may go to `under_review`, and ends `won` or `lost`; an ended
  dispute never changes, and its payment, amount and currency are immutable;
- `payment.amount_disputed` equals the sum of its open and lost disputes at COMMIT;
- refunds never reach into a disputed amount (the refund guard now counts it).
"""

from django.db import migrations

SQL = """
CREATE FUNCTION payments_dispute_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'needs_response' THEN
            RAISE EXCEPTION 'dispute % must be opened as needs_response', NEW.id
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.payment_id <> OLD.payment_id OR NEW.amount <> OLD.amount OR NEW.currency <> OLD.currency THEN
        RAISE EXCEPTION 'dispute %: payment, amount and currency are immutable', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    IF OLD.status IN ('won', 'lost') AND NEW.status IS DISTINCT FROM OLD.status THEN
        RAISE EXCEPTION 'dispute % is % and cannot change', NEW.id, OLD.status
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.status = 'needs_response' AND OLD.status <> 'needs_response' THEN
        RAISE EXCEPTION 'dispute %: transition % -> needs_response is not allowed', NEW.id, OLD.status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER payments_dispute_guard
    BEFORE INSERT OR UPDATE ON payments_dispute
    FOR EACH ROW EXECUTE FUNCTION payments_dispute_guard();

CREATE FUNCTION payments_check_amount_disputed_of(pid varchar) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    stored bigint;
    actual bigint;
BEGIN
    SELECT amount_disputed INTO stored FROM payments_payment WHERE id = pid;
    SELECT COALESCE(SUM(amount), 0) INTO actual FROM payments_dispute
     WHERE payment_id = pid AND status IN ('needs_response', 'under_review', 'lost');
    IF stored <> actual THEN
        RAISE EXCEPTION 'payment %: amount_disputed % differs from its open and lost disputes %',
            pid, stored, actual USING ERRCODE = 'check_violation';
    END IF;
END $$;

CREATE FUNCTION payments_payment_check_amount_disputed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM payments_check_amount_disputed_of(NEW.id);
    RETURN NULL;
END $$;

CREATE FUNCTION payments_dispute_check_amount_disputed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM payments_check_amount_disputed_of(NEW.payment_id);
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER payments_payment_amount_disputed
    AFTER UPDATE OF amount_disputed ON payments_payment DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION payments_payment_check_amount_disputed();

CREATE CONSTRAINT TRIGGER payments_dispute_amount_disputed
    AFTER INSERT OR UPDATE OF status ON payments_dispute DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION payments_dispute_check_amount_disputed();

CREATE OR REPLACE FUNCTION payments_refund_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    refundable bigint;
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
        IF NEW.status IS NOT DISTINCT FROM OLD.status THEN
            RETURN NEW;  -- metadata-only change: nothing to re-check
        END IF;
    END IF;
    -- Serialise refunds of one payment on its row lock, then check the sum.
    SELECT amount_captured - amount_disputed INTO refundable FROM payments_payment
     WHERE id = NEW.payment_id FOR UPDATE;
    SELECT COALESCE(SUM(amount), 0) INTO reserved FROM payments_refund
     WHERE payment_id = NEW.payment_id AND status IN ('pending', 'succeeded') AND id <> NEW.id;
    IF NEW.status IN ('pending', 'succeeded') THEN
        reserved := reserved + NEW.amount;
    END IF;
    IF NEW.status <> 'failed' AND reserved > refundable THEN
        RAISE EXCEPTION 'refunds of payment % would reach % but only % is captured and undisputed',
            NEW.payment_id, reserved, refundable USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
"""

REVERSE = """
DROP TRIGGER IF EXISTS payments_dispute_amount_disputed ON payments_dispute;
DROP TRIGGER IF EXISTS payments_payment_amount_disputed ON payments_payment;
DROP FUNCTION IF EXISTS payments_dispute_check_amount_disputed();
DROP FUNCTION IF EXISTS payments_payment_check_amount_disputed();
DROP FUNCTION IF EXISTS payments_check_amount_disputed_of(varchar);
DROP TRIGGER IF EXISTS payments_dispute_guard ON payments_dispute;
DROP FUNCTION IF EXISTS payments_dispute_guard();
"""


class Migration(migrations.Migration):
    dependencies = [("payments", "0003_disputes")]
    operations = [migrations.RunSQL(SQL, REVERSE)]
