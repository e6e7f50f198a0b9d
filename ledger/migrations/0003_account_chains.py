"""Per-account hash chains instead of one global chain, split platform accounts, checkpoints.

The global chain (each entry linked to the one before it, under one advisory lock) serialised
every posting in the system. Now each posting links to the previous posting of its account,
under the account lock `entry_post` already holds; entries get a plain digest and their
`sequence` comes from a database sequence. Existing rows are re-hashed into the new chains in
their old sequence order (their balances and balance_after do not change).

Triggers, replacing migration 0002's:
- the posting trigger also checks the chain link (`prev_hash` is the account's head,
  `account_version` its version + 1), moves the head to the posting's hash, and refuses a
  posting on one merchant's account in another merchant's entry;
- an account's head, like its balance, changes only through a posting; a new account starts at
  the genesis hash; owner, currency, kind, provider and shard never change;
- checkpoints, like entries and postings, are immutable.
"""

import importlib

from django.db import migrations, models
from django.db.migrations.exceptions import IrreversibleError
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce

GENESIS = "0" * 64
_MAY_OVERDRAW = "'dispute_opened', 'refund_created', 'reversal'"

DROP_OLD = """
DROP TRIGGER IF EXISTS ledger_entry_link ON ledger_journalentry;
DROP FUNCTION IF EXISTS ledger_entry_link();
DROP TRIGGER IF EXISTS ledger_posting_immutable ON ledger_posting;
DROP TRIGGER IF EXISTS ledger_journalentry_immutable ON ledger_journalentry;
"""

CREATE_NEW = f"""
CREATE SEQUENCE IF NOT EXISTS ledger_entry_sequence AS bigint;
SELECT setval('ledger_entry_sequence',
              COALESCE((SELECT max(sequence) FROM ledger_journalentry), 0) + 1, false);

CREATE TRIGGER ledger_posting_immutable BEFORE UPDATE OR DELETE ON ledger_posting
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER ledger_journalentry_immutable BEFORE UPDATE OR DELETE ON ledger_journalentry
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER ledger_checkpoint_immutable BEFORE UPDATE OR DELETE ON ledger_checkpoint
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();

CREATE OR REPLACE FUNCTION ledger_posting_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head record;
    acct record;
    entry record;
BEGIN
    -- Takes (or reuses) the account's row lock, so concurrent postings serialise per account.
    SELECT head_hash, version INTO head FROM ledger_account WHERE id = NEW.account_id
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'posting %: account % does not exist', NEW.id, NEW.account_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF NEW.prev_hash <> head.head_hash OR NEW.account_version <> head.version + 1 THEN
        RAISE EXCEPTION 'posting %: chain link (version %, prev_hash %) does not follow account % (version %, head %)',
            NEW.id, NEW.account_version, left(NEW.prev_hash, 12), NEW.account_id, head.version,
            left(head.head_hash, 12) USING ERRCODE = 'check_violation';
    END IF;
    UPDATE ledger_account SET balance = balance + NEW.amount, version = version + 1,
           head_hash = NEW.hash
     WHERE id = NEW.account_id
     RETURNING currency, kind, merchant_id, balance INTO acct;
    IF acct.currency <> NEW.currency THEN
        RAISE EXCEPTION 'posting %: currency % differs from account % currency %',
            NEW.id, NEW.currency, NEW.account_id, acct.currency USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.merchant_id IS DISTINCT FROM acct.merchant_id THEN
        RAISE EXCEPTION 'posting %: merchant % differs from account % merchant %',
            NEW.id, NEW.merchant_id, NEW.account_id, acct.merchant_id
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.balance_after <> acct.balance THEN
        RAISE EXCEPTION 'posting %: balance_after % but account % balance becomes %',
            NEW.id, NEW.balance_after, NEW.account_id, acct.balance USING ERRCODE = 'check_violation';
    END IF;
    IF acct.merchant_id IS NULL THEN
        RETURN NEW;  -- a platform account: no owner or overdraft rule to check
    END IF;
    SELECT kind, merchant_id INTO entry FROM ledger_journalentry WHERE id = NEW.entry_id;
    IF entry.merchant_id IS NOT NULL AND acct.merchant_id IS NOT NULL
       AND entry.merchant_id <> acct.merchant_id THEN
        RAISE EXCEPTION 'posting %: entry % belongs to merchant % but account % to merchant %',
            NEW.id, NEW.entry_id, entry.merchant_id, NEW.account_id, acct.merchant_id
            USING ERRCODE = 'check_violation';
    END IF;
    IF acct.kind = 'available' AND acct.balance < 0 AND NEW.amount < 0
       AND (entry.kind IS NULL OR entry.kind NOT IN ({_MAY_OVERDRAW})) THEN
        RAISE EXCEPTION 'posting %: a % entry may not take available account % below zero (to %)',
            NEW.id, entry.kind, NEW.account_id, acct.balance USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

-- 0002's COMMIT-time check of an entry, plus: its postings move one merchant's balances at most.
CREATE OR REPLACE FUNCTION ledger_check_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    eid varchar;
    n bigint := 0;
    r record;
    bad_currency varchar;
    bad_total bigint;
    owners bigint;
BEGIN
    IF TG_TABLE_NAME = 'ledger_journalentry' THEN
        eid := NEW.id;
    ELSE
        eid := NEW.entry_id;
    END IF;
    FOR r IN SELECT currency, sum(amount) AS total, count(*) AS postings
               FROM ledger_posting WHERE entry_id = eid GROUP BY currency ORDER BY currency LOOP
        n := n + r.postings;
        IF r.total <> 0 AND bad_currency IS NULL THEN
            bad_currency := r.currency;
            bad_total := r.total;
        END IF;
    END LOOP;
    IF n < 2 THEN
        RAISE EXCEPTION 'journal entry % has % posting(s); an entry needs at least two', eid, n
            USING ERRCODE = 'check_violation';
    END IF;
    IF bad_currency IS NOT NULL THEN
        RAISE EXCEPTION 'journal entry %: % postings sum to %, not zero', eid, bad_currency, bad_total
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT count(DISTINCT merchant_id) INTO owners FROM ledger_posting WHERE entry_id = eid;
    IF owners > 1 THEN
        RAISE EXCEPTION 'journal entry % moves % merchants'' balances; an entry moves one at most',
            eid, owners USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION ledger_account_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.merchant_id IS DISTINCT FROM OLD.merchant_id OR NEW.currency <> OLD.currency
       OR NEW.kind <> OLD.kind OR NEW.provider <> OLD.provider OR NEW.shard <> OLD.shard THEN
        RAISE EXCEPTION 'account %: owner, currency, kind, provider and shard are immutable', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    -- Depth 1 is a direct UPDATE; the posting trigger's own UPDATE runs at depth 2.
    IF (NEW.balance <> OLD.balance OR NEW.version <> OLD.version
        OR NEW.head_hash <> OLD.head_hash) AND pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION 'account %: balances and chain heads change only by inserting postings', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION ledger_account_guard_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.balance <> 0 OR NEW.version <> 0 OR NEW.head_hash <> '{GENESIS}' THEN
        RAISE EXCEPTION 'account % must start with balance 0, version 0 and the genesis hash', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
"""

