"""The sync contract: paging to the end, resuming from a cursor, and pushing updates."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from hub.capabilities import (
    PUSH_STATUSES,
    InventoryPush,
    InventoryUpdate,
    PushItemResult,
    PushResult,
    SyncRequest,
    SyncResult,
    primary_key_of,
    record_key,
    to_dict,
)
from hub.errors import PermanentError

if TYPE_CHECKING:
    from hub.testing import ProviderHarness

from hub.testing.contracts.basics import (
    CONTRACT_TENANT,
    _expect,
    _expect_error,
    _label,
    _require,
    _unique,
)


def check_sync(
    harness: ProviderHarness,
    provider: Any,
    data_type: str,
    expect_min: int = 1,
    options: dict[str, Any] | None = None,
    *,
    page_size: int = 2,
    max_pages: int = 1000,
    push_updates: Sequence[InventoryUpdate] | None = None,
    read_back: bool = True,
    tenant: str = CONTRACT_TENANT,
) -> SyncResult:
    """``sync`` pages as the core pages it: from ``cursor=None`` to ``has_more=False`` with pages of at
    most ``page_size`` JSON-serialisable dict records (inventory ones with ``sku``, ``location`` and
    ``quantity``) and a cursor that moves on while ``has_more``; the same records (by primary key)
    whatever the page size; resuming from a page's cursor returns the rest; the final cursor returns
    nothing new; an unknown data type raises ``PermanentError`` (ideally ``UnsupportedError``, so the
    core tries the next source).

    For ``inventory`` and a provider with ``sync_push``: the push returns one ``PushItemResult`` per
    update, in order, each ``sent``, ``failed`` (with an error) or ``retry``. Without ``push_updates``
    the check sets the first record's quantity to 3 more, adjusts it by -1, expects both ``sent`` and
    (``read_back``) the new level in a sync from the final cursor, then sets it back.

    :param page_size: the small page size of the first pass (a second pass uses a large one).
    :param push_updates: updates to push instead of the default ones (then only their results are checked).
    :param read_back: check that pushed levels show in the next incremental sync; pass ``False`` for a
        system that applies updates later.
    :returns: every record read, deduplicated by primary key, with the final cursor.
    """
    _require(page_size >= 1, "check_sync: page_size must be at least 1")
    options = dict(options or {})

    def read(cursor: str | None, size: int, what: str) -> tuple[list[SyncResult], str | None]:
        pages: list[SyncResult] = []
        for _ in range(max_pages):
            request = SyncRequest(
                id=_unique("contract-sync"),
                tenant=tenant,
                data_type=data_type,
                options=dict(options),
                cursor=cursor,
                page_size=size,
            )
            page = harness.call(provider, "sync", request=request)
            _check_sync_page(provider, data_type, page, size, f"{what}, page {len(pages) + 1}")
            pages.append(page)
            if not page.has_more:
                return pages, page.cursor
            _expect(
                page.cursor is not None and page.cursor != cursor,
                provider,
                f"{what}, page {len(pages)}: has_more is true but the cursor did not move ({page.cursor!r}); "
                "the core would ask for the same page forever",
            )
            cursor = page.cursor
        raise AssertionError(f"{_label(provider)}: {what} still has_more after {max_pages} pages of {size}")

    pages, final_cursor = read(None, page_size, f"sync({data_type!r}) with page_size={page_size}")
    key_fields = primary_key_of(data_type, pages[0].primary_key)
    everything = _by_key(pages, key_fields)
    _expect(
        len(everything) >= expect_min,
        provider,
        f"sync({data_type!r}) returned {len(everything)} distinct records, expected at least {expect_min}",
    )
    large = max(100, page_size * 50)
    in_large_pages = _by_key(read(None, large, f"sync({data_type!r}) with page_size={large}")[0], key_fields)
    _expect(
        set(in_large_pages) == set(everything),
        provider,
        f"paging lost or invented records: pages of {page_size} gave {len(everything)} records, pages of {large} "
        f"gave {len(in_large_pages)}; differing keys: {sorted(set(in_large_pages) ^ set(everything))[:5]}",
    )
    if len(pages) > 1:
        rest = _by_key(read(pages[0].cursor, page_size, "resuming from the first page's cursor")[0], key_fields)
        resumed = set(_by_key(pages[:1], key_fields)) | set(rest)
        _expect(
            resumed == set(everything),
            provider,
            "resuming from the first page's cursor did not return the rest: a run interrupted after a page would "
            f"lose {sorted(set(everything) - resumed)[:5]}",
        )
    again = _by_key(read(final_cursor, page_size, "syncing again from the final cursor")[0], key_fields)
    new = sorted(set(again) - set(everything))
    _expect(not new, provider, f"syncing again from the final cursor returned records never seen before: {new[:5]}")

    unknown = _unique("contract-no-such-type")
    _expect_error(
        PermanentError,
        provider,
        f"sync() of the unknown data type {unknown!r}",
        lambda: harness.call(
            provider, "sync", request=SyncRequest(id=_unique("contract-sync"), tenant=tenant, data_type=unknown)
        ),
    )
    if data_type == "inventory" and harness.implements(provider, "sync_push"):
        _check_sync_push(
            harness,
            provider,
            list(everything.values()),
            final_cursor,
            push_updates,
            read_back,
            read,
            key_fields,
            tenant,
        )
    return SyncResult(list(everything.values()), cursor=final_cursor, has_more=False, primary_key=pages[0].primary_key)


def _check_sync_page(provider: object, data_type: str, page: Any, page_size: int, where: str) -> None:
    _expect(isinstance(page, SyncResult), provider, f"{where}: sync() returned {page!r}, not a SyncResult")
    _expect(isinstance(page.records, list), provider, f"{where}: SyncResult.records must be a list")
    _expect(
        len(page.records) <= page_size,
        provider,
        f"{where}: {len(page.records)} records for page_size={page_size}; return at most page_size and has_more=True",
    )
    _expect(isinstance(page.has_more, bool), provider, f"{where}: SyncResult.has_more must be True or False")
    _expect(
        page.cursor is None or isinstance(page.cursor, str),
        provider,
        f"{where}: SyncResult.cursor must be a string or None",
    )
    _expect(
        isinstance(page.primary_key, tuple | list) and all(isinstance(name, str) for name in page.primary_key),
        provider,
        f"{where}: SyncResult.primary_key must be a tuple of field names",
    )
    for index, record in enumerate(page.records):
        _expect(isinstance(record, dict), provider, f"{where}: record {index} is {type(record).__name__}, not a dict")
        if data_type == "inventory":
            missing = [name for name in ("sku", "location", "quantity") if name not in record]
            _expect(
                not missing,
                provider,
                f"{where}: inventory record {index} lacks {missing}: the core stores sku, location, quantity",
            )
    try:
        json.dumps(to_dict(page.records))
    except (TypeError, ValueError) as error:
        raise AssertionError(f"{_label(provider)}: {where}: records are not JSON-serialisable ({error})") from error


def _by_key(pages: Sequence[SyncResult], key_fields: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    return {record_key(record, key_fields): record for page in pages for record in page.records}


def _check_sync_push(
    harness: ProviderHarness,
    provider: Any,
    records: list[dict[str, Any]],
    final_cursor: str | None,
    push_updates: Sequence[InventoryUpdate] | None,
    read_back: bool,
    read: Callable[[str | None, int, str], tuple[list[SyncResult], str | None]],
    key_fields: tuple[str, ...],
    tenant: str,
) -> None:
    def push(updates: Sequence[InventoryUpdate], action: str) -> PushResult:
        request = InventoryPush(
            id=_unique("contract-push"), tenant=tenant, updates=list(updates), metadata={"contract": "sync"}
        )
        original = copy.deepcopy(request)
        result = harness.call(provider, "sync_push", push=request)
        _expect(
            isinstance(result, PushResult), provider, f"{action}: sync_push() returned {result!r}, not a PushResult"
        )
        _expect(
            request == original, provider, f"{action}: sync_push() changed the InventoryPush; the core retries with it"
        )
        _expect(
            isinstance(result.results, list) and len(result.results) == len(updates),
            provider,
            f"{action}: {len(getattr(result, 'results', []) or [])} results for {len(updates)} updates: return one "
            "PushItemResult per update, in the order of push.updates",
        )
        for index, (update, outcome) in enumerate(zip(updates, result.results, strict=True)):
            where = f"{action}, result {index}"
            _expect(isinstance(outcome, PushItemResult), provider, f"{where} is {outcome!r}, not a PushItemResult")
            _expect(
                (outcome.sku, outcome.location) == (update.sku, update.location),
                provider,
                f"{where} is for {(outcome.sku, outcome.location)} but update {index} is for "
                f"{(update.sku, update.location)}: keep the order of push.updates",
            )
            _expect(
                outcome.status in PUSH_STATUSES,
                provider,
                f"{where} has status {outcome.status!r}; use one of {', '.join(PUSH_STATUSES)}",
            )
            if outcome.status in ("failed", "retry"):
                _expect(
                    outcome.error, provider, f"{where} is {outcome.status} without saying why: set PushItemResult.error"
                )
        return result

    if push_updates is not None:
        push(push_updates, "pushing the given updates")
        return
    target = next(
        (r for r in records if isinstance(r.get("quantity"), int | float) and not isinstance(r["quantity"], bool)), None
    )
    _require(
        target is not None, f"check_sync: no inventory record with a numeric quantity to push to among {len(records)}"
    )
    assert target is not None
    sku, location, before = str(target["sku"]), str(target["location"]), target["quantity"]
    updates = [
        InventoryUpdate(sku, location, before + 3, "set", "contract check", id=_unique("contract-update")),
        InventoryUpdate(sku, location, -1, "adjust", id=_unique("contract-update")),
    ]
    result = push(updates, f"setting then adjusting {sku} at {location}")
    _expect(
        [outcome.status for outcome in result.results] == ["sent", "sent"],
        provider,
        f"setting then adjusting the existing {sku} at {location} gave {[o.status for o in result.results]}, "
        f"expected sent, sent ({[o.error for o in result.results]})",
    )
    final = result.results[1].quantity
    _expect(
        final is None or final == before + 2,
        provider,
        f"after set {before + 3} and adjust -1 the push says the level is {final}, expected {before + 2}",
    )
    try:
        if read_back:
            changed = _by_key(read(final_cursor, 1000, "syncing from the final cursor after the push")[0], key_fields)
            seen = changed.get(record_key(target, key_fields))
            _expect(
                seen is not None and seen.get("quantity") == before + 2,
                provider,
                f"after the push the next incremental sync shows {sku} at {location} as "
                f"{seen.get('quantity') if seen else 'absent'}, expected {before + 2}: a changed level must come "
                "after the cursor the last run ended with",
            )
    finally:
        restore = InventoryUpdate(
            sku, location, before, "set", "contract check: restore", id=_unique("contract-update")
        )
        push([restore], "restoring the level")
