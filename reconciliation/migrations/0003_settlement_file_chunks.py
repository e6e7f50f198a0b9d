"""The raw settlement file moves from one bytea column to ordered 1 MiB chunks, so importing and
reading a large file never holds it whole in memory. Existing files are split into chunks."""

import django.db.models.deletion
from django.db import migrations, models

CHUNK_BYTES = 1 << 20


def split_files(apps, schema_editor):
    SettlementFile = apps.get_model("reconciliation", "SettlementFile")
    SettlementFileChunk = apps.get_model("reconciliation", "SettlementFileChunk")
    for file_id in SettlementFile.objects.values_list("id", flat=True).iterator():
        content = bytes(SettlementFile.objects.values_list("content", flat=True).get(pk=file_id))
        SettlementFileChunk.objects.bulk_create(
            SettlementFileChunk(file_id=file_id, number=number,
                                data=content[start:start + CHUNK_BYTES])
            for number, start in enumerate(range(0, len(content), CHUNK_BYTES)))


def join_chunks(apps, schema_editor):
    SettlementFile = apps.get_model("reconciliation", "SettlementFile")
    SettlementFileChunk = apps.get_model("reconciliation", "SettlementFileChunk")
    for file in SettlementFile.objects.all():
        file.content = b"".join(bytes(chunk) for chunk in SettlementFileChunk.objects
                                .filter(file=file).order_by("number")
                                .values_list("data", flat=True))
        file.save(update_fields=["content"])


class Migration(migrations.Migration):

    dependencies = [
        ('reconciliation', '0002_beat_schedule'),
    ]

    operations = [
        migrations.CreateModel(
            name='SettlementFileChunk',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('number', models.PositiveIntegerField()),
                ('data', models.BinaryField()),
                ('file', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='chunks', to='reconciliation.settlementfile')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('file', 'number'), name='settlement_chunk_unique')],
            },
        ),
        migrations.RunPython(split_files, join_chunks),
        # A default, so that migrating back can add the column to existing rows again.
        migrations.AlterField(
            model_name='settlementfile',
            name='content',
            field=models.BinaryField(default=b'', help_text='The raw file, byte for byte.'),
        ),
        migrations.RemoveField(
            model_name='settlementfile',
            name='content',
        ),
    ]
