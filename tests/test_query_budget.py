"""Create + confirm with an Idempotency-Key runs a bounded number of SQL queries."""

import pytest

pytestmark = pytest.mark.django_db

# Measured: see the closing note / docs/BENCHMARKS.md. Raise only with a reason.
CREATE_AND_CONFIRM_MAX_QUERIES = 12
AUTHORIZE_TASK_MAX_QUERIES = 14


def test_create_and_confirm_query_budget(api, django_assert_max_num_queries,
                                         django_capture_on_commit_callbacks):
    body = {"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa",
            "confirm": True}
    api.post("/payments", body, key="warm-up")  # first request warms auth caches
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
