"""Disputes worked with the provider: evidence files (immutable rows, bytes encrypted outside
the database), evidence attempts (one submission that may have reached the provider per
dispute), who decided a closed dispute, and the dispute job's bookkeeping (reminded, last
asked). The dispute guard now also freezes evidence once it went out and a closed dispute's
decision. Closed disputes of before are marked decided by staff (they were recorded by hand)."""

import core.ids
import django.db.models.deletion
from django.db import migrations, models


BACKFILL = """
UPDATE payments_dispute SET decided_by = 'staff', closed_at = COALESCE(closed_at, updated_at)
 WHERE status IN ('won', 'lost') AND decided_by = '';
"""

GUARDS = """
CREATE FUNCTION payments_evidencefile_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'evidence file %: files are immutable records (% refused)', OLD.id, TG_OP
        USING ERRCODE = 'check_violation';
END $$;

CREATE TRIGGER payments_evidencefile_immutable
    BEFORE UPDATE OR DELETE ON payments_evidencefile
    FOR EACH ROW EXECUTE FUNCTION payments_evidencefile_immutable();

CREATE FUNCTION payments_dispute_guard_decision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status IN ('won', 'lost') AND (NEW.decided_by IS DISTINCT FROM OLD.decided_by
                                          OR NEW.closed_at IS DISTINCT FROM OLD.closed_at) THEN
        RAISE EXCEPTION 'dispute % is %: its decision is final', NEW.id, OLD.status
            USING ERRCODE = 'check_violation';
    END IF;
    IF OLD.status <> 'needs_response' AND NEW.evidence IS DISTINCT FROM OLD.evidence THEN
        RAISE EXCEPTION 'dispute %: evidence already went to the provider and cannot change',
            NEW.id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER payments_dispute_guard_decision
    BEFORE UPDATE ON payments_dispute
    FOR EACH ROW EXECUTE FUNCTION payments_dispute_guard_decision();

-- An evidence attempt belongs to its dispute's payment and provider.
CREATE FUNCTION payments_attempt_guard_dispute() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.dispute_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM payments_dispute
         WHERE id = NEW.dispute_id AND payment_id = NEW.payment_id
           AND provider = NEW.provider) THEN
        RAISE EXCEPTION 'attempt %: dispute % is not of payment % at provider %', NEW.id,
            NEW.dispute_id, NEW.payment_id, NEW.provider USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER payments_attempt_guard_dispute
    BEFORE INSERT OR UPDATE OF dispute_id, payment_id, provider ON payments_paymentattempt
    FOR EACH ROW EXECUTE FUNCTION payments_attempt_guard_dispute();
"""

REVERSE_GUARDS = """
DROP TRIGGER IF EXISTS payments_attempt_guard_dispute ON payments_paymentattempt;
DROP FUNCTION IF EXISTS payments_attempt_guard_dispute();
DROP TRIGGER IF EXISTS payments_dispute_guard_decision ON payments_dispute;
DROP FUNCTION IF EXISTS payments_dispute_guard_decision();
DROP TRIGGER IF EXISTS payments_evidencefile_immutable ON payments_evidencefile;
DROP FUNCTION IF EXISTS payments_evidencefile_immutable();
"""


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0002_mode_guards'),
        ('payments', '0009_live_merchants_never_reach_the_sandbox'),
    ]

    operations = [
        migrations.CreateModel(
            name='EvidenceFile',
            fields=[
                ('id', core.ids.PublicIdField(editable=False, max_length=40, prefix='file', primary_key=True, serialize=False)),
                ('purpose', models.CharField(choices=[('dispute_evidence', 'Dispute Evidence')], max_length=32)),
                ('content_type', models.CharField(choices=[('application/pdf', 'PDF'), ('image/png', 'PNG'), ('image/jpeg', 'JPEG')], max_length=32)),
                ('filename', models.CharField(help_text='As uploaded, cleaned; display only.', max_length=255)),
                ('size', models.BigIntegerField()),
                ('sha256', models.CharField(max_length=64)),
                ('storage_name', models.CharField(editable=False, max_length=128, unique=True)),
                ('uploaded_by', models.CharField(help_text="'api' or 'staff:<username>'.", max_length=160)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
            ],
        ),
        migrations.AddField(
            model_name='dispute',
            name='decided_by',
            field=models.CharField(blank=True, choices=[('provider', 'Provider'), ('merchant', 'Merchant'), ('staff', 'Staff')], db_default='', default='', max_length=16),
        ),
        migrations.AddField(
            model_name='dispute',
            name='provider_checked_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='dispute',
            name='reminded_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='paymentattempt',
            name='dispute',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='attempts', to='payments.dispute'),
        ),
        migrations.AlterField(
            model_name='paymentattempt',
            name='kind',
            field=models.CharField(choices=[('authorize', 'Authorize'), ('capture', 'Capture'), ('void', 'Void'), ('refund', 'Refund'), ('dispute_evidence', 'Dispute Evidence')], max_length=16),
        ),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
        migrations.AddIndex(
            model_name='dispute',
            index=models.Index(condition=models.Q(('status__in', ['needs_response', 'under_review'])), fields=['provider_checked_at'], name='dispute_open_lookup'),
        ),
        migrations.AddConstraint(
            model_name='dispute',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('closed_at__isnull', False), ('decided_by__in', ['provider', 'merchant', 'staff']), ('status__in', ['won', 'lost'])), models.Q(('closed_at__isnull', True), ('decided_by', ''), ('status__in', ['needs_response', 'under_review'])), _connector='OR'), name='dispute_closed_iff_decided'),
        ),
        migrations.AddConstraint(
            model_name='dispute',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('status', 'under_review'), _negated=True), ('evidence_submitted_at__isnull', False), _connector='OR'), name='dispute_under_review_has_evidence'),
        ),
        migrations.AddConstraint(
            model_name='paymentattempt',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('dispute__isnull', False), ('kind', 'dispute_evidence')), models.Q(models.Q(('kind', 'dispute_evidence'), _negated=True), ('dispute__isnull', True)), _connector='OR'), name='attempt_dispute_iff_evidence'),
        ),
        migrations.AddConstraint(
            model_name='paymentattempt',
            constraint=models.UniqueConstraint(condition=models.Q(('kind', 'dispute_evidence'), ('status__in', ['requested', 'unknown', 'approved'])), fields=('dispute',), name='attempt_one_evidence_submission_per_dispute'),
        ),
        migrations.AddField(
            model_name='evidencefile',
            name='merchant',
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='files', to='core.merchant'),
        ),
        migrations.AddIndex(
            model_name='evidencefile',
            index=models.Index(fields=['merchant', '-created_at', '-id'], name='file_merchant_recent'),
        ),
        migrations.AddConstraint(
            model_name='evidencefile',
            constraint=models.CheckConstraint(condition=models.Q(('size__gte', 1), ('size__lte', 52428800)), name='file_size_range'),
        ),
        migrations.AddConstraint(
            model_name='evidencefile',
            constraint=models.CheckConstraint(condition=models.Q(('purpose__in', ['dispute_evidence'])), name='file_purpose_known'),
        ),
        migrations.AddConstraint(
            model_name='evidencefile',
            constraint=models.CheckConstraint(condition=models.Q(('content_type__in', ['application/pdf', 'image/png', 'image/jpeg'])), name='file_type_known'),
        ),
        migrations.AddConstraint(
            model_name='evidencefile',
            constraint=models.CheckConstraint(condition=models.Q(('sha256__regex', '^[0-9a-f]{64}$')), name='file_sha256_hex'),
        ),
        migrations.RunSQL(GUARDS, REVERSE_GUARDS),
    ]
