"""Ledger postings partitioned by month (created_at, UTC), with their existing rows, like the
events (webhooks 0007): a partition per month that has postings through three months ahead,
and DEFAULT; the `history-partitions` beat job keeps creating months ahead. Postings' months
are never detached (ledger_verify sums every posting; core.partitions refuses).

Every money rule stays in PostgreSQL. A partitioned table's unique constraints must hold the
partition key, so they become (entry_id, account_id, created_at) and (account_id,
account_version, created_at), enforced within each partition, and two rules make them exact:
- every posting carries its entry's created_at (entry_post writes one timestamp per batch);
  the new deferred constraint trigger ledger_posting_entry_time refuses any other at COMMIT, so
  an entry's postings share one partition, where (entry, account) is unique;
- the chain trigger (0003) already refuses an account_version other than the locked account's
  version + 1 and moves the version on, so no second posting can take an (account, version)
  in any partition.
The primary key becomes (id, created_at); nothing references postings by a foreign key. The
triggers of 0003 are carried over as they are (row triggers on partitioned tables: PG 13+).
"""

from django.db import migrations

from core.partitions import table_partition_by_month, table_unpartition

_ENTRY_TIME = """
CREATE FUNCTION ledger_posting_entry_time() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    entry_time timestamptz;
BEGIN
    SELECT created_at INTO entry_time FROM ledger_journalentry WHERE id = NEW.entry_id;
    IF entry_time IS DISTINCT FROM NEW.created_at THEN
        RAISE EXCEPTION 'posting %: created_at % differs from its entry % (%)',
            NEW.id, NEW.created_at, NEW.entry_id, entry_time USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ledger_posting_entry_time AFTER INSERT ON ledger_posting
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_posting_entry_time();
"""

_ENTRY_TIME_REVERSE = """
DROP TRIGGER IF EXISTS ledger_posting_entry_time ON ledger_posting;
DROP FUNCTION IF EXISTS ledger_posting_entry_time();
"""


def _run(schema_editor, sql: str) -> None:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(sql)  # no parameters: the % in RAISE messages stay as they are


def partition(apps, schema_editor):
    table_partition_by_month("ledger_posting", "created_at", keep_unique="id")
    _run(schema_editor, _ENTRY_TIME)


def unpartition(apps, schema_editor):
    _run(schema_editor, _ENTRY_TIME_REVERSE)
    table_unpartition("ledger_posting", primary_key="id")


class Migration(migrations.Migration):
    dependencies = [("ledger", "0003_account_chains")]

    operations = [migrations.RunPython(partition, unpartition)]
