"""Decline handling as data: each decline code's meaning comes from the decline rules table
(seeded from providers.errors), decides failover and delayed retries of off-session soft
declines (bounded, on schedule, never beside an unknown outcome), and changes only through an
approved, audited back-office request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction

from backoffice import services as backoffice
from backoffice.audit import Actor
from backoffice.models import AuditEntry
from payments import services
from payments.models import Payment, PaymentAttempt
from providers.declines import decline_meaning
from providers.errors import CODES
from providers.models import DeclineMeaning, DeclineRule
from reconciliation import jobs
from reconciliation.models import ReconciliationCheck
from tests.conftest import routing_rule
from tests.test_saved_payment_methods import charge, tokenize
from webhooks.models import Event

INSUFFICIENT_FUNDS, EXPIRED = "4000000000009995", "4000000000000069"
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _actor(role: str) -> Actor:
    user = get_user_model().objects.create_user(f"{role}-1", password="pw-12345678",
                                                is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return Actor(user=get_user_model().objects.get(pk=user.pk), ip_address="10.0.0.1")


def _saved(merchant, number: str):
    return services.payment_method_create(merchant=merchant, provider="cielo",
                                          token=tokenize("cielo", number))


def _run_due_retry(payment: Payment, django_capture_on_commit_callbacks) -> Payment:
    """The janitor's step at the moment the retry is due, with the task it enqueues run here."""
    with django_capture_on_commit_callbacks(execute=True):
        assert services.payment_retries_run(now=payment.next_retry_at) == 1
    return Payment.objects.get(pk=payment.pk)


@pytest.mark.django_db
def test_every_normalised_code_has_a_default_rule():
    defaults = dict(DeclineRule.objects.filter(provider="").values_list("code", "meaning"))
    assert set(CODES) <= set(defaults)
    assert {code for code, c in CODES.items() if c.retryable} == {
        code for code in CODES if defaults[code] == "retry_other_provider"}
    assert defaults["insufficient_funds"] == "soft_decline"
    assert defaults["expired_card"] == "hard_decline"


@pytest.mark.django_db
def test_a_provider_s_own_rule_overrides_the_default():
    DeclineRule.objects.create(provider="rede", code="do_not_honor", meaning="hard_decline")
    assert decline_meaning(provider="rede", code="do_not_honor") == DeclineMeaning.HARD_DECLINE
    assert decline_meaning(provider="cielo", code="do_not_honor") == (
        DeclineMeaning.SOFT_DECLINE)
    assert decline_meaning(provider="cielo", code="never_heard_of") == (
        DeclineMeaning.DO_NOT_RETRY)


@pytest.mark.django_db
def test_a_hard_decline_is_never_retried(simulator, merchant, settings):
    settings.PAYMENT_RETRY_DELAYS = [60, 120]
    routing_rule("cielo", "rede")
    payment = charge(merchant, _saved(merchant, EXPIRED).id, off_session=True)
    assert (payment.status, payment.failure_code) == ("failed", "expired_card")
    assert (payment.next_retry_at, payment.retry_count) == (None, 0)
    assert services.payment_retries_run() == 0
    assert list(payment.attempts.values_list("provider", "status")) == [("cielo", "declined")]


@pytest.mark.django_db
def test_a_soft_decline_off_session_is_retried_on_schedule_and_stops_at_its_bound(
        simulator, merchant, settings, django_capture_on_commit_callbacks):
    settings.PAYMENT_RETRY_DELAYS = [60, 120]
    routing_rule("cielo", "rede")
    payment = charge(merchant, _saved(merchant, INSUFFICIENT_FUNDS).id, off_session=True)
    first_decline = payment.attempts.get().completed_at
    assert (payment.status, payment.retry_count) == ("authorization_requested", 0)
    assert round((payment.next_retry_at - first_decline).total_seconds()) == 60
    # Not yet due: nothing happens.
    assert services.payment_retries_run(
        now=first_decline + (payment.next_retry_at - first_decline) / 2) == 0

    payment = _run_due_retry(payment, django_capture_on_commit_callbacks)
    second_decline = payment.attempts.order_by("-created_at").first().completed_at
    assert (payment.status, payment.retry_count) == ("authorization_requested", 1)
    assert round((payment.next_retry_at - second_decline).total_seconds()) == 120

    payment = _run_due_retry(payment, django_capture_on_commit_callbacks)
    assert (payment.status, payment.failure_code, payment.retry_count) == (
        "failed", "insufficient_funds", 2)
    assert payment.next_retry_at is None
    assert services.payment_retries_run() == 0
    # Three tries, all at the provider that declined (retry later on the same one), no charge.
    assert list(payment.attempts.order_by("created_at").values_list("provider", "status")) == [
        ("cielo", "declined")] * 3
    assert [c["status"] for c in simulator.control.charges(order_id=payment.id)] == [
        "declined"] * 3
    events = list(Event.objects.filter(object_id=payment.id).values_list("type", flat=True))
    assert events.count("payment.retry_scheduled") == 2