REVERSE_NEW = """
DROP TRIGGER IF EXISTS ledger_checkpoint_immutable ON ledger_checkpoint;
DROP SEQUENCE IF EXISTS ledger_entry_sequence;
"""


def rechain(apps, schema_editor):
    """Re-hash existing postings into per-account chains, in their old global order."""
    from ledger.chain import EntryLine, account_label, entry_digest, micros, posting_hash

    connection = schema_editor.connection
    heads: dict[int, tuple[int, str]] = {}
    with connection.cursor() as cursor:
        cursor.execute("""
            SELECT e.id, e.kind, e.reference_type, e.reference_id, e.merchant_id, e.description,
                   e.created_at, p.id, p.account_id, p.amount, p.currency, p.balance_after,
                   p.created_at, COALESCE(a.merchant_id, ''), a.kind, a.provider
              FROM ledger_journalentry e JOIN ledger_posting p ON p.entry_id = e.id
              JOIN ledger_account a ON a.id = p.account_id
             ORDER BY e.sequence, p.account_id""")
        rows = cursor.fetchall()
    entries: dict[str, list[tuple]] = {}
    for row in rows:
        entries.setdefault(row[0], []).append(row)
    with connection.cursor() as cursor:
        for entry_id, postings in entries.items():
            first = postings[0]
            digest = entry_digest(
                entry_id=entry_id, kind=first[1], reference_type=first[2],
                reference_id=first[3], merchant_id=first[4], description=first[5],
                created_at=first[6],
                lines=[EntryLine(p[7], p[8], p[9], p[10]) for p in postings])
            cursor.execute("UPDATE ledger_journalentry SET hash = %s WHERE id = %s",
                           [digest, entry_id])
            for p in postings:
                version, prev = heads.get(p[8], (0, GENESIS))
                link = posting_hash(prev_hash=prev, account_id=p[8], owner=p[13],
                                    label=account_label(p[14], p[15]), account_version=version + 1,
                                    posting_id=p[7], entry_id=entry_id, entry_hash=digest,
                                    amount=p[9], currency=p[10], balance_after=p[11],
                                    created_at_us=micros(p[12]))
                cursor.execute("UPDATE ledger_posting SET account_version = %s, prev_hash = %s, "
                               "hash = %s WHERE id = %s", [version + 1, prev, link, p[7]])
                heads[p[8]] = (version + 1, link)
        for account_id, (_version, head) in heads.items():
            cursor.execute("UPDATE ledger_account SET head_hash = %s WHERE id = %s",
                           [head, account_id])


