"""publish: validate an event, record it, publish it to the first broker that takes it (one event or a batch);
the tenant's consumer groups and offset resets; and subscriptions -- long-running consumers, one hub process
each (a lease), handled at-least-once with retries and dead letters (the workers: :mod:`hub.services.subscriptions`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import UTC
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from hub.capabilities import (
    ConsumedRecord,
    ConsumerGroup,
    Event,
    HandlerContext,
    OffsetReset,
    Subscription,
    TopicSpec,
    to_dict,
)
from hub.config import SubscriptionSchema, first_error
from hub.errors import (
    ConfigError,
    Conflict,
    NoProviderError,
    NotFound,
    ProviderError,
    UnsupportedError,
    ValidationError,
)
from hub.http.targets import TargetRefused, url_settings
from hub.records import AuditEntry, DeadLetter, Record, StoredSubscription, new_id, utcnow
from hub.runtime import Runtime, describe
from hub.runtime.leases import LeaseManager
from hub.schemas import TOPIC, EventBatchSchema, EventSchema, OffsetResetSchema, TopicSchema, load
from hub.services.event_filters import FilteredHandler
from hub.services.event_schemas import EventSchemaRegistry
from hub.services.subscriptions import Handler, SubscriptionRunner, SubscriptionSpec, WebhookHandler

log = logging.getLogger("hub.publish")

#: Seconds between two looks at the subscriptions defined through the API (another process may have added one).
STORED_SUBSCRIPTIONS_EVERY = 2.0
SUBSCRIPTION_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
#: The hooks a provider needs for the hub to run a subscription on it.
CONSUMER_HOOKS = ("consume", "commit", "unsubscribe")


class PublishService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.leases = LeaseManager(runtime.db)
        #: Subscriptions by name: hub.yaml's, then those added with :meth:`subscribe`.
        self.specs: dict[str, SubscriptionSpec] = {
            name: self._spec_from_config(name, entry) for name, entry in runtime.config.get("subscriptions", {}).items()
        }
        self.schemas = EventSchemaRegistry(runtime)
        #: The IntegrationManager, set once it is built: what handler types' ``context.hub()`` returns.
        self.manager: Any = None
        self._stored_synced_at = float("-inf")
        self.sync_stored_subscriptions()
        self.runner = SubscriptionRunner(self)
        runtime.jobs.register_worker("subscriptions", self.runner.run)
        runtime.jobs.register_handler("event", self.run_queued)

    # --- publishing ---------------------------------------------------------------------------------

    def accept(self, tenant: str, raw: Any, idempotency_key: str | None = None) -> dict[str, Any]:
        runtime = self.runtime
        runtime.require_running()
        request = load(EventSchema(), raw)
        schema = self.schemas.validate(tenant, request["event_type"], request["data"], request["schema_version"])
        payload = {"topic": request["topic"], "eventType": request["event_type"], "key": request["key"]}
        record, replayed = runtime.ledger.begin(
            "event",
            tenant,
            "kafka",
            payload,
            idempotency_key,
            self.view,
            before=lambda: runtime.hit_rate_limit(tenant, "kafka"),
        )
        if record is None:
            return replayed
        event = _event(record.id, tenant, request, schema.uri if schema else None)
        try:
            call = runtime.calls.publish(tenant, event, record_id=record.id)
        except (ProviderError, NoProviderError) as error:
            runtime.ledger.fail(record.id, error)
            raise
        record = runtime.ledger.save(
            record.id,
            status="succeeded",
            provider=call.provider,
            result=to_dict(call.result),
            attempt_log=call.attempts,
        )
        return self.view(record)

    def queue(
        self,
        session: Any,
        tenant: str,
        topic: str,
        event_type: str,
        key: str | None,
        data: dict[str, Any],
        idempotency_key: str,
        *,
        fresh: bool = False,
    ) -> str | None:
        """Record an event the hub itself emits (a payment webhook's ``payment.succeeded``) in the caller's
        transaction, so it exists exactly when the change it reports does; a worker publishes it (retried with
        backoff like any job). Returns the record id to hand to ``jobs.enqueue`` once the transaction committed,
        or ``None`` when ``idempotency_key`` was queued before (the same change reported again)."""
        if not fresh:  # ``fresh``: the caller made the key unique just now, nothing can hold it yet
            exists = session.scalar(
                select(Record.id).where(Record.tenant == tenant, Record.kind == "event", Record.idempotency_key == idempotency_key)
            )
            if exists is not None:
                return None
        try:
            schema = self.schemas.validate(tenant, event_type, data)  # the hub's own events keep to their schemas too
        except ValidationError as error:
            # A schema registered later that the hub's own event does not meet: the change it reports must
            # still be told; it goes out without a dataschema, and the log says why.
            log.error("the hub's %s event does not match its schema: %s", event_type, error.errors)
            schema = None
        payload = {"topic": topic, "eventType": event_type, "key": key, "data": data, "dataschema": schema.uri if schema else None}
        record_id = self.runtime.ledger.queue_in(session, "event", tenant, "kafka", payload, idempotency_key, record_id=new_id("evt"))
        return record_id

    def run_queued(self, record: Record) -> None:
        """Worker: publish a queued event (see :meth:`queue`) through the configured brokers."""
        payload = record.payload
        request = {
            "topic": payload["topic"],
            "event_type": payload["eventType"],
            "key": payload.get("key"),
            "data": payload.get("data") or {},
            "headers": {},
        }
        event = _event(record.id, record.tenant, request, payload.get("dataschema"))
        try:
            call = self.runtime.calls.publish(record.tenant, event, record_id=record.id)
        except (ProviderError, NoProviderError) as error:
            self.runtime.ledger.requeue_or_dead(record, describe(error))
            return
        self.runtime.ledger.save(
            record.id,
            status="succeeded",
            provider=call.provider,
            result=to_dict(call.result),
            attempt_log=call.attempts,
            error=None,
        )

    def view(self, record: Record) -> dict[str, Any]:
        result = record.result or {}
        return {
            "success": record.status == "succeeded",
            "eventId": record.id,
            "topic": record.payload.get("topic"),
            "eventType": record.payload.get("eventType"),
            "partition": result.get("partition"),
            "offset": result.get("offset"),
            "provider": record.provider,
            "status": record.status,
        }

    def accept_batch(self, tenant: str, raw: Any, idempotency_key: str | None = None) -> dict[str, Any]:
        """Publish several events with one provider round trip where the provider offers ``publish_batch``.
        Events a broker did not take are tried once more (the next provider, if the first failed outright);
        the record is ``succeeded``, ``partial`` or ``failed``."""
        runtime = self.runtime
        runtime.require_running()
        requests = load(EventBatchSchema(), raw)["events"]
        schemas = [
            self.schemas.validate(tenant, r["event_type"], r["data"], r["schema_version"], field=f"events.{index}.data")
            for index, r in enumerate(requests)
        ]
        payload = {"events": [{"topic": r["topic"], "eventType": r["event_type"], "key": r["key"]} for r in requests]}
        record, replayed = runtime.ledger.begin(
            "event_batch",
            tenant,
            "kafka",
            payload,
            idempotency_key,
            self.batch_view,
            before=lambda: runtime.hit_rate_limit(tenant, "kafka", len(requests)),
        )
        if record is None:
            return replayed
        events = [
            _event(f"{record.id}-{index}", tenant, request, schema.uri if schema else None)
            for index, (request, schema) in enumerate(zip(requests, schemas, strict=True))
        ]
        outcomes, attempts = self._publish_all(tenant, events, record.id)
        published = sum(1 for outcome in outcomes if outcome.get("status") == "published")
        status = "succeeded" if published == len(events) else "partial" if published else "failed"
        errors = sorted({outcome["error"] for outcome in outcomes if outcome.get("error")})
        record = runtime.ledger.save(
            record.id, status=status, result={"events": outcomes}, attempt_log=attempts, error="; ".join(errors) or None
        )
        if status == "failed":
            raise NoProviderError(f"No event of the batch was published: {record.error}", attempts=attempts)
        return self.batch_view(record)

    def _publish_all(
        self, tenant: str, events: list[Event], record_id: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        calls, outcomes = self.runtime.calls, [{"status": "failed", "error": "not published"} for _ in events]
        attempts: list[dict[str, Any]] = []
        providers = self.runtime.registry.service_providers("kafka", tenant)
        pending = list(range(len(events)))
        if providers and self.runtime.hook_for(providers[0], tenant, "publish_batch") is not None:
            for _round in range(2):  # a second round for what the broker did not acknowledge
                try:
                    call = calls.publish_batch(tenant, [events[index] for index in pending], record_id=record_id)
                except (ProviderError, NoProviderError) as error:
                    attempts += getattr(error, "attempts", [])
                    for index in pending:
                        outcomes[index] = {"status": "failed", "error": describe(error)}
                    break
                attempts += call.attempts
                results = call.result if isinstance(call.result, list) and len(call.result) == len(pending) else None
                if results is None:
                    for index in pending:
                        outcomes[index] = {
                            "status": "failed",
                            "error": f"{call.provider} did not return one result per event",
                        }
                    break
                for index, result in zip(pending, results, strict=True):
                    outcomes[index] = _outcome(call.provider, result)
                pending = [index for index in pending if outcomes[index]["status"] != "published"]
                if not pending:
                    break
            return outcomes, attempts
        for index in pending:  # no batch hook: one publish each, with the pipeline's failover
            try:
                call = calls.publish(tenant, events[index], record_id=record_id)
            except (ProviderError, NoProviderError) as error:
                attempts += getattr(error, "attempts", [])
                outcomes[index] = {"status": "failed", "error": describe(error)}
                continue
            attempts += call.attempts
            outcomes[index] = _outcome(call.provider, call.result)
        return outcomes, attempts

    def batch_view(self, record: Record) -> dict[str, Any]:
        outcomes = (record.result or {}).get("events") or [{} for _ in record.payload.get("events", [])]
        events = [
            {
                "eventId": f"{record.id}-{index}",
                "topic": asked["topic"],
                "eventType": asked["eventType"],
                "key": asked["key"],
                **outcome,
            }
            for index, (asked, outcome) in enumerate(zip(record.payload.get("events", []), outcomes, strict=False))
        ]
        published = sum(1 for event in events if event.get("status") == "published")
        return {
            "success": record.status == "succeeded",
            "batchId": record.id,
            "status": record.status,
            "published": published,
            "failed": len(events) - published,
            "events": events,
        }

    # --- consumer groups --------------------------------------------------------------------------

    def consumer_groups(self, tenant: str) -> list[dict[str, Any]]:
        """Consumer groups of the tenant (groups whose id starts with ``<tenant>.`` or ``<tenant>-``), from every
        kafka provider that lists them, with the hub subscription consuming each."""
        consumers = {spec.subscription.group: spec.name for spec in self._tenant_specs(tenant)}
        groups: list[dict[str, Any]] = []
        for name in self.runtime.registry.service_providers("kafka", tenant):
            if self.runtime.hook_for(name, tenant, "consumer_groups") is None:
                continue
            for group in self.runtime.calls.consumer_groups(tenant, provider=name).result or []:
                if not isinstance(group, ConsumerGroup):
                    log.warning("provider %s listed %r, not a ConsumerGroup: skipped", name, type(group).__name__)
                    continue
                if group.group_id.startswith(_prefixes(tenant)):
                    groups.append(_group_view(group, name, consumers.get(group.group_id)))
        return groups

    def reset_offsets(self, tenant: str, group: str, raw: Any) -> dict[str, Any]:
        """Move a group's committed offsets in one topic. The hub's own subscriptions of the group are paused
        (their workers unsubscribe, in whichever process runs them) for the reset and resumed after it."""
        self.runtime.require_running()
        request = load(OffsetResetSchema(), raw)
        if not group.startswith(_prefixes(tenant)):
            raise NotFound(f"No consumer group {group}")
        specs = [spec for spec in self._tenant_specs(tenant) if spec.subscription.group == group]
        provider = self._admin_provider(
            tenant, request["provider"] or (specs[0].provider if specs else None), "reset_offsets", "reset consumer group offsets"
        )
        timestamp = request["timestamp"]
        if timestamp is not None and timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=UTC)
        try:
            to = OffsetReset(
                request["to"], timestamp, {int(partition): offset for partition, offset in request["offsets"].items()}
            )
        except ValueError as error:
            raise ValidationError({"to": [str(error)]}) from None
        pausing = [spec for spec in specs if not self.leases.state(spec.lease_name)["paused"]]
        for spec in pausing:
            self.leases.pause(spec.lease_name)
        try:
            self._wait_until_stopped(specs)
            moved = self.runtime.calls.reset_offsets(tenant, group, request["topic"], to, provider=provider).result
        finally:
            for spec in pausing:
                self.leases.pause(spec.lease_name, paused=False)
        return {
            "groupId": group,
            "topic": request["topic"],
            "to": request["to"],
            "provider": provider,
            "subscriptions": [spec.name for spec in specs],
            "offsets": [
                {"topic": offset.topic, "partition": offset.partition, "offset": offset.offset}
                for offset in moved or []
            ],
        }

    def _wait_until_stopped(self, specs: list[SubscriptionSpec]) -> None:
        if not specs:
            return
        deadline = time.monotonic() + max(15.0, max(spec.lease_seconds for spec in specs) * 1.5)
        while any(self.leases.state(spec.lease_name)["held"] for spec in specs):
            if time.monotonic() > deadline:
                raise Conflict("the subscription's worker did not stop in time; try the reset again")
            time.sleep(0.1)

    # --- subscriptions ------------------------------------------------------------------------------

    def subscribe(
        self,
        tenant: str,
        topics: list[str],
        group: str,
        handler: Handler | str,
        *,
        name: str | None = None,
        start: str = "earliest",
        provider: str | None = None,
        batch_size: int = 50,
        max_attempts: int = 5,
        backoff: tuple[float, float] = (1.0, 60.0),
        dead_letter_topic: str | None = None,
        lease_seconds: float = 10.0,
    ) -> Subscription:
        """Add a subscription from Python; its worker starts within a second where workers run (and the
        subscription's lease is free). ``handler`` is a callable or the name of a registered handler."""
        group = group if group.startswith(_prefixes(tenant)) else f"{tenant}.{group}"
        name = name or group
        problems = {"name": [] if SUBSCRIPTION_NAME.match(name) else ["1-100 letters, digits, '.', '_' or '-'"]}
        problems["topics"] = (
            [] if topics and all(TOPIC.match(topic) for topic in topics) else ["one or more valid topic names"]
        )
        problems = {key: value for key, value in problems.items() if value}
        if problems:
            raise ValidationError(problems)
        if name in self.specs:
            raise Conflict(f"a subscription named {name} exists already")
        function, label = self._handler(
            {"type": "callable", "name": handler} if isinstance(handler, str) else handler, "handler"
        )
        spec = SubscriptionSpec(
            Subscription(name, tenant, group, tuple(topics), start),
            self._consumer_provider(tenant, provider, "provider"),
            function,
            label,
            batch_size=batch_size,
            max_attempts=max_attempts,
            backoff_initial=backoff[0],
            backoff_max=backoff[1],
            dead_letter_topic=dead_letter_topic,
            lease_seconds=lease_seconds,
            source="python",
        )
        self.specs[name] = spec
        return spec.subscription

    # --- subscriptions defined through the API (kept in the database, run by every process) ---------------

    def create_subscription(self, tenant: str, raw: Any) -> dict[str, Any]:
        """Define a subscription for ``tenant`` (the hub.yaml shape plus ``name``); every process picks it up
        within seconds. Its settings are checked as hub.yaml's are: a bad one is a 422 naming it."""
        if not isinstance(raw, dict):
            raise ValidationError({"body": ["must be a JSON object"]})
        name = raw.get("name")
        if not isinstance(name, str) or not SUBSCRIPTION_NAME.match(name):
            raise ValidationError({"name": ["1-100 letters, digits, '.', '_' or '-'"]})
        definition = {key: value for key, value in raw.items() if key != "name"}
        if definition.get("tenant") not in (None, tenant):
            raise ValidationError({"tenant": ["a subscription is the calling tenant's"]})
        definition["tenant"] = tenant
        refused = {}
        for field, url in url_settings(definition.get("handler") if isinstance(definition.get("handler"), dict) else {}, "handler."):
            try:
                self.runtime.tenant_urls.check(url)
            except TargetRefused as error:
                refused[field] = [str(error)]
        if refused:
            raise ValidationError(refused)
        try:
            entry = load(SubscriptionSchema(), definition)
            spec = self._spec_from_config(name, entry, tenant_made=True)
        except ConfigError as error:
            raise ValidationError({error.path.removeprefix(f"subscriptions.{name}."): [error.reason]}) from None
        spec.source = "api"
        with self.runtime.db.session() as session:
            if name in self.specs or session.get(StoredSubscription, name) is not None:
                raise Conflict(f"a subscription named {name} exists already")
            session.add(StoredSubscription(name=name, tenant=tenant, definition=definition, created_at=utcnow()))
        self.specs[name] = spec
        return self.subscription(tenant, name)

    def delete_subscription(self, tenant: str, name: str) -> dict[str, Any]:
        """Remove a subscription defined through the API (its worker stops within a second, wherever it runs)."""
        spec = self._spec(tenant, name)
        if spec.source != "api":
            raise Conflict(f"subscription {name} comes from {'hub.yaml' if spec.source == 'config' else 'Python'}: remove it there")
        with self.runtime.db.session() as session:
            stored = session.get(StoredSubscription, name)
            if stored is not None:
                session.delete(stored)
        self.specs.pop(name, None)
        return {"name": name, "deleted": True}

    def sync_stored_subscriptions(self) -> None:
        """Run what the API defined (in any process) and stop what it removed; the supervisor calls it each round."""
        now = time.monotonic()
        if now - self._stored_synced_at < STORED_SUBSCRIPTIONS_EVERY:
            return
        self._stored_synced_at = now
        with self.runtime.db.session() as session:
            stored = {row.name: row.definition for row in session.scalars(select(StoredSubscription))}
        for name, definition in stored.items():
            if name in self.specs:
                continue
            try:
                spec = self._spec_from_config(name, load(SubscriptionSchema(), definition), tenant_made=True)
            except (ConfigError, ValidationError) as error:  # e.g. a handler type whose plugin was removed
                log.error("subscription %s (defined through the API) cannot run: %s", name, error)
                continue
            spec.source = "api"
            self.specs[name] = spec
        for name in [name for name, spec in self.specs.items() if spec.source == "api" and name not in stored]:
            self.specs.pop(name, None)

    def remove_subscription(self, name: str) -> bool:
        """Stop running a subscription added with :meth:`subscribe` (its worker unsubscribes within a second)."""
        return self.specs.pop(name, None) is not None

    def subscriptions(self, tenant: str) -> list[dict[str, Any]]:
        specs = self._tenant_specs(tenant)
        states = {state["name"]: state for state in self.leases.states("subscription:")}
        with self.runtime.db.session() as session:
            counts = dict(
                session.execute(
                    select(DeadLetter.subscription, func.count())
                    .where(DeadLetter.tenant == tenant)
                    .group_by(DeadLetter.subscription)
                ).all()
            )
        return [_subscription_view(spec, states.get(spec.lease_name), counts.get(spec.name, 0)) for spec in specs]

    def subscription(self, tenant: str, name: str) -> dict[str, Any]:
        spec = self._spec(tenant, name)
        return next(view for view in self.subscriptions(tenant) if view["name"] == spec.name)

    def pause(self, tenant: str, name: str, paused: bool = True) -> dict[str, Any]:
        """Pause (or resume) a subscription in every hub process: its worker stops within a third of its lease."""
        self.leases.pause(self._spec(tenant, name).lease_name, paused)
        return self.subscription(tenant, name)

    def dead_letters(self, tenant: str, subscription: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        with self.runtime.db.session() as session:
            query = select(DeadLetter).where(DeadLetter.tenant == tenant)
            if subscription:
                query = query.where(DeadLetter.subscription == subscription)
            return [row.to_dict() for row in session.scalars(query.order_by(DeadLetter.created_at.desc()).limit(limit))]

    # --- topics and deleting groups ---------------------------------------------------------------------

    def _admin_provider(self, tenant: str, provider: str | None, hook: str, what: str) -> str:
        """The publish provider to run an admin hook on: the one named (checked), else the tenant's first that can."""
        if provider is not None:
            slot = self.runtime.registry.slots.get(provider)
            if slot is None or slot.capability != "publish":
                raise ValidationError({"provider": [f"no publish provider named {provider!r}"]})
        name = provider or self._provider_with(tenant, (hook,))
        if name is None or self.runtime.hook_for(name, tenant, hook) is None:
            raise UnsupportedError(f"provider {name or '(none)'} cannot {what}")
        return name

    def topics(self, tenant: str, provider: str | None = None) -> dict[str, Any]:
        name = self._admin_provider(tenant, provider, "list_topics", "list topics")
        return {"provider": name, "topics": sorted(self.runtime.calls.list_topics(tenant, provider=name).result or [])}

    def create_topic(self, tenant: str, raw: Any) -> dict[str, Any]:
        request = load(TopicSchema(), raw)
        name = self._admin_provider(tenant, request["provider"], "create_topic", "create topics")
        spec = TopicSpec(request["topic"], request["partitions"], request["replication_factor"], request["retention_ms"])
        created = self.runtime.calls.create_topic(tenant, spec, provider=name).result
        return {"topic": spec.name, "provider": name, "created": bool(created)}

    def delete_consumer_group(self, tenant: str, group: str, provider: str | None = None) -> dict[str, Any]:
        """Delete one of the tenant's groups; the hub's subscriptions of it are paused meanwhile and stay paused
        (their offsets are gone: resume one to start it from its ``start`` position)."""
        if not group.startswith(_prefixes(tenant)):
            raise NotFound(f"No consumer group {group}")
        specs = [spec for spec in self._tenant_specs(tenant) if spec.subscription.group == group]
        name = self._admin_provider(tenant, provider or (specs[0].provider if specs else None), "delete_consumer_group", "delete consumer groups")
        for spec in specs:
            self.leases.pause(spec.lease_name)
        self._wait_until_stopped(specs)
        existed = self.runtime.calls.delete_consumer_group(tenant, group, provider=name).result
        if not existed and not specs:
            raise NotFound(f"No consumer group {group}")
        return {"groupId": group, "provider": name, "deleted": bool(existed), "pausedSubscriptions": [spec.name for spec in specs]}

    def close_handlers(self) -> None:
        """Release what subscription handlers hold (an HTTP session): each one's ``close()``, if it has one."""
        for spec in self.specs.values():
            handler = getattr(spec.handler, "handler", spec.handler)  # a FilteredHandler's inner one
            close = getattr(handler, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:  # one handler's failure must not keep the others open
                    log.warning("closing the handler of subscription %s failed", spec.name, exc_info=True)

    def replay_dead_letter(self, tenant: str, letter_id: str) -> dict[str, Any]:
        """Hand one dead letter to its subscription's handler again (its receiver was fixed): delivered, the
        dead letter is gone (an audit row says so); failed again, it stays with the new error and one attempt more.
        The record is the same, so an idempotent receiver (a webhook's ``webhook-id``) drops a duplicate."""
        with self.runtime.db.session() as session:
            row = session.get(DeadLetter, letter_id)
            if row is None or row.tenant != tenant:
                raise NotFound(f"No dead letter {letter_id}")
            spec = self._spec(tenant, row.subscription)
            record = ConsumedRecord(row.topic, row.partition, row.offset, row.value, row.key, dict(row.headers or {}))
        started = time.perf_counter()
        try:
            spec.handler(record, spec.subscription)
        except Exception as error:  # the handler is the user's code
            reason = describe(error)
            with self.runtime.db.session() as session:
                stored = session.get(DeadLetter, letter_id)
                if stored is not None:
                    stored.error, stored.attempts = reason, stored.attempts + 1
            return {"id": letter_id, "status": "failed", "error": reason}
        with self.runtime.db.session() as session:
            stored = session.get(DeadLetter, letter_id)
            if stored is not None:
                session.delete(stored)
        latency = (time.perf_counter() - started) * 1000
        self.runtime.audit.add(tenant=tenant, capability="publish", operation="replay_dead_letter", outcome="success", latency_ms=latency, record_id=letter_id)
        return {"id": letter_id, "status": "delivered"}

    def record_dead_letter(self, spec: SubscriptionSpec, record: ConsumedRecord, error: str, attempts: int) -> None:
        """Keep a record whose handler kept failing (and publish it to the dead-letter topic, if any), so the
        worker can commit past it. Recording the same position twice (after a crash) keeps one row."""
        tenant = spec.subscription.tenant
        published = None
        if spec.dead_letter_topic:
            event = Event(
                id=new_id("dlq"),
                tenant=tenant,
                topic=spec.dead_letter_topic,
                event_type="hub.dead_letter",
                data={
                    "subscription": spec.name,
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "error": error,
                    "attempts": attempts,
                    "value": to_dict(record.value),
                },
                key=record.key,
            )
            kept = {name: value for name, value in record.headers.items() if not name.startswith("ce_") and name != "content-type"}
            event.headers = {
                **kept,
                **event.attribute_headers(),
                "x-hub-dead-letter": spec.name,
                # Why it was given up on, readable without parsing the value.
                "x-hub-error": str(error)[:1000],
                "x-hub-attempts": str(attempts),
                "x-hub-original-id": str(record.headers.get("ce_id", "")),
            }
            try:
                call = self.runtime.calls.publish(tenant, event)
                published = {
                    "topic": spec.dead_letter_topic,
                    "partition": call.result.partition,
                    "offset": call.result.offset,
                    "provider": call.provider,
                }
            except (ProviderError, NoProviderError) as failure:  # still recorded below; the topic just misses it
                log.warning(
                    "subscription %s: dead letter not published to %s: %s",
                    spec.name,
                    spec.dead_letter_topic,
                    describe(failure),
                )
        row = DeadLetter(
            id=new_id("dlq"),
            tenant=tenant,
            subscription=spec.name,
            group_id=spec.subscription.group,
            provider=spec.provider,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            headers=dict(record.headers),
            value=to_dict(record.value),
            error=error,
            attempts=attempts,
            published=published,
            created_at=utcnow(),
        )
        audit = AuditEntry(
            at=utcnow(), tenant=tenant, capability="publish", service="kafka", provider=spec.provider, operation="dead_letter", outcome="dead",
            detail=f"{spec.name}: {record.topic}[{record.partition}]@{record.offset} after {attempts} attempt(s): {error}"[:2000],
        )  # fmt: skip
        try:
            with self.runtime.db.session() as session:
                session.add_all([row, audit])
        except IntegrityError:
            log.info(
                "subscription %s: %s[%d]@%d was a dead letter already",
                spec.name,
                record.topic,
                record.partition,
                record.offset,
            )
        log.error(
            "subscription %s: %s[%d]@%d is a dead letter after %d attempt(s): %s",
            spec.name,
            record.topic,
            record.partition,
            record.offset,
            attempts,
            error,
        )

    # --- building subscriptions ---------------------------------------------------------------------

    def _spec_from_config(self, name: str, entry: dict[str, Any], *, tenant_made: bool = False) -> SubscriptionSpec:
        """``tenant_made``: defined through the API, so its URLs are checked against ``tenant_urls`` on every
        delivery too (a name that later resolves inward is refused); hub.yaml's are the operator's, trusted."""
        path = f"subscriptions.{name}"
        tenant = entry["tenant"] or self.runtime.config["default_tenant"]
        group = entry["group"] or f"{tenant}.{name}"
        if not group.startswith(_prefixes(tenant)):
            raise ConfigError(f"{path}.group", f"must start with '{tenant}.' or '{tenant}-' (the tenant's prefix)")
        function, label = self._handler(entry["handler"], f"{path}.handler", name, tenant, tenant_made=tenant_made)
        if entry.get("filter"):
            function = FilteredHandler(entry["filter"], function)
        return SubscriptionSpec(
            Subscription(name, tenant, group, tuple(entry["topics"]), entry["start"]),
            self._consumer_provider(tenant, entry["provider"], f"{path}.provider"),
            function,
            label,
            batch_size=entry["batch_size"],
            max_attempts=entry["max_attempts"],
            backoff_initial=entry["backoff"]["initial"],
            backoff_max=entry["backoff"]["max"],
            dead_letter_topic=entry["dead_letter_topic"],
            lease_seconds=entry["lease_seconds"],
            enabled=entry["enabled"],
        )

    def _handler(
        self, entry: dict[str, Any] | Callable[..., Any], path: str, name: str = "", tenant: str = "", *, tenant_made: bool = False
    ) -> tuple[Handler, str]:
        if callable(entry):
            return entry, f"python {getattr(entry, '__qualname__', type(entry).__name__)}"
        if entry["type"] == "webhook" and "webhook" not in self.runtime.host.handler_types:
            # The core's plain webhook; a plugin's "webhook" handler type (hub-webhooks) replaces it.
            webhook = WebhookHandler(
                entry["url"],
                headers=entry.get("headers"),
                timeout=entry.get("timeout", 10.0),
                secret=entry.get("secret"),
                guard=self.runtime.tenant_urls.check if tenant_made else None,
            )
            return webhook, webhook.label
        if entry["type"] != "callable":
            return self._configured_handler(entry, path, name, tenant)
        registered = self.runtime.host.handlers.get(entry["name"])
        if registered is None:
            known = ", ".join(sorted(self.runtime.host.handlers)) or "none"
            raise ConfigError(f"{path}.name", f"no handler {entry['name']!r} is registered (registered: {known})")
        return registered[0], f"callable {entry['name']}"

    def _configured_handler(self, entry: dict[str, Any], path: str, name: str, tenant: str) -> tuple[Handler, str]:
        """A handler of a type a plugin registered (``register_handler_types``), built from its settings."""
        from marshmallow import ValidationError as SettingsError

        registered = self.runtime.host.handler_types.get(entry["type"])
        if registered is None:
            known = ", ".join(sorted(["webhook", "callable", *self.runtime.host.handler_types])) or "none"
            raise ConfigError(f"{path}.type", f"no handler type {entry['type']!r} (known: {known}; a plugin may add one)")
        factory, settings_schema, plugin = registered
        raw = {key: value for key, value in entry.items() if key != "type"}
        try:
            settings = settings_schema().load(raw)
        except SettingsError as error:
            field, reason = first_error(error.messages_dict)
            raise ConfigError(f"{path}.{field}", reason) from None
        context = HandlerContext(subscription=name, tenant=tenant, hub=lambda: self.manager)
        handler = factory(settings, context)
        return handler, str(getattr(handler, "label", f"{entry['type']} ({plugin})"))

    def _consumer_provider(self, tenant: str, name: str | None, path: str) -> str:
        if name is not None:
            if (
                self.runtime.registry.slots.get(name) is None
                or self._provider_with(tenant, CONSUMER_HOOKS, [name]) is None
            ):
                raise ConfigError(
                    path, f"provider {name!r} cannot be subscribed to (it needs {', '.join(CONSUMER_HOOKS)})"
                )
            return name
        found = self._provider_with(tenant, CONSUMER_HOOKS)
        if found is None:
            raise ConfigError(
                path,
                f"no kafka provider of tenant {tenant!r} can be subscribed to (none implements {', '.join(CONSUMER_HOOKS)})",
            )
        return found

    def _provider_with(self, tenant: str, hooks: tuple[str, ...], names: list[str] | None = None) -> str | None:
        for name in self.runtime.registry.service_providers("kafka", tenant) if names is None else names:
            if all(self.runtime.hook_for(name, tenant, hook) is not None for hook in hooks):
                return name
        return None

    def _tenant_specs(self, tenant: str) -> list[SubscriptionSpec]:
        return [spec for spec in self.specs.values() if spec.subscription.tenant == tenant]

    def _spec(self, tenant: str, name: str) -> SubscriptionSpec:
        spec = self.specs.get(name)
        if spec is None or spec.subscription.tenant != tenant:
            raise NotFound(f"No subscription {name}")
        return spec


def _prefixes(tenant: str) -> tuple[str, str]:
    return f"{tenant}.", f"{tenant}-"


def _event(event_id: str, tenant: str, request: dict[str, Any], dataschema: str | None = None) -> Event:
    """The event to publish; its CloudEvents attributes also go in its headers (``ce_type``, ``ce_tenant``...),
    after the caller's own headers so a caller cannot pass for another tenant."""
    event = Event(
        id=event_id,
        tenant=tenant,
        topic=request["topic"],
        event_type=request["event_type"],
        data=request["data"],
        key=request["key"],
        subject=request.get("subject"),
        dataschema=dataschema,
    )
    event.headers = {**request["headers"], **event.attribute_headers()}
    return event


def _outcome(provider: str, result: Any) -> dict[str, Any]:
    if getattr(result, "error", None) is not None or getattr(result, "partition", -1) < 0:
        return {
            "status": "failed",
            "provider": provider,
            "error": str(getattr(result, "error", None) or "not acknowledged"),
        }
    return {"status": "published", "provider": provider, "partition": result.partition, "offset": result.offset}


def _group_view(group: ConsumerGroup, provider: str, subscription: str | None) -> dict[str, Any]:
    return {
        "groupId": group.group_id,
        "state": group.state,
        "members": [
            {
                "memberId": member.member_id,
                "clientId": member.client_id,
                "host": member.host,
                "assignment": member.assignment,
            }
            for member in group.members
        ],
        "memberCount": len(group.members),
        "topics": list(group.topics),
        "partitions": [
            {"topic": lag.topic, "partition": lag.partition, "committed": lag.committed, "end": lag.end, "lag": lag.lag}
            for lag in group.partitions
        ],
        "lag": group.lag,
        "provider": provider,
        "subscription": subscription,
    }


def _subscription_view(spec: SubscriptionSpec, state: dict[str, Any] | None, dead_letters: int) -> dict[str, Any]:
    state = state or {}
    note = state.get("note") or {}
    paused = bool(state.get("paused"))
    running = bool(state.get("held"))
    return {
        "name": spec.name,
        "groupId": spec.subscription.group,
        "topics": list(spec.subscription.topics),
        "provider": spec.provider,
        "handler": spec.handler_label,
        "start": spec.subscription.start,
        "source": spec.source,
        "enabled": spec.enabled,
        "batchSize": spec.batch_size,
        "maxAttempts": spec.max_attempts,
        "deadLetterTopic": spec.dead_letter_topic,
        "paused": paused,
        "running": running,
        "owner": state.get("owner"),
        "leaseExpiresAt": state.get("expiresAt"),
        # "waiting": no process runs it now (none has workers, or the last holder's lease is expiring).
        "status": (note.get("status", "starting") if running else None)
        or ("paused" if paused else "waiting" if spec.enabled else "disabled"),
        "lastError": note.get("error"),
        "handledSinceStart": note.get("handled", 0) if running else 0,
        "deadLetters": dead_letters,
    }
