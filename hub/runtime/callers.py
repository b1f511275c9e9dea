"""One typed caller per provider hook (tox's style): services never name a hook as a string or build a
dict of arguments; each method goes through the :class:`~hub.runtime.pipeline.ProviderPipeline`.

``providers`` narrows the call to those providers (in order); ``None`` means the service's configured list.
Each capability owns its section.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from hub.errors import HubError
from hub.runtime.pipeline import CallResult, ProviderPipeline

if TYPE_CHECKING:
    from hub.capabilities import (
        CancelRequest,
        CaptureRequest,
        Event,
        InventoryPush,
        Message,
        PaymentLookup,
        PaymentRequest,
        RefundRequest,
        StoredFile,
        SyncRequest,
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
        return self.pipeline.call("fileStorage", tenant, "store", _StoreArguments(file, stream), providers=providers, record_id=record_id)  # type: ignore[arg-type]

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

    def consumer_groups(self, tenant: str, *, provider: str) -> CallResult:
        return self.pipeline.call("kafka", tenant, "consumer_groups", {}, providers=[provider])

    # --- sync -------------------------------------------------------------------------------------

    def sync(self, tenant: str, request: SyncRequest, *, providers: Providers = None, record_id: str | None = None) -> CallResult:
        return self.pipeline.call("externalAPI", tenant, "sync", {"request": request}, providers=providers, record_id=record_id)

    def sync_push(self, tenant: str, push: InventoryPush, *, provider: str, record_id: str | None = None) -> CallResult:
        # One provider only: updates meant for one system are never failed over to another.
        return self.pipeline.call("externalAPI", tenant, "sync_push", {"push": push}, providers=[provider], record_id=record_id)


# --- store: one upload, several tries ---------------------------------------------------------------


class UploadNotReplayable(HubError):
    """A store try failed after reading part of an upload that cannot be read again (a request body past
    its kept head): the client must send it again."""

    status_code = 503


class _StoreArguments(Mapping[str, Any]):
    """``store``'s keyword arguments, handed out afresh for each try.

    The pipeline unpacks its arguments once per try (``function(**kwargs)``); every try after the first must
    read the upload from its first byte again, so the stream is rewound as it is handed out. A plain dict
    would give the second try a half-read stream, and the provider would store the tail as the file.
    """

    def __init__(self, file: StoredFile, stream: UploadStream) -> None:
        self.file = file
        self.stream = stream
        self.tries = 0

    def __iter__(self) -> Iterator[str]:
        return iter(("file", "stream"))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, name: str) -> Any:
        if name == "file":
            return self.file
        if name != "stream":
            raise KeyError(name)
        self.tries += 1
        if self.tries > 1 and not self.stream.rewind():
            raise self.stream.error or UploadNotReplayable(
                f"the upload failed at the provider after {self.stream.size} bytes and cannot be read again; send it again"
            )
        return self.stream
