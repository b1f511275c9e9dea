"""Sync provider ``file-source``: records read from JSON or CSV files in a folder.

``<directory>/<data_type>.json`` holds a JSON list of objects; ``<data_type>.csv`` a CSV file with a
header row. Without a ``directory`` setting the packaged sample data is used (suppliers, customers,
inventory, shipments), so a fresh hub can sync something with no external system.

Options narrow the records: ``limit`` caps their number, ``since`` keeps records updated at or after
an ISO 8601 time, and any other option must equal the record's field of that name (compared as
strings). An ``<x>Id`` option (``supplierId``) matches the record's ``id`` when the record has no field
of that name, so ``sync("suppliers", {"supplierId": "supplier_123"})`` finds that supplier.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, ClassVar

from marshmallow import Schema, fields, validate

from hub import hookimpl
from hub.builtins.local_files import resolve_in_data_dir
from hub.capabilities import HealthResult, Provider, ProviderContext, SyncRequest, SyncResult
from hub.errors import ConfigurationError, PermanentError, UnsupportedError

SAMPLE_DATA = "sample_data"
SUFFIXES = (".json", ".csv")

# A data type names a file: letters, digits, '_' and '-' only, so it cannot reach another folder.
_DATA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")

# CSV has no types; counts are converted so inventory quantities compare and add up as numbers.
# Money columns stay strings on purpose: converting them to float would lose cents.
_QUANTITY_COLUMN = re.compile(r"(quantity|qty|stock|threshold|count|level|reorder_point|reorderPoint)$", re.IGNORECASE)
_INTEGER = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?")

_RECORD_TIMESTAMPS = ("updated_at", "updatedAt", "modified_at", "modifiedAt")


class FileSourceSettings(Schema):
    #: Folder of ``<data_type>.json`` / ``<data_type>.csv`` files; the packaged sample data when absent.
    directory = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))


class FileSource(Provider):
    type_name = "file-source"
    capability = "sync"
    settings_schema: ClassVar[type[Schema]] = FileSourceSettings
    description = "Reads records from <data_type>.json or <data_type>.csv files (sample data by default)."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        directory = settings.get("directory")
        # Traversable rather than Path: the sample data may sit inside a zipped installation.
        self.directory: Traversable = (
            resolve_in_data_dir(directory, context.data_dir)
            if directory
            else resources.files("hub.builtins").joinpath(SAMPLE_DATA)
        )

    def available_types(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(
            {entry.name.rsplit(".", 1)[0] for entry in self.directory.iterdir() if entry.name.endswith(SUFFIXES)}
        )

    def read_records(self, data_type: str) -> list[dict[str, Any]]:
        """Every record of ``data_type``, unfiltered."""
        if isinstance(data_type, str) and _DATA_TYPE.fullmatch(data_type):
            for suffix in SUFFIXES:
                source = self.directory.joinpath(data_type + suffix)
                if source.is_file():
                    text = source.read_text(encoding="utf-8-sig")  # tolerate the BOM spreadsheet exports add
                    return _parse_json(source.name, text) if suffix == ".json" else _parse_csv(text)
        # UnsupportedError (a PermanentError) lets the core try the next sync provider, which may have it.
        available = ", ".join(self.available_types()) or "none"
        raise UnsupportedError(
            f"file-source: no data for {data_type!r} in {self.directory}; available data types: {available}"
        )

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
        return SyncResult(records[:limit] if limit is not None else records)

    @hookimpl
    def health(self) -> HealthResult:
        types = self.available_types()
        if not types:
            return HealthResult("error", f"file-source: no .json or .csv files in {self.directory}")
        return HealthResult("success", f"file-source: {len(types)} data types ({', '.join(types)})")


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


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(FileSource)
