"""Each payment rule has one home (`payments.models.ACTION_STATUSES`, `payments.selectors.
refundable_amount`) and the services, the back-office and the payment page agree with it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.contrib.admin.utils import quote

from backoffice import services as backoffice
from backoffice.audit import Actor
from core.errors import StateError
from payments import services as payments
from payments.models import ACTION_STATUSES, PAYMENT_TRANSITIONS, Payment, PaymentStatus
from payments.selectors import refundable_amount
from tests.factories import staff_user

ROOT = Path(__file__).resolve().parent.parent
STATES = ["created", "authorized", "captured", "settled", "refunded", "charged_back", "failed"]


@pytest.fixture
def payment_in(make_payment, merchant):
    """A payment brought to `state` through the real services."""

    def _make(state: str) -> Payment:
        if state == "failed":
            return make_payment(5000, state="failed", payment_method="pm_card_declined")
        if state in ("created", "authorized", "captured"):
            return make_payment(5000, state=state)
        payment = make_payment(5000)
        if state == "settled":
            payments.payment_settle(payment_id=payment.id, amount=5000, fee=0)
        elif state == "refunded":
            payments.refund_create(merchant=merchant, payment_id=payment.id)
        elif state == "charged_back":
            dispute = payments.dispute_open(payment_id=payment.id, amount=2000)
            payments.dispute_resolve(dispute_id=dispute.id, won=False)
        payment.refresh_from_db()
        assert payment.status == state
        return payment

    return _make


def _staff(role: str):
    return staff_user(role)


def _refused_for_state(call) -> bool:
    try:
        call()
    except StateError as exc:
        return exc.code == "payment_unexpected_state"
    return False


@pytest.mark.django_db
@pytest.mark.parametrize("state", STATES)
def test_services_back_office_and_page_offer_each_action_in_the_same_statuses(
        state, payment_in, merchant, client):
    payment = payment_in(state)
    allowed = {action: payment.status in statuses for action, statuses in
               ACTION_STATUSES.items()}
    admin = _staff("admin")
    client.force_login(admin)
    page = client.get(f"/admin/payments/payment/{quote(payment.id)}/change/")
    assert page.status_code == 200
    assert page.context["show"] == {action: allowed[action] for action in page.context["show"]}
    assert set(page.context["show"]) == {"refund", "capture", "cancel", "dispute"}

    assert _refused_for_state(lambda: payments.refund_create(
        merchant=merchant, payment_id=payment.id, amount=1)) is not allowed["refund"]
    payment = Payment.objects.get(pk=payment.id)
    assert _refused_for_state(lambda: backoffice.refund_request(
        actor=Actor(user=admin), payment_id=payment.id, amount=1, reason="duplicate",
        note="rule check")) is not allowed["refund"]
    assert _refused_for_state(lambda: payments.payment_capture(
        merchant=merchant, payment_id=payment.id)) is not allowed["capture"]
    other = payment_in(state)  # the capture above may have moved the first one on
    assert _refused_for_state(lambda: payments.payment_cancel(
        merchant=merchant, payment_id=other.id)) is not allowed["cancel"]


@pytest.mark.django_db
@pytest.mark.parametrize("state", ["captured", "settled", "refunded", "charged_back", "failed"])
def test_disputes_and_settlement_follow_the_same_statuses(state, payment_in):
    payment = payment_in(state)
    assert _refused_for_state(lambda: payments.dispute_open(
        payment_id=payment.id, amount=1)) is not payment.allows("dispute")
    assert _refused_for_state(lambda: payments.payment_settle(
        payment_id=payment.id, amount=1, fee=0)) is not payment.allows("settle")


@pytest.mark.django_db
def test_the_refundable_amount_is_what_refund_create_accepts(payment_in, merchant, client):
    payment = payment_in("captured")
    payments.refund_create(merchant=merchant, payment_id=payment.id, amount=1000)
    payments.dispute_open(payment_id=payment.id, amount=1500)
    payment.refresh_from_db()
    remaining = refundable_amount(payment)
    assert remaining == 5000 - 1000 - 1500
    client.force_login(_staff("admin"))
    page = client.get(f"/admin/payments/payment/{quote(payment.id)}/change/")
    assert page.context["refundable"] == "25.00 USD"
    with pytest.raises(StateError) as too_much:
        payments.refund_create(merchant=merchant, payment_id=payment.id, amount=remaining + 1)
    assert too_much.value.code == "amount_too_large"
    with pytest.raises(StateError) as too_much_for_staff:
        backoffice.refund_request(actor=Actor(user=_staff("operator")), payment_id=payment.id,
                                  amount=remaining + 1, reason="duplicate", note="rule check")
    assert too_much_for_staff.value.code == "amount_too_large"
    refund = payments.refund_create(merchant=merchant, payment_id=payment.id)
    assert refund.amount == remaining
    payment.refresh_from_db()
    assert refundable_amount(payment) == 0


def test_each_action_is_a_transition_the_contract_allows():
    """The action sets are consistent with the state table: a refund, cancel or chargeback
    starts only where its transition starts."""
    sources = {target: {source for source, to in PAYMENT_TRANSITIONS if to == target}
               for _, target in PAYMENT_TRANSITIONS}
    assert ACTION_STATUSES["refund"] == sources[PaymentStatus.REFUNDED]
    assert ACTION_STATUSES["cancel"] == sources[PaymentStatus.CANCELED]
    assert ACTION_STATUSES["capture"] <= sources[PaymentStatus.CAPTURED]
    assert sources[PaymentStatus.CHARGED_BACK] <= ACTION_STATUSES["dispute"]
    assert ACTION_STATUSES["settle"] - {PaymentStatus.SETTLED} >= sources[PaymentStatus.SETTLED]


def _python_sources():
    for path in sorted(ROOT.rglob("*.py")):
        parts = set(path.relative_to(ROOT).parts)
        if parts & {".venv", ".data", "migrations", "tests", "node_modules"}:
            continue
        yield path, ast.parse(path.read_text(), filename=str(path))


def test_no_second_copy_of_an_action_status_list():
    """A literal list of payment statuses equal to one of ACTION_STATUSES outside
    payments/models.py is a second home for that rule: import the rule instead."""
    rules = {statuses: action for action, statuses in ACTION_STATUSES.items()}
    copies = []
    for path, tree in _python_sources():
        if path == ROOT / "payments" / "models.py":
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Tuple | ast.List | ast.Set) or not node.elts:
                continue
            names = {elt.attr for elt in node.elts if isinstance(elt, ast.Attribute)
                     and isinstance(elt.value, ast.Name) and elt.value.id == "PaymentStatus"}
            if len(names) != len(node.elts):
                continue
            statuses = frozenset(PaymentStatus[name].value for name in names)
            if statuses in rules:
                copies.append(f"{path.relative_to(ROOT)}:{node.lineno} ({rules[statuses]})")
    assert not copies, copies


def test_the_refundable_amount_is_computed_in_one_place():
    """Captured less disputed less refunds is spelled once (payments.selectors)."""
    homes = []
    for path, tree in _python_sources():
        for node in ast.walk(tree):
            # captured − disputed − (refunds): the disputable amount alone is another rule.
            if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub)
                    and isinstance(node.left, ast.BinOp) and isinstance(node.left.op, ast.Sub)
                    and isinstance(node.left.left, ast.Attribute)
                    and node.left.left.attr == "amount_captured"
                    and isinstance(node.left.right, ast.Attribute)
                    and node.left.right.attr == "amount_disputed"):
                homes.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert homes == [homes[0]] and homes[0].startswith("payments/selectors.py"), homes
