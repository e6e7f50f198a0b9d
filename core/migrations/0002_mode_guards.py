"""PostgreSQL guards for live and test mode, so they hold even for raw SQL: a merchant's
`is_live` never changes once the merchant exists, and an API key's `is_live` always equals its
merchant's (the key's mode is what `livemode` follows)."""

from django.db import migrations

SQL = """
CREATE FUNCTION core_merchant_guard_mode() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.is_live IS DISTINCT FROM OLD.is_live THEN
        RAISE EXCEPTION 'merchant %: is_live never changes (live and test never mix)', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER core_merchant_guard_mode BEFORE UPDATE OF is_live ON core_merchant
    FOR EACH ROW EXECUTE FUNCTION core_merchant_guard_mode();

CREATE FUNCTION core_apikey_guard_mode() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.is_live IS DISTINCT FROM (SELECT is_live FROM core_merchant
                                      WHERE id = NEW.merchant_id) THEN
        RAISE EXCEPTION 'api key %: is_live must equal its merchant''s', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER core_apikey_guard_mode BEFORE INSERT OR UPDATE OF is_live, merchant_id
    ON core_apikey FOR EACH ROW EXECUTE FUNCTION core_apikey_guard_mode();
"""

REVERSE = """
DROP TRIGGER core_apikey_guard_mode ON core_apikey;
DROP FUNCTION core_apikey_guard_mode();
DROP TRIGGER core_merchant_guard_mode ON core_merchant;
DROP FUNCTION core_merchant_guard_mode();
"""


class Migration(migrations.Migration):
    dependencies = [("core", "0001_initial")]

    operations = [migrations.RunSQL(SQL, REVERSE)]
