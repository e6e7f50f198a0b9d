"""OpenAPI extensions: how drf-spectacular documents API-key auth and our custom fields."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "core.auth.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):  # type: ignore[no-untyped-def]
        return {"type": "http", "scheme": "bearer", "bearerFormat": "sk_test_… / sk_live_…",
                "description": "A secret API key: `Authorization: Bearer sk_test_…`."}
