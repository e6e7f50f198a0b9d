"""Database guard: a live merchant's deposits, payouts and their attempts never name the sandbox."""

from django.db import migrations

# The sandbox moves no money: a live deposit "confirmed" there would credit a real balance with
# nothing behind it. Routing never picks it for live traffic (providers.registry); this holds for
# raw SQL, tools and any future code path too.
SQL = """
CREATE FUNCTION wallet_guard_live_sandbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    merchant_live boolean;
BEGIN
    IF NEW.provider IS DISTINCT FROM 'sandbox' THEN
        RETURN NEW;
    END IF;
    IF TG_TABLE_NAME = 'wallet_movementattempt' THEN
        SELECT m.is_live INTO merchant_live FROM core_merchant m
            WHERE m.id = COALESCE((SELECT merchant_id FROM wallet_deposit
                                   WHERE id = NEW.deposit_id),
                                  (SELECT merchant_id FROM wallet_payout
                                   WHERE id = NEW.payout_id));
    ELSE
        SELECT m.is_live INTO merchant_live FROM core_merchant m WHERE m.id = NEW.merchant_id;
    END IF;
    IF merchant_live THEN
        RAISE EXCEPTION '%: a live merchant''s money movement never reaches the sandbox',
            NEW.id USING ERRCODE = 'check_violation', HINT = 'Live and test never mix.';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER wallet_deposit_guard_live_sandbox BEFORE INSERT OR UPDATE OF provider
    ON wallet_deposit FOR EACH ROW EXECUTE FUNCTION wallet_guard_live_sandbox();
CREATE TRIGGER wallet_payout_guard_live_sandbox BEFORE INSERT OR UPDATE OF provider
    ON wallet_payout FOR EACH ROW EXECUTE FUNCTION wallet_guard_live_sandbox();
CREATE TRIGGER wallet_movementattempt_guard_live_sandbox BEFORE INSERT
    ON wallet_movementattempt FOR EACH ROW EXECUTE FUNCTION wallet_guard_live_sandbox();
"""

REVERSE = """
DROP TRIGGER wallet_movementattempt_guard_live_sandbox ON wallet_movementattempt;
DROP TRIGGER wallet_payout_guard_live_sandbox ON wallet_payout;
DROP TRIGGER wallet_deposit_guard_live_sandbox ON wallet_deposit;
DROP FUNCTION wallet_guard_live_sandbox();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0002_mode_guards"),
        ("wallet", "0004_column_defaults_in_database"),
    ]

    operations = [migrations.RunSQL(SQL, REVERSE)]
