"""Database guard: a payment never has two authorization attempts without an answer. A new one
(failover, a delayed retry) is opened only after the previous one was answered: an outcome that
is unknown, or a call not yet made, may still become a charge, so nothing is sent beside it."""

from django.db import migrations

SQL = """
CREATE FUNCTION payments_attempt_guard_one_open_authorization() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind <> 'authorize' THEN
        RETURN NEW;
    END IF;
    PERFORM 1 FROM payments_payment WHERE id = NEW.payment_id FOR UPDATE;
    IF EXISTS (SELECT 1 FROM payments_paymentattempt a
               WHERE a.payment_id = NEW.payment_id AND a.kind = 'authorize'
                 AND a.status IN ('requested', 'unknown')) THEN
        RAISE EXCEPTION '%: payment % already has an authorization attempt without an answer',
            NEW.id, NEW.payment_id USING ERRCODE = 'check_violation',
            HINT = 'Only a status lookup resolves it; never send a second one beside it.';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER payments_paymentattempt_guard_one_open BEFORE INSERT
    ON payments_paymentattempt FOR EACH ROW
    EXECUTE FUNCTION payments_attempt_guard_one_open_authorization();
"""

REVERSE = """
DROP TRIGGER payments_paymentattempt_guard_one_open ON payments_paymentattempt;
DROP FUNCTION payments_attempt_guard_one_open_authorization();
"""


class Migration(migrations.Migration):
    dependencies = [("payments", "0014_delayed_retries")]

    operations = [migrations.RunSQL(SQL, REVERSE)]
