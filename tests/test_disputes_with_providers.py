"""Disputes worked with the provider, through the simulator's three dialects over real HTTP: the
chargeback notice opens the dispute with the provider's deadline, the merchant uploads evidence
and submits it through the port, the provider decides and says so by signed notice (Cielo's
confirmed by lookup) or answers the dispute job's lookup, and the money moves exactly once,
whatever order or how many times the notices come. No staff member sets an outcome."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from ledger.models import JournalEntry
from payments import services
from payments.models import Dispute, Payment, PaymentAttempt
from providers.base import DisputeEvidenceRequest, DisputeRetrieveRequest, DisputeState, Outcome
from providers.base import EvidenceDocument as Document
from providers.registry import get_provider
from providers.simulator.cielo import CieloDialect
from providers.simulator.getnet import GetnetDialect
from providers.simulator.rede import RedeDialect
from tests.conftest import Api, routing_rule
from tests.factories import balances_of, pay
from tests.provider_notices import wait_until
from tests.test_dispute_evidence import PDF, upload
from tests.test_provider_webhooks import hooked  # noqa: F401 - the fixture, shared
from webhooks import inbound
from webhooks.models import ProviderEvent

CODES = ("cielo", "rede", "getnet")
DIALECTS = {"cielo": CieloDialect(), "rede": RedeDialect(), "getnet": GetnetDialect()}


def _open_at_provider(simulator, code: str, payment: Payment, amount: int) -> dict:
    return simulator.control.open_dispute(code, payment.provider_reference, amount=amount,
                                          reason="product_not_received")["dispute"]


def _quiet_case(simulator, merchant, code: str, *, paid: int, disputed: int, **config
                ) -> tuple[Payment, dict]:
    """A payment through `code` and a dispute opened on it at the provider, which sends no
    notices (we deliver or look up ourselves) and decides only when told unless `config`
    says otherwise."""
    routing_rule(code)
    simulator.control.configure(code, **{"webhook_url": "", "dispute_decision_ms": None,
                                         **config})
    payment = pay(merchant, amount=paid, currency="brl")
    return payment, _open_at_provider(simulator, code, payment, disputed)


def _dispute_entries(dispute: Dispute) -> list[str]:
    return sorted(JournalEntry.objects.filter(reference_type="dispute", reference_id=dispute.id)
                  .values_list("kind", flat=True))


# -- end to end: notice, evidence through the port, the provider's decision by notice -----------
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("won", [True, False], ids=["won", "lost"])
@pytest.mark.parametrize("code", CODES)
def test_a_dispute_runs_end_to_end_through_each_simulated_provider(
        hooked, merchant_and_key, code, won):  # noqa: F811
    merchant, key = merchant_and_key
    api = Api(key)
    routing_rule(code)
    payment = pay(merchant, amount=8000, currency="brl")
    assert (payment.status, payment.provider) == ("captured", code)
    before = balances_of(merchant, "brl")

    case = _open_at_provider(hooked, code, payment, 8000)
    dispute = wait_until(lambda: Dispute.objects.filter(provider_reference=case["reference"])
                         .first())
    # The provider's deadline, not ours.
    assert abs(dispute.due_by - timezone.now() - timedelta(days=7)) < timedelta(minutes=5)
    assert balances_of(merchant, "brl")["disputed"] == 8000

    receipt = upload(api, PDF, name="receipt.pdf").json()["id"]
    text = "Delivered and signed for. " + ("winning_evidence" if won else "losing_evidence")
    answer = api.post(f"/disputes/{dispute.id}", {"evidence": {
        "receipt": receipt, "uncategorized_text": text}})
    assert answer.status_code == 200, answer.content
    assert answer.json()["status"] == "under_review"
    at_provider = next(c for c in hooked.control.disputes(code)
                       if c["reference"] == case["reference"])
    assert at_provider["documents"] == [{
        "field": "receipt", "filename": "receipt.pdf", "content_type": "application/pdf",
        "size": len(PDF), "sha256": hashlib.sha256(PDF).hexdigest()}]
    attempt = PaymentAttempt.objects.get(dispute=dispute)
    assert attempt.status == "approved"
    assert base64.b64encode(PDF).decode() not in json.dumps(attempt.exchange)  # size, not bytes

    done = wait_until(lambda: Dispute.objects.filter(pk=dispute.pk, closed_at__isnull=False)
                      .first())  # the provider decides on its own timer and sends a notice
    assert (done.status, done.decided_by) == ("won" if won else "lost", "provider")
    after = balances_of(merchant, "brl")
    assert after["disputed"] == 0
    assert after["available"] == before["available"] - (0 if won else 8000)
    assert Payment.objects.get(pk=payment.pk).status == ("captured" if won else "charged_back")
    assert _dispute_entries(done) == sorted(["dispute_opened",
                                             "dispute_won" if won else "dispute_lost"])
    # The dispute job finds nothing left to do: a closed dispute is not asked about again.
    assert services.disputes_refresh_due(now=timezone.now() + timedelta(days=1)) == {}


# -- notices duplicated, reordered, late --------------------------------------------------------
def _post_notice(code: str, payload: dict, settings) -> int:
    """One provider notice, signed now, to our webhook; processed as the worker would."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = DIALECTS[code].webhook_headers(settings.PROVIDERS[code]["webhook_secret"], body,
                                             time.time())
    response = Client().post(f"/webhooks/providers/{code}/", data=body,
                             content_type="application/json",
                             **{f"HTTP_{k.upper().replace('-', '_')}": v
                                for k, v in headers.items()})
    for row in ProviderEvent.objects.exclude(status__in=["processed", "ignored"]):
        inbound.provider_event_process(event_id=row.pk)
    return response.status_code


