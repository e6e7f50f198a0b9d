"""Only the provider decides a dispute whose evidence went to it through the API: the database
refuses closing it as decided by staff or the merchant while an evidence attempt was sent (or
may have been), and refuses a new evidence attempt on a dispute no longer waiting for one."""

from django.db import migrations

GUARDS = """
CREATE FUNCTION payments_dispute_guard_decider() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('won', 'lost') AND OLD.status NOT IN ('won', 'lost')
       AND NEW.decided_by <> 'provider' AND EXISTS (
           SELECT 1 FROM payments_paymentattempt
            WHERE dispute_id = NEW.id AND kind = 'dispute_evidence'
              AND status IN ('requested', 'unknown', 'approved')) THEN
        RAISE EXCEPTION 'dispute %: its evidence went to the provider, so only the provider '
                        'decides it (% refused)', NEW.id, NEW.decided_by
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER payments_dispute_guard_decider
    BEFORE UPDATE OF status ON payments_dispute
    FOR EACH ROW EXECUTE FUNCTION payments_dispute_guard_decider();

CREATE FUNCTION payments_attempt_guard_dispute_open() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.dispute_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM payments_dispute
         WHERE id = NEW.dispute_id AND status = 'needs_response') THEN
        RAISE EXCEPTION 'attempt %: dispute % is not waiting for evidence', NEW.id,
            NEW.dispute_id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER payments_attempt_guard_dispute_open
    BEFORE INSERT ON payments_paymentattempt
    FOR EACH ROW EXECUTE FUNCTION payments_attempt_guard_dispute_open();
"""

REVERSE = """
DROP TRIGGER IF EXISTS payments_attempt_guard_dispute_open ON payments_paymentattempt;
DROP FUNCTION IF EXISTS payments_attempt_guard_dispute_open();
DROP TRIGGER IF EXISTS payments_dispute_guard_decider ON payments_dispute;
DROP FUNCTION IF EXISTS payments_dispute_guard_decider();
"""


class Migration(migrations.Migration):

    dependencies = [("payments", "0010_dispute_evidence_files")]

    operations = [migrations.RunSQL(GUARDS, REVERSE)]