def refuse_reversal(apps, schema_editor):
    """Going back is only possible while the ledger is empty (tests of the upgrade do it)."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM ledger_posting)")
        if not cursor.fetchone()[0]:
            return
    raise IrreversibleError(
        "ledger 0003 rewrote every posting into per-account hash chains; going back would need "
        "the old global chain recomputed, which this migration does not do. Restore the "
        "database from the backup taken before the upgrade instead.")


# Reversed (an empty ledger only): 0002's triggers and functions exactly as 0002 made them.
_0002 = importlib.import_module("ledger.migrations.0002_ledger_triggers")
RESTORE_0002 = _0002.REVERSE + _0002.SQL


class Migration(migrations.Migration):
    dependencies = [("ledger", "0002_ledger_triggers"), ("core", "0001_initial")]

    operations = [
        migrations.RunSQL(DROP_OLD, RESTORE_0002),
        migrations.AddField("account", "shard", models.PositiveSmallIntegerField(default=0)),
        migrations.AddField("account", "head_hash", models.CharField(
            default=GENESIS, editable=False, max_length=64)),
        migrations.AddField("posting", "account_version", models.BigIntegerField(null=True)),
        migrations.AddField("posting", "prev_hash", models.CharField(default="",
                                                                     max_length=64)),
        migrations.AddField("posting", "hash", models.CharField(default="", max_length=64)),
        migrations.RunPython(rechain, migrations.RunPython.noop),
        migrations.AlterField("posting", "account_version", models.BigIntegerField()),
        migrations.AlterField("posting", "prev_hash", models.CharField(max_length=64)),
        migrations.AlterField("posting", "hash", models.CharField(max_length=64)),
        migrations.RemoveField("journalentry", "prev_hash"),
        migrations.RemoveConstraint("account", "ledger_account_unique"),
        migrations.AddConstraint("account", models.UniqueConstraint(
            fields=["merchant", "currency", "kind", "provider", "shard"], nulls_distinct=False,
            name="ledger_account_unique")),
        migrations.AddConstraint("account", models.CheckConstraint(
            condition=Q(merchant__isnull=True) | Q(shard=0),
            name="ledger_account_shard_platform_only")),
        migrations.AddIndex("account", models.Index(
            Coalesce(F("merchant"), Value(""), output_field=models.CharField()), "currency",
            "kind", "provider", "shard", name="ledger_account_key")),
        migrations.AddConstraint("posting", models.UniqueConstraint(
            fields=["account", "account_version"], name="ledger_posting_account_chain")),
        migrations.AddConstraint("posting", models.CheckConstraint(
            condition=Q(account_version__gte=1), name="ledger_posting_account_version")),
        migrations.AddConstraint("posting", models.CheckConstraint(
            condition=Q(hash__regex=r"^[0-9a-f]{64}$"), name="ledger_posting_hash_format")),
        migrations.CreateModel(
            name="Checkpoint",
            fields=[
                ("number", models.BigIntegerField(primary_key=True, serialize=False)),
                ("created_at", models.DateTimeField()),
                ("body", models.JSONField()),
                ("signature", models.CharField(max_length=200)),
                ("heads", models.JSONField()),
            ],
            options={"constraints": [models.CheckConstraint(
                condition=Q(number__gte=1), name="ledger_checkpoint_number")]},
        ),
        migrations.RunSQL(CREATE_NEW, REVERSE_NEW),
        # Reversal runs the operations backwards, so this refusal comes before any change.
        migrations.RunPython(migrations.RunPython.noop, refuse_reversal),
    ]