@pytest.mark.django_db
@pytest.mark.parametrize("code", CODES)
def test_decision_notices_duplicated_reordered_or_late_change_nothing_more(
        simulator, merchant, settings, code):
    """The simulator makes the notices but sends none; we deliver them ourselves: the decision
    before the opening, each twice, then the opening, then the decision again a day late. The
    dispute is opened once, lost once, charged back once."""
    before = balances_of(merchant, "brl")
    payment, case = _quiet_case(simulator, merchant, code, paid=6000, disputed=2500)
    simulator.control.decide_dispute(code, case["reference"], won=False)
    notices = {r["type"]: r["payload"] for r in simulator.control.webhooks(code)}
    lost, opened = notices["dispute.lost"], notices["dispute.opened"]

    for _ in range(2):
        assert _post_notice(code, lost, settings) == 200
    assert not Dispute.objects.exists()
    held = ProviderEvent.objects.get(provider=code, type="dispute.lost")
    assert held.status == "held"  # waits for the case it decides
    for _ in range(2):
        assert _post_notice(code, opened, settings) == 200
    dispute = Dispute.objects.get()
    inbound.provider_events_release(provider=code, provider_reference=payment.provider_reference,
                                    merchant_reference=payment.id)
    for row in ProviderEvent.objects.filter(status="held"):
        inbound.provider_event_process(event_id=row.pk)
    dispute.refresh_from_db()
    assert (dispute.status, dispute.decided_by, dispute.amount) == ("lost", "provider", 2500)
    late = {**lost, **({"NotificationId": "late-1"} if code == "cielo" else
                       {"id": "late-1"} if code == "rede" else {"notification_id": "late-1"})}
    assert _post_notice(code, late, settings) == 200
    assert services.dispute_refresh(dispute_id=dispute.id).status == "lost"  # the lookup agrees
    assert Dispute.objects.count() == 1
    assert _dispute_entries(dispute) == ["dispute_lost", "dispute_opened"]
    after = balances_of(merchant, "brl")
    assert (after["available"], after["disputed"]) == (before["available"] - 2500, 0)


@pytest.mark.django_db
def test_a_forged_cielo_decision_is_not_believed_without_its_lookup(simulator, merchant,
                                                                   settings):
    """Cielo's notices are hints: a correctly signed 'won' for a case the provider still has
    under review changes nothing; the lookup decides."""
    _, case = _quiet_case(simulator, merchant, "cielo", paid=5000, disputed=5000)
    opened = next(r["payload"] for r in simulator.control.webhooks("cielo")
                  if r["type"] == "dispute.opened")
    assert _post_notice("cielo", opened, settings) == 200
    forged = {**opened, "NotificationId": "forged-won", "ChangeType": "ChargebackReversed"}
    assert _post_notice("cielo", forged, settings) == 200
    dispute = Dispute.objects.get(provider_reference=case["reference"])
    assert dispute.status == "needs_response"
    assert ProviderEvent.objects.get(provider_event_id="forged-won").status == "ignored"


