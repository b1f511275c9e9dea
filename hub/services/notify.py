"""notify: validate a notification, record it, render it once, deliver it channel by channel (primary,
then fallbacks) and provider by provider, and keep one outcome per recipient.

Small sends are delivered in the request (their outcomes, the record and the audit rows written in one
transaction at the end); bulk and ``async`` sends are accepted with 202 and delivered by a worker, which
writes each batch's outcomes as soon as the provider answered, so a crash resumes where it stopped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from hub.capabilities import Message, NotifyResult, Recipient
from hub.config import CHANNEL_SERVICE
from hub.delivery import Address, Rendered, recipient_addresses
from hub.errors import NoProviderError, PermanentError, ProviderError, ValidationError
from hub.observability import redact_text
from hub.records import ProviderReference, RecipientOutcome, Record, insert_ignoring_duplicates, utcnow
from hub.runtime import Runtime, describe
from hub.schemas import NotificationSchema, load
from hub.services.templates import TemplateService

log = logging.getLogger("hub.notify")

#: Built once: a marshmallow schema keeps no state between loads, and building one copies every field.
NOTIFICATION_SCHEMA = NotificationSchema()


@dataclass
class NotificationRequest:
    """A notification as the Python API and the REST API both hand it to :meth:`NotifyService.send`."""

    channel: str
    recipients: list[dict[str, Any]]
    template: str = "custom"
    data: dict[str, Any] = field(default_factory=dict)
    priority: str = "normal"
    fallback_services: list[str] = field(default_factory=list)
    asynchronous: bool = False


@dataclass
class _Delivery:
    """One run over a notification record: what is done, and the outcomes not yet written."""

    record: Record
    done: set[int]
    counts: dict[str, int]
    attempt_log: list[dict[str, Any]]
    provider: str | None
    durable: bool  # write each batch at once (background), or everything at the end (inline)
    done_before: int = 0  # recipients an earlier run settled: progress is what this run adds
    upcoming: list[int] = field(default_factory=list)  # what the next provider call is expected to carry
    noted: tuple[str | None, frozenset[int]] = (None, frozenset())  # the write-ahead on record: channel, indexes
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    references: list[dict[str, Any]] = field(default_factory=list)
    written: list[dict[str, Any]] = field(default_factory=list)

    def add(self, outcomes: list[dict[str, Any]], references: list[dict[str, Any]]) -> None:
        self.outcomes.extend(outcomes)
        self.references.extend(references)
        for outcome in outcomes:
            self.done.add(outcome["idx"])
            self.counts[outcome["status"]] = self.counts.get(outcome["status"], 0) + 1


class NotifyService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.templates = TemplateService(runtime)
        runtime.jobs.register_handler("notification", lambda record: self.deliver(record, inline=False))

    # --- accepting ------------------------------------------------------------------------------

    def accept(self, tenant: str, raw: Any, idempotency_key: str | None = None) -> tuple[dict[str, Any], bool]:
        """The REST form: validate the camelCase body, then :meth:`send`. Returns (view, queued)."""
        loaded = load(NOTIFICATION_SCHEMA, raw)
        request = NotificationRequest(
            channel=loaded["type"],
            recipients=loaded["recipients"],
            template=loaded["template"],
            data=loaded["data"],
            priority=loaded["priority"],
            fallback_services=loaded["fallback_services"],
            asynchronous=loaded["asynchronous"],
        )
        return self.send(tenant, request, idempotency_key)

    def send(self, tenant: str, request: NotificationRequest, idempotency_key: str | None = None) -> tuple[dict[str, Any], bool]:
        """Validate, record and deliver (or queue) a notification. Returns (view, queued)."""
        runtime = self.runtime
        runtime.require_running()
        _check_request(request)
        ledger = runtime.ledger
        existing = ledger.existing(tenant, "notification", idempotency_key, claiming=True)
        if existing is not None:
            return self.view(existing), existing.status == "queued"
        channels = [request.channel, *request.fallback_services]
        # Rendered once per channel: a missing template variable is a 422 before anything is accepted.
        rendered = {channel: self.templates.render(request.template, channel, request.data, tenant) for channel in channels}
        region = runtime.region(tenant)
        recipients = request.recipients or [{"name": None}]
        addresses = {channel: recipient_addresses(recipients, channel, region) for channel in channels}
        reachable = {address.index for channel in channels for address in addresses[channel] if address.address}
        if not reachable:
            problems = {address.index: [address.error or "unreachable"] for address in addresses[request.channel]}
            raise ValidationError({"recipients": problems}, "No recipient can be reached on " + " or ".join(channels))
        queued = request.asynchronous or len(recipients) > runtime.config["queue"]["bulk_threshold"]
        service = CHANNEL_SERVICE[request.channel]
        if not queued and not runtime.bypasses_rate_limit(service, request.priority):
            runtime.hit_rate_limit(tenant, service, len(reachable))
        payload = {
            "channel": request.channel,
            "fallbackServices": request.fallback_services,
            "template": request.template,
            "data": request.data,
            "priority": request.priority,
            "region": region,
            "recipients": recipients,
        }
        record = ledger.new("notification", tenant, service, payload, idempotency_key, "queued" if queued else "running")
        if record is None:  # a concurrent request with the same key won
            existing = ledger.existing(tenant, "notification", idempotency_key)
            assert existing is not None
            return self.view(existing), existing.status == "queued"
        if queued:
            runtime.jobs.enqueue(record.id)
            return self.view(record, outcomes=[]), True
        delivery = self._run(record, inline=True, rendered=rendered, addresses=addresses)
        return self.view(delivery.record, outcomes=delivery.written), delivery.record.status == "queued"

    # --- delivering -----------------------------------------------------------------------------

    def deliver(self, record: Record, *, inline: bool) -> Record:
        """Deliver every recipient without an outcome yet (a worker's entry point)."""
        return self._run(record, inline=inline).record

    def _run(
        self,
        record: Record,
        *,
        inline: bool,
        rendered: dict[str, Rendered] | None = None,
        addresses: dict[str, list[Address]] | None = None,
    ) -> _Delivery:
        runtime = self.runtime
        payload = record.payload
        tenant = record.tenant
        recipients = payload["recipients"]
        # Outcomes are only ever written together with a result (write-ahead, checkpoint, finish, replay), so a
        # record without one has none to read: its first run skips the query.
        done, counts = (set(), {}) if inline or not record.result else self._progress(record.id)
        delivery = _Delivery(record, done, counts, list(record.attempt_log or []), record.provider, durable=not inline, done_before=len(done))
        # Background sends checkpoint after every provider call: small calls bound what a crash can repeat.
        per_call = runtime.config["queue"]["batch_size"]
        if not inline:
            self._note_resumed(delivery)
        channels = [payload["channel"], *payload["fallbackServices"]]
        last_error: str | None = None
        for position, channel in enumerate(channels):
            pending = [index for index in range(len(recipients)) if index not in delivery.done]
            if not pending:
                break
            is_last_channel = position == len(channels) - 1
            service = CHANNEL_SERVICE[channel]
            if addresses is not None:
                channel_addresses = [addresses[channel][index] for index in pending]
            else:
                channel_addresses = recipient_addresses([recipients[i] for i in pending], channel, payload["region"])
            sendable: list[tuple[int, str]] = []
            unreachable = []
            for index, address in zip(pending, channel_addresses, strict=True):
                if address.address:
                    sendable.append((index, address.address))
                elif is_last_channel:
                    unreachable.append(_outcome(record.id, index, recipients[index], channel, None, "failed", error=address.error))
            if unreachable:
                delivery.add(unreachable, [])
            if not sendable:
                continue
            channel_rendered = rendered[channel] if rendered is not None else self.templates.render(payload["template"], channel, payload["data"], tenant)
            rate_limited = not inline and not runtime.bypasses_rate_limit(service, payload["priority"])
            start, batch_index = 0, 0
            while start < len(sendable):
                count = min(per_call, len(sendable) - start)
                if rate_limited:
                    # Bulk sends flow at the limit's pace: each call carries what the windows admit now (the
                    # lease is kept meanwhile), never more than one window holds.
                    count = runtime.rate_limits.take(tenant, service, count)
                batch = sendable[start : start + count]
                delivery.upcoming = [index for index, _ in sendable[start + count : start + count + per_call]]
                error = self._send_batch(delivery, channel, service, channel_rendered, batch, batch_index)
                start, batch_index = start + count, batch_index + 1
                if error is not None:
                    last_error = error
                    break  # this channel is down: the rest go to the next channel, or wait for a retry
        self._finish(delivery, last_error)
        return delivery

    def _send_batch(self, delivery: _Delivery, channel: str, service: str, rendered: Rendered, batch: list[tuple[int, str]], batch_index: int) -> str | None:
        """Send one batch on one channel, failing over provider by provider; recipients a provider
        answered ``retry`` for go to the next provider. Returns an error when some are still unsent."""
        record = delivery.record
        recipients = record.payload["recipients"]
        providers = self.runtime.registry.service_providers(service, record.tenant)
        remaining = batch
        while remaining:
            self._write_ahead(delivery, channel, remaining)
            message = Message(
                id=f"{record.id}-{channel}-{remaining[0][0]}",
                tenant=record.tenant,
                channel=channel,
                recipients=[Recipient(address=address, name=recipients[index].get("name"), index=index) for index, address in remaining],
                text=rendered.text,
                subject=rendered.subject,
                html=rendered.html,
                blocks=rendered.blocks,
                template=record.payload["template"],
                priority=record.payload["priority"],
                metadata={"recordId": record.id},
                notification_id=record.id,
                batch_index=batch_index,
            )
            try:
                call = self.runtime.calls.notify(service, record.tenant, message, providers=providers, record_id=record.id)
                self._log(delivery, [{**attempt, "channel": channel, "batch": batch_index, "recipients": len(remaining)} for attempt in call.attempts])
                _check_notify_result(call.result, len(remaining), call.provider)
            except PermanentError as error:
                self._log(delivery, [{"channel": channel, "outcome": "failed", "error": describe(error), "recipients": len(remaining)}])
                refused = [_outcome(record.id, index, recipients[index], channel, address, "failed", error=describe(error)) for index, address in remaining]
                delivery.add(refused, [])
                self._checkpoint(delivery, channel, delivery.upcoming)
                return None
            except (NoProviderError, ProviderError) as error:
                self._log(delivery, [{**attempt, "channel": channel, "batch": batch_index, "recipients": len(remaining)} for attempt in getattr(error, "attempts", [])])
                self._checkpoint(delivery, channel, [])
                return describe(error)
            provider = call.provider
            delivery.provider = delivery.provider or provider
            # References exist to match delivery reports: a provider without handle_webhook never sends one,
            # and a bulk send would write a row per recipient for nothing.
            reports = self.runtime.hook_for(provider, record.tenant, "handle_webhook") is not None
            outcomes, references, retry = [], [], []
            for (index, address), result in zip(remaining, call.result.results, strict=True):
                if result.status == "retry":
                    retry.append((index, address))
                    continue
                outcomes.append(_outcome(record.id, index, recipients[index], channel, address, result.status, provider, result.provider_message_id, result.error))
                if reports and result.provider_message_id and result.status != "failed":
                    references.append({"provider": provider, "reference": result.provider_message_id, "record_id": record.id, "recipient_index": index})
            delivery.add(outcomes, references)
            self._checkpoint(delivery, channel, [index for index, _ in retry] + delivery.upcoming)
            remaining = retry
            providers = providers[providers.index(provider) + 1 :] if provider in providers else []
            if remaining and not providers:
                return f"{len(remaining)} recipient(s) could not be sent by {provider} and no provider is left"
        return None

    def _write_ahead(self, delivery: _Delivery, channel: str, batch: list[tuple[int, str]]) -> None:
        """Background sends: note the recipients about to be sent (and renew the lease) before the provider
        call, so a run that resumes after a crash knows which ones may have gone out already. They are sent
        again, with the same per-recipient ids (a receiver drops the repeat by its ``Message-ID``)."""
        if not delivery.durable:
            return
        noted_channel, noted = delivery.noted
        if noted_channel == channel and all(index in noted for index, _ in batch):
            return  # the last checkpoint noted these already (it names the call after it: no extra write)
        result = self._noting(delivery, channel, [index for index, _ in batch])
        with self.runtime.db.session() as session:
            session.execute(Record.__table__.update().where(Record.id == delivery.record.id).values(result=result))

    def _noting(self, delivery: _Delivery, channel: str, indexes: list[int]) -> dict[str, Any]:
        """The record's ``result`` with ``inFlight`` naming ``indexes`` (also kept on the in-memory record)."""
        result = {**(delivery.record.result or {}), "inFlight": {"channel": channel, "indexes": indexes}}
        delivery.record.result = result
        delivery.noted = (channel, frozenset(indexes))
        return result

    def _log(self, delivery: _Delivery, entries: list[dict[str, Any]]) -> None:
        """Add provider attempts to the record's log. A background send merges a run of like entries (the same
        provider, channel and outcome, no retries or the same error) into one with ``calls`` counted: its log
        is rewritten at every checkpoint, and one entry per call would make a bulk send's cost grow squared."""
        log_ = delivery.attempt_log
        for entry in entries:
            last = log_[-1] if log_ and delivery.durable else None
            if last is not None and all(last.get(key) == entry.get(key) for key in ("provider", "channel", "outcome", "error", "retries")):
                last["calls"] = last.get("calls", 1) + 1
                last["recipients"] = last.get("recipients", 0) + entry.get("recipients", 0)
                last["latencyMs"] = round(last.get("latencyMs", 0) + entry.get("latencyMs", 0), 2)
                last["lastAt"] = entry.get("at")
                last["batch"] = entry.get("batch", last.get("batch"))
            else:
                log_.append(dict(entry))

    def _note_resumed(self, delivery: _Delivery) -> None:
        """A run after a crash: log the recipients that were in flight and have no outcome (sent again now)."""
        in_flight = (delivery.record.result or {}).get("inFlight")
        if not isinstance(in_flight, dict):
            return
        unsettled = [index for index in in_flight.get("indexes", []) if index not in delivery.done]
        if unsettled:
            self._log(delivery, [{"channel": in_flight.get("channel"), "outcome": "resumed", "inFlight": len(unsettled), "recipients": len(unsettled)}])
            log.warning("notification %s: %d recipient(s) were in flight when its last run stopped; sending them again", delivery.record.id, len(unsettled))

    def _checkpoint(self, delivery: _Delivery, channel: str, upcoming: list[int]) -> None:
        """Background sends: one transaction per provider call (outcomes, references, audit rows, and one
        UPDATE of the record: its log, the lease renewed, and the write-ahead for the ``upcoming`` call).
        Inline sends write at the end."""
        if not delivery.durable:
            return
        now = utcnow()
        values = {
            "attempt_log": delivery.attempt_log,
            "provider": delivery.provider,
            "result": self._noting(delivery, channel, upcoming),
            "updated_at": now,
            "lease_until": now + timedelta(seconds=self.runtime.ledger.lease_seconds),
        }
        with self.runtime.db.session() as session:
            self._write(session, delivery)
            session.execute(Record.__table__.update().where(Record.id == delivery.record.id).values(values))
            self.runtime.audit.drain(session)

    def _write(self, session: Any, delivery: _Delivery) -> None:
        if delivery.outcomes:
            # Core executemany, not ORM objects: a bulk send writes thousands of these.
            session.execute(RecipientOutcome.__table__.insert(), delivery.outcomes)
            delivery.written.extend(delivery.outcomes)
            delivery.outcomes = []
        if delivery.references:
            session.execute(insert_ignoring_duplicates(session, ProviderReference.__table__), delivery.references)
            delivery.references = []

    def _finish(self, delivery: _Delivery, last_error: str | None) -> None:
        record = delivery.record
        total = len(record.payload["recipients"])
        counts = delivery.counts
        pending_count = total - sum(counts.values())
        summary: dict[str, Any] = {"provider": delivery.provider, "sent": counts.get("sent", 0) + counts.get("queued", 0), "failed": counts.get("failed", 0), "pending": pending_count}
        earlier = record.result if isinstance(record.result, dict) else {}
        if earlier.get("replays"):
            summary["replays"] = earlier["replays"]
        if pending_count:
            # The retry horizon counts from when the send stopped making progress.
            progressed = len(delivery.done) > delivery.done_before
            summary["retryingSince"] = (None if progressed else earlier.get("retryingSince")) or utcnow().isoformat()
        changes: dict[str, Any] = {"result": summary, "attempt_log": delivery.attempt_log, "provider": delivery.provider}
        if pending_count:
            changes["error"] = last_error
        elif summary["failed"] == total:
            changes.update(status="failed", error=self._first_error(delivery))
        else:
            changes.update(status="partial" if summary["failed"] else "succeeded", error=None)
        if pending_count:
            with self.runtime.db.session() as session:
                self._write(session, delivery)
                self.runtime.ledger.apply(session, record.id, changes)
            # Every provider of every channel is down: keep the work and try again later.
            self.runtime.ledger.requeue_or_dead(record, last_error or "no provider available")
            delivery.record = self.runtime.ledger.get(record.id, record.tenant)
            return
        # Outcomes not written yet are in the view now, and in the database with the record's status.
        unwritten, references = delivery.outcomes, delivery.references
        delivery.written.extend(unwritten)
        delivery.outcomes, delivery.references = [], []

        def write_outcomes(session: Any) -> None:
            if unwritten:
                session.execute(RecipientOutcome.__table__.insert(), unwritten)
            if references:
                session.execute(insert_ignoring_duplicates(session, ProviderReference.__table__), references)

        delivery.record = self.runtime.ledger.finish(record, changes, write_outcomes)

    def _first_error(self, delivery: _Delivery) -> str | None:
        if not delivery.durable:
            failed = sorted((o for o in delivery.outcomes + delivery.written if o["status"] == "failed"), key=lambda o: o["idx"])
            return failed[0]["error"] if failed else None
        with self.runtime.db.session() as session:
            first = session.scalar(select(RecipientOutcome.error).where(RecipientOutcome.record_id == delivery.record.id).order_by(RecipientOutcome.index).limit(1))
        pending_first = sorted((o for o in delivery.outcomes if o["status"] == "failed"), key=lambda o: o["idx"])
        return first or (pending_first[0]["error"] if pending_first else None)

    def _progress(self, record_id: str) -> tuple[set[int], dict[str, int]]:
        """What an earlier run of this record already did: indexes with an outcome, counts by status."""
        with self.runtime.db.session() as session:
            rows = session.execute(select(RecipientOutcome.index, RecipientOutcome.status).where(RecipientOutcome.record_id == record_id)).all()
        counts: dict[str, int] = {}
        for _, status in rows:
            counts[status] = counts.get(status, 0) + 1
        return {index for index, _ in rows}, counts

    # --- views ----------------------------------------------------------------------------------

    def view(self, record: Record, outcomes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The delivery view. ``outcomes`` (rows just written) saves reading them back."""
        if outcomes is None:
            with self.runtime.db.session() as session:
                rows = list(session.scalars(select(RecipientOutcome).where(RecipientOutcome.record_id == record.id).order_by(RecipientOutcome.index)))
            recipients = [row.to_dict() for row in rows]
        else:
            recipients = [RecipientOutcome.row_view(outcome) for outcome in sorted(outcomes, key=lambda o: o["idx"])]
        failed = sum(1 for outcome in recipients if outcome["status"] == "failed")
        result = record.result or {}
        total = len(record.payload.get("recipients", []))
        return {
            "success": record.status in ("succeeded", "partial", "queued", "running"),
            "messageId": record.id,
            "id": record.id,
            "status": record.status,
            "transporter": result.get("provider") or record.provider,
            "channel": record.payload.get("channel"),
            "template": record.payload.get("template"),
            "total": total,
            "sent": len(recipients) - failed,
            "failed": failed,
            "pending": total - len(recipients),
            "recipients": recipients,
            "attempts": record.attempt_log,
            "error": record.error,
            "createdAt": record.created_at.isoformat(),
        }

    def recipient_views(self, record: Record) -> list[dict[str, Any]]:
        return self.view(record)["recipients"]

    # --- webhooks -------------------------------------------------------------------------------

    def apply_webhook_event(self, session: Any, record: Record, reference: ProviderReference, provider_name: str, event: Any) -> bool:
        """A delivery report for one recipient: its delivery status, and failed when it bounced."""
        from hub.observability import redact

        if reference.recipient_index is None:
            return False
        outcome = session.get(RecipientOutcome, (record.id, reference.recipient_index))
        if outcome is None:
            return False
        outcome.delivery_status = event.status
        outcome.delivery_detail = redact({"event": event.type, "eventId": event.event_id, **(event.details or {})})
        outcome.updated_at = utcnow()
        if event.status in ("bounced", "failed", "undelivered", "dropped"):
            outcome.status = "failed"
            outcome.error = f"{event.status} (reported by {provider_name})"
        return True


def _check_request(request: NotificationRequest) -> None:
    """The Python API's arguments get the checks the REST schema makes, and text the database can store:
    a NUL or a lone surrogate is refused here, before anything is sent, not by the write after the send."""
    errors: dict[str, list[str]] = {}
    _find_unstorable_text({"recipients": request.recipients, "data": request.data, "template": request.template}, "", errors)
    if request.channel not in CHANNEL_SERVICE:
        errors["type"] = [f"one of {', '.join(CHANNEL_SERVICE)}"]
    for fallback in request.fallback_services:
        if fallback not in CHANNEL_SERVICE:
            errors["fallbackServices"] = [f"one of {', '.join(CHANNEL_SERVICE)}"]
    if request.priority not in ("low", "normal", "high"):
        errors["priority"] = ["one of low, normal, high"]
    if not isinstance(request.data, dict):
        errors["data"] = ["must be an object"]
    if not isinstance(request.recipients, list) or not all(isinstance(r, dict) for r in request.recipients):
        errors["recipients"] = ["a list of objects"]
    if errors:
        raise ValidationError(errors)


#: Nesting deeper than this is not walked (the REST schema bounds it; the Python API gets a plain error).
_MAX_TEXT_DEPTH = 32


def _find_unstorable_text(value: Any, path: str, errors: dict[str, list[str]], depth: int = 0) -> None:
    """Name every string (key or value) under ``value`` that PostgreSQL cannot store (NUL) or that is not
    encodable text (a lone surrogate)."""
    if depth > _MAX_TEXT_DEPTH:
        errors[path or "data"] = ["nested too deeply"]
        return
    if isinstance(value, str):
        problem = _text_problem(value)
        if problem:
            errors[path] = [problem]
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and _text_problem(key):
                errors[where] = [f"key: {_text_problem(key)}"]
            _find_unstorable_text(item, where, errors, depth + 1)
    elif isinstance(value, list | tuple):
        for position, item in enumerate(value):
            _find_unstorable_text(item, f"{path}.{position}", errors, depth + 1)


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain the NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (a lone surrogate is not)"
    return None


def _storable(text: str | None) -> str | None:
    """Provider-supplied text (an error reply, a message id) made safe to store: the write after a send must
    not fail, or the record would stay ``running`` and the send be repeated."""
    if text is None or _text_problem(text) is None:
        return text
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _check_notify_result(outcome: Any, expected: int, provider: str) -> None:
    if not isinstance(outcome, NotifyResult) or len(outcome.results) != expected:
        got = len(outcome.results) if isinstance(outcome, NotifyResult) else type(outcome).__name__
        raise ProviderError(f"provider {provider} broke the notify contract: {got} results for {expected} recipients")


def _outcome(
    record_id: str,
    index: int,
    recipient: dict[str, Any],
    channel: str,
    address: str | None,
    status: str,
    provider: str | None = None,
    provider_message_id: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """A ``RecipientOutcome`` row as a dict: bulk sends insert thousands of these with executemany."""
    return {
        "record_id": record_id,
        "idx": index,  # the column's name (Core executemany, not the ORM)
        "name": recipient.get("name"),
        "channel": channel,
        "address": address,
        "status": status,
        "provider": provider,
        "provider_message_id": _storable(provider_message_id),
        # A provider's reply may quote the address it refused ("550 <bob@shop.example>: unknown"): masked.
        "error": _storable(redact_text(error)) if error else error,
        # delivery_detail left out: the column's default is SQL NULL, while None here would be encoded as JSON
        # "null" row by row (a JSON column's None).
        "delivery_status": None,
        "updated_at": utcnow(),
    }


