"""Reads for the back-office screens: payment search, the payment timeline, the dashboard and the
balances table. Read-only, across apps, each query bounded (by an index, a LIMIT or both) so a
page costs the same with a million payments as with ten.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.urls import reverse
from django.utils import timezone

from backoffice.models import ApprovalRequest, ApprovalStatus, LedgerVerifyRun
from core.carddata import redact_card_numbers
from core.models import Merchant
from core.money import format_amount
from core.queues import queue_depths
from ledger.models import Account, JournalEntry, Posting
from ledger.selectors import entry_list_for
from payments.models import AttemptKind, Dispute, Payment, PaymentAttempt, PaymentStatus, Refund
from payments.selectors import disputes_due_soon
from providers.http import redact
from providers.registry import registered_codes
from reconciliation.models import BreakStatus, JobRun, ReconciliationBreak
from webhooks.models import EndpointStatus, Event, WebhookDelivery, WebhookEndpoint

SUCCEEDED = (PaymentStatus.AUTHORIZED, PaymentStatus.CAPTURED, PaymentStatus.SETTLED,
             PaymentStatus.REFUNDED, PaymentStatus.CHARGED_BACK)
TIMELINE_LIMIT = 200  # per source; a payment with more is an anomaly worth a closer look
MERCHANTS_PER_SEARCH = 50
COUNT_CAP = 1000


# -- payment search --------------------------------------------------------------------------
def payment_search(rows: QuerySet[Payment], term: str) -> QuerySet[Payment]:
    """Filter by what the term looks like, so that every branch is an index lookup:

    - `pay_…` the payment, `re_…` / `dp_…` the payment of that refund / dispute, `acct_…` the
      merchant's payments (primary keys and the merchant index);
    - anything else: the provider reference (the (provider, provider_reference) unique index,
      probed for each registered provider), merchants whose name contains it (their ids, then
      the merchant index) and the description (the trigram index of migration payments
      0005, `payment_description_trgm`)."""
    term = term.strip()
    if not term:
        return rows
    if term.startswith("pay_"):
        return rows.filter(pk=term)
    if term.startswith(("re_", "dp_")):
        owner = Refund if term.startswith("re_") else Dispute
        ids = list(owner.objects.filter(pk=term).values_list("payment_id", flat=True))
        return rows.filter(pk__in=ids)
    if term.startswith("acct_"):
        return rows.filter(merchant_id=term)
    # `provider IN (…)` and `provider_reference <> ''` make the partial unique index usable.
    condition = (Q(provider__in=registered_codes(), provider_reference=term)
                 & ~Q(provider_reference=""))
    merchant_ids = list(Merchant.objects.filter(name__icontains=term).order_by("name")
                        .values_list("pk", flat=True)[:MERCHANTS_PER_SEARCH])
    if merchant_ids:
        condition |= Q(merchant_id__in=merchant_ids)
    return rows.filter(condition | Q(description__icontains=term))


def payment_currencies() -> list[str]:
    """Currencies that have ever moved (one per ledger account currency): the filter's choices,
    without a DISTINCT over the payments table."""
    return list(Account.objects.order_by("currency").values_list("currency", flat=True)
                .distinct())


# -- the payment timeline --------------------------------------------------------------------
@dataclass
class TimelineItem:
    at: datetime
    source: str  # event, attempt, ledger, refund, dispute, webhook
    title: str
    status: str = ""
    amount: str = ""
    link: str = ""
    details: list[tuple[str, str]] = field(default_factory=list)
    lines: list[dict[str, str]] = field(default_factory=list)  # ledger postings
    raw: str = ""  # redacted provider exchange, pretty-printed


@dataclass
class PaymentStory:
    payment: Payment
    refunds: list[Refund]
    disputes: list[Dispute]
    items: list[TimelineItem]
    truncated: bool


def _admin_url(name: str, pk: Any) -> str:
    # Unescaped, like ledger.admin.entry_links: every back-office admin accepts both forms.
    return reverse(f"admin:{name}_change", args=[pk])


def _exchange_text(exchange: dict[str, Any]) -> str:
    if not exchange:
        return ""
    # Stored redacted already; redact again on the way out in case an adapter missed a field.
    return redact_card_numbers(json.dumps(redact(exchange), indent=2, sort_keys=True,
                                          default=str))[:4000]


def _event_details(data: dict[str, Any]) -> list[tuple[str, str]]:
    """What an event's snapshot adds to its timeline row: the 3-D Secure challenge the customer
    was sent to (and until when), and why a payment failed (e.g. authentication_failed)."""
    details: list[tuple[str, str]] = []
    action = data.get("next_action") or {}
    if action.get("type") == "redirect_to_url":
        details.append(("challenge", str(action["redirect_to_url"].get("url", ""))))
        if action.get("expires"):
            expires = datetime.fromtimestamp(action["expires"], UTC)
            details.append(("abandoned after", f"{expires:%Y-%m-%d %H:%M:%S} UTC"))
    error = data.get("last_error") or {}
    if data.get("status") == "failed" and error.get("code"):
        details.append(("failure", str(error["code"])))
    return details


def payment_story(*, payment_id: str) -> PaymentStory | None:
    """Everything that happened to a payment, oldest first: events, provider attempts, ledger
    entries with their postings, refunds, disputes and webhook deliveries. Nine queries."""
    payment = Payment.objects.select_related("merchant").filter(pk=payment_id).first()
    if payment is None:
        return None
    cur = payment.currency
    refunds = list(payment.refunds.order_by("created_at")[:TIMELINE_LIMIT])
    disputes = list(payment.disputes.order_by("created_at")[:TIMELINE_LIMIT])
    object_ids = [payment.id, *(r.id for r in refunds), *(d.id for d in disputes)]
    events = list(Event.objects.filter(object_id__in=object_ids)
                  .order_by("created_at", "id")[:TIMELINE_LIMIT])
    attempts = list(PaymentAttempt.objects.filter(payment=payment)
                    .order_by("created_at")[:TIMELINE_LIMIT])
    entries = [*entry_list_for(reference_type="payment", reference_ids=[payment.id]),
               # Captures after the first of a multicapture: one entry each, named by attempt.
               *entry_list_for(reference_type="capture", reference_ids=[
                   a.id for a in attempts if a.kind == AttemptKind.CAPTURE]),
               *entry_list_for(reference_type="refund", reference_ids=[r.id for r in refunds]),
               *entry_list_for(reference_type="dispute",
                               reference_ids=[d.id for d in disputes])][:TIMELINE_LIMIT]
    postings: dict[str, list[Posting]] = {}
    for posting in (Posting.objects.filter(entry_id__in=[e.id for e in entries])
                    .select_related("account").order_by("entry_id", "account_id")):
        postings.setdefault(posting.entry_id, []).append(posting)
    deliveries = list(WebhookDelivery.objects.filter(event_id__in=[e.id for e in events])
                      .select_related("endpoint", "event").order_by("created_at")
                      [:TIMELINE_LIMIT])
    truncated = any(len(rows) >= TIMELINE_LIMIT for rows in
                    (refunds, disputes, events, attempts, entries, deliveries))

    items: list[TimelineItem] = []
    for event in events:
        items.append(TimelineItem(
            at=event.created_at, source="event", title=event.type, link=_admin_url(
                "webhooks_event", event.id),
            details=[("event", event.id), *_event_details(event.data)]))
    for attempt in attempts:
        items.append(TimelineItem(
            at=attempt.created_at, source="attempt",
            title=f"{attempt.get_kind_display()} at {attempt.provider}",
            status=attempt.status, amount=format_amount(attempt.amount, cur),
            details=[("attempt", attempt.id), ("provider reference",
                                               attempt.provider_reference or "—"),
                     *([("final capture", "yes" if attempt.is_final else "no (partial)")]
                       if attempt.kind == AttemptKind.CAPTURE else []),
                     ("error", f"{attempt.error_code} {attempt.error_message}".strip() or "—"),
                     ("latency", f"{attempt.latency_ms} ms" if attempt.latency_ms else "—")],
            raw=_exchange_text(attempt.exchange)))
    for entry in entries:
        items.append(TimelineItem(
            at=entry.created_at, source="ledger", title=f"Ledger entry: {entry.kind}",
            link=_admin_url("ledger_journalentry", entry.id),
            details=[("entry", entry.id), ("for", f"{entry.reference_type} "
                                                  f"{entry.reference_id}")],
            lines=[{"account": str(p.account.code), "currency": p.currency,
                    "amount": format_amount(p.amount, p.currency),
                    "balance_after": format_amount(p.balance_after, p.currency),
                    "owner": "merchant" if p.account.merchant_id else "platform"}
                   for p in postings.get(entry.id, [])]))
    for refund in refunds:
        items.append(TimelineItem(
            at=refund.created_at, source="refund", title=f"Refund {refund.id}",
            status=refund.status, amount=format_amount(refund.amount, refund.currency),
            link=_admin_url("payments_refund", refund.id),
            details=[("reason", refund.reason or "—"),
                     ("by", str(refund.metadata.get("requested_by", "API"))),
                     *([("approved by", str(refund.metadata["approved_by"]))]
                       if refund.metadata.get("approved_by") else []),
                     ("note", str(refund.metadata.get("note", "")) or "—")]))
    for dispute in disputes:
        items.append(TimelineItem(
            at=dispute.created_at, source="dispute", title=f"Dispute {dispute.id}",
            status=dispute.status, amount=format_amount(dispute.amount, dispute.currency),
            link=_admin_url("payments_dispute", dispute.id),
            details=[("reason", dispute.reason), ("respond by", f"{dispute.due_by:%Y-%m-%d}")]))
    for delivery in deliveries:
        items.append(TimelineItem(
            at=delivery.created_at, source="webhook",
            title=f"Webhook {delivery.event.type} → {delivery.endpoint.url}",
            status=delivery.status, link=_admin_url("webhooks_webhookdelivery", delivery.id),
            details=[("delivery", delivery.id), ("tries", str(delivery.attempt_count)),
                     ("last HTTP status", str(delivery.last_status_code or "—")),
                     ("last error", delivery.last_error or "—")]))
    order = {"attempt": 0, "refund": 1, "dispute": 1, "ledger": 2, "event": 3, "webhook": 4}
    items.sort(key=lambda item: (item.at, order[item.source]))
    return PaymentStory(payment=payment, refunds=refunds, disputes=disputes, items=items,
                        truncated=truncated)


# -- ledger ----------------------------------------------------------------------------------
def entries_for(*, reference_type: str, reference_id: str) -> list[JournalEntry]:
    return list(entry_list_for(reference_type=reference_type, reference_ids=[reference_id])
                .prefetch_related("postings__account"))


# -- the dashboard ---------------------------------------------------------------------------
@dataclass
class ProviderDay:
    provider: str
    currency: str
    payments: int
    succeeded: int
    failed: int
    volume: str

    @property
    def success_rate(self) -> str:
        decided = self.succeeded + self.failed
        return f"{100 * self.succeeded / decided:.1f}%" if decided else "—"


def _capped_count(rows: QuerySet) -> tuple[int, bool]:
    """COUNT over at most COUNT_CAP + 1 rows: a number, and whether there are more."""
    count = rows.order_by()[: COUNT_CAP + 1].count()
    return min(count, COUNT_CAP), count > COUNT_CAP


def dashboard(*, now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    start = datetime.combine(timezone.localdate(now), time.min, tzinfo=now.tzinfo)
    # Payments created today were updated today too: `status IN (all) AND updated_at >= start`
    # walks the (status, updated_at) index instead of the whole table (there is no created_at
    # index on payments; see the report).
    today = (Payment.objects.filter(status__in=PaymentStatus.values, updated_at__gte=start,
                                    created_at__gte=start)
             .values("provider", "currency")
             .annotate(n=Count("id"), ok=Count("id", filter=Q(status__in=SUCCEEDED)),
                       ko=Count("id", filter=Q(status=PaymentStatus.FAILED)),
                       volume=Sum("amount_captured"))
             .order_by("provider", "currency"))
    providers = [ProviderDay(row["provider"] or "(none yet)", row["currency"], row["n"],
                             row["ok"], row["ko"], format_amount(row["volume"] or 0,
                                                                 row["currency"]))
                 for row in today]
    waiting = Payment.objects.filter(status=PaymentStatus.AUTHORIZATION_REQUESTED)
    waiting_count, waiting_more = _capped_count(waiting)
    oldest_waiting = waiting.order_by("updated_at").values_list("updated_at", flat=True).first()
    # Captured but not yet matched to a settlement line (the (status, updated_at) index).
    unsettled_count, unsettled_more = _capped_count(
        Payment.objects.filter(status=PaymentStatus.CAPTURED))
    breaks = list(ReconciliationBreak.objects.filter(status=BreakStatus.OPEN)
                  .values("type").annotate(n=Count("id")).order_by("-n", "type"))
    pending = ApprovalRequest.objects.filter(status=ApprovalStatus.PENDING)
    pending_count, pending_more = _capped_count(pending)
    due_soon = disputes_due_soon(now=now)
    due_count, due_more = _capped_count(due_soon)
    failing = list(WebhookEndpoint.objects.filter(deleted_at__isnull=True)
                   .filter(Q(failing_since__isnull=False) | Q(status=EndpointStatus.DISABLED))
                   .select_related("merchant").order_by("failing_since")[:10])
    return {
        "since": start,
        "providers": providers,
        "waiting_count": waiting_count, "waiting_more": waiting_more,
        "oldest_waiting": oldest_waiting,
        "unsettled_count": unsettled_count, "unsettled_more": unsettled_more,
        "stale_waiting": bool(oldest_waiting and now - oldest_waiting > timedelta(hours=1)),
        "breaks": breaks, "breaks_total": sum(row["n"] for row in breaks),
        "pending_count": pending_count, "pending_more": pending_more,
        "pending": list(pending.select_related("requested_by", "merchant")
                        .order_by("requested_at")[:5]),
        "failing_endpoints": failing,
        # Disputes still waiting for evidence whose provider deadline is near (or past).
        "disputes_due": list(due_soon.select_related("merchant")[:5]),
        "disputes_due_count": due_count, "disputes_due_more": due_more,
        "disputes_due_hours": settings.DISPUTE_REMINDER_HOURS,
        "queues": queue_depths(),
        "last_verify": LedgerVerifyRun.objects.order_by("-id").first(),
        "job_runs": list(JobRun.objects.order_by("-started_at")[:5]),
    }


# -- trends (the dashboard's charts) ---------------------------------------------------------
TREND_DAYS = 14
TREND_CURRENCIES = 3  # volume charts: the currencies with the most captured volume


@dataclass
class Trends:
    days: list[date]
    # currency → provider → captured volume (minor units) of payments created each day
    volume: dict[str, dict[str, list[int]]]
    # provider → succeeded ÷ (succeeded + failed) in % each day; None when nothing was decided
    success: dict[str, list[float | None]]
    open_breaks: list[int]  # breaks open at the end of each day


def trends(*, days: int = TREND_DAYS, now: datetime | None = None) -> Trends:
    """Daily figures for the last `days` UTC days, today included. Payments are read as the
    dashboard's table reads them (the (status, updated_at) index, created in the window);
    breaks by their open interval [created_at, resolved_at)."""
    today = (now or timezone.now()).astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, time.min, tzinfo=UTC)
    index = {first + timedelta(days=n): n for n in range(days)}
    rows = (Payment.objects.filter(status__in=PaymentStatus.values, updated_at__gte=start,
                                   created_at__gte=start)
            .annotate(day=TruncDate("created_at", tzinfo=UTC))
            .values("day", "provider", "currency")
            .annotate(ok=Count("id", filter=Q(status__in=SUCCEEDED)),
                      ko=Count("id", filter=Q(status=PaymentStatus.FAILED)),
                      volume=Sum("amount_captured"))
            .order_by())
    volume: dict[str, dict[str, list[int]]] = {}
    decided: dict[str, list[list[int]]] = {}
    for row in rows:
        n = index.get(row["day"])
        if n is None:
            continue
        provider = row["provider"] or "(none yet)"
        per_day = volume.setdefault(row["currency"], {}).setdefault(provider, [0] * days)
        per_day[n] += row["volume"] or 0
        counts = decided.setdefault(provider, [[0, 0] for _ in range(days)])
        counts[n][0] += row["ok"]
        counts[n][1] += row["ko"]
    busiest = sorted(volume, key=lambda cur: -sum(map(sum, volume[cur].values())))
    success = {provider: [round(100 * ok / (ok + ko), 1) if ok + ko else None
                          for ok, ko in counts] for provider, counts in sorted(decided.items())}
    with connection.cursor() as cursor:
        cursor.execute(f"""
            SELECT count(b.id) FROM generate_series(%s::date, %s::date, interval '1 day') AS d
              LEFT JOIN {ReconciliationBreak._meta.db_table} b
                ON b.created_at < d + interval '1 day'
               AND (b.resolved_at IS NULL OR b.resolved_at >= d + interval '1 day')
             GROUP BY d ORDER BY d""", [first, today])  # noqa: S608 (a model's table name)
        open_breaks = [count for (count,) in cursor.fetchall()]
    return Trends(days=list(index), success=success, open_breaks=open_breaks,
                  volume={cur: dict(sorted(volume[cur].items()))
                          for cur in busiest[:TREND_CURRENCIES]})
