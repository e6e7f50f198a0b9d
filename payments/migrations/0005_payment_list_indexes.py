"""Indexes for the back-office payment list: a trigram index that makes the description
substring search (`UPPER(description) LIKE UPPER('%term%')`, Django's `icontains`) an index
scan, and (created_at DESC, id DESC) for the unfiltered newest-first list.

Plain SQL, not Meta.indexes: Django never needs to know them (no field changes, and the
selector checks for `payment_description_trgm` by name). Built CONCURRENTLY, outside a
transaction, so a large payments table keeps taking writes while they build. pg_trgm is a
trusted extension (PostgreSQL 13+): the database owner may create it without superuser.
"""

from django.db import migrations


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("payments", "0004_dispute_triggers")]

    operations = [
        migrations.RunSQL("CREATE EXTENSION IF NOT EXISTS pg_trgm",
                          reverse_sql=migrations.RunSQL.noop),
        migrations.RunSQL(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS payment_description_trgm "
            "ON payments_payment USING gin ((UPPER(description)) gin_trgm_ops)",
            reverse_sql="DROP INDEX CONCURRENTLY IF EXISTS payment_description_trgm"),
        migrations.RunSQL(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS payment_recent "
            "ON payments_payment (created_at DESC, id DESC)",
            reverse_sql="DROP INDEX CONCURRENTLY IF EXISTS payment_recent"),
    ]
