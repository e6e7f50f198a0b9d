"""API input validation for payments, refunds, disputes, customers and payment methods, and
their output shapes for the OpenAPI schema (the bodies themselves come from payments.payloads)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from core.serializers import (
    AmountField,
    CurrencyField,
    MetadataField,
    ProviderObjectOutput,
    StrictSerializer,
)
from payments.models import (
    CancellationReason,
    CaptureMethod,
    Dispute,
    DisputeDecider,
    FilePurpose,
    Payment,
    Refund,
    RefundReason,
)

TOKEN_HELP = ("A saved payment method (pm_…) or a test token such as pm_card_visa; card "  # noqa: S105
              "numbers are never accepted.")
CUSTOMER_ID = r"^cus_[A-Za-z0-9]{1,40}$"


class ReturnUrlField(serializers.URLField):
    """Where the customer's browser goes after a 3-D Secure challenge: an https URL (plain http
    only to a loopback host, where WEBHOOKS_ALLOW_LOOPBACK allows loopback, as in the demo)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=2048, help_text=(
            "https URL the customer returns to after an authentication challenge "
            "(3-D Secure)."), **kwargs)

    def to_internal_value(self, data: Any) -> str:
        url = super().to_internal_value(data)
        parts = urlsplit(url)
        if "\\" in url or "@" in parts.netloc:
            # Userinfo and backslashes are where URL parsers disagree on the host (ours reads
            # `https://shop\@evil` as evil's, a browser as shop's): no merchant needs them.
            raise serializers.ValidationError("return_url must not carry userinfo or '\\'.")
        loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
        if parts.scheme == "https" or (parts.scheme == "http" and loopback
                                       and settings.WEBHOOKS_ALLOW_LOOPBACK):
            return url
        raise serializers.ValidationError("return_url must be an https URL.")


class NextActionOutput(serializers.Serializer):
    type = serializers.ChoiceField(choices=["redirect_to_url"])
    redirect_to_url = inline_serializer("RedirectToUrl", {
        "url": serializers.URLField(help_text="The provider's challenge page."),
        "return_url": serializers.URLField(allow_null=True)})
    expires = serializers.IntegerField(
        help_text="When an unfinished challenge counts as abandoned (Unix); it is then voided "
                  "at the provider (completing it later charges nothing) and the payment "
                  "fails with `authentication_abandoned`.")


class PaymentCreateInput(StrictSerializer):
    amount = AmountField()
    currency = CurrencyField()
    capture_method = serializers.ChoiceField(choices=CaptureMethod.choices, required=False,
                                             default=CaptureMethod.AUTOMATIC)
    payment_method = serializers.RegexField(r"^pm_[A-Za-z0-9_]{1,60}$", help_text=TOKEN_HELP)
    customer = serializers.RegexField(CUSTOMER_ID, required=False,
                                      help_text="cus_…; defaults to the payment method's own")
    off_session = serializers.BooleanField(
        required=False, default=False,
        help_text="A merchant-initiated charge of a saved payment method, the customer absent "
                  "(stored-credential flags go to the provider).")
    description = serializers.CharField(max_length=500, required=False, default="",
                                        allow_blank=True)
    metadata = MetadataField()
    confirm = serializers.BooleanField(required=False, default=False)
    return_url = ReturnUrlField(required=False)


class PaymentConfirmInput(StrictSerializer):
    return_url = ReturnUrlField(required=False)


class PaymentCaptureInput(StrictSerializer):
    amount = AmountField(required=False,
                         help_text="Default: all of the authorization not yet captured.")
    final_capture = serializers.BooleanField(
        required=False, default=True,
        help_text="True (default): the last capture; the rest of the authorization is "
                  "released and the payment becomes `captured`. False: a partial capture; the "
                  "payment stays `authorized` for further captures until they reach the "
                  "authorized amount or a final one is made (providers with multicapture).")


class PaymentIncrementAuthorizationInput(StrictSerializer):
    amount = AmountField(help_text="The new total to authorize, above `amount_authorized`.")


class PaymentCancelInput(StrictSerializer):
    cancellation_reason = serializers.ChoiceField(
        choices=[reason for reason in CancellationReason.choices
                 if reason[0] != CancellationReason.EXPIRED],
        required=False, default="")


