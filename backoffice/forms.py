"""Forms of the admin actions. They check the shape of what was typed (an amount in the
currency's major unit, a required note) and nothing else: the rules live in the services."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms

from core.ids import new_id
from core.money import MAX_AMOUNT, exponent, format_amount, to_decimal
from payments.models import EVIDENCE_FILE_FIELDS, DisputeReason, RefundReason

# ASCII digits only: `\d` would also take "١٠" (Arabic-Indic ten), which Decimal reads as 10.
_AMOUNT = re.compile(r"[0-9]+(\.[0-9]+)?")


def parse_amount(text: str, currency: str) -> int:
    """'40', '40.5' or '40.50' in `currency`'s major unit → minor units (4050 for usd).
    Raises ValidationError with a message that says what to type instead."""
    text = text.strip().replace(" ", "")
    example = f"{to_decimal(4050, currency)}"
    if not _AMOUNT.fullmatch(text):
        raise forms.ValidationError(
            f"Type the amount in {currency.upper()} with digits and a dot, e.g. {example} "
            "(no thousands separators, no currency sign).")
    places = exponent(currency)
    try:
        value = Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the regex already guards this
        raise forms.ValidationError("That is not a number.") from exc
    minor = value.scaleb(places)
    if minor != minor.to_integral_value():
        raise forms.ValidationError(
            f"{currency.upper()} has {places} decimal place(s); {text} has more.")
    amount = int(minor)
    if amount <= 0:
        raise forms.ValidationError("The amount must be more than zero.")
    if amount > MAX_AMOUNT:
        raise forms.ValidationError(
            f"The amount is too large: at most {format_amount(MAX_AMOUNT, currency)}.")
    return amount


class CurrencyAmountField(forms.CharField):
    """An optional amount typed in major units; the form converts it with its currency."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("max_length", 20)
        super().__init__(**kwargs)


class _CurrencyForm(forms.Form):
    """A form whose `amount` is in `currency`'s major unit; cleaned to minor units or None."""

    def __init__(self, *args: Any, currency: str, **kwargs: Any) -> None:
        self.currency = currency
        super().__init__(*args, **kwargs)
        if "amount" in self.fields:
            self.fields["amount"].widget.attrs.update(
                {"inputmode": "decimal", "placeholder": f"e.g. {to_decimal(4000, currency)}",
                 "autocomplete": "off"})

    def clean_amount(self) -> int | None:
        text = self.cleaned_data.get("amount") or ""
        return parse_amount(text, self.currency) if text.strip() else None


