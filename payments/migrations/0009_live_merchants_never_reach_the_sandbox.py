"""Database guard: a live merchant's payments and their provider attempts never name the sandbox."""

from django.db import migrations

# The sandbox charges nothing: a live payment sent there would "succeed" with no money moved.
# Routing never picks it for live traffic (providers.registry); this holds for raw SQL, tools
# and any future code path too.
SQL = """
CREATE FUNCTION payments_guard_live_sandbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    merchant_live boolean;
BEGIN
    IF NEW.provider IS DISTINCT FROM 'sandbox' THEN
        RETURN NEW;
    END IF;
    IF TG_TABLE_NAME = 'payments_paymentattempt' THEN
        SELECT m.is_live INTO merchant_live FROM payments_payment p
            JOIN core_merchant m ON m.id = p.merchant_id WHERE p.id = NEW.payment_id;
    ELSE
        SELECT m.is_live INTO merchant_live FROM core_merchant m WHERE m.id = NEW.merchant_id;
    END IF;
    IF merchant_live THEN
        RAISE EXCEPTION '%: a live merchant''s payment never reaches the sandbox', NEW.id
            USING ERRCODE = 'check_violation', HINT = 'Live and test never mix.';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER payments_payment_guard_live_sandbox BEFORE INSERT OR UPDATE OF provider
    ON payments_payment FOR EACH ROW EXECUTE FUNCTION payments_guard_live_sandbox();
CREATE TRIGGER payments_paymentattempt_guard_live_sandbox BEFORE INSERT
    ON payments_paymentattempt FOR EACH ROW EXECUTE FUNCTION payments_guard_live_sandbox();
"""

REVERSE = """
DROP TRIGGER payments_paymentattempt_guard_live_sandbox ON payments_paymentattempt;
DROP TRIGGER payments_payment_guard_live_sandbox ON payments_payment;
DROP FUNCTION payments_guard_live_sandbox();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0002_mode_guards"),
        ("payments", "0008_column_defaults_in_database"),
    ]

    operations = [migrations.RunSQL(SQL, REVERSE)]
