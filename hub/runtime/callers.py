"""One typed caller per provider hook (tox's style): services never name a hook as a string or build a
dict of arguments; each method goes through the :class:`~hub.runtime.pipeline.ProviderPipeline`.

``providers`` narrows the call to those providers (in order); ``None`` means the service's configured list.
Each capability owns its section.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from hub.errors import ConfigurationError, UploadNotReplayable
from hub.runtime.pipeline import CallResult, ProviderPipeline

if TYPE_CHECKING:
    from hub.capabilities import (
        CancelRequest,
        CaptureRequest,
        ConsumedRecord,
        Event,
        InventoryPush,
        Message,
        OffsetReset,
        PartitionOffset,
        PaymentLookup,
        PaymentRequest,
        RefundRequest,
        StoredFile,
        Subscription,
        SyncRequest,
        TopicSpec,
        UploadStream,
    )

Providers = list[str] | None


class ProviderCalls:
    def __init__(self, pipeline: ProviderPipeline) -> None:
        self.pipeline = pipeline

    # --- notify -----------------------------------------------------------------------------------

    def notify(self, service: str, tenant: str, message: Message, *, providers: Providers = None, record_id: str | None = None) -> CallResult:
        return self.pipeline.call(service, tenant, "notify", {"message": message}, providers=providers, record_id=record_id)

    # --- pay --------------------------------------------------------------------------------------

    def pay(self, tenant: str, payment: PaymentRequest, *, providers: Providers = None, record_id: str | None = None) -> CallResult:
        return self.pipeline.call("payment", tenant, "pay", {"payment": payment}, providers=providers, record_id=record_id)

    def refund(self, tenant: str, refund: RefundRequest, *, provider: str, record_id: str | None = None) -> CallResult:
        return self.pipeline.call("payment", tenant, "refund", {"refund": refund}, providers=[provider], record_id=record_id)

    # Lookups, captures and cancels go to the gateway that took the payment, never to another.

    def payment_status(self, tenant: str, lookup: PaymentLookup, *, provider: str, record_id: str | None = None) -> CallResult:
        return self.pipeline.call("payment", tenant, "payment_status", {"lookup": lookup}, providers=[provider], record_id=record_id)

    def capture(self, tenant: str, capture: CaptureRequest, *, provider: str, record_id: str | None = None) -> CallResult:
        return self.pipeline.call("payment", tenant, "capture", {"capture": capture}, providers=[provider], record_id=record_id)

    def cancel(self, tenant: str, cancel: CancelRequest, *, provider: str, record_id: str | None = None) -> CallResult:
        return self.pipeline.call("payment", tenant, "cancel", {"cancel": cancel}, providers=[provider], record_id=record_id)

    # --- store ------------------------------------------------------------------------------------

    def store(self, tenant: str, file: StoredFile, stream: UploadStream, *, providers: Providers = None, record_id: str | None = None) -> CallResult:
        """``stream`` is replayed from its first byte for each try after the first; when it cannot be (a
        request body read past its kept head), the call stops with :class:`UploadNotReplayable`."""
        def rewind() -> None:
            # Every try after the first must read the upload from its first byte again; a half-read stream
            # would make the provider store only the tail.
            if not stream.rewind():
                raise stream.error or UploadNotReplayable(f"the upload failed at the provider after {stream.size} bytes and cannot be read again; send it again")

        return self.pipeline.call("fileStorage", tenant, "store", {"file": file, "stream": stream}, providers=providers, record_id=record_id, before_retry=rewind)

    def store_read(self, tenant: str, key: str, byte_range: tuple[int, int | None] | None, *, provider: str) -> CallResult:
        return self.pipeline.call("fileStorage", tenant, "store_read", {"key": key, "byte_range": byte_range}, providers=[provider])

    def store_head(self, tenant: str, key: str, *, provider: str) -> CallResult:
        return self.pipeline.call("fileStorage", tenant, "store_head", {"key": key}, providers=[provider])

    def store_delete(self, tenant: str, key: str, *, provider: str) -> CallResult:
        return self.pipeline.call("fileStorage", tenant, "store_delete", {"key": key}, providers=[provider])

    def store_url(self, tenant: str, key: str, expires_in: int, *, provider: str) -> CallResult:
        return self.pipeline.call("fileStorage", tenant, "store_url", {"key": key, "expires_in": expires_in}, providers=[provider])

    def store_upload_url(self, tenant: str, file: StoredFile, expires_in: int, *, providers: Providers = None, record_id: str | None = None) -> CallResult:
        return self.pipeline.call("fileStorage", tenant, "store_upload_url", {"file": file, "expires_in": expires_in}, providers=providers, record_id=record_id)

    # --- publish ----------------------------------------------------------------------------------

    def publish(self, tenant: str, event: Event, *, providers: Providers = None, record_id: str | None = None) -> CallResult:
        return self.pipeline.call("kafka", tenant, "publish", {"event": event}, providers=providers, record_id=record_id)

    def publish_batch(self, tenant: str, events: list[Event], *, providers: Providers = None, record_id: str | None = None) -> CallResult:
        return self.pipeline.call("kafka", tenant, "publish_batch", {"events": events}, providers=providers, record_id=record_id)

    def consumer_groups(self, tenant: str, *, provider: str) -> CallResult:
        return self.pipeline.call("kafka", tenant, "consumer_groups", {}, providers=[provider])

    def reset_offsets(self, tenant: str, group: str, topic: str, to: OffsetReset, *, provider: str) -> CallResult:
        return self.pipeline.call("kafka", tenant, "reset_offsets", {"group": group, "topic": topic, "to": to}, providers=[provider])

    def list_topics(self, tenant: str, *, provider: str) -> CallResult:
        return self.pipeline.call("kafka", tenant, "list_topics", {}, providers=[provider])

    def create_topic(self, tenant: str, topic: TopicSpec, *, provider: str) -> CallResult:
        return self.pipeline.call("kafka", tenant, "create_topic", {"topic": topic}, providers=[provider])

    def delete_consumer_group(self, tenant: str, group: str, *, provider: str) -> CallResult:
        return self.pipeline.call("kafka", tenant, "delete_consumer_group", {"group": group}, providers=[provider])

    # A subscription's worker polls: consume, commit and unsubscribe go straight to its one provider, measured
    # but neither audited (a row per poll would bury the audit trail) nor retried (the worker has its own loop).

    def consume(self, tenant: str, subscription: Subscription, max_records: int, timeout: float, *, provider: str) -> list[ConsumedRecord]:
        return self._subscription_call(tenant, provider, "consume", {"subscription": subscription, "max_records": max_records, "timeout": timeout})

    def commit(self, tenant: str, subscription: Subscription, offsets: list[PartitionOffset], *, provider: str) -> None:
        self._subscription_call(tenant, provider, "commit", {"subscription": subscription, "offsets": offsets})

    def unsubscribe(self, tenant: str, subscription: Subscription, *, provider: str) -> None:
        self._subscription_call(tenant, provider, "unsubscribe", {"subscription": subscription})

    def _subscription_call(self, tenant: str, provider: str, hook: str, kwargs: dict[str, Any]) -> Any:
        function = self.pipeline.host.hook_for(self.pipeline.registry.instance(provider, tenant), hook)
        if function is None:
            raise ConfigurationError(f"provider {provider!r} does not implement {hook}")
        started, outcome = time.perf_counter(), "error"
        try:
            result = function(**kwargs)
            outcome = "success"
            return result
        finally:
            self.pipeline.metrics.provider_calls.labels("kafka", provider, hook, outcome).inc()
            self.pipeline.metrics.provider_latency.labels("kafka", provider, hook).observe(time.perf_counter() - started)

    # --- sync -------------------------------------------------------------------------------------

    def sync(self, tenant: str, request: SyncRequest, *, providers: Providers = None, record_id: str | None = None) -> CallResult:
        return self.pipeline.call("externalAPI", tenant, "sync", {"request": request}, providers=providers, record_id=record_id)

    def sync_push(self, tenant: str, push: InventoryPush, *, provider: str, record_id: str | None = None) -> CallResult:
        # One provider only: updates meant for one system are never failed over to another.
        return self.pipeline.call("externalAPI", tenant, "sync_push", {"push": push}, providers=[provider], record_id=record_id)