class EmptyInput(StrictSerializer):
    pass


class RefundCreateInput(StrictSerializer):
    payment = serializers.RegexField(r"^pay_[A-Za-z0-9]{1,40}$")
    amount = AmountField(required=False)
    reason = serializers.ChoiceField(choices=RefundReason.choices, required=False)
    metadata = MetadataField()


class PaymentListFilters(serializers.Serializer):
    status = serializers.ChoiceField(choices=Payment._meta.get_field("status").choices,
                                     required=False)
    created_gte = serializers.DateTimeField(required=False, help_text="ISO 8601, inclusive")
    created_lt = serializers.DateTimeField(required=False, help_text="ISO 8601, exclusive")


class PaymentOutput(ProviderObjectOutput):
    """Documentation of the payment object for the OpenAPI schema."""

    id = serializers.CharField(help_text="pay_…")
    object = serializers.CharField(default="payment")
    status = serializers.ChoiceField(choices=Payment._meta.get_field("status").choices)
    capture_method = serializers.ChoiceField(choices=CaptureMethod.choices)
    payment_method = serializers.CharField()
    customer = serializers.CharField(allow_null=True)
    off_session = serializers.BooleanField()
    amount_authorized = serializers.IntegerField()
    amount_captured = serializers.IntegerField()
    amount_refunded = serializers.IntegerField()
    amount_disputed = serializers.IntegerField()
    cancellation_reason = serializers.ChoiceField(choices=CancellationReason.choices,
                                                  allow_null=True)
    authorization_expires = serializers.IntegerField(
        allow_null=True, help_text="When the provider lets the authorization lapse (Unix).")
    return_url = serializers.URLField(allow_null=True)
    next_action = NextActionOutput(allow_null=True, help_text=(
        "While `requires_action`: where to send the customer (3-D Secure)."))


class RefundOutput(serializers.Serializer):
    id = serializers.CharField(help_text="re_…")
    object = serializers.CharField(default="refund")
    payment = serializers.CharField()
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    status = serializers.ChoiceField(choices=Refund._meta.get_field("status").choices)
    reason = serializers.CharField(allow_null=True)
    metadata = serializers.DictField(child=serializers.CharField())
    failure_code = serializers.CharField(allow_null=True)
    failure_message = serializers.CharField(allow_null=True)
    created = serializers.IntegerField()


@extend_schema_field({"type": "object", "minProperties": 1, "maxProperties": 20,
                      "additionalProperties": {"type": "string", "maxLength": 5000}})
class EvidenceField(serializers.DictField):
    """1–20 named pieces of evidence, each text of up to 5000 characters or a `file_…` id."""

    MAX_FIELDS = 20


