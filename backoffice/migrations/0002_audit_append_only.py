"""The staff audit log is append-only in PostgreSQL itself: UPDATE and DELETE are refused by a
trigger, whoever connects (an ORM bug, a shell, raw SQL).

TRUNCATE is deliberately not trapped, as in the ledger: the test runner flushes tables with it,
and in production only the table owner may truncate; revoke TRUNCATE from the application role.
"""

from django.db import migrations

SQL = """
CREATE FUNCTION backoffice_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % is not allowed: the staff audit log is append-only',
        TG_OP, TG_TABLE_NAME USING ERRCODE = 'integrity_constraint_violation';
END $$;

CREATE TRIGGER backoffice_auditentry_append_only
    BEFORE UPDATE OR DELETE ON backoffice_auditentry
    FOR EACH ROW EXECUTE FUNCTION backoffice_audit_append_only();
"""

REVERSE_SQL = """
DROP TRIGGER IF EXISTS backoffice_auditentry_append_only ON backoffice_auditentry;
DROP FUNCTION IF EXISTS backoffice_audit_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("backoffice", "0001_initial")]

    operations = [migrations.RunSQL(SQL, REVERSE_SQL)]
