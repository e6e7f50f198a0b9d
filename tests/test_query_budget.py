"""Create + confirm with an Idempotency-Key runs a bounded number of SQL queries."""

import pytest

pytestmark = pytest.mark.django_db

# Measured in this test's transaction (savepoints count as queries): the request 16 (14 real
# statements: auth, idempotency claim and store, insert, route + breaker, two events with their
# endpoint lookups, attempt); the task 22 (18 real: the sandbox provider's own 4, breaker, two
# locks, two ledger account lookups, entry_post's 3 batched executes with its savepoint folded
# in, event and endpoints; 27 before entry_post batched its statements). Raise only with a
# reason.
CREATE_AND_CONFIRM_MAX_QUERIES = 16
AUTHORIZE_TASK_MAX_QUERIES = 22


def test_create_and_confirm_query_budget(api, django_assert_max_num_queries,
                                         django_capture_on_commit_callbacks):
    body = {"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa",
            "confirm": True}
    with django_capture_on_commit_callbacks(execute=True):
        # The first payment creates the merchant's ledger accounts; measure the steady state.
        api.post("/payments", body, key="warm-up")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        with django_assert_max_num_queries(CREATE_AND_CONFIRM_MAX_QUERIES):
            response = api.post("/payments", body, key="budget-1")
    assert response.status_code == 202
    with django_assert_max_num_queries(AUTHORIZE_TASK_MAX_QUERIES):
        for callback in callbacks:
            callback()


def test_replay_is_cheap(api, django_assert_max_num_queries):
    body = {"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa"}
    api.post("/payments", body, key="replay-1")
    with django_assert_max_num_queries(2):
        response = api.post("/payments", body, key="replay-1")
    assert response["Idempotent-Replayed"] == "true"