@pytest.mark.django_db
def test_a_soft_decline_with_the_customer_present_fails_at_once(simulator, merchant):
    routing_rule("cielo")
    payment = charge(merchant, _saved(merchant, INSUFFICIENT_FUNDS).id)
    assert (payment.status, payment.next_retry_at) == ("failed", None)


@pytest.mark.django_db
def test_no_authorization_is_opened_beside_one_without_an_answer(make_payment, merchant):
    payment = make_payment(state="created")
    services.payment_confirm(merchant=merchant, payment_id=payment.id)  # its attempt: requested
    with pytest.raises(IntegrityError, match="without an answer"), transaction.atomic():
        PaymentAttempt.objects.create(payment=payment, kind="authorize", provider="sandbox",
                                      amount=payment.amount)
    PaymentAttempt.objects.filter(payment=payment).update(status="unknown")
    with pytest.raises(IntegrityError, match="without an answer"), transaction.atomic():
        PaymentAttempt.objects.create(payment=payment, kind="authorize", provider="sandbox",
                                      amount=payment.amount)


@pytest.mark.django_db
def test_a_due_retry_whose_last_answer_is_unknown_is_not_sent(simulator, merchant, settings):
    settings.PAYMENT_RETRY_DELAYS = [60]
    routing_rule("cielo")
    payment = charge(merchant, _saved(merchant, INSUFFICIENT_FUNDS).id, off_session=True)
    payment.attempts.update(status="unknown")  # as if the decline were never heard
    assert services.payment_retries_run(now=payment.next_retry_at) == 0
    payment.refresh_from_db()
    assert (payment.next_retry_at, payment.attempts.count()) == (None, 1)


@pytest.mark.django_db
def test_changing_a_mapping_needs_an_approver_and_is_audited(simulator, merchant, settings):
    settings.PAYMENT_RETRY_DELAYS = [60]
    maker, checker = _actor("operator"), _actor("approver")
    approval = backoffice.decline_rule_change_request(
        actor=maker, provider="cielo", code="insufficient_funds", meaning="hard_decline",
        note="Cielo says 51 is final for this merchant category")
    assert approval.status == "pending"
    assert decline_meaning(provider="cielo", code="insufficient_funds") == "soft_decline"
    with pytest.raises(PermissionDenied):
        backoffice.approval_decide(actor=maker, approval_id=approval.id, approve=True,
                                   comment="my own")
    with pytest.raises(PermissionDenied):
        backoffice.decline_rule_change_request(
            actor=_actor("viewer"), provider="", code="card_declined", meaning="hard_decline",
            note="no right to ask")
    done = backoffice.approval_decide(actor=checker, approval_id=approval.id, approve=True,
                                      comment="Matches Cielo's documentation")
    assert done.status == "executed"
    assert decline_meaning(provider="cielo", code="insufficient_funds") == "hard_decline"
    assert decline_meaning(provider="rede", code="insufficient_funds") == "soft_decline"
    change = AuditEntry.objects.get(action="decline_rule.change")
    assert (change.object_id, change.before, change.after) == (
        "cielo:insufficient_funds", {"meaning": "soft_decline"}, {"meaning": "hard_decline"})
    assert change.actor == checker.user
    assert list(AuditEntry.objects.filter(object_id=approval.id).order_by("id")
                .values_list("action", "actor")) == [
        ("approval.request", maker.user.pk), ("approval.approve", checker.user.pk),
        ("approval.execute", checker.user.pk)]
    # Routing follows the table at once: the same soft code is now final at cielo.
    routing_rule("cielo")
    payment = charge(merchant, _saved(merchant, INSUFFICIENT_FUNDS).id, off_session=True)
    assert (payment.status, payment.next_retry_at) == ("failed", None)


