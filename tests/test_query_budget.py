"""Create + confirm with an Idempotency-Key runs a bounded number of SQL queries, and the
statements cut from the request path (docs/BENCHMARKS.md, "The request path") stay cut."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

pytestmark = pytest.mark.django_db

# Measured in this test's transaction (savepoints count as queries): the request 13 (11 real
# statements: auth, the idempotency claim (one statement) and store, insert, routing (rules and
# breakers in one statement), two events with their endpoint lookups, status update, attempt);
# the task 22 (18 real: the
# sandbox provider's own 4, breaker, two locks, two ledger account lookups, entry_post's 3
# batched executes with its savepoint folded in, event and endpoints). Raise only with a reason.
CREATE_AND_CONFIRM_MAX_QUERIES = 13
AUTHORIZE_TASK_MAX_QUERIES = 22
BODY = {"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}


def _create_and_confirm(api, django_capture_on_commit_callbacks, key: str):
    """One steady-state create+confirm: its statements, and the commit callbacks it left."""
    with django_capture_on_commit_callbacks(execute=True):
        # The first payment creates the merchant's ledger accounts; measure the steady state.
        api.post("/payments", BODY, key=f"{key}-warm-up")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        with CaptureQueriesContext(connection) as queries:
            response = api.post("/payments", BODY, key=key)
    assert response.status_code == 202
    return [query["sql"] for query in queries.captured_queries], callbacks


def test_create_and_confirm_query_budget(api, django_assert_max_num_queries,
                                         django_capture_on_commit_callbacks):
    statements, callbacks = _create_and_confirm(api, django_capture_on_commit_callbacks,
                                                "budget-1")
    assert len(statements) <= CREATE_AND_CONFIRM_MAX_QUERIES, "\n".join(statements)
    with django_assert_max_num_queries(AUTHORIZE_TASK_MAX_QUERIES):
        for callback in callbacks:
            callback()


def test_a_new_key_is_claimed_in_one_statement(api, django_capture_on_commit_callbacks):
    """Claim (INSERT … ON CONFLICT, or the row already there, in one statement) and store:
    two statements on the idempotency table per request; was three (SELECT, then INSERT)."""
    statements, _ = _create_and_confirm(api, django_capture_on_commit_callbacks, "claim-1")
    touching = [sql for sql in statements if "core_idempotencykey" in sql]
    assert len(touching) == 2, "\n".join(touching)


def test_confirm_on_create_reads_no_attempts(api, django_capture_on_commit_callbacks):
    """A payment just created has no authorization attempt to skip when routing: the request
    writes one attempt and reads none (it used to SELECT the attempts' providers)."""
    statements, _ = _create_and_confirm(api, django_capture_on_commit_callbacks, "attempts-1")
    touching = [sql for sql in statements if "payments_paymentattempt" in sql]
    assert [sql.split()[0] for sql in touching] == ["INSERT"], "\n".join(touching)


def test_routing_reads_rules_and_breakers_in_one_statement(api,
                                                          django_capture_on_commit_callbacks):
    """Routing used to read the matching rules' targets and then the breakers (two queries)."""
    statements, _ = _create_and_confirm(api, django_capture_on_commit_callbacks, "routing-1")
    touching = [sql for sql in statements
                if "providers_routing" in sql or "providers_providerbreaker" in sql]
    assert len(touching) == 1, "\n".join(touching)


def test_replay_is_cheap(api, django_assert_max_num_queries):
    body = {"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa"}
    api.post("/payments", body, key="replay-1")
    with django_assert_max_num_queries(2):
        response = api.post("/payments", body, key="replay-1")
    assert response["Idempotent-Replayed"] == "true"
