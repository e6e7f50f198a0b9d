"""The first-cut admin: pages render, keys are shown once, payments are read-only."""

import pytest
from django.contrib.auth import get_user_model

from core.models import ApiKey

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    user = get_user_model().objects.create_superuser("root", "r@example.com", "pw-12345678")
    client.force_login(user)
    return client


def test_payment_pages_render_and_offer_no_edit(staff, make_payment):
    payment = make_payment(state="captured")
    listing = staff.get("/admin/payments/payment/", {"q": payment.id})
    assert listing.status_code == 200
    assert payment.id in listing.content.decode()
    detail = staff.get(f"/admin/payments/payment/{payment.id}/change/")
    assert detail.status_code == 200
    assert b'name="_save"' not in detail.content
    response = staff.post(f"/admin/payments/payment/{payment.id}/change/",
                          {"status": "refunded"})
    assert response.status_code == 403
    payment.refresh_from_db()
    assert payment.status == "captured"


def test_creating_a_key_in_the_admin_shows_it_once(staff, merchant):
    response = staff.post("/admin/core/apikey/add/", {"merchant": merchant.pk, "name": "ops"},
                          follow=True)
    assert response.status_code == 200
    text = response.content.decode()
    assert "sk_test_" in text
    key = ApiKey.objects.get(merchant=merchant, name="ops")
    assert key.prefix.startswith("sk_test_")
    again = staff.get(f"/admin/core/apikey/{key.pk}/change/").content.decode()
    assert "shown only now" not in again


def test_a_payment_page_links_to_its_journal_entries_and_back(staff, make_payment):
    from ledger.models import JournalEntry

    payment = make_payment(state="captured")
    entry = JournalEntry.objects.get(reference_type="payment", reference_id=payment.id)
    page = staff.get(f"/admin/payments/payment/{payment.id}/change/").content.decode()
    assert f"/admin/ledger/journalentry/{entry.id}/change/" in page
    back = staff.get(f"/admin/ledger/journalentry/{entry.id}/change/").content.decode()
    assert payment.id in back
