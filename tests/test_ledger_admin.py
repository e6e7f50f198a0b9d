"""The ledger admin shows everything and lets nobody add, change or delete anything."""

from __future__ import annotations

import pytest

from backoffice.admin.ledger import entry_links
from ledger import flows
from ledger.models import Account, JournalEntry, Posting


@pytest.fixture
def entry(merchant):
    return flows.post_capture(merchant=merchant, payment_id="pay_1", provider="sandbox",
                              currency="usd", amount=1_000)


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["account", "journalentry", "posting"])
def test_lists_and_detail_pages_are_viewable(admin_client, entry, model):
    assert admin_client.get(f"/admin/ledger/{model}/").status_code == 200
    pk = {"account": Account.objects.first().pk, "journalentry": entry.pk,
          "posting": Posting.objects.first().pk}[model]
    page = admin_client.get(f"/admin/ledger/{model}/{pk}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content


@pytest.mark.django_db
def test_entry_page_shows_its_postings_and_reference(admin_client, entry):
    page = admin_client.get(f"/admin/ledger/journalentry/{entry.pk}/change/").content.decode()
    for posting in entry.postings.all():
        assert posting.id in page
    assert "payment pay_1" in page


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["account", "journalentry", "posting"])
def test_nothing_can_be_added_changed_or_deleted(admin_client, entry, model):
    pk = {"account": Account.objects.first().pk, "journalentry": entry.pk,
          "posting": Posting.objects.first().pk}[model]
    assert admin_client.get(f"/admin/ledger/{model}/add/").status_code == 403
    assert admin_client.post(f"/admin/ledger/{model}/{pk}/change/", {}).status_code == 403
    assert admin_client.post(f"/admin/ledger/{model}/{pk}/delete/",
                             {"post": "yes"}).status_code == 403
    assert JournalEntry.objects.count() == 1


@pytest.mark.django_db
def test_entry_links_for_another_apps_admin_page(merchant, entry):
    flows.post_settlement(merchant=merchant, payment_id="pay_1", currency="usd", amount=1_000)
    html = entry_links(reference_type="payment", reference_ids=["pay_1"])
    settlement = JournalEntry.objects.get(kind="settlement")
    assert f'<a href="/admin/ledger/journalentry/{entry.id}/change/">capture {entry.id}</a>' \
        in html
    assert f"settlement {settlement.id}" in html
    assert entry_links(reference_type="payment", reference_ids=["pay_none"]) == "—"