# -- the dispute job's lookups, the provider's deadline, each adapter's calls ------------------
@pytest.mark.django_db
@pytest.mark.parametrize("code", CODES)
def test_with_every_notice_lost_the_dispute_job_learns_the_decision(simulator, merchant, code):
    payment, case = _quiet_case(simulator, merchant, code, paid=4000, disputed=4000)
    dispute = services.dispute_open(payment_id=payment.id, amount=4000,
                                    provider_reference=case["reference"])
    services.dispute_evidence_update(merchant=merchant, dispute_id=dispute.id,
                                     evidence={"uncategorized_text": "Proof of delivery."})
    assert services.disputes_refresh_due() == {"under_review": 1}  # not decided yet
    simulator.control.decide_dispute(code, case["reference"], won=True)
    assert services.disputes_refresh_due(now=timezone.now() + timedelta(hours=2)) == {"won": 1}
    dispute.refresh_from_db()
    assert (dispute.status, dispute.decided_by) == ("won", "provider")
    assert balances_of(merchant, "brl")["disputed"] == 0


@pytest.mark.django_db
@pytest.mark.parametrize("code", CODES)
def test_evidence_past_the_providers_deadline_is_refused_and_the_case_is_lost(
        simulator, merchant, api, code):
    payment, case = _quiet_case(simulator, merchant, code, paid=3000, disputed=3000,
                                dispute_response_days=0)
    dispute = services.dispute_open(payment_id=payment.id, amount=3000,
                                    provider_reference=case["reference"],
                                    due_by=timezone.now())
    time.sleep(0.01)  # the simulator's clock must pass the zero-day deadline it just set
    refused = api.post(f"/disputes/{dispute.id}", {"evidence": {"uncategorized_text": "late"}})
    assert refused.status_code == 502
    assert "past_due" in refused.json()["error"]["message"]
    dispute.refresh_from_db()
    assert dispute.status == "needs_response"
    assert PaymentAttempt.objects.get(dispute=dispute).status == "declined"
    assert services.dispute_refresh(dispute_id=dispute.id).status == "lost"


@pytest.mark.django_db
@pytest.mark.parametrize("code", CODES)
def test_each_adapter_submits_evidence_once_and_reads_the_case(simulator, merchant, code):
    payment, case = _quiet_case(simulator, merchant, code, paid=2000, disputed=1500)
    adapter = get_provider(code)
    request = DisputeEvidenceRequest(
        idempotency_key="att_evidence_1", dispute_reference=case["reference"],
        provider_reference=payment.provider_reference, text={"summary": "Delivered."},
        documents=(Document("receipt", "r.pdf", "application/pdf", PDF),))
    first = adapter.dispute_submit_evidence(request)
    again = adapter.dispute_submit_evidence(request)  # the same key: the first answer, no error
    assert (first.outcome, first.status, first.amount, first.currency) == (
        Outcome.APPROVED, DisputeState.UNDER_REVIEW, 1500, "brl")
    assert (first.dispute_reference, first.provider_reference) == (
        case["reference"], payment.provider_reference)
    assert first.evidence_due_by is not None and again.status == DisputeState.UNDER_REVIEW
    second = adapter.dispute_submit_evidence(DisputeEvidenceRequest(
        idempotency_key="att_evidence_2", dispute_reference=case["reference"],
        provider_reference=payment.provider_reference, text={"summary": "More."}))
    assert (second.outcome, second.error_code) == (Outcome.DECLINED, "invalid_state")
    missing = adapter.dispute_retrieve(DisputeRetrieveRequest(dispute_reference="nope"))
    assert (missing.outcome, missing.status) == (Outcome.DECLINED, DisputeState.NOT_FOUND)
    simulator.control.decide_dispute(code, case["reference"], won=False)
    decided = adapter.dispute_retrieve(DisputeRetrieveRequest(dispute_reference=case["reference"]))
    assert (decided.outcome, decided.status, decided.amount) == (
        Outcome.APPROVED, DisputeState.LOST, 1500)
