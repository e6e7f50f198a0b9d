"""What a declined authorization means (retry elsewhere now, retry later here, never), read
from the decline rules table: the one place payments' failover and delayed retries ask; and the
one write that changes a rule (called by the back-office once an approver agreed)."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Case, IntegerField, Value, When

from providers.models import DeclineMeaning, DeclineRule


def decline_meaning(*, provider: str, code: str) -> DeclineMeaning:
    """The provider's own rule for `code`, else the default rule, else do-not-retry (a code no
    rule names is never retried: the safe reading of an answer nobody classified). One
    indexed query."""
    meaning = (DeclineRule.objects.filter(code=code, provider__in=[provider, ""])
               .order_by(Case(When(provider="", then=Value(1)), default=Value(0),
                              output_field=IntegerField()))
               .values_list("meaning", flat=True).first())
    return DeclineMeaning(meaning) if meaning else DeclineMeaning.DO_NOT_RETRY


def decline_rule_set(*, provider: str, code: str, meaning: str) -> tuple[str, str]:
    """Give `code` at `provider` (blank: the default for every provider) this meaning, creating
    the provider's own rule when it has none. Returns (the meaning in effect before, which may
    have come from the default rule; the meaning now)."""
    meaning = DeclineMeaning(meaning)
    with transaction.atomic():
        rule = DeclineRule.objects.select_for_update().filter(provider=provider,
                                                              code=code).first()
        before = rule.meaning if rule is not None else decline_meaning(provider=provider,
                                                                       code=code)
        if rule is None:
            DeclineRule.objects.create(provider=provider, code=code, meaning=meaning)
        elif rule.meaning != meaning:
            rule.meaning = meaning
            rule.save()
    return before, meaning
