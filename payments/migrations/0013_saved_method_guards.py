"""Database guards for customers and saved payment methods: every link stays inside one
merchant, a detached method is never charged, a payment's customer and method never change, an
acquirer's token is never rewritten, and an authorization is approved at an acquirer only when
the saved method holds that acquirer's own token."""

from django.db import migrations

SQL = """
CREATE FUNCTION payments_payment_guard_saved_method() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    method payments_paymentmethod%ROWTYPE;
BEGIN
    IF TG_OP = 'UPDATE' AND (NEW.saved_method_id IS DISTINCT FROM OLD.saved_method_id
            OR NEW.customer_id IS DISTINCT FROM OLD.customer_id
            OR NEW.off_session IS DISTINCT FROM OLD.off_session
            OR NEW.payment_method IS DISTINCT FROM OLD.payment_method) THEN
        RAISE EXCEPTION '%: a payment''s customer, payment method and off_session never change',
            NEW.id USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        RETURN NEW;
    END IF;
    IF NEW.customer_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM payments_customer c
            WHERE c.id = NEW.customer_id AND c.merchant_id = NEW.merchant_id) THEN
        RAISE EXCEPTION '%: customer % belongs to another merchant', NEW.id, NEW.customer_id
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.saved_method_id IS NULL THEN
        RETURN NEW;
    END IF;
    SELECT * INTO method FROM payments_paymentmethod WHERE id = NEW.saved_method_id FOR SHARE;
    IF method.merchant_id <> NEW.merchant_id THEN
        RAISE EXCEPTION '%: payment method % belongs to another merchant', NEW.id,
            NEW.saved_method_id USING ERRCODE = 'check_violation';
    END IF;
    IF method.detached_at IS NOT NULL THEN
        RAISE EXCEPTION '%: payment method % is detached and may not be charged', NEW.id,
            NEW.saved_method_id USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.payment_method <> NEW.saved_method_id THEN
        RAISE EXCEPTION '%: payment_method must name the saved method %', NEW.id,
            NEW.saved_method_id USING ERRCODE = 'check_violation';
    END IF;
    IF method.customer_id IS NOT NULL AND NEW.customer_id IS DISTINCT FROM method.customer_id THEN
        RAISE EXCEPTION '%: payment method % belongs to customer %, not %', NEW.id,
            NEW.saved_method_id, method.customer_id, NEW.customer_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER payments_payment_guard_saved_method
    BEFORE INSERT OR UPDATE OF saved_method_id, customer_id, off_session, payment_method
    ON payments_payment FOR EACH ROW EXECUTE FUNCTION payments_payment_guard_saved_method();

CREATE FUNCTION payments_paymentmethod_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.merchant_id <> OLD.merchant_id THEN
        RAISE EXCEPTION '%: a payment method never changes merchant', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.detached_at IS NOT NULL
            AND (NEW.detached_at IS DISTINCT FROM OLD.detached_at
                 OR NEW.customer_id IS NOT NULL) THEN
        RAISE EXCEPTION '%: a detached payment method stays detached', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.customer_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM payments_customer c
            WHERE c.id = NEW.customer_id AND c.merchant_id = NEW.merchant_id) THEN
        RAISE EXCEPTION '%: customer % belongs to another merchant', NEW.id, NEW.customer_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER payments_paymentmethod_guard BEFORE INSERT OR UPDATE
    ON payments_paymentmethod FOR EACH ROW EXECUTE FUNCTION payments_paymentmethod_guard();

CREATE FUNCTION payments_paymentmethodtoken_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'an acquirer''s token for payment method % is never changed or deleted',
        OLD.payment_method_id USING ERRCODE = 'check_violation';
END $$;
CREATE TRIGGER payments_paymentmethodtoken_guard BEFORE UPDATE OR DELETE
    ON payments_paymentmethodtoken FOR EACH ROW
    EXECUTE FUNCTION payments_paymentmethodtoken_guard();

-- A saved method's charge is approved only at an acquirer holding its own token for it: the
-- token of one acquirer means nothing to another.
CREATE FUNCTION payments_attempt_guard_token() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    method_id text;
BEGIN
    IF NEW.kind <> 'authorize' OR NEW.status <> 'approved' THEN
        RETURN NEW;
    END IF;
    SELECT saved_method_id INTO method_id FROM payments_payment WHERE id = NEW.payment_id;
    IF method_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM payments_paymentmethodtoken t
            WHERE t.payment_method_id = method_id AND t.provider = NEW.provider) THEN
        RAISE EXCEPTION '%: approved at % without a token of payment method % there', NEW.id,
            NEW.provider, method_id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER payments_paymentattempt_guard_token BEFORE INSERT OR UPDATE OF status
    ON payments_paymentattempt FOR EACH ROW EXECUTE FUNCTION payments_attempt_guard_token();
"""

REVERSE = """
DROP TRIGGER payments_paymentattempt_guard_token ON payments_paymentattempt;
DROP FUNCTION payments_attempt_guard_token();
DROP TRIGGER payments_paymentmethodtoken_guard ON payments_paymentmethodtoken;
DROP FUNCTION payments_paymentmethodtoken_guard();
DROP TRIGGER payments_paymentmethod_guard ON payments_paymentmethod;
DROP FUNCTION payments_paymentmethod_guard();
DROP TRIGGER payments_payment_guard_saved_method ON payments_payment;
DROP FUNCTION payments_payment_guard_saved_method();
"""


class Migration(migrations.Migration):
    dependencies = [("payments", "0012_customers_and_payment_methods")]

    operations = [migrations.RunSQL(SQL, REVERSE)]