class DisputeEvidenceInput(StrictSerializer):
    """Evidence text, and files uploaded with POST /v1/files (purpose dispute_evidence) named
    by id; `submit` (default true) sends it to the provider at once."""

    evidence = EvidenceField(
        child=serializers.CharField(max_length=5000, allow_blank=True),
        help_text="e.g. {\"customer_communication\": \"…\", \"shipping_tracking_number\": "
                  "\"…\", \"receipt\": \"file_…\"}. A value `file_…` must name one of your "
                  "evidence files.",
    )
    submit = serializers.BooleanField(
        required=False, default=True,
        help_text="true: send the evidence to the provider now (the dispute moves to "
                  "under_review when it accepts it); false: only stage it, then POST "
                  "/v1/disputes/{id}/submit.")

    def validate_evidence(self, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise serializers.ValidationError("Provide at least one piece of evidence.")
        if len(value) > EvidenceField.MAX_FIELDS:
            raise serializers.ValidationError(
                f"At most {EvidenceField.MAX_FIELDS} evidence fields.")
        return value


class DisputeOutput(serializers.Serializer):
    id = serializers.CharField(help_text="dp_…")
    object = serializers.CharField(default="dispute")
    payment = serializers.CharField()
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    reason = serializers.CharField()
    status = serializers.ChoiceField(choices=Dispute._meta.get_field("status").choices)
    evidence = serializers.DictField(child=serializers.CharField())
    evidence_submitted = serializers.IntegerField(allow_null=True)
    evidence_details = inline_serializer("DisputeEvidenceDetails", fields={
        "due_by": serializers.IntegerField(help_text="The provider's deadline (unix time)."),
        "has_evidence": serializers.BooleanField(),
        "submitted": serializers.BooleanField(),
        "past_due": serializers.BooleanField()})
    due_by = serializers.IntegerField()
    decided_by = serializers.ChoiceField(choices=DisputeDecider.choices, allow_null=True,
                                         help_text="Who set the outcome: normally provider.")
    closed = serializers.IntegerField(allow_null=True)
    created = serializers.IntegerField()


class FileOutput(serializers.Serializer):
    id = serializers.CharField(help_text="file_…")
    object = serializers.CharField(default="file")
    purpose = serializers.ChoiceField(choices=FilePurpose.choices)
    type = serializers.ChoiceField(choices=["pdf", "png", "jpg"],
                                   help_text="Judged by the file's content, not its name.")
    filename = serializers.CharField()
    size = serializers.IntegerField()
    sha256 = serializers.CharField()
    url = serializers.CharField(help_text="Download (as an attachment, never inline).")
    created = serializers.IntegerField()


class FileUploadInput(serializers.Serializer):
    """multipart/form-data: the file and its purpose."""

    file = serializers.FileField(help_text="PDF, PNG or JPEG; at most EVIDENCE_MAX_BYTES "
                                           "(5 MiB by default).")
    purpose = serializers.ChoiceField(choices=FilePurpose.choices)


class CustomerCreateInput(StrictSerializer):
    email = serializers.EmailField(max_length=254, required=False, default="")
    name = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)
    metadata = MetadataField()


class CustomerUpdateInput(StrictSerializer):
    email = serializers.EmailField(max_length=254, required=False, allow_blank=True)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    metadata = MetadataField(help_text="Merged key by key; an empty value removes its key.")


class CustomerListFilters(serializers.Serializer):
    # A filter, not an address being saved: any text is a fair question (one that names no
    # customer finds none), so the schema and this field agree on what is accepted.
    email = serializers.CharField(max_length=254, required=False,
                                  help_text="Customers with exactly this email")


class CustomerOutput(serializers.Serializer):
    id = serializers.CharField(help_text="cus_…")
    object = serializers.CharField(default="customer")
    email = serializers.CharField(allow_null=True)
    name = serializers.CharField(allow_null=True)
    metadata = serializers.DictField(child=serializers.CharField())
    livemode = serializers.BooleanField()
    created = serializers.IntegerField()


class PaymentMethodCreateInput(StrictSerializer):
    """A card token from an acquirer's vault, made by the merchant's front-end at that
    acquirer: the card itself never reaches Clearhouse."""

    provider = serializers.RegexField(r"^[a-z][a-z0-9_]{1,31}$",
                                      help_text="The acquirer whose vault issued the token")
    token = serializers.RegexField(r"^[A-Za-z0-9_\-]{8,100}$",
                                   help_text="That acquirer's card token")
    customer = serializers.RegexField(CUSTOMER_ID, required=False)
    metadata = MetadataField()


class PaymentMethodListFilters(serializers.Serializer):
    customer = serializers.RegexField(CUSTOMER_ID, required=False)


class CardOutput(serializers.Serializer):
    brand = serializers.CharField(allow_null=True)
    last4 = serializers.CharField(allow_null=True)
    exp_month = serializers.IntegerField(allow_null=True)
    exp_year = serializers.IntegerField(allow_null=True)


class PaymentMethodOutput(serializers.Serializer):
    id = serializers.CharField(help_text="pm_…")
    object = serializers.CharField(default="payment_method")
    type = serializers.CharField(default="card")
    card = CardOutput()
    customer = serializers.CharField(allow_null=True)
    providers = serializers.ListField(child=serializers.CharField(),
                                      help_text="Acquirers holding their own token for it")
    detached = serializers.BooleanField()
    metadata = serializers.DictField(child=serializers.CharField())
    livemode = serializers.BooleanField()
    created = serializers.IntegerField()