class RefundForm(_CurrencyForm):
    amount = CurrencyAmountField(
        label="Amount to refund",
        help_text="Leave empty to refund everything still refundable.")
    reason = forms.ChoiceField(label="Reason", choices=[("", "— choose —"),
                                                        *RefundReason.choices])
    note = forms.CharField(label="Note for the audit trail", max_length=500,
                           widget=forms.Textarea(attrs={"rows": 2}),
                           help_text="Ticket number, what the customer asked.")
    form_key = forms.CharField(widget=forms.HiddenInput, required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A fresh one-time key per rendered form: submitting it twice refunds once.
        self.fields["form_key"].initial = new_id("bo")


class CaptureForm(_CurrencyForm):
    amount = CurrencyAmountField(label="Amount to capture",
                                 help_text="Leave empty to capture all that is not captured yet.")
    # Unticked (and absent) is a final capture, the API's default.
    partial = forms.BooleanField(
        label="Partial capture", required=False,
        help_text="Keep the rest authorized for further captures (providers with "
                  "multicapture); otherwise the rest is released.")


class NoteForm(forms.Form):
    note = forms.CharField(label="Note for the audit trail", max_length=2000,
                           widget=forms.Textarea(attrs={"rows": 2}))


class OptionalNoteForm(NoteForm):
    """For an action that needs no input (resend, replay): the note may stay empty, and the form
    still carries the CSRF-protected POST."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["note"].required = False


class DisputeOpenForm(_CurrencyForm):
    provider_reference = forms.CharField(label="Provider's case reference", max_length=128,
                                         help_text="As printed on the provider's notice.")
    reason = forms.ChoiceField(label="Reason on the notice", choices=DisputeReason.choices,
                               initial=DisputeReason.GENERAL)
    amount = CurrencyAmountField(label="Disputed amount",
                                 help_text="Leave empty for everything not refunded yet.")
    due_by = forms.DateField(label="Respond by", required=False,
                             widget=forms.DateInput(attrs={"type": "date"}),
                             help_text="Leave empty for 7 days from now.")
    note = forms.CharField(label="Where the notice came from", max_length=2000,
                           widget=forms.Textarea(attrs={"rows": 2}))


class EvidenceForm(forms.Form):
    uncategorized_text = forms.CharField(label="Summary for the provider", required=False,
                                         max_length=5000, widget=forms.Textarea(attrs={"rows": 3}))
    shipping_tracking_number = forms.CharField(label="Shipping tracking number", required=False,
                                               max_length=200)
    customer_email_address = forms.CharField(label="Customer e-mail address", required=False,
                                             max_length=200)


class EvidenceFileForm(forms.Form):
    field = forms.ChoiceField(label="What the file shows",
                              choices=list(EVIDENCE_FILE_FIELDS.items()))
    file = forms.FileField(label="File (PDF, PNG or JPEG)",
                           help_text="Checked by its content; at most 5 MiB unless configured "
                                     "otherwise. It goes to the provider with the evidence.")


class DisputeDecisionForm(forms.Form):
    outcome = forms.ChoiceField(label="The provider decided",
                                choices=[("won", "Won: release the held amount"),
                                         ("lost", "Lost: charge it back (needs an "
                                                  "approver)")])
    decision_reference = forms.CharField(label="Provider's decision reference", max_length=128,
                                         help_text="As printed on the provider's decision.")
    note = forms.CharField(label="Where the decision is recorded", max_length=2000,
                           widget=forms.Textarea(attrs={"rows": 2}))


class ApprovalDecisionForm(forms.Form):
    comment = forms.CharField(label="Comment (required)", max_length=2000,
                              widget=forms.Textarea(attrs={"rows": 2}))


class ApprovalVerdictForm(ApprovalDecisionForm):
    """The decision POST: the comment, plus which button was pressed (`decision`, from the
    approve and reject buttons, so it is not a rendered field). Only those two are accepted."""

    DECISIONS = ("approve", "reject")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        decision = self.data.get("decision")
        if decision not in self.DECISIONS:
            raise forms.ValidationError("Press Approve or Reject; nothing was decided.")
        data["approve"] = decision == "approve"
        return data


class BreakCloseForm(forms.Form):
    outcome = forms.ChoiceField(label="Outcome", choices=[
        ("resolve", "Resolved: the difference is explained or fixed"),
        ("ignore", "Ignored: not a real problem")])
    note = forms.CharField(label="Note (required)", max_length=5000,
                           widget=forms.Textarea(attrs={"rows": 3}),
                           help_text="What you checked and why the break can be closed.")


class LedgerAdjustmentForm(forms.Form):
    merchant = forms.CharField(label="Merchant id", max_length=40,
                               help_text="acct_… (shown on the merchant's page)")
    currency = forms.CharField(label="Currency", max_length=3, help_text="e.g. usd")
    account_kind = forms.ChoiceField(label="Merchant balance", choices=[
        ("available", "available"), ("pending", "pending")])
    direction = forms.ChoiceField(label="Direction", choices=[
        ("credit", "Credit: the merchant's balance goes up"),
        ("debit", "Debit: the merchant's balance goes down")])
    counter_account = forms.ChoiceField(label="Platform account on the other side")
    amount = forms.CharField(label="Amount", max_length=20,
                             widget=forms.TextInput(attrs={"inputmode": "decimal"}))
    note = forms.CharField(label="Why (required)", max_length=2000,
                           widget=forms.Textarea(attrs={"rows": 3}))

    def __init__(self, *args: Any, counter_accounts: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["counter_account"].choices = [(code, code) for code in counter_accounts]

    def clean_currency(self) -> str:
        return self.cleaned_data["currency"].strip().lower()

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("currency") and data.get("amount"):
            try:
                data["amount"] = parse_amount(data["amount"], data["currency"])
            except forms.ValidationError as exc:
                self.add_error("amount", exc)
        return data


class DeclineRuleChangeForm(forms.Form):
    provider = forms.CharField(label="Provider", max_length=32, required=False,
                               help_text="Blank: the default for every provider")
    code = forms.CharField(label="Decline code", max_length=64,
                           help_text="The normalised code, e.g. insufficient_funds")
    meaning = forms.ChoiceField(label="Meaning")
    note = forms.CharField(label="Why (required)", max_length=2000,
                           widget=forms.Textarea(attrs={"rows": 3}))

    def __init__(self, *args: Any, meanings: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["meaning"].choices = meanings
