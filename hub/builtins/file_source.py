"""Sync provider ``file-source``: records read from JSON or CSV files in a folder, and inventory written back.

``<directory>/<data_type>.json`` holds a JSON list of objects; ``<data_type>.csv`` a CSV file with a
header row. Without a ``directory`` setting the packaged sample data is used (suppliers, customers,
inventory, shipments), so a fresh hub can sync something with no external system.

**Paging and cursors.** A stream whose records all carry an ISO 8601 ``updated_at`` (or ``updatedAt``,
``modified_at``, ``modifiedAt``) is served in ``(updated_at, primary key)`` order, and the cursor is the
position after the last record returned: the next run gets only the records changed since. Any other
stream is served in file order and the cursor is an offset, which suits files that only grow; changes
to earlier rows are then seen on a full resync.

**Options** narrow the records: ``since`` keeps records updated at or after an ISO 8601 time, ``limit``
caps the page and ends the run there, and any other option must equal the record's field of that name
(compared as strings). An ``<x>Id`` option (``supplierId``) matches the record's ``id`` when the record
has no field of that name, so ``sync("suppliers", {"supplierId": "supplier_123"})`` finds that supplier.

**Push.** ``sync_push`` sets or adjusts quantities in ``inventory.csv`` / ``inventory.json``, rewriting
the file atomically under a lock (also between processes) and stamping each changed row's
``updated_at`` later than every other row's, so the next incremental sync sees exactly those rows.
The packaged sample data is never modified: pushes then go to a copy under the hub's data directory
(``file-source/<provider name>/``), which this provider reads from then on.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, ClassVar

from marshmallow import Schema, fields, validate

from hub import hookimpl
from hub.builtins.local_files import atomic_write, resolve_in_data_dir
from hub.capabilities import (
    PUSH_MODES,
    HealthResult,
    InventoryPush,
    InventoryUpdate,
    Provider,
    ProviderContext,
    PushItemResult,
    PushResult,
    SyncRequest,
    SyncResult,
    primary_key_of,
)
from hub.errors import ConfigurationError, PermanentError, TransientError, UnsupportedError

SAMPLE_DATA = "sample_data"
SUFFIXES = (".json", ".csv")
INVENTORY = "inventory"

# A data type names a file: letters, digits, '_' and '-' only, so it cannot reach another folder.
_DATA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")

# CSV has no types; counts are converted so inventory quantities compare and add up as numbers.
# Money columns stay strings on purpose: converting them to float would lose cents.
_QUANTITY_COLUMN = re.compile(r"(quantity|qty|stock|threshold|count|level|reorder_point|reorderPoint)$", re.IGNORECASE)
_INTEGER = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?")

_RECORD_TIMESTAMPS = ("updated_at", "updatedAt", "modified_at", "modifiedAt")
_CURSOR_VERSION = 1

# One lock per file written in this process; the flock on a side file covers other processes.
_WRITE_LOCKS: dict[str, threading.Lock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


class FileSourceSettings(Schema):
    #: Folder of ``<data_type>.json`` / ``<data_type>.csv`` files; the packaged sample data when absent.
    directory = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    #: Stream -> the fields identifying its records, for streams whose records have no ``id``
    #: (``{"stock": ["sku", "location"]}``); ``inventory`` is always keyed by ``sku`` and ``location``.
    primary_keys = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String(validate=validate.Length(min=1)), validate=validate.Length(min=1)),
        load_default=dict,
    )


class FileSource(Provider):
    type_name = "file-source"
    capability = "sync"
    settings_schema: ClassVar[type[Schema]] = FileSourceSettings
    description = "Reads <data_type>.json or .csv files (sample data by default) by cursor; writes inventory back."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        directory = settings.get("directory")
        # Traversable rather than Path: the sample data may sit inside a zipped installation.
        self.directory: Traversable = (
            resolve_in_data_dir(directory, context.data_dir)
            if directory
            else resources.files("hub.builtins").joinpath(SAMPLE_DATA)
        )
        #: Where pushed changes to read-only sample data go (``None``: the directory itself is written).
        self.overlay: Path | None = None if directory else Path(context.data_dir) / "file-source" / _safe_name(name)
        self.primary_keys: dict[str, list[str]] = dict(settings.get("primary_keys") or {})

    def available_types(self) -> list[str]:
        names: set[str] = set()
        for folder in (self.overlay, self.directory):
            if folder is not None and folder.is_dir():
                names |= {entry.name.rsplit(".", 1)[0] for entry in folder.iterdir() if entry.name.endswith(SUFFIXES)}
        return sorted(names)

    def source_file(self, data_type: str) -> Traversable | None:
        """The file holding ``data_type``: the pushed copy of sample data when there is one."""
        if not (isinstance(data_type, str) and _DATA_TYPE.fullmatch(data_type)):
            return None
        for folder in (self.overlay, self.directory):
            if folder is None:
                continue
            for suffix in SUFFIXES:
                candidate = folder.joinpath(data_type + suffix)
                if candidate.is_file():
                    return candidate
        return None

    def read_records(self, data_type: str) -> list[dict[str, Any]]:
        """Every record of ``data_type``, unfiltered, in file order."""
        source = self.source_file(data_type)
        if source is None:
            # UnsupportedError (a PermanentError) lets the core try the next sync provider, which may have it.
            available = ", ".join(self.available_types()) or "none"
            raise UnsupportedError(
                f"file-source: no data for {data_type!r} in {self.directory}; available data types: {available}"
            )
        return _parse(source.name, source.read_text(encoding="utf-8-sig"))  # tolerate the BOM exports add

    def key_fields(self, data_type: str) -> tuple[str, ...]:
        return primary_key_of(data_type, tuple(self.primary_keys.get(data_type, ())))

    @hookimpl
    def sync(self, request: SyncRequest) -> SyncResult:
        records = self.read_records(request.data_type)
        options = dict(request.options or {})
        limit = _limit(options.pop("limit", None))
        since = options.pop("since", None)
        if since is not None:
            records = [record for record in records if _updated_since(record, str(since))]
        for option, wanted in options.items():
            records = [record for record in records if _matches(record, option, wanted)]
        page_size = max(1, int(request.page_size or 1))
        if limit is not None:
            page_size = min(page_size, limit)
        key_fields = self.key_fields(request.data_type)
        declared = tuple(self.primary_keys.get(request.data_type, ()))
        timestamps = [_timestamp(record) for record in records]
        if records and all(stamp is not None for stamp in timestamps):
            page, cursor, has_more = _page_by_time(records, timestamps, key_fields, request.cursor, page_size)
        else:
            page, cursor, has_more = _page_by_offset(records, request.cursor, page_size)
        if limit is not None:
            has_more = False  # `limit` asks for that many now, not for the rest later
        return SyncResult(page, cursor=cursor, has_more=has_more, primary_key=declared)

    @hookimpl
    def sync_push(self, push: InventoryPush) -> PushResult:
        source = self.source_file(INVENTORY)
        if source is None:
            raise PermanentError(f"file-source: no {INVENTORY}.csv or {INVENTORY}.json in {self.directory} to update")
        target = (self.overlay / source.name) if self.overlay is not None else Path(str(source))
        try:
            with _locked(target):
                source = self.source_file(INVENTORY)  # re-read under the lock: another writer may have won
                assert source is not None
                text = source.read_text(encoding="utf-8-sig")
                records = _parse(source.name, text)
                columns = _csv_columns(text) if source.name.endswith(".csv") else None
                results = _apply(records, push.updates, columns)
                if any(result.status == "sent" for result in results):
                    data = _dump_csv(records, columns) if columns is not None else _dump_json(records)
                    atomic_write(target, data)
        except OSError as error:
            # Nothing was written (the replace is atomic), so trying again is safe.
            raise TransientError(f"file-source: could not write {target}: {error.strerror or error}") from None
        return PushResult(results)

    @hookimpl
    def health(self) -> HealthResult:
        types = self.available_types()
        if not types:
            return HealthResult("error", f"file-source: no .json or .csv files in {self.directory}")
        return HealthResult("success", f"file-source: {len(types)} data types ({', '.join(types)})")


# --- paging -------------------------------------------------------------------------------------


def _page_by_time(
    records: list[dict[str, Any]],
    timestamps: list[datetime | None],
    key_fields: tuple[str, ...],
    cursor: str | None,
    page_size: int,
) -> tuple[list[dict[str, Any]], str | None, bool]:
    ordered = sorted(
        ((stamp, _key(record, key_fields), record) for stamp, record in zip(timestamps, records, strict=True)),
        key=lambda item: (item[0], item[1]),
    )
    after = _read_cursor(cursor, "updated_at")
    if after is not None:
        position = (datetime.fromisoformat(after[0]), tuple(after[1]))
        ordered = [item for item in ordered if (item[0], item[1]) > position]
    page = ordered[:page_size]
    if not page:
        return [], cursor, False
    last_stamp, last_key, _ = page[-1]
    next_cursor = _write_cursor("updated_at", [last_stamp.isoformat(), list(last_key)])
    return [record for _, _, record in page], next_cursor, len(ordered) > page_size


def _page_by_offset(
    records: list[dict[str, Any]], cursor: str | None, page_size: int
) -> tuple[list[dict[str, Any]], str | None, bool]:
    start = _read_cursor(cursor, "offset") or 0
    if not isinstance(start, int) or start < 0:
        raise PermanentError(f"file-source: cursor {cursor!r} is not one of mine; ask for a full resync")
    page = records[start : start + page_size]
    end = start + len(page)
    next_cursor = _write_cursor("offset", end) if (page or cursor is not None) else None
    return page, next_cursor, end < len(records)


def _write_cursor(mode: str, position: Any) -> str:
    return json.dumps({"v": _CURSOR_VERSION, mode: position}, separators=(",", ":"))


def _read_cursor(cursor: str | None, mode: str) -> Any:
    if cursor is None:
        return None
    try:
        decoded = json.loads(cursor)
        if decoded.get("v") != _CURSOR_VERSION or mode not in decoded:
            raise ValueError(cursor)
        position = decoded[mode]
        if mode == "updated_at":
            datetime.fromisoformat(position[0])
            if not isinstance(position[1], list):
                raise ValueError(cursor)
        return position
    except (ValueError, TypeError, AttributeError, IndexError, KeyError):
        # A cursor from another mode (the file gained or lost timestamps) or not from this provider.
        raise PermanentError(
            f"file-source: cursor {cursor!r} does not fit this {mode} stream; ask for a full resync"
        ) from None


def _key(record: dict[str, Any], key_fields: tuple[str, ...]) -> tuple[str, ...]:
    if all(name in record for name in key_fields):
        return tuple(str(record[name]) for name in key_fields)
    # No key: the record's content orders it, so paging stays stable.
    return ("", json.dumps(record, sort_keys=True, default=str))


def _timestamp(record: dict[str, Any]) -> datetime | None:
    value = next((record[name] for name in _RECORD_TIMESTAMPS if record.get(name)), None)
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


# --- reading ------------------------------------------------------------------------------------


def _parse(name: str, text: str) -> list[dict[str, Any]]:
    return _parse_json(name, text) if name.endswith(".json") else _parse_csv(text)


def _parse_json(name: str, text: str) -> list[dict[str, Any]]:
    try:
        records = json.loads(text)
    except ValueError as error:
        raise ConfigurationError(f"file-source: {name} is not valid JSON: {error}") from None
    if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
        raise ConfigurationError(f"file-source: {name} must hold a JSON list of objects")
    return records


def _parse_csv(text: str) -> list[dict[str, Any]]:
    records = []
    for row in csv.DictReader(io.StringIO(text)):
        records.append({column: _csv_value(column, value) for column, value in row.items() if column is not None})
    return records


def _csv_columns(text: str) -> list[str]:
    return list(csv.DictReader(io.StringIO(text)).fieldnames or [])


def _csv_value(column: str, value: str | None) -> Any:
    if value is None or not _QUANTITY_COLUMN.search(column):
        return value
    value = value.strip()
    if value == "":
        return None
    if _INTEGER.fullmatch(value):
        return int(value)
    if _DECIMAL.fullmatch(value):
        return float(value)
    return value


def _limit(value: Any) -> int | None:
    if value is None:
        return None
    try:
        limit = int(value)
    except (TypeError, ValueError):
        limit = -1
    if limit < 0:
        raise PermanentError(f"file-source: limit must be a whole number >= 0, not {value!r}")
    return limit


def _updated_since(record: dict[str, Any], since: str) -> bool:
    timestamp = next((record[name] for name in _RECORD_TIMESTAMPS if record.get(name)), None)
    # ISO 8601 timestamps in the same format sort as strings; records without one are kept.
    return timestamp is None or str(timestamp) >= since


def _matches(record: dict[str, Any], option: str, wanted: Any) -> bool:
    if option in record:
        return str(record[option]) == str(wanted)
    if option.endswith("Id") and "id" in record:
        return str(record["id"]) == str(wanted)
    return False


# --- writing ------------------------------------------------------------------------------------


def _apply(
    records: list[dict[str, Any]], updates: list[InventoryUpdate], columns: list[str] | None
) -> list[PushItemResult]:
    """Apply ``updates`` in order to ``records`` (in place); one result per update."""
    index = {(str(record.get("sku")), str(record.get("location"))): record for record in records}
    present = set(columns) if columns is not None else {name for record in records for name in record}
    # Only a file that keeps timestamps gets them: a position-paged file stays position-paged.
    stamp_field = next((name for name in _RECORD_TIMESTAMPS if name in present), None)
    stamp = _later_than_all(records)
    results = []
    for update in updates:
        problem = _invalid(update)
        if problem:
            results.append(PushItemResult(str(update.sku), str(update.location), "failed", error=problem))
            continue
        row = index.get((update.sku, update.location))
        if update.mode == "adjust":
            if row is None:
                results.append(_failed(update, f"no stock record for {update.sku} at {update.location} to adjust"))
                continue
            current = row.get("quantity")
            if isinstance(current, bool) or not isinstance(current, int | float):
                results.append(_failed(update, f"the quantity of {update.sku} at {update.location} is not a number"))
                continue
            level = _number(current + update.quantity)
        else:
            level = _number(update.quantity)
            if row is None:
                row = {name: None for name in (columns or ())} | {"sku": update.sku, "location": update.location}
                records.append(row)
                index[(update.sku, update.location)] = row
        row["quantity"] = level
        if stamp_field:
            row[stamp_field] = stamp.isoformat()
        results.append(PushItemResult(update.sku, update.location, "sent", quantity=level))
    return results


def _invalid(update: InventoryUpdate) -> str | None:
    if not isinstance(update.sku, str) or not update.sku or not isinstance(update.location, str) or not update.location:
        return "sku and location must be non-empty strings"
    if update.mode not in PUSH_MODES:
        return f"mode must be one of {', '.join(PUSH_MODES)}, not {update.mode!r}"
    quantity = update.quantity
    if isinstance(quantity, bool) or not isinstance(quantity, int | float) or not math.isfinite(quantity):
        return f"quantity must be a number, not {quantity!r}"
    return None


def _failed(update: InventoryUpdate, reason: str) -> PushItemResult:
    return PushItemResult(update.sku, update.location, "failed", error=f"file-source: {reason}")


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def _later_than_all(records: list[dict[str, Any]]) -> datetime:
    """Now, or just after the newest row if the file's clock ran ahead: changed rows must sort after
    every cursor handed out so far, or an incremental sync would miss them."""
    stamps = [stamp for stamp in map(_timestamp, records) if stamp is not None]
    now = datetime.now(UTC)
    return max([now, *(stamp + timedelta(microseconds=1) for stamp in stamps)])


def _dump_csv(records: list[dict[str, Any]], columns: list[str]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({name: "" if record.get(name) is None else record[name] for name in columns})
    return buffer.getvalue().encode("utf-8")


def _dump_json(records: list[dict[str, Any]]) -> bytes:
    return (json.dumps(records, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold this process's lock for ``path`` and an exclusive flock on ``<path>.lock`` (other processes)."""
    with _WRITE_LOCKS_GUARD:
        lock = _WRITE_LOCKS.setdefault(str(path), threading.Lock())
    with lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(f".{path.name}.lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
            yield


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]", "_", name) or "file-source"


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(FileSource)
