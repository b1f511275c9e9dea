"""The plugin author's manual: every hook the hub calls, what it is given and what it must return.

There are two kinds of hooks.

**Set-up hooks** are implemented by a plugin *module* (the object your ``hub`` entry point names). They
are ``historic``: a plugin loaded late still receives them.

* :func:`register_providers` -- declare provider types (classes).
* :func:`register_templates` -- contribute notification templates.
* :func:`register_handlers` -- contribute event handlers that subscriptions can name.
* :func:`register_event_schemas` -- contribute JSON Schemas for event types.
* :func:`register_handler_types` -- contribute kinds of subscription handlers, configured in ``hub.yaml``.

**Provider hooks** are implemented as methods of a *provider instance*. The core builds one instance per
entry in ``hub.yaml``'s ``providers:`` section, registers it with the plugin manager under its configured
name, and calls its hooks **directly and only on it**: a payment goes to the gateway the configuration
chose, never to every payment plugin. Which hooks a provider must implement depends on its
``capability``:

========== ====================================================== ================================
capability required hooks                                          optional hooks
========== ====================================================== ================================
notify     :func:`notify`                                         :func:`health`, :func:`handle_webhook`
pay        :func:`pay`, :func:`refund`, :func:`payment_status`    :func:`capture`, :func:`cancel`, :func:`health`, :func:`handle_webhook`
store      :func:`store`, :func:`store_read`,                     :func:`store_url`, :func:`store_upload_url`,
           :func:`store_head`, :func:`store_delete`               :func:`health`
publish    :func:`publish`                                        :func:`publish_batch`, :func:`consume` with
                                                                  :func:`commit` and :func:`unsubscribe`,
                                                                  :func:`consumer_groups`, :func:`reset_offsets`,
                                                                  :func:`delete_consumer_group`,
                                                                  :func:`list_topics`, :func:`create_topic`,
                                                                  :func:`health`
sync       :func:`sync`                                           :func:`sync_push`, :func:`health`
========== ====================================================== ================================

Every provider may also implement :func:`close`.

Errors: raise the classes in :mod:`hub.errors` -- :class:`~hub.errors.TransientError` (retried with
backoff, then the next provider is tried), :class:`~hub.errors.OutcomeUnknownError` (the request may have
reached the provider: retried on the same provider, never the next), :class:`~hub.errors.PermanentError`
(the caller gets a 422, nothing is retried) or :class:`~hub.errors.ConfigurationError` (the next provider is
tried). While a provider's circuit breaker is open the core does not call it at all: the next provider gets
the work at once. Never put a credential in an error message. Provider hooks run in worker threads: they
must be thread-safe, and may block (the core applies the timeouts and the circuit breaker). Plugins that
talk HTTP get pooled sessions, timeouts and this error mapping from :mod:`hub.http`.

A minimal plugin::

    from hub import hookimpl
    from hub.capabilities import NotifyResult, Provider, RecipientResult

    class Pager(Provider):
        type_name = "pager"
        capability = "notify"
        channels = ("sms",)

        @hookimpl
        def notify(self, message):
            return NotifyResult([RecipientResult(r.address, "sent") for r in message.recipients])

    @hookimpl
    def register_providers(register):
        register(Pager)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

import pluggy

if TYPE_CHECKING:
    from hub.capabilities import (
        CancelRequest,
        CaptureRequest,
        ConsumedRecord,
        ConsumerGroup,
        Event,
        HealthResult,
        InventoryPush,
        Message,
        NotifyResult,
        OffsetReset,
        PartitionOffset,
        PaymentLookup,
        PaymentRequest,
        PaymentResult,
        PresignedUpload,
        PublishResult,
        PushResult,
        RefundRequest,
        RefundResult,
        StoredFile,
        StoredObject,
        Subscription,
        SyncRequest,
        SyncResult,
        TopicSpec,
        UploadStream,
        WebhookEvent,
        WebhookRequest,
    )

PROJECT_NAME = "hub"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --- set-up hooks (plugin modules) -------------------------------------------------------------


@hookspec(historic=True)
def register_providers(register: Callable[[type], None]) -> None:
    """Declare the provider types this plugin offers.

    Called once when the plugin is loaded (historic: also for plugins registered after start-up).

    :param register: call ``register(ProviderClass)`` once per provider type. The class must set
        ``type_name`` (what users write as ``type:`` in ``hub.yaml``; unique across all plugins -- a
        duplicate is refused and reported), ``capability`` (``notify``, ``pay``, ``store``, ``publish`` or
        ``sync``), for notify also ``channels``, and usually ``settings_schema`` (a marshmallow
        ``Schema`` class validating its ``hub.yaml`` settings), ``env_settings`` (setting -> environment
        variable read when the setting is absent) and ``secret_settings`` (settings never shown).
        The class is instantiated as ``ProviderClass(name, settings, context)``; see
        :class:`hub.capabilities.Provider`. The constructor must not contact the provider (start-up stays
        fast and works offline): import heavy SDKs and open connections lazily.
    :returns: nothing.
    """


@hookspec(historic=True)
def register_templates(register: Callable[..., None]) -> None:
    """Contribute notification templates.

    Called once when the plugin is loaded.

    :param register: call ``register(name, channel, *, text, subject=None, html=None, blocks=None,
        required=())`` (everything after ``channel`` by keyword). ``channel`` is ``email``, ``sms`` or ``chat``; ``text``/``subject``/``html``
        are Jinja2 templates rendered in a sandbox with the notification's ``data`` as variables
        (``html`` autoescaped); ``blocks`` is a Jinja2 template producing a JSON list of Slack blocks.
        ``required`` names the variables that must be present: a missing one is a 422 naming it.
        A later registration of the same ``(name, channel)`` replaces an earlier one; tenants'
        templates from ``hub.yaml`` replace both.
    :returns: nothing.
    """


@hookspec(historic=True)
def register_handlers(register: Callable[..., None]) -> None:
    """Contribute event handlers that subscriptions in ``hub.yaml`` can name.

    Called once when the plugin is loaded (historic).

    :param register: call ``register(name, handler)``. ``hub.yaml`` names it as
        ``subscriptions.<name>.handler: {type: callable, name: <name>}``. ``handler(record, subscription)``
        is called by the subscription's worker thread with a :class:`hub.capabilities.ConsumedRecord` and
        its :class:`hub.capabilities.Subscription`, one record at a time, in offset order per partition.
        Returning (any value) means handled: the offset is committed after it. Raising means not handled:
        the hub calls it again with backoff (an error's ``retry_after`` seconds, e.g. a receiver's
        ``Retry-After``, stretch the wait, up to 10 minutes), and after the subscription's ``max_attempts``
        records the record as a dead letter and moves on; raise :class:`~hub.errors.PermanentError` to skip
        the retries.
        Delivery is at-least-once: after a crash a record may be handled twice, so make the handler
        idempotent (``record.event().id`` is stable). A later registration of the same name replaces an
        earlier one.
    :returns: nothing.
    """


@hookspec(historic=True)
def register_handler_types(register: Callable[..., None]) -> None:
    """Contribute a kind of subscription handler that ``hub.yaml`` configures (an outbound webhook, an action).

    Called once when the plugin is loaded (historic).

    :param register: call ``register(type_name, factory, settings_schema)``. ``hub.yaml`` then says
        ``subscriptions.<name>.handler: {type: <type_name>, <settings>...}``; the settings (without ``type``) are
        loaded with ``settings_schema`` (a marshmallow ``Schema`` class: a bad value stops start-up naming its
        key, ``subscriptions.<name>.handler.url``), then ``factory(settings, context)`` is called once per
        subscription and returns the handler: ``handler(record, subscription)``, with the contract of
        :func:`register_handlers` (return: handled and committed; raise: retried with backoff, then a dead
        letter; :class:`~hub.errors.PermanentError`: a dead letter at once). ``context`` is a
        :class:`hub.capabilities.HandlerContext`: the subscription's ``name`` and ``tenant``, and ``hub()`` -- the
        :class:`~hub.manager.IntegrationManager`, for handlers that notify, publish or sync. A handler may have
        a ``label`` attribute (``webhook https://erp.example/…``) for the subscription's status.
    :returns: nothing.
    """


@hookspec(historic=True)
def register_event_schemas(register: Callable[..., None]) -> None:
    """Contribute a JSON Schema (draft 2020-12) for the ``data`` of an event type and version.

    Called once when the plugin is loaded (historic).

    :param register: call ``register(event_type, version, schema, breaking=False)``: ``event_type`` a dotted
        lower-case name (``inventory.stock.updated``), ``version`` an integer from 1, ``schema`` a JSON Schema
        dict. Events of that type published through the hub (``POST /events``, the Python API, the hub's own
        ``payment.*`` events) are validated against the newest version -- or the one they name in
        ``schemaVersion`` -- and refused with a 422 naming the field (``data.quantity``). A new version must be
        backward compatible with the one before (every event valid under the old one stays valid: no new
        required field, no narrowed type, enum or bound, no property removed where others are refused); a
        version that is not is refused (the plugin's load reports it) unless ``breaking=True``. Schemas from
        ``hub.yaml`` (``event_schemas``) and a tenant's own (``PUT /events/schemas/<type>/<version>``) follow
        the same rules; ``GET /events/schemas`` lists them all.
    :returns: nothing.
    """


# --- notify ------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def notify(message: Message) -> NotifyResult:
    """Deliver ``message`` on ``message.channel`` to every recipient in ``message.recipients``.

    Called by a delivery worker (or the API thread for small sends) after the template was rendered
    and recipients validated: email addresses are syntactically valid, phone numbers are E.164.
    A bulk send arrives in batches of up to a few hundred recipients: reuse connections for them. The core
    sends a notification's batches one after another, so a provider that can send in parallel (several
    pooled connections) does it within the call, spreading the batch's recipients over them; the call returns
    once every recipient has its result. The whole batch is noted as in flight before the call, so a crash
    during it repeats at most this batch's recipients, however they were spread.

    :param message: a :class:`hub.capabilities.Message`. ``message.id`` is the *batch's* id,
        ``<notification id>-<channel>-<index of its first recipient>``, stable across retries of that batch
        -- use it as the provider's idempotency key where there is one. ``message.notification_id`` is the
        notification the batch belongs to (what the caller got as ``messageId``) and ``message.batch_index``
        the batch's position in it (0 for a small send). Also set: ``tenant``, ``channel``, ``recipients``
        (``address`` and ``name``), ``text``, ``subject`` (email), ``html`` (email, when the template has it),
        ``blocks`` (chat), ``template``, ``priority`` and ``metadata`` (``recordId``).
    :returns: a :class:`hub.capabilities.NotifyResult` with one ``RecipientResult`` per recipient, in
        order: ``status="sent"`` (or ``"queued"`` when the provider reports delivery later through
        :func:`handle_webhook`) with the provider's message id, or ``status="failed"`` with the reason
        when *that recipient* was refused (an unreachable number). Recipients marked failed are not
        retried. When a batch fails part-way (a connection dropped after some sends), mark the
        recipients not sent ``status="retry"``: the core hands only those to the next provider (or
        keeps them for a later retry), so nobody gets the message twice.
    :raises TransientError: only when nothing in the batch was sent and trying again may help (the core
        retries the call on this provider, then fails over). Once some recipients were sent, return
        ``retry`` for the rest instead (``NotifyResult.cut_short`` does it): nothing needs remembering.
    :raises ConfigurationError: bad credentials or settings; the next provider is tried.
    :raises PermanentError: the provider refused the whole batch for good (the message itself is
        invalid); every recipient of the batch is marked failed with the reason, nothing is retried.

    ``provider_message_id`` must identify one recipient's message uniquely (webhooks are matched by
    it); a good choice when the provider has no id of its own is ``f"{message.id}:{index}"``.
    """


# --- pay ---------------------------------------------------------------------------------------
#
# Statuses: every pay hook returns a PaymentResult whose ``status`` is one of
# hub.capabilities.PAYMENT_STATUSES (requires_action, processing, requires_capture, succeeded, failed,
# canceled, refunded, partially_refunded), with the provider's own word in ``raw_status``.
#
# Which error when the network fails: the rule that keeps a customer from being charged twice.
# * TransientError: the request certainly did nothing (connection refused, DNS failure, a 429 or 503 the
#   provider documents as "not processed"). Retried, then the next gateway is tried.
# * OutcomeUnknownError: the request may have been processed (a timeout after sending, a connection reset
#   while reading the answer, a 500 from the gateway). Retried on the same gateway with the same
#   idempotency key, then looked up with payment_status; never sent to another gateway.


@hookspec(firstresult=True)
def pay(payment: PaymentRequest) -> PaymentResult:
    """Charge (or, with ``payment.capture`` false, authorise) ``payment.amount`` in ``payment.currency``.

    Called on ``POST /payments`` (and ``IntegrationManager.process_payment``) on the gateway the request
    names, else on the payment service's gateways in priority order -- the next one only when this one
    raised an error proving nothing was charged.

    :param payment: a :class:`hub.capabilities.PaymentRequest`. ``amount`` is a ``Decimal`` in major units
        (``10.00``). Pass ``payment.idempotency_key`` to the provider's idempotency mechanism: the core calls
        again with the same key after a timeout, and that call must return the first payment, not make a
        second one. Send ``payment.id`` along (as metadata ``hub_payment_id``) so :func:`payment_status` can
        find the payment when the answer was lost. ``payment.capture`` false: authorise only and return
        ``requires_capture``; only providers implementing :func:`capture` are sent such payments. A gateway
        that takes integers of the minor unit converts with ``hub.capabilities.to_minor_units(amount,
        currency)`` (exact, ISO 4217: 1050 for USD 10.50, 1500 for JPY 1500, 1234 for KWD 1.234) and reads its
        answers with ``from_minor_units``; the hub has refused amounts the currency cannot carry already.
    :returns: a :class:`hub.capabilities.PaymentResult`; ``transaction_id`` is the provider's id, used for
        refunds, captures, lookups and to match webhooks. ``status`` is ``succeeded`` (``requires_capture``
        when not capturing), ``requires_action``, ``processing`` (settled later: by a webhook or a lookup) or
        ``failed``; ``raw_status`` the provider's own word.
    :raises PermanentError: the payment was declined or is invalid (set ``provider_code``, e.g.
        ``card_declined``); the caller sees a 422.
    :raises TransientError: the provider could not be reached and **no charge was made**; only then may
        the core fail over to another gateway.
    :raises OutcomeUnknownError: the request may have reached the provider (timeout after sending, connection
        dropped while reading the answer). The core retries this gateway with the same idempotency key, then
        calls :func:`payment_status`; the payment stays ``processing`` until the outcome is known.
    :raises ConfigurationError: credentials missing or rejected (the next gateway is tried).
    """


@hookspec(firstresult=True)
def payment_status(lookup: PaymentLookup) -> PaymentResult | None:
    """Look a payment up at the provider: its status now.

    Called after :func:`pay` raised :class:`~hub.errors.OutcomeUnknownError` on every try (no
    ``transaction_id`` then), by the reconciliation job for payments still ``processing``, and on
    ``GET /payments/<id>?refresh=true``. Always on the gateway that took (or may have taken) the payment.

    :param lookup: a :class:`hub.capabilities.PaymentLookup`. With ``transaction_id`` set, fetch that
        payment. Without it, search by ``idempotency_key``, then by ``payment_id`` (what ``pay`` sent as
        metadata ``hub_payment_id``) or ``order_id`` with ``amount`` and ``currency``, as the provider can.
    :returns: a :class:`hub.capabilities.PaymentResult` as :func:`pay` does -- with ``amount_captured`` and
        ``amount_refunded`` when the provider says, and ``partially_refunded`` / ``refunded`` once refunds
        were made -- or ``None`` when the provider has **no payment** for that key (nothing was charged: the
        core may then mark the payment failed). Return ``None`` only when sure; a payment of another tenant
        counts as none.
    :raises UnsupportedError: the provider cannot search by what ``lookup`` carries (only by
        ``transaction_id``, say): the payment stays ``processing`` until a webhook settles it.
    :raises TransientError: the provider could not be reached (looked up again later).
    """


@hookspec(firstresult=True)
def capture(capture: CaptureRequest) -> PaymentResult:
    """Optional (required to accept ``capture=False`` payments). Take the money of an authorised payment.

    Called on ``POST /payments/<id>/capture`` (``IntegrationManager.capture_payment``) for a payment in
    ``requires_capture``, on the gateway that authorised it.

    :param capture: a :class:`hub.capabilities.CaptureRequest`: ``transaction_id``, ``amount`` (``None`` for
        the whole authorisation; less for a partial capture, the rest being released), ``currency`` and
        ``idempotency_key`` (pass it on, as for :func:`pay`).
    :returns: the :class:`hub.capabilities.PaymentResult` after the capture: ``succeeded``, with
        ``amount_captured`` the amount taken.
    :raises NotFoundError: unknown transaction.
    :raises PermanentError: not capturable (not ``requires_capture``, authorisation expired, ``amount``
        above the authorised amount).
    :raises OutcomeUnknownError: as for :func:`pay`; retried with the same idempotency key.
    """


@hookspec(firstresult=True)
def cancel(cancel: CancelRequest) -> PaymentResult:
    """Optional. Cancel a payment that has taken no money: an authorisation (``requires_capture``), or one
    in ``requires_action`` or ``processing`` where the provider allows it.

    Called on ``POST /payments/<id>/cancel`` (``IntegrationManager.cancel_payment``), on the gateway that
    took the payment.

    :param cancel: a :class:`hub.capabilities.CancelRequest`: ``transaction_id``, ``reason`` and
        ``idempotency_key``.
    :returns: the :class:`hub.capabilities.PaymentResult` after cancelling: ``canceled``.
    :raises NotFoundError: unknown transaction.
    :raises PermanentError: the payment cannot be cancelled (it succeeded: refund it instead; it failed).
    """


@hookspec(firstresult=True)
def refund(refund: RefundRequest) -> RefundResult:
    """Refund all (``refund.amount is None``) or part of an earlier payment.

    Called only for payments the hub holds as ``succeeded`` or ``partially_refunded``, for at most what is
    left (captured minus refunded); always on the provider that took the payment.

    :param refund: a :class:`hub.capabilities.RefundRequest`; ``transaction_id`` is what :func:`pay`
        returned; pass ``idempotency_key`` on, as for :func:`pay`.
    :returns: a :class:`hub.capabilities.RefundResult`: ``status`` ``succeeded``, ``processing`` or
        ``failed``, ``amount`` the ``Decimal`` refunded.
    :raises NotFoundError: unknown transaction. :raises PermanentError: refund refused (more than what is
        left to refund, payment not captured).
    :raises OutcomeUnknownError: as for :func:`pay`; retried with the same idempotency key.
    """


# --- store -------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def store(file: StoredFile, stream: UploadStream) -> StoredFile:
    """Store the bytes read from ``stream`` under ``file.key``, with ``file.content_type`` and ``file.metadata``.

    Called for every upload (``POST /files`` multipart, raw body or base64 JSON; ``upload_file`` in Python)
    after the core checked the content type, on the ``fileStorage`` providers in priority order.

    :param file: a :class:`hub.capabilities.StoredFile`. The key is tenant-prefixed and unique: never change
        it; overwrite silently when it exists (a retried upload writes the same bytes). ``file.size`` is the
        length the client announced, or ``None``: a hint only, do not rely on it before the stream ends.
        ``file.checksum`` is ``None``: the core computes SHA-256 (and sniffs the content type) on the
        stream as it passes.
    :param stream: a :class:`hub.capabilities.UploadStream`, a readable binary file object that may be read
        **once**, from start to end, and cannot seek. Read it in chunks (``shutil.copyfileobj``,
        ``upload_fileobj``); never ``stream.read()`` without a size, which would hold the whole file in
        memory. Do not close it (the core does, after the hook returned) and do not keep it. Once ``read()``
        returned ``b""``, ``stream.size`` and ``stream.checksum`` (SHA-256 hex) are final.
    :returns: the same ``StoredFile`` (``dataclasses.replace`` it), with ``url`` set when the provider has a
        permanent URL for it (leave ``None``: the API serves the file itself).
    :raises: when ``read()`` raises (:class:`~hub.errors.PayloadTooLargeError` past the size limit,
        :class:`~hub.errors.IncompleteUploadError` when the client went away or sent less than it announced),
        let it propagate. Whatever stops an upload half-way, **no partial object may become visible under
        the key** (and an existing one stays as it was): write to a temporary name and rename at the end, or
        abort the multipart upload. ``TransientError`` is retried (the core rewinds the stream when it can:
        a request body read past its first 64 KiB cannot be replayed, and then the upload fails with 503),
        then the next provider is tried; ``PermanentError`` gives 422.
    """


@hookspec(firstresult=True)
def store_read(key: str, byte_range: tuple[int, int | None] | None) -> BinaryIO:
    """Open the content stored under ``key``, or the part ``byte_range`` names, for reading.

    :param key: what :func:`store` was given.
    :param byte_range: ``None`` for everything, else ``(first, last)``: byte offsets, both **inclusive**
        (as in HTTP ``Range``; S3 and GCS take them as they are), ``last=None`` meaning to the end. The
        core resolves the client's ``Range`` against the file's size first: ``0 <= first``, and
        ``first <= last < size`` when ``last`` is set.
    :returns: a readable binary file object (anything with ``read(size)``) giving exactly those bytes;
        wrap an SDK's chunk iterator in :class:`hub.capabilities.IteratorStream` and a seekable file in
        :class:`hub.capabilities.LimitedReader`. The core reads it in chunks as the client downloads and
        calls its ``close()`` when done or when the client goes away. Do not read the content into memory.
    :raises NotFoundError: no such key.
    """


@hookspec(firstresult=True)
def store_head(key: str) -> StoredObject:
    """Describe what is stored under ``key`` without reading it: size, content type, metadata, checksum or
    entity tag (a ``HEAD``).

    :returns: a :class:`hub.capabilities.StoredObject`; ``checksum`` is the core's SHA-256 when the provider
        kept it, ``etag`` the provider's own tag, ``None`` where unknown.
    :raises NotFoundError: no such key (a half-written upload must not be found either).
    """


@hookspec(firstresult=True)
def store_delete(key: str) -> bool:
    """Delete ``key``. Returns ``True`` if it existed, ``False`` if it did not (not an error: deleting is
    idempotent)."""


@hookspec(firstresult=True)
def store_url(key: str, expires_in: int) -> str | None:
    """Optional. A time-limited URL to download ``key`` directly from the provider (a presigned URL),
    valid ``expires_in`` seconds, or ``None`` when the provider has no such thing (the API then serves
    the file itself)."""


@hookspec(firstresult=True)
def store_upload_url(file: StoredFile, expires_in: int) -> PresignedUpload | None:
    """Optional. A time-limited way for a client to upload ``file`` straight to the provider (an S3
    presigned PUT or POST, a GCS signed URL, an Azure SAS URL), bypassing the hub.

    :param file: the :class:`~hub.capabilities.StoredFile` the upload will create: ``key``,
        ``content_type``, ``metadata`` and ``size`` (the length the client announced, or ``None``). Bind
        what the provider can bind (content type, length, metadata) into the signature.
    :param expires_in: seconds the URL must stay valid.
    :returns: a :class:`hub.capabilities.PresignedUpload`, or ``None`` when the provider cannot presign.
        The core confirms the upload afterwards with :func:`store_head`.
    """


# --- publish -----------------------------------------------------------------------------------


@hookspec(firstresult=True)
def publish(event: Event) -> PublishResult:
    """Publish ``event`` to ``event.topic``. Publish ``event.envelope()`` as the JSON value and
    ``event.key`` (if set) as the message key, so ordering per key holds where the broker offers it.

    Called on ``POST /events`` (and by the subscription workers for dead letters), from API or worker
    threads, several at a time.

    :returns: a :class:`hub.capabilities.PublishResult` with the partition and offset written, once the
        broker acknowledged the write.
    :raises TransientError: the broker was unreachable or did not acknowledge the write -- also when the request
        timed out after it was sent: publishing is at-least-once, every event carries its stable ``id`` (the
        CloudEvents ``id`` and ``ce_id`` header), and a consumer drops a duplicate by it, so the core may retry
        and fail over (unlike a payment, where :class:`~hub.errors.OutcomeUnknownError` keeps it on one gateway).
    :raises PermanentError: the event is invalid for this broker (a bad topic name, a message too large).
    """


@hookspec(firstresult=True)
def publish_batch(events: list[Event]) -> list[PublishResult]:
    """Optional. Publish several events in one round trip (``POST /events/batch``). Without it the core
    calls :func:`publish` once per event.

    :param events: up to a few hundred events, possibly for several topics, each to publish as
        :func:`publish` would. Events with the same key keep their order.
    :returns: exactly one :class:`hub.capabilities.PublishResult` per event, in order. An event the
        broker refused or did not acknowledge while others were written gets
        ``PublishResult.failed(topic, reason)``: the core publishes only those again (same event id).
    :raises TransientError: only when *nothing* was written.
    :raises PermanentError: the whole batch is invalid (nothing was written).
    """


@hookspec(firstresult=True)
def consume(subscription: Subscription, max_records: int, timeout: float) -> list[ConsumedRecord]:
    """Optional (with :func:`commit` and :func:`unsubscribe`). Return the next records of a subscription.

    Called in a loop by the hub's worker for ``subscription`` -- one thread, in the one hub process that
    holds the subscription's lease. ``consume``, ``commit`` and ``unsubscribe`` for one subscription are
    called from that thread only, never concurrently; different subscriptions are consumed from different
    threads at once, so keep the consumer state per subscription. The hub calls the handler itself: never
    start a thread that calls back into the hub.

    :param subscription: a :class:`hub.capabilities.Subscription`: ``group`` (the consumer group id,
        tenant-prefixed), ``topics``, and ``start`` (``earliest``/``latest``). On the first call for a
        subscription (and after :func:`unsubscribe`) join the group and start each partition at the
        group's committed offset; where the group has none, at ``start`` -- and commit that position at
        once, so a restart resumes there instead of resolving ``latest`` again (a record published in
        between would be skipped). Later calls continue after the records already returned, whether or
        not they were committed.
    :param max_records: return at most this many records. ``0`` is a keep-alive, called while the
        hub retries a failing handler: return ``[]`` at once *without* moving the position, but let the
        broker know the consumer is alive (a Kafka provider pauses its partitions, polls, and resumes).
    :param timeout: seconds to wait when no record is ready; return ``[]`` when none arrived in time.
    :returns: a list of :class:`hub.capabilities.ConsumedRecord`, in offset order within each partition;
        ``value`` is the decoded JSON value (for hub events, the :meth:`~hub.capabilities.Event.envelope`).
    :raises TransientError: the broker is unreachable; the worker waits and calls again (records fetched
        but not returned must not be lost: return them on the next call).
    :raises ConfigurationError: credentials rejected, a topic missing; the worker stops the subscription
        and reports it.
    """


@hookspec(firstresult=True)
def commit(subscription: Subscription, offsets: list[PartitionOffset]) -> None:
    """Optional (with :func:`consume`). Durably commit the group's position after the hub handled records.

    Called by the subscription's worker (same thread as its :func:`consume`) once the handler succeeded
    for every record up to these offsets (or a failing record was recorded as a dead letter): at-least-once
    delivery depends on committing nothing earlier.

    :param subscription: as given to :func:`consume`.
    :param offsets: per partition, the *next* offset to consume (last handled offset + 1), as
        :class:`hub.capabilities.PartitionOffset`. Partitions not listed keep their committed offset.
    :returns: nothing, once the commit is durable (a restart resumes from these offsets).
    :raises TransientError: the commit did not happen (broker unreachable, or the group rebalanced and
        this consumer lost the partitions). The worker unsubscribes and consumes again from the committed
        offsets: the records since are delivered again, never lost.
    """


@hookspec(firstresult=True)
def unsubscribe(subscription: Subscription) -> None:
    """Optional (with :func:`consume`). The worker for ``subscription`` stopped: leave the group, close the
    consumer and forget its position.

    Called from the subscription's worker thread when the hub shuts down, the subscription's lease was
    lost, or the worker starts over after a failed commit. The next :func:`consume` for the subscription
    (in this process or another) starts again from the committed offsets, so records returned but not
    committed are delivered again. Unsubscribing a subscription that is not consuming is not an error.
    """


@hookspec(firstresult=True)
def consumer_groups() -> list[ConsumerGroup]:
    """Optional. Every consumer group the broker knows, as :class:`hub.capabilities.ConsumerGroup`
    (``group_id``, ``state``, ``members``, ``topics`` and per-partition ``committed``/``end``/``lag``).

    Called on ``GET /events/consumer-groups``. Return them all: the core shows a tenant only the groups
    whose id starts with ``<tenant>.`` or ``<tenant>-``. Leave out what the broker cannot tell
    (``end=None``), never guess.
    """


@hookspec(firstresult=True)
def reset_offsets(group: str, topic: str, to: OffsetReset) -> list[PartitionOffset]:
    """Optional. Move ``group``'s committed offsets in ``topic`` (``POST /events/consumer-groups/<group>/reset``).

    The core pauses the hub's own subscription of that group first, so the group has no active members
    when this is called; a group that still has some (a consumer outside the hub) must be refused.

    :param group: the consumer group id (already checked to be the calling tenant's).
    :param topic: the topic whose partitions to move.
    :param to: a :class:`hub.capabilities.OffsetReset`: ``earliest``, ``latest``, ``timestamp`` (the
        first offset at or after ``to.timestamp``, else the end) or ``explicit`` (``to.offsets``, partition ->
        offset; only those partitions move).
    :returns: the new committed offsets, one :class:`hub.capabilities.PartitionOffset` per partition moved.
    :raises InUseError: the group has active members.
    :raises PermanentError: an explicit partition or offset that does not exist (past the end).
    """


@hookspec(firstresult=True)
def list_topics() -> list[str]:
    """Optional. The topic names the broker has for the hub (``GET /events/topics``), without any prefix the
    provider adds; internal topics (``__consumer_offsets``) left out."""


@hookspec(firstresult=True)
def create_topic(topic: TopicSpec) -> bool:
    """Optional. Create a topic (``POST /events/topics``) with ``topic.partitions``, ``replication_factor`` and
    ``retention_ms`` (``None``: the provider's defaults).

    :returns: ``True`` when it was created, ``False`` when it existed already (not an error).
    :raises PermanentError: the broker refuses it (an invalid name, more replicas than brokers).
    """


@hookspec(firstresult=True)
def delete_consumer_group(group: str) -> bool:
    """Optional. Delete ``group`` and its committed offsets (``DELETE /events/consumer-groups/<group>``). The core
    pauses the hub's own subscriptions of the group first (as for :func:`reset_offsets`) and checks the group is
    the calling tenant's.

    :returns: ``True`` when it existed, ``False`` for an unknown group.
    :raises InUseError: the group still has active members (a consumer outside the hub): Kafka refuses then.
    """


# --- sync --------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def sync(request: SyncRequest) -> SyncResult:
    """Return one page of ``request.data_type`` records (the stream), starting after ``request.cursor``.

    The **core** pages: it calls ``sync`` with ``cursor=None`` on a first run (or a full resync), then
    again with the ``cursor`` each result returns while ``has_more`` is true. After each page it stores
    the records (deduplicated by primary key) and saves the cursor per tenant, provider and stream *in
    the same transaction*, so a run that fails part-way resumes after the last stored page, and the next
    run starts where this one ended: return only records changed since (an ``updated_at`` or change-log
    cursor) where the source can tell. Do not loop over the source's pages yourself.

    :param request: a :class:`hub.capabilities.SyncRequest`. ``cursor`` is ``None`` or a string this
        provider returned earlier, unchanged. ``page_size`` is the most records to return (fewer is
        fine: a source may cap its pages). ``options`` narrow the fetch (``{"supplierId": ...}``,
        ``{"location": ...}``); the core keeps one cursor per set of options.
    :returns: a :class:`hub.capabilities.SyncResult`: ``records`` (JSON-serialisable dicts, at most
        ``page_size``), ``cursor`` (where the next page or run starts; it must change while
        ``has_more``), ``has_more``, optionally ``primary_key`` (the fields identifying a record;
        ``("id",)`` by default) and ``deleted`` (records gone from the source since the cursor, by their
        primary-key fields: the core removes its copies in the page's transaction). For ``data_type == "inventory"`` each record has ``sku``, ``location``
        and ``quantity`` (the primary key is ``(sku, location)``); the core keeps one level per SKU,
        location and provider, with the history of each run as a snapshot.
    :raises UnsupportedError: the source does not offer ``data_type`` (say which it offers); the core
        then asks the next sync provider.
    :raises PermanentError: the request is invalid for this source (a bad option value, a cursor it
        cannot read -- the user then asks for a full resync).
    :raises TransientError: the source could not be reached (set ``retry_after`` when it says when to
        come back); the pages already stored are kept and a later attempt resumes after them.
    :raises ProviderThrottledError: a rate or cost limit refused the call (a 429, GraphQL ``THROTTLED``):
        set ``retry_after`` to the wait the source tells; the core waits exactly that (up to
        ``retry.max_retry_after``) and does not count it against the circuit breaker. ``hub.http`` raises it
        for HTTP 429.
    """


@hookspec(firstresult=True)
def sync_push(push: InventoryPush) -> PushResult:
    """Optional. Send quantity updates to the external system (``POST /inventory/updates``).

    Each :class:`hub.capabilities.InventoryUpdate` in ``push.updates`` names a ``sku`` and ``location``
    and either sets the level (``mode="set"``, ``quantity`` is the new level) or changes it
    (``mode="adjust"``, ``quantity`` is added, negative to take away). Updates of one push go to one
    provider only: they are never failed over to another system.

    :param push: a :class:`hub.capabilities.InventoryPush`. Each update's ``id`` is stable across
        retries, also when it is retried without the others: use it as the system's idempotency key.
    :returns: a :class:`hub.capabilities.PushResult` with one ``PushItemResult`` per update, in order:
        ``sent`` (applied; set ``quantity`` to the resulting level when the system tells it), ``failed``
        with the reason when the system refused *that* update (unknown SKU or location), or ``retry``
        when it was not applied because of a transient problem: the core sends only those again later,
        so no adjustment is applied twice.
    :raises TransientError: only when nothing was applied and trying again may help; once some updates
        were applied, return ``retry`` for the rest (``PushResult.cut_short`` does it).
    :raises ConfigurationError: bad credentials or settings.
    :raises PermanentError: the whole push was refused; every update is marked failed with the reason.
    """


# --- every provider ----------------------------------------------------------------------------


@hookspec(firstresult=True)
def health() -> HealthResult:
    """Optional. Check the provider's configuration and, where the API allows it cheaply, its
    credentials (an SMTP ``NOOP`` after login, fetching the account). Called by ``GET /health``: keep it
    under a few seconds. Return ``HealthResult("error", reason)`` rather than raising. Without this hook a
    provider counts as healthy when it was built without error."""


@hookspec(firstresult=True)
def handle_webhook(webhook: WebhookRequest) -> list[WebhookEvent]:
    """Optional. Verify and parse a request the provider sent to ``POST /webhooks/<provider name>``.

    ``webhook.headers`` is looked up case-insensitively (``webhook.headers["x-twilio-signature"]``
    finds ``X-Twilio-Signature`` whatever case a proxy forwarded); ``webhook.body`` is the raw body,
    byte for byte as received (sign over it, never over re-encoded JSON); ``?tenant=<id>`` in the URL
    selects that tenant's instance (its own secrets) to verify with.

    The core then deduplicates the events by ``(provider, event_id)`` -- a provider retrying the same
    webhook updates nothing twice -- and hands each to the service that owns the record its ``reference``
    names (a notification's recipient, a payment...).

    :returns: the status changes it carries, as :class:`hub.capabilities.WebhookEvent`; the core
        deduplicates them by ``event_id`` and updates the matching delivery or payment records. A
        ``status`` of ``bounced``, ``failed``, ``undelivered`` or ``dropped`` marks the recipient failed.
        For a payment, ``status`` is one of ``hub.capabilities.PAYMENT_STATUSES`` and moves the payment
        to it when it is further along (a late ``processing`` after ``succeeded`` is ignored).
        A **sync source** reports a changed stock level with ``type=hub.capabilities.INVENTORY_LEVEL_EVENT``
        (``"inventory.level"``) and ``details={"sku", "location", "quantity", "updatedAt"?}``, using the same
        SKU and location its ``sync`` records carry (resolve the provider's own ids first); ``reference`` is
        free. The core sets that provider's level for the webhook's tenant (``?tenant=``, else the default
        tenant) without a matching record, ignores an ``updatedAt`` older than the level it holds, and runs
        the same low-stock and discrepancy checks as a sync.
    :raises SignatureError: the signature is missing or does not verify (the API answers 401).
    """


@hookspec
def close() -> None:
    """Optional. Release connections and flush buffers; called on ``POST /shutdown`` and when a server
    process exits. The same instance serves again after ``POST /initialize``: reopen lazily."""
