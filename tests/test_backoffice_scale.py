"""The payment list with 100,000 payments: a bounded number of queries per page, and every
search shape answered from an index (no sequential scan of payments_payment)."""

from __future__ import annotations

import pytest
from django.db import connection

from tests.factories import MerchantFactory, created_payments_insert, staff_user

pytestmark = [pytest.mark.django_db, pytest.mark.slow]
ROWS = 100_000


@pytest.fixture
def many_payments(merchant):
    """100,000 payments of one busy merchant in one INSERT … SELECT (inserted as `created`,
    which the status trigger requires), plus three of a small merchant, then ANALYZE so the
    planner knows the table's size."""
    with connection.cursor() as cursor:
        created_payments_insert(
            cursor, merchant, ROWS, id_sql="'pay_bulk' || lpad(i::text, 16, '0')",
            amount_sql="1000 + i", description_sql="'order ' || i", provider="sandbox",
            reference_sql="'ref_' || i", created_sql="now() - i * interval '1 second'")
        small = MerchantFactory(name="Tiny Bakery")
        created_payments_insert(
            cursor, small, 3, id_sql="'pay_tiny' || i", amount_sql="500",
            description_sql="'croissant'", provider="", reference_sql="''",
            created_sql="now()")
        cursor.execute("ANALYZE payments_payment")
        cursor.execute("ANALYZE core_merchant")
    return small


@pytest.fixture
def viewer(client):
    return staff_user("viewer", "vera", client=client)


def _page(client, params: dict[str, str]):
    page = client.get("/admin/payments/payment/", params)
    assert page.status_code == 200
    return page


def _plan(page) -> str:
    # The changelist's own queryset: search, filters and ordering as the page ran them.
    return page.context["cl"].queryset[:100].explain()


def test_the_list_renders_in_a_bounded_number_of_queries(client, viewer, many_payments,
                                                          django_assert_max_num_queries):
    with django_assert_max_num_queries(12):
        page = client.get("/admin/payments/payment/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "more than 10000 payments" in text
    assert text.count('class="action-checkbox"') == 0  # no bulk actions on payments
    with django_assert_max_num_queries(12):
        filtered = client.get("/admin/payments/payment/",
                              {"status__exact": "created", "provider": "sandbox",
                               "currency": "usd", "q": "ref_42"})
    assert [p.id for p in filtered.context["cl"].result_list] == [
        "pay_bulk0000000000000042"]


def test_the_payments_migration_gives_description_search_its_index():
    """Migration payments 0005 made the trigram index the description search relies on (no
    test creates it)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'payments_payment' "
                       "AND indexname = 'payment_description_trgm'")
        assert "gin_trgm_ops" in cursor.fetchone()[0]


def test_every_search_and_the_default_list_use_an_index_and_find_the_row(
        client, viewer, merchant, many_payments):
    """Each search shape returns the payment it names, and neither a search nor the unfiltered
    newest-first list reads payments_payment sequentially."""
    tiny = {f"pay_tiny{i}" for i in (1, 2, 3)}
    cases = [
        ({"q": "pay_bulk0000000000054321"}, {"pay_bulk0000000000054321"}),
        ({"q": "ref_54321"}, {"pay_bulk0000000000054321"}),
        ({"q": "Tiny Bakery"}, tiny),
        ({"q": many_payments.id}, tiny),
        ({"q": "re_nosuchrefund"}, set()),
        ({"q": "order 54321"}, {"pay_bulk0000000000054321"}),
        ({"q": "croissant"}, tiny),  # a description only
    ]
    for params, expected in cases:
        page = _page(client, params)
        assert {p.id for p in page.context["cl"].result_list} == expected, params
        plan = _plan(page)
        assert "Seq Scan on payments_payment" not in plan, (params, plan)
    description = _plan(_page(client, {"q": "order 54321"}))
    assert "payment_description_trgm" in description, description
    default = _page(client, {})
    assert default.context["cl"].result_list[0].id in tiny  # the newest
    newest = _plan(default)
    assert "payment_recent" in newest and "Seq Scan on payments_payment" not in newest, newest
    # The filters alone: the newest-first index, filtered as it is walked (a page is 100 rows).
    for params in ({"status__exact": "created"}, {"currency": "usd"}, {"provider": "sandbox"}):
        plan = _plan(_page(client, params))
        assert "Seq Scan on payments_payment" not in plan, (params, plan)
