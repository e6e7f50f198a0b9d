"""The API benchmark's baseline: an authenticated endpoint that returns a constant.

It runs through exactly the stack a real endpoint does (middleware, API-key authentication, the
rate-limit and idempotency mixins of `core.api.ApiView`) and then does no work, so the ratio
create+confirm / constant isolates what the payment path itself costs.
"""

from __future__ import annotations

from rest_framework.request import Request
from rest_framework.response import Response

from core.api import ApiView

CONSTANT = {"object": "bench", "ok": True}


class ConstantView(ApiView):
    def get(self, request: Request) -> Response:
        return Response(CONSTANT)
