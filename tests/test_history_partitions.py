"""Events partitioned by month: partitions exist for the coming months and the beat job adds
more, an old month can be detached (its events leave the API), the migration keeps the rows of a
database that already has events, and a delivery still needs its event to exist."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction

from core import partitions
from tests.factories import MerchantFactory
from tests.schema_history import migrated_back, relkind
from webhooks import stream
from webhooks.models import Event, WebhookDelivery
from webhooks.services import event_record

TABLE = "webhooks_event"


def _months_from(start: date, count: int) -> list[date]:
    months, month = [], date(start.year, start.month, 1)
    for _ in range(count):
        months.append(month)
        month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return months


def _is_partitioned(table: str) -> bool:
    return relkind(table) == "p"


@pytest.mark.django_db
def test_partitions_exist_for_this_month_and_the_next_three():
    assert _is_partitioned(TABLE)
    months = {p.month for p in partitions.partitions_list(TABLE)}
    assert set(_months_from(datetime.now(tz=UTC).date(), 4)) <= months
    assert partitions.partitions_list(TABLE)[-1].name == f"{TABLE}_default"


@pytest.mark.django_db
def test_the_job_creates_future_months_once_and_events_land_in_their_month():
    far = datetime.now(tz=UTC).date() + timedelta(days=200)
    created = partitions.months_ensure(today=far)
    expected = [partitions.partition_name(TABLE, m) for m in _months_from(far, 4)]
    assert [name for name in created if name.startswith(TABLE)] == expected
    assert partitions.months_ensure(today=far) == []  # idempotent

    event = event_record(merchant=MerchantFactory(), type="payment.created",
                         obj={"object": "payment", "id": "pay_part"})
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM webhooks_event WHERE id = %s",
                       [event.id])
        assert cursor.fetchone()[0] == partitions.partition_name(TABLE, event.created_at.date())


@pytest.mark.django_db
def test_the_beat_job_records_its_run():
    from django_celery_beat.models import PeriodicTask

    from reconciliation import jobs

    row = PeriodicTask.objects.get(name="history-partitions")  # migration reconciliation 0011
    assert (row.task, row.crontab.hour, row.crontab.minute) == (
        "reconciliation.tasks.history_partitions", "3", "40")
    run = jobs.history_partitions_job()
    assert run.error == "" and run.examined >= 1
    assert run.details == {"created": []}  # the migration already made the coming months


@pytest.mark.django_db
def test_an_old_month_detaches_and_its_events_leave_the_api(api, merchant):
    old_month = date(2024, 3, 1)
    assert partitions.month_create(TABLE, old_month)
    old = event_record(merchant=merchant, type="payment.created",
                       obj={"object": "payment", "id": "pay_old"})
    Event.objects.filter(pk=old.pk).update(created_at=datetime(2024, 3, 15, tzinfo=UTC))
    new = event_record(merchant=merchant, type="payment.created",
                       obj={"object": "payment", "id": "pay_new"})
    assert api.get(f"/events/{old.id}").status_code == 200

    out = StringIO()
    call_command("history_partitions", "--detach", TABLE, "2024-03", stdout=out)
    assert "webhooks_event_y2024m03 detached" in out.getvalue()
    assert api.get(f"/events/{old.id}").status_code == 404
    assert [e["id"] for e in api.get("/events").json()["data"]] == [new.id]
    with connection.cursor() as cursor:  # the month's rows are kept, outside the table
        cursor.execute("SELECT id FROM webhooks_event_y2024m03")
        assert cursor.fetchall() == [(old.id,)]
    assert not _is_partitioned("webhooks_event_y2024m03")
    with pytest.raises(ValueError, match="no attached partition"):
        partitions.month_detach(TABLE, old_month)


@pytest.mark.django_db
def test_history_partitions_lists_months(capsys):
    out = StringIO()
    call_command("history_partitions", "--list", stdout=out)
    this_month = datetime.now(tz=UTC).date()
    assert f"{this_month:%Y-%m}  {partitions.partition_name(TABLE, this_month)}" in out.getvalue()
    assert "DEFAULT  webhooks_event_default" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_a_delivery_needs_its_event_without_a_foreign_key(merchant):
    from webhooks.models import WebhookEndpoint

    endpoint = WebhookEndpoint.objects.create(merchant=merchant, url="https://example.com/h",
                                              enabled_events=["*"], secret_encrypted="x")
    with pytest.raises(IntegrityError, match="event evt_missing does not exist"):
        with transaction.atomic():
            WebhookDelivery.objects.create(endpoint=endpoint, event_id="evt_missing",
                                           next_attempt_at=datetime.now(tz=UTC))


# -- the migration on a database that already has events ---------------------------------------
@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_existing_events_in_their_months_and_the_stream_goes_on():
    merchant = MerchantFactory()
    with migrated_back([("webhooks", "0006_event_stream")]):
        assert not _is_partitioned(TABLE)
        when = [datetime(2026, 1, 31, 23, 59, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC),
                datetime(2026, 4, 10, tzinfo=UTC)]
        with connection.cursor() as cursor:
            for n, moment in enumerate(when):
                cursor.execute("INSERT INTO webhooks_event (id, merchant_id, type, object_type, "
                               "object_id, data, created_at) VALUES (%s, %s, 'payment.created', "
                               "'payment', %s, '{}', %s)", [f"evt_old{n}", merchant.pk,
                                                           f"pay_old{n}", moment])
            cursor.execute("INSERT INTO webhooks_webhookendpoint (id, merchant_id, url, "
                           "enabled_events, description, status, disabled_reason, "
                           "secret_encrypted, previous_secret_encrypted, created_at, updated_at, "
                           "consecutive_failures, idempotency_key, idempotency_fingerprint) "
                           "VALUES ('we_old', %s, 'https://example.com', '[]', '', 'enabled', "
                           "'', 'x', '', now(), now(), 0, '', '')", [merchant.pk])
            cursor.execute("INSERT INTO webhooks_webhookdelivery (id, endpoint_id, event_id, "
                           "status, attempt_count, next_attempt_at, last_error, created_at) "
                           "VALUES ('wd_old', 'we_old', 'evt_old1', 'pending', 0, now(), '', "
                           "now())")

    assert _is_partitioned(TABLE)
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, tableoid::regclass::text FROM webhooks_event ORDER BY id")
        assert cursor.fetchall() == [("evt_old0", "webhooks_event_y2026m01"),
                                     ("evt_old1", "webhooks_event_y2026m02"),
                                     ("evt_old2", "webhooks_event_y2026m04")]
    months = [p.month for p in partitions.partitions_list(TABLE) if p.month]
    assert months == _months_from(date(2026, 1, 1), len(months))  # every month, no gap
    assert months[-1] >= _months_from(datetime.now(tz=UTC).date(), 4)[-1]
    assert WebhookDelivery.objects.get(pk="wd_old").event.object_id == "pay_old1"

    # New events go on from the old insertion order; the stream publishes old then new.
    new = event_record(merchant=merchant, type="payment.created",
                       obj={"object": "payment", "id": "pay_new"})

    class Recorder:
        name = "after-migration"
        published: list[str] = []

        def publish(self, messages):  # type: ignore[no-untyped-def]
            self.published.extend(m.event_id for m in messages)

        def close(self) -> None:
            pass

    sink = Recorder()
    stream.relay_once(sink)
    assert sink.published == ["evt_old0", "evt_old1", "evt_old2", new.id]


@pytest.mark.django_db
@pytest.mark.planted_card_number
def test_the_card_number_scan_reads_a_partitioned_table_once(merchant):
    from core.pan_scan import scan_database

    event = event_record(merchant=merchant, type="payment.created",
                         obj={"object": "payment", "id": "pay_pan"})
    Event.objects.filter(pk=event.pk).update(data={"note": "Card 4111 1111 1111 1111"})
    assert [hit.where for hit in scan_database()] == [TABLE]  # not again per partition
