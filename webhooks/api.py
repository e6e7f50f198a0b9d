"""Thin DRF views for events, event resends, webhook endpoints and their delivery logs."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from core.api import (
    ERRORS,
    IDEMPOTENCY_HEADER,
    POST_ERRORS,
    ApiView,
    ListView,
    RetrieveView,
    list_of,
)
from core.errors import error_body
from webhooks import inbound, selectors, services
from webhooks.payloads import endpoint_to_dict, event_to_dict
from webhooks.serializers import (
    EventResendInput,
    RotateSecretInput,
    WebhookEndpointCreateInput,
    WebhookEndpointUpdateInput,
    delivery_to_dict,
)


# Output shapes, for the OpenAPI schema only (views render plain dicts from payloads.py and
# serializers.py). Each object opens with its id and its kind, as every API object does.
class _ObjectOutput(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField()


class EventOutput(_ObjectOutput):
    type = serializers.CharField(help_text="One of the catalogue's types (see `webhooks`).")
    api_version = serializers.CharField(help_text="The API version `data` is rendered in.")
    created = serializers.IntegerField()
    data = serializers.DictField(help_text="`{\"object\": …}`: the object right after the "
                                           "change, as the type's webhook payload shows it.")


class WebhookEndpointOutput(_ObjectOutput):
    url = serializers.CharField()
    enabled_events = serializers.ListField(child=serializers.CharField())
    description = serializers.CharField()
    api_version = serializers.CharField(help_text="The API version deliveries render in: "
                                                  "the create request's.")
    # CharField, not ChoiceField: another `status` enum would collide in the schema's names.
    status = serializers.CharField(help_text="`enabled` or `disabled`")
    disabled_reason = serializers.CharField(allow_null=True)
    failing_since = serializers.IntegerField(allow_null=True)
    previous_secret_expires = serializers.IntegerField(allow_null=True)
    created = serializers.IntegerField()


class WebhookEndpointWithSecretOutput(WebhookEndpointOutput):
    secret = serializers.CharField(help_text="`whsec_…`: shown only in this response.")


class WebhookEndpointDeletedOutput(_ObjectOutput):
    deleted = serializers.BooleanField()


class WebhookDeliveryAttemptOutput(serializers.Serializer):
    number = serializers.IntegerField()
    started = serializers.IntegerField()
    latency_ms = serializers.IntegerField()
    status_code = serializers.IntegerField(allow_null=True)
    response_snippet = serializers.CharField()
    error = serializers.CharField(allow_null=True)
    succeeded = serializers.BooleanField()


class WebhookDeliveryOutput(_ObjectOutput):
    endpoint = serializers.CharField()
    event = serializers.CharField()
    event_type = serializers.CharField()
    status = serializers.CharField(help_text="`pending`, `delivered` or `failed`")
    attempt_count = serializers.IntegerField()
    next_attempt = serializers.IntegerField(allow_null=True)
    last_status_code = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField(allow_null=True)
    created = serializers.IntegerField()
    completed = serializers.IntegerField(allow_null=True)
    attempts = WebhookDeliveryAttemptOutput(many=True)



class EventCollection(ListView, plural="events", output=EventOutput,
                      selector=selectors.event_list, render=event_to_dict,
                      passed={"type": "type", "object_id": "object_id"}):
    pass


class EventDetail(RetrieveView, plural="events", output=EventOutput,
                  selector=selectors.event_get, render=event_to_dict):
    pass


class EventResend(ApiView):
    @extend_schema(
        operation_id="events_resend", request=EventResendInput, parameters=[IDEMPOTENCY_HEADER],
        responses={200: list_of(WebhookDeliveryOutput, "WebhookDeliveryList"), **POST_ERRORS},
        description="Send the event again as new deliveries: to `endpoint`, or to every enabled "
                    "endpoint subscribed to its type. Receivers see the same event id.",
    )
    def post(self, request: Request, event_id: str) -> Response:
        data = self.validated(EventResendInput, request)
        deliveries = services.event_resend(merchant=request.user, event_id=event_id,
                                           endpoint_id=data.get("endpoint"))
        return Response({"object": "list", "data": [delivery_to_dict(d) for d in deliveries],
                         "has_more": False})


class WebhookEndpointCollection(ListView, plural="webhook_endpoints",
                                output=WebhookEndpointOutput, selector=selectors.endpoint_list,
                                render=endpoint_to_dict):
    idempotency_response_is_secret = True  # the create response carries the signing secret
    @extend_schema(
        operation_id="webhook_endpoints_create", request=WebhookEndpointCreateInput,
        parameters=[IDEMPOTENCY_HEADER],
        responses={201: WebhookEndpointWithSecretOutput, **POST_ERRORS},
        description="Register a URL for events. The URL must be https (in production) and "
                    "resolve to public addresses only. The signing `secret` is in this response "
                    "only; store it now.",
    )
    def post(self, request: Request) -> Response:
        data = self.validated(WebhookEndpointCreateInput, request)
        issued = services.endpoint_create(merchant=request.user, api_version=self.api_version,
                                          **self.idempotency(request), **data)
        return Response(endpoint_to_dict(issued.endpoint, secret=issued.secret),
                        status=status.HTTP_201_CREATED)


class WebhookEndpointDetail(RetrieveView, plural="webhook_endpoints",
                            output=WebhookEndpointOutput, selector=selectors.endpoint_get,
                            render=endpoint_to_dict):
    @extend_schema(
        operation_id="webhook_endpoints_update", request=WebhookEndpointUpdateInput,
        parameters=[IDEMPOTENCY_HEADER], responses={200: WebhookEndpointOutput, **POST_ERRORS},
        description="Change the URL, events or description; `disabled: true|false` stops or "
                    "resumes deliveries (resuming restarts the failure clock).",
    )
    def post(self, request: Request, endpoint_id: str) -> Response:
        data = self.validated(WebhookEndpointUpdateInput, request)
        endpoint = services.endpoint_update(merchant=request.user, endpoint_id=endpoint_id,
                                            **data)
        return Response(endpoint_to_dict(endpoint))

    @extend_schema(operation_id="webhook_endpoints_delete",
                   responses={200: WebhookEndpointDeletedOutput, **ERRORS})
    def delete(self, request: Request, endpoint_id: str) -> Response:
        endpoint = services.endpoint_delete(merchant=request.user, endpoint_id=endpoint_id)
        return Response({"id": endpoint.id, "object": "webhook_endpoint", "deleted": True})


class WebhookEndpointRotateSecret(ApiView):
    idempotency_response_is_secret = True
    @extend_schema(
        operation_id="webhook_endpoints_rotate_secret", request=RotateSecretInput,
        parameters=[IDEMPOTENCY_HEADER],
        responses={200: WebhookEndpointWithSecretOutput, **POST_ERRORS},
        description="Issue a new signing secret (in this response only). For `expires_in` "
                    "seconds (default 86400) deliveries carry a `v1` for both secrets.",
    )
    def post(self, request: Request, endpoint_id: str) -> Response:
        data = self.validated(RotateSecretInput, request)
        issued = services.endpoint_rotate_secret(merchant=request.user, endpoint_id=endpoint_id,
                                                 expires_in=data.get("expires_in"))
        return Response(endpoint_to_dict(issued.endpoint, secret=issued.secret))


class WebhookEndpointDeliveries(ListView, plural="webhook_endpoints",
                                output=WebhookDeliveryOutput, selector=selectors.delivery_list,
                                render=delivery_to_dict,
                                operation_id="webhook_endpoints_deliveries",
                                list_name="WebhookEndpointDeliveryList"):
    pass


@csrf_exempt
@require_POST
def provider_webhook(request: HttpRequest, code: str) -> JsonResponse:
    """`POST /webhooks/providers/<code>/`: the provider's signature on the raw body is the only
    authentication. Answers 200 as soon as the event is stored; processing is asynchronous."""
    try:
        received = inbound.provider_event_receive(
            provider=code, headers=inbound.headers_of(request.META), body=request.body)
    except inbound.InboundRejected as rejected:
        return JsonResponse(error_body(type="invalid_request_error", code="webhook_rejected",
                                       message=rejected.message, param=None,
                                       request=request),
                            status=rejected.status)
    return JsonResponse({"received": True, "duplicate": received.duplicate})
