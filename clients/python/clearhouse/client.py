"""`Clearhouse`: one authenticated client for the generated operations, answering with typed
models or raising `ClearhouseError`, plus an iterator over any list operation's pages."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import httpx
from clearhouse_api.client import AuthenticatedClient
from clearhouse_api.models.api_version import ApiVersion
from clearhouse_api.types import UNSET

from clearhouse._transport import RetryingTransport

# The version this client's models were generated for; requests ask for it explicitly, so an
# account pinned to an older version still gets the shapes these models describe.
API_VERSION = ApiVersion(list(ApiVersion)[-1].value)


class ClearhouseError(Exception):
    """An error answer: `status`, and the body's `type`, `code`, `message`, `param`,
    `request_id` and `doc_url`."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        self.status = status
        self.type = error.get("type")
        self.code = error.get("code")
        self.message = error.get("message") or f"HTTP {status}"
        self.param = error.get("param")
        self.request_id = error.get("request_id")
        self.doc_url = error.get("doc_url")
        super().__init__(f"{status} {self.code}: {self.message}")


class _KeyHidingClient(AuthenticatedClient):
    """The generated client, whose attrs repr printed `token=` (the API key) and, once used,
    the Authorization header: a log line, a debugger or an error tracker's locals leaked it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"AuthenticatedClient(base_url={self._base_url!r}, token='[hidden]')"


class Clearhouse:
    """`Clearhouse(api_key, base_url=…)`; then `client.call(payments_create, body=…)`."""

    def __init__(self, api_key: str, *, base_url: str, max_retries: int = 3,
                 backoff_seconds: float = 0.5, timeout_seconds: float = 30.0,
                 api_version: ApiVersion | str = API_VERSION,
                 transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.transport = RetryingTransport(transport, max_retries=max_retries,
                                           backoff_seconds=backoff_seconds,
                                           **({"sleep": sleep} if sleep else {}))
        self.api = _KeyHidingClient(
            base_url=base_url.rstrip("/"), token=api_key,
            headers={"Clearhouse-Version": str(ApiVersion(api_version))},
            timeout=httpx.Timeout(timeout_seconds), httpx_args={"transport": self.transport})

    def call(self, operation: ModuleType, **kwargs: Any) -> Any:
        """Run a generated operation (`clearhouse_api.api.payments.payments_create`): its
        typed 2xx model, or ClearhouseError for an error answer."""
        response = operation.sync_detailed(client=self.api, **kwargs)
        if response.status_code >= 400:
            raise ClearhouseError(int(response.status_code), _error_of(response.content))
        return response.parsed

    def paginate(self, operation: ModuleType, **kwargs: Any) -> Iterator[Any]:
        """Every object of a list operation, newest first, page after page
        (`starting_after` the last id of each page) until `has_more` is false."""
        params = dict(kwargs)
        while True:
            page = self.call(operation, **params)
            yield from page.data
            if not page.has_more or not page.data:
                return
            params["starting_after"] = page.data[-1].id

    def close(self) -> None:
        self.api.get_httpx_client().close()

    def __enter__(self) -> Clearhouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _error_of(content: bytes) -> dict[str, Any]:
    try:
        error = json.loads(content)["error"]
    except (ValueError, KeyError, TypeError):
        return {}
    return error if isinstance(error, dict) else {}


__all__ = ["API_VERSION", "UNSET", "Clearhouse", "ClearhouseError"]