@pytest.mark.django_db
def test_the_back_office_form_asks_for_an_approval(client):
    user = _actor("operator").user
    client.force_login(user)
    listed = client.get("/admin/providers/declinerule/")
    assert listed.status_code == 200 and "Request a change" in listed.content.decode()
    posted = client.post("/admin/providers/declinerule/request-change/", {
        "provider": "", "code": "do_not_honor", "meaning": "hard_decline",
        "note": "Issuer guidance"})
    assert posted.status_code == 302 and "/admin/backoffice/approvalrequest/" in posted["Location"]
    page = client.get(posted["Location"]).content.decode()
    assert "do_not_honor" in page and "every provider" in page
    assert DeclineRule.objects.get(provider="", code="do_not_honor").meaning == "soft_decline"


def _janitor_at(time_machine, moment, django_capture_on_commit_callbacks):
    """One janitor pass at `moment`, with the authorization tasks it enqueues run here."""
    time_machine.move_to(moment, tick=False)
    with django_capture_on_commit_callbacks(execute=True):
        return jobs.janitor_job()


@pytest.mark.django_db
@pytest.mark.parametrize("first_check", ["answered", "still_waiting"])
def test_a_delayed_retry_whose_answer_is_lost_is_asked_about_on_the_janitor_s_first_slot(
        simulator, merchant, settings, time_machine, django_capture_on_commit_callbacks,
        first_check):
    """The janitor tracks one check per payment. A retry is a new attempt with a schedule of
    its own (5 min, 1 h, daily): neither the first attempt's closed check ('answered') nor its
    open one waiting for a later slot ('still_waiting') may keep the retry's lost answer from
    being asked about 5 minutes after the retry was sent."""
    settings.PAYMENT_RETRY_DELAYS = [3600]
    routing_rule("cielo")
    method = _saved(merchant, INSUFFICIENT_FUNDS)
    time_machine.move_to(T0, tick=False)
    simulator.control.configure("cielo", drop_rate=1.0, fault_operations=["authorize"])
    payment = charge(merchant, method.id, off_session=True)  # declined, the answer lost
    assert payment.attempts.get().status == "unknown"
    if first_check == "answered":
        simulator.control.configure("cielo", drop_rate=0.0)
        _janitor_at(time_machine, T0 + timedelta(minutes=5), django_capture_on_commit_callbacks)
        assert ReconciliationCheck.objects.get(object_id=payment.id).closed_at is not None
    else:
        # The first check cannot reach the provider (its next slot is an hour later); the
        # provider's own notice of the decline then arrives, and the retry is scheduled.
        simulator.control.configure("cielo", drop_rate=0.0)
        reachable = settings.PROVIDERS
        settings.PROVIDERS = {**reachable, "cielo": {**reachable["cielo"],
                                                     "base_url": "http://127.0.0.1:9/cielo"}}
        _janitor_at(time_machine, T0 + timedelta(minutes=5), django_capture_on_commit_callbacks)
        settings.PROVIDERS = reachable
        services.payment_authorization_lookup(attempt_id=payment.attempts.get().id)
        check = ReconciliationCheck.objects.get(object_id=payment.id)
        assert (check.closed_at, check.next_check_at) == (None, T0 + timedelta(hours=1))
    payment.refresh_from_db()
    assert (payment.status, payment.retry_count) == ("authorization_requested", 0)
    retry_due = payment.next_retry_at
    assert retry_due is not None

    # The retry is sent when due, and its answer (another decline) is lost too.
    simulator.control.configure("cielo", drop_rate=1.0, fault_operations=["authorize"])
    run = _janitor_at(time_machine, retry_due, django_capture_on_commit_callbacks)
    assert run.details["retries"] == 1
    retry = payment.attempts.order_by("-created_at").first()
    assert retry.status == "unknown"
    simulator.control.configure("cielo", drop_rate=0.0)

    # Five minutes later the janitor asks about the retry, and the payment gets its answer.
    _janitor_at(time_machine, retry.created_at + timedelta(minutes=5),
                django_capture_on_commit_callbacks)
    payment.refresh_from_db()
    assert (payment.status, payment.failure_code, payment.retry_count) == (
        "failed", "insufficient_funds", 1)
    check = ReconciliationCheck.objects.get(object_id=payment.id)
    assert (check.attempt_id, check.stuck_since, check.closed_at is not None) == (
        retry.id, retry.created_at, True)
    assert [c["status"] for c in simulator.control.charges(order_id=payment.id)] == [
        "declined"] * 2
