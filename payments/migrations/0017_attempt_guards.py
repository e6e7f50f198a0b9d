"""Database guards on opening a provider call: an authorization of a saved card detached since
the payment was made is never sent (a delayed retry, a late confirm, a failover), a capture is
never opened once the authorization has expired, and a payment never has two capture or void
calls without an answer at once (the second could capture or void beside the first)."""

from django.db import migrations

SQL = """
CREATE FUNCTION payments_attempt_guard_operation() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payment payments_payment%ROWTYPE;
    detached timestamptz;
BEGIN
    IF NEW.kind NOT IN ('authorize', 'capture', 'void') THEN
        RETURN NEW;
    END IF;
    SELECT * INTO payment FROM payments_payment WHERE id = NEW.payment_id FOR UPDATE;
    IF NEW.kind = 'authorize' AND payment.saved_method_id IS NOT NULL THEN
        -- FOR SHARE: a detach under way finishes first, and one after waits for this call.
        SELECT m.detached_at INTO detached FROM payments_paymentmethod m
        WHERE m.id = payment.saved_method_id FOR SHARE;
    END IF;
    IF detached IS NOT NULL THEN
        RAISE EXCEPTION '%: payment method % of payment % is detached and may not be charged',
            NEW.id, payment.saved_method_id, NEW.payment_id USING ERRCODE = 'check_violation';
    END IF;
    -- The attempt's own time (the application's clock, which the expiry was computed with).
    IF NEW.kind = 'capture'
            AND payment.authorization_expires_at <= COALESCE(NEW.created_at, now()) THEN
        RAISE EXCEPTION '%: the authorization of payment % expired at %; it is not captured',
            NEW.id, NEW.payment_id, payment.authorization_expires_at
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.kind IN ('capture', 'void') AND EXISTS (
            SELECT 1 FROM payments_paymentattempt a
            WHERE a.payment_id = NEW.payment_id AND a.kind IN ('capture', 'void')
              AND a.status IN ('requested', 'unknown')) THEN
        RAISE EXCEPTION '%: payment % already has a capture or void without an answer',
            NEW.id, NEW.payment_id USING ERRCODE = 'check_violation',
            HINT = 'Only a status lookup resolves it; never send a second one beside it.';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER payments_paymentattempt_guard_operation BEFORE INSERT
    ON payments_paymentattempt FOR EACH ROW
    EXECUTE FUNCTION payments_attempt_guard_operation();
"""

REVERSE = """
DROP TRIGGER payments_paymentattempt_guard_operation ON payments_paymentattempt;
DROP FUNCTION payments_attempt_guard_operation();
"""


class Migration(migrations.Migration):
    dependencies = [("payments", "0016_authorization_expiry")]

    operations = [migrations.RunSQL(SQL, REVERSE)]
