"""The payment state machine through the API: confirm (202), capture, cancel and their 409s."""

import pytest

from payments import services
from payments.models import AttemptStatus, Payment, PaymentAttempt
from payments.tasks import payment_authorize
from tests.conftest import assert_error

pytestmark = pytest.mark.django_db


def _create(api, **overrides):
    body = {"amount": 10000, "currency": "usd", "payment_method": "pm_card_visa", **overrides}
    response = api.post("/payments", body)
    assert response.status_code in (201, 202), response.json()
    return response.json()


def test_confirm_answers_202_then_the_worker_captures(api, django_capture_on_commit_callbacks):
    payment = _create(api)
    assert payment["status"] == "created"
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/payments/{payment['id']}/confirm")
    assert response.status_code == 202
    assert response.json()["status"] == "authorization_requested"
    fetched = api.get(f"/payments/{payment['id']}").json()
    assert fetched["status"] == "captured"
    assert fetched["amount_captured"] == 10000
    assert fetched["provider"] == "sandbox"


def test_create_with_confirm_true_answers_202(api, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/payments", {"amount": 500, "currency": "eur",
                                          "payment_method": "pm_card_visa", "confirm": True})
    assert response.status_code == 202
    assert response.json()["status"] == "authorization_requested"
    assert Payment.objects.get(pk=response.json()["id"]).status == "captured"


def test_decline_fails_the_payment_with_the_normalised_code(
    api, django_capture_on_commit_callbacks
):
    payment = _create(api, payment_method="pm_card_declined")
    with django_capture_on_commit_callbacks(execute=True):
        api.post(f"/payments/{payment['id']}/confirm")
    fetched = api.get(f"/payments/{payment['id']}").json()
    assert fetched["status"] == "failed"
    assert fetched["last_error"]["code"] == "card_declined"


def test_manual_capture_of_part_releases_the_rest(api, django_capture_on_commit_callbacks):
    payment = _create(api, capture_method="manual")
    with django_capture_on_commit_callbacks(execute=True):
        api.post(f"/payments/{payment['id']}/confirm")
    assert api.get(f"/payments/{payment['id']}").json()["status"] == "authorized"
    response = api.post(f"/payments/{payment['id']}/capture", {"amount": 6000})
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "captured"
    assert response.json()["amount_captured"] == 6000


def test_capture_above_the_authorized_amount_is_400(api, make_payment):
    payment = make_payment(10000, state="authorized")
    response = api.post(f"/payments/{payment.id}/capture", {"amount": 10001})
    assert_error(response, 400, param="amount")
    payment.refresh_from_db()
    assert payment.status == "authorized"


def test_cancel_of_an_authorized_payment_voids_it(api, make_payment):
    payment = make_payment(state="authorized")
    response = api.post(f"/payments/{payment.id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    assert payment.attempts.filter(kind="void", status="approved").count() == 1


def test_capture_of_a_canceled_payment_is_409_and_changes_nothing(api, make_payment):
    payment = make_payment(state="created")
    assert api.post(f"/payments/{payment.id}/cancel").status_code == 200
    response = api.post(f"/payments/{payment.id}/capture")
    error = assert_error(response, 409)
    assert error["type"] == "state_error"
    assert "canceled" in error["message"]
    payment.refresh_from_db()
    assert payment.status == "canceled"


def test_cancel_of_a_captured_payment_is_409(api, make_payment):
    payment = make_payment(state="captured")
    response = api.post(f"/payments/{payment.id}/cancel")
    assert "captured" in assert_error(response, 409)["message"]
    payment.refresh_from_db()
    assert payment.status == "captured"


def test_double_capture_is_409_and_the_amount_is_unchanged(api, make_payment):
    payment = make_payment(state="authorized")
    assert api.post(f"/payments/{payment.id}/capture", {"amount": 4000}).status_code == 200
    response = api.post(f"/payments/{payment.id}/capture", {"amount": 4000})
    assert response.status_code == 409
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("captured", 4000)
    assert payment.attempts.filter(kind="capture").count() == 1


def test_confirm_twice_is_409(api, make_payment):
    payment = make_payment(state="captured")
    response = api.post(f"/payments/{payment.id}/confirm")
    assert_error(response, 409, code="payment_unexpected_state")


def test_timeout_leaves_the_payment_awaiting_reconciliation_and_nothing_resends_it(
    api, django_capture_on_commit_callbacks
):
    payment = _create(api, payment_method="pm_card_timeout")
    with django_capture_on_commit_callbacks(execute=True):
        api.post(f"/payments/{payment['id']}/confirm")
    row = Payment.objects.get(pk=payment["id"])
    assert row.status == "authorization_requested"
    attempt = PaymentAttempt.objects.get(payment=row)
    assert attempt.status == AttemptStatus.UNKNOWN
    # A redelivered task (acks_late) must not send the unknown attempt again.
    payment_authorize(attempt.id)
    assert PaymentAttempt.objects.filter(payment=row).count() == 1
    assert PaymentAttempt.objects.get(payment=row).completed_at == attempt.completed_at
    row.refresh_from_db()
    assert row.status == "authorization_requested"


def test_a_late_answer_does_not_move_a_payment_backwards(make_payment):
    payment = make_payment(state="captured")
    attempt = payment.attempts.get(kind="authorize")
    from providers.base import Outcome, ProviderResult

    services.payment_authorization_record(
        attempt_id=attempt.id, result=ProviderResult(outcome=Outcome.DECLINED,
                                                     error_code="card_declined"))
    payment.refresh_from_db()
    assert payment.status == "captured"


def test_every_state_change_writes_an_event(api, make_payment):
    payment = make_payment(state="captured")
    types = list(api.get("/events", {"limit": 100}).json()["data"])
    mine = [e["type"] for e in types if e["data"]["object"]["id"] == payment.id]
    assert mine == ["payment.captured", "payment.processing", "payment.created"]
