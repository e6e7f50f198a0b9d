"""A posting id stays unique across every month: since 0004 the primary key is (id,
created_at), which PostgreSQL enforces per partition only, so a second posting could reuse an id
at another time. ledger_posting_id (a plain table, id as its primary key) takes each posting's
id in a BEFORE INSERT trigger; its unique index refuses a reused id even between concurrent
writers. Filled from the existing postings; nothing deletes from it (postings are immutable)."""

from django.db import migrations

_FORWARD = """
CREATE TABLE ledger_posting_id (id varchar(40) PRIMARY KEY);
INSERT INTO ledger_posting_id (id) SELECT id FROM ledger_posting;
CREATE FUNCTION ledger_posting_id_unique() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_posting_id (id) VALUES (NEW.id);
    RETURN NEW;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'posting %: id already taken by another posting (ledger_posting ids are '
        'unique across every month)', NEW.id USING ERRCODE = 'unique_violation';
END $$;
CREATE TRIGGER ledger_posting_id_unique BEFORE INSERT ON ledger_posting
    FOR EACH ROW EXECUTE FUNCTION ledger_posting_id_unique();
"""

_REVERSE = """
DROP TRIGGER IF EXISTS ledger_posting_id_unique ON ledger_posting;
DROP FUNCTION IF EXISTS ledger_posting_id_unique();
DROP TABLE IF EXISTS ledger_posting_id;
"""


class Migration(migrations.Migration):
    dependencies = [("ledger", "0004_postings_partitioned")]

    operations = [migrations.RunSQL(_FORWARD, _REVERSE)]
