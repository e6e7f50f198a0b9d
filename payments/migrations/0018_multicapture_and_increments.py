"""Several captures of one authorization and incremental authorization: a capture attempt says
whether it is the final one, an attempt may raise an authorization (`increment`), and a guard
on opening a provider call refuses a capture above what stays uncaptured, an increment that
does not raise an open, uncaptured authorization, and an increment beside an open capture or
void (or one of those beside an open increment)."""

from django.db import migrations, models

SQL = """
CREATE FUNCTION payments_attempt_guard_amounts() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payment payments_payment%ROWTYPE;
BEGIN
    IF NEW.kind NOT IN ('capture', 'void', 'increment') THEN
        RETURN NEW;
    END IF;
    SELECT * INTO payment FROM payments_payment WHERE id = NEW.payment_id FOR UPDATE;
    -- Partial captures add up to at most the authorization.
    IF NEW.kind = 'capture'
            AND NEW.amount > payment.amount_authorized - payment.amount_captured THEN
        RAISE EXCEPTION '%: capturing % of payment % would exceed its authorization (% of % '
            'captured)', NEW.id, NEW.amount, NEW.payment_id, payment.amount_captured,
            payment.amount_authorized USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.kind = 'increment' AND (NEW.amount <= payment.amount_authorized
            OR payment.amount_captured > 0
            OR payment.authorization_expires_at <= COALESCE(NEW.created_at, now())) THEN
        RAISE EXCEPTION '%: payment % (authorized %, captured %) cannot be raised to %',
            NEW.id, NEW.payment_id, payment.amount_authorized, payment.amount_captured,
            NEW.amount USING ERRCODE = 'check_violation';
    END IF;
    -- payments_paymentattempt_guard_operation keeps captures and voids one at a time; an
    -- increment joins that rule.
    IF EXISTS (SELECT 1 FROM payments_paymentattempt a
               WHERE a.payment_id = NEW.payment_id AND a.status IN ('requested', 'unknown')
                 AND a.kind IN ('capture', 'void', 'increment')
                 AND 'increment' IN (a.kind, NEW.kind)) THEN
        RAISE EXCEPTION '%: payment % already has a capture, void or increment without an '
            'answer', NEW.id, NEW.payment_id USING ERRCODE = 'check_violation',
            HINT = 'Only a status lookup resolves it; never send a second one beside it.';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER payments_paymentattempt_guard_amounts BEFORE INSERT
    ON payments_paymentattempt FOR EACH ROW EXECUTE FUNCTION payments_attempt_guard_amounts();
"""

REVERSE = """
DROP TRIGGER payments_paymentattempt_guard_amounts ON payments_paymentattempt;
DROP FUNCTION payments_attempt_guard_amounts();
"""


class Migration(migrations.Migration):

    dependencies = [
        ("payments", "0017_attempt_guards"),
    ]

    operations = [
        migrations.AddField(
            model_name="paymentattempt",
            name="is_final",
            field=models.BooleanField(db_default=True, default=True),
        ),
        migrations.AlterField(
            model_name="paymentattempt",
            name="kind",
            field=models.CharField(choices=[
                ("authorize", "Authorize"), ("capture", "Capture"), ("void", "Void"),
                ("refund", "Refund"), ("dispute_evidence", "Dispute Evidence"),
                ("enroll", "Enroll"), ("increment", "Increment")], max_length=16),
        ),
        migrations.RunSQL(SQL, REVERSE),
    ]
