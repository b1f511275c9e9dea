"""Sync provider ``square-pos``: sales history, daily SKU demand, the catalog and stock levels from a Square
point of sale, through Square's Orders, Catalog, Locations and Inventory APIs (Connect v2, bearer token,
``Square-Version`` pinned).

Calls go through :mod:`hub.http` (pooled ``requests`` sessions, timeouts, 401/403 -> ``ConfigurationError``,
429/5xx -> ``TransientError`` with ``Retry-After``). The ``squareup`` SDK is not used, for the reasons hub-square
gives: it retries 429/5xx itself under the hub's own retries, and its models follow the newest Square-Version.

Streams (``SyncRequest.data_type``), one ``sync`` call = one page; every cursor is this provider's JSON:

* ``sales`` (aliases ``orders``, ``transactions``): ``POST /v2/orders/search`` filtered on ``updated_at`` from the
  high-water mark minus ``lookback``, sorted ``UPDATED_AT`` ascending, Square's cursor within a run; the mark moves
  only after the run's last page. Locations are searched ten at a time (Square's maximum).
* ``sales_daily``: units and revenue per SKU, day and location from COMPLETED orders by ``closed_at``. A page is
  one whole day (Square's cursor is followed inside the day: the day is the unit of the aggregate), cut into
  ``page_size`` slices; a run first scans the orders updated since the previous run began (minus ``lookback``)
  and re-aggregates the past days they closed on, then aggregates the days from where the last run ended to today.
  Today is read again by the next run.
* ``catalog``: ``POST /v2/catalog/search`` for ``ITEM_VARIATION`` objects, incremental on ``begin_time``.
* ``inventory``: ``POST /v2/inventory/counts/batch-retrieve`` (``IN_STOCK``), incremental on ``updated_after``.
  ``sync_push`` sends ``POST /v2/inventory/changes/batch-create`` per update (idempotency key = the update's id).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marshmallow import Schema, ValidationError, fields, validate

from hub import hookimpl
from hub.capabilities import (
    HealthResult,
    InventoryPush,
    InventoryUpdate,
    Provider,
    ProviderContext,
    PushItemResult,
    PushResult,
    SyncRequest,
    SyncResult,
    parse_timestamp,
)
from hub.capabilities.pay import from_minor_units
from hub.errors import (
    ConfigurationError,
    NotFoundError,
    PermanentError,
    ProviderError,
    TransientError,
    UnsupportedError,
)
from hub.http import HttpClient, HttpSettings, json_error

__all__ = ["SquarePos", "SquarePosSettings", "register_providers"]

#: The Square-Version every request pins: the version of the official description the tests check against.
DEFAULT_SQUARE_VERSION = "2021-08-18"
CURSOR_VERSION = 1
#: Square's limits: SearchOrders takes at most 10 location ids and 1,000 results a page; catalog search 1,000.
MAX_LOCATIONS = 10
MAX_LIMIT = 1000
#: BatchRetrieveCatalogObjects ids per request.
MAX_OBJECT_IDS = 1000
#: BatchChangeInventory idempotency keys are at most 128 characters.
MAX_KEY_LENGTH = 128
STREAMS = ("sales", "orders", "transactions", "sales_daily", "catalog", "inventory")
_SALES_ALIASES = {"orders": "sales", "transactions": "sales"}
#: Square's error codes that mean a setting or the credentials must change, whatever the status.
CONFIGURATION_CODES = frozenset(
    {
        "UNAUTHORIZED",
        "ACCESS_TOKEN_EXPIRED",
        "ACCESS_TOKEN_REVOKED",
        "CLIENT_DISABLED",
        "FORBIDDEN",
        "INSUFFICIENT_SCOPES",
        "APPLICATION_DISABLED",
        "V1_APPLICATION",
        "V1_ACCESS_TOKEN",
        "INVALID_SQUARE_VERSION_FORMAT",
        "API_VERSION_INCOMPATIBLE",
    }
)


def _timezone(value: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError("not an IANA time zone (Europe/Berlin, America/New_York, UTC)") from None


class SquarePosSettings(HttpSettings):
    """``providers.<name>`` settings of a ``square-pos`` provider (HttpSettings adds the timeouts)."""

    access_token = fields.String(required=True, validate=validate.Length(min=1))
    #: The locations read; absent: every location ``GET /v2/locations`` lists, at the start of each run.
    location_ids = fields.List(fields.String(validate=validate.Length(min=1)), load_default=None, allow_none=True)
    api_base = fields.Url(load_default="https://connect.squareup.com", schemes={"http", "https"}, require_tld=False)
    square_version = fields.String(
        load_default=DEFAULT_SQUARE_VERSION,
        validate=validate.Regexp(r"^\d{4}-\d{2}-\d{2}$", error="not a Square-Version (YYYY-MM-DD)"),
    )
    #: Seconds an incremental run reaches back before the high-water mark (late writes, clock skew).
    lookback_seconds = fields.Float(load_default=300.0, validate=validate.Range(min=0, max=7 * 86400))
    #: Days of history a first run of ``sales_daily`` reads (the ``start_date`` option overrides it).
    history_days = fields.Integer(load_default=90, validate=validate.Range(min=1, max=3650))
    #: The time zone whose calendar days ``sales_daily`` aggregates.
    timezone = fields.String(load_default="UTC", validate=_timezone)
    #: Seconds a variation's SKU and name are remembered for mapping line items.
    catalog_cache_seconds = fields.Float(load_default=600.0, validate=validate.Range(min=0))


# --- small helpers ---------------------------------------------------------------------------------


def rfc3339(moment: datetime) -> str:
    """Square's timestamp form, in UTC with milliseconds: ``2026-01-03T10:00:00.000Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"



def _later(a: str | None, b: Any) -> str | None:
    """The later of two RFC 3339 strings (``None`` and unreadable values lose)."""
    moment = parse_timestamp(b)
    if moment is None:
        return a
    current = parse_timestamp(a)
    return a if current is not None and current >= moment else str(b)


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def _decimal_text(value: Decimal) -> str:
    """``Decimal("3.00000")`` -> ``"3"``, ``Decimal("1.50")`` -> ``"1.5"`` (never exponent notation)."""
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


def _money(money: Any) -> tuple[int | None, str | None, str | None]:
    """Square ``Money`` as (minor units, currency, decimal major-unit string)."""
    if not isinstance(money, Mapping) or not isinstance(money.get("amount"), int) or not money.get("currency"):
        return None, None, None
    amount, currency = int(money["amount"]), str(money["currency"])
    try:
        major = str(from_minor_units(amount, currency))
    except ValueError:
        major = None
    return amount, currency, major


def _number(text: Any) -> int | float | None:
    value = _decimal(text) if text is not None else None
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else float(value)


def idempotency_key(key: str) -> str:
    """The key Square gets: ``key`` when it fits 128 characters, else ``hub-`` + 64 hex digits of its SHA-256."""
    if 0 < len(key) <= MAX_KEY_LENGTH:
        return key
    return "hub-" + hashlib.sha256(key.encode("utf-8")).hexdigest()


# --- the provider ----------------------------------------------------------------------------------


class SquarePos(Provider):
    type_name = "square-pos"
    capability = "sync"
    settings_schema: ClassVar[type[Schema]] = SquarePosSettings
    env_settings: ClassVar[dict[str, str]] = {"access_token": "SQUARE_ACCESS_TOKEN"}
    secret_settings = ("access_token",)
    description = "Square point of sale: orders, daily SKU sales, catalog and inventory; inventory changes pushed."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        self.http = HttpClient.from_settings(
            "Square",
            settings,
            base_url=settings["api_base"].rstrip("/"),
            headers={
                "Authorization": f"Bearer {settings['access_token']}",
                "Square-Version": settings["square_version"],
                "Accept": "application/json",
            },
            extract_error=json_error(code="errors.0.code", message="errors.0.detail"),
        )
        self.zone = ZoneInfo(settings["timezone"])
        self.lookback = timedelta(seconds=settings["lookback_seconds"])
        #: Now, in UTC; tests replace it to pin "today".
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._variations: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._by_sku: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    # --- calls -------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None, **options: Any) -> Any:
        response = self.http.request(method, path, json=body, check=False, **options)
        error = self._error(response)
        if error is not None:
            raise error
        try:
            return response.json()
        except ValueError:
            raise TransientError("Square's answer is not JSON", provider_code="bad-answer") from None

    def _error(self, response: Any) -> ProviderError | None:
        base = self.http.error_for(response)
        if base is None:
            return None
        found = _first_error(response)
        code, category, field = found.get("code"), found.get("category"), found.get("field")
        message = base.message
        if category and category not in message:
            message = f"{message} [{category}{', field ' + field if field else ''}]"
        if category == "AUTHENTICATION_ERROR" or code in CONFIGURATION_CODES:
            return ConfigurationError(message, provider_code=code)
        if code == "RATE_LIMITED" or category == "RATE_LIMIT_ERROR" or isinstance(base, TransientError):
            return TransientError(message, provider_code=code or base.provider_code, retry_after=base.retry_after)
        if isinstance(base, NotFoundError):
            return NotFoundError(message, provider_code=code or base.provider_code)
        if isinstance(base, PermanentError) and not isinstance(base, ConfigurationError):
            return PermanentError(message, provider_code=code or base.provider_code, field=field)
        return type(base)(message, provider_code=code or base.provider_code)

    # --- locations and the catalog -------------------------------------------------------------------

    def _locations(self) -> list[str]:
        if self.settings["location_ids"]:
            return list(self.settings["location_ids"])
        answer = self._call("GET", "/v2/locations")
        ids = sorted(str(item["id"]) for item in answer.get("locations") or [] if item.get("id"))
        if not ids:
            raise ConfigurationError("Square lists no locations for this access token")
        return ids

    def variations(self, ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        """Variation id -> ``{sku, name, item_id, item_name, variation_name}`` (``None``: not in the catalog),
        from a cache refreshed after ``catalog_cache_seconds``; unknown ids cost one BatchRetrieve per 1,000."""
        now = time.monotonic()
        ttl = self.settings["catalog_cache_seconds"]
        wanted = sorted({i for i in ids if i})
        with self._lock:
            missing = [i for i in wanted if i not in self._variations or now - self._variations[i][0] > ttl]
        for start in range(0, len(missing), MAX_OBJECT_IDS):
            chunk = missing[start : start + MAX_OBJECT_IDS]
            answer = self._call(
                "POST",
                "/v2/catalog/batch-retrieve",
                {"object_ids": chunk, "include_related_objects": True},
            )
            items = {o["id"]: o for o in answer.get("related_objects") or [] if o.get("type") == "ITEM"}
            found = {o["id"]: self._variation(o, items) for o in answer.get("objects") or []}
            with self._lock:
                for object_id in chunk:
                    self._variations[object_id] = (now, found.get(object_id))
        with self._lock:
            return {i: self._variations[i][1] for i in wanted if i in self._variations}

    @staticmethod
    def _variation(variation: Mapping[str, Any], items: Mapping[str, Any]) -> dict[str, Any]:
        data = variation.get("item_variation_data") or {}
        item = items.get(data.get("item_id")) or {}
        item_name = (item.get("item_data") or {}).get("name")
        variation_name = data.get("name")
        name = " - ".join(part for part in (item_name, variation_name) if part) or None
        return {
            "sku": data.get("sku") or variation["id"],
            "has_sku": bool(data.get("sku")),
            "name": name,
            "item_id": data.get("item_id"),
            "item_name": item_name,
            "variation_name": variation_name,
        }

    # --- sync --------------------------------------------------------------------------------------

    @hookimpl
    def sync(self, request: SyncRequest) -> SyncResult:
        stream = _SALES_ALIASES.get(request.data_type, request.data_type)
        handler = {
            "sales": self._sync_sales,
            "sales_daily": self._sync_daily,
            "catalog": self._sync_catalog,
            "inventory": self._sync_inventory,
        }.get(stream)
        if handler is None:
            raise UnsupportedError(
                f"Square POS {self.name}: no data type {request.data_type!r}; it offers {', '.join(STREAMS)}"
            )
        state = self._decode(request.cursor, stream)
        size = max(1, min(int(request.page_size), MAX_LIMIT))
        return handler(request, state, size)

    def _decode(self, cursor: str | None, stream: str) -> dict[str, Any]:
        if not cursor:
            return {}
        try:
            state = json.loads(cursor)
        except ValueError:
            raise PermanentError(f"Square POS {self.name}: unreadable cursor; run a full resync") from None
        if not isinstance(state, dict) or state.get("v") != CURSOR_VERSION or state.get("s") != stream:
            raise PermanentError(f"Square POS {self.name}: a cursor of another version or stream; run a full resync")
        return state

    @staticmethod
    def _encode(stream: str, **state: Any) -> str:
        return json.dumps({"v": CURSOR_VERSION, "s": stream, **state}, separators=(",", ":"), sort_keys=True)

    def _start_date(self, options: Mapping[str, Any]) -> date:
        raw = options.get("start_date") or options.get("startDate")
        if raw is None:
            return self._today() - timedelta(days=self.settings["history_days"])
        try:
            return date.fromisoformat(str(raw))
        except ValueError:
            raise PermanentError(f"start_date {raw!r} is not an ISO date (YYYY-MM-DD)", field="start_date") from None

    def _today(self) -> date:
        return self.clock().astimezone(self.zone).date()

    # sales ------------------------------------------------------------------------------------------

    def _sync_sales(self, request: SyncRequest, state: dict[str, Any], size: int) -> SyncResult:
        hwm: str | None = state.get("hwm")
        run: dict[str, Any] | None = state.get("run")
        if run is None:  # a new run: fix the query (the lower bound) and the locations for all its pages
            if hwm is not None:
                moment = parse_timestamp(hwm)
                assert moment is not None
                since: str | None = rfc3339(moment - self.lookback)
            elif request.options.get("start_date") or request.options.get("startDate"):
                start = self._start_date(request.options)
                since = rfc3339(datetime.combine(start, datetime.min.time(), self.zone))
            else:
                since = None  # the whole history
            run = {"since": since, "locs": self._locations(), "chunk": 0, "page": None, "max": None}
        chunk = run["locs"][run["chunk"] * MAX_LOCATIONS : (run["chunk"] + 1) * MAX_LOCATIONS]
        query: dict[str, Any] = {"sort": {"sort_field": "UPDATED_AT", "sort_order": "ASC"}}
        if run["since"]:
            query["filter"] = {"date_time_filter": {"updated_at": {"start_at": run["since"]}}}
        body: dict[str, Any] = {"location_ids": chunk, "limit": size, "query": query}
        if run["page"]:
            body["cursor"] = run["page"]
        answer = self._call("POST", "/v2/orders/search", body)
        orders = [order for order in answer.get("orders") or [] if isinstance(order, Mapping)][:size]
        catalog = self.variations(
            line.get("catalog_object_id") for order in orders for line in order.get("line_items") or []
        )
        records = [self._order_record(order, catalog) for order in orders]
        for order in orders:
            run["max"] = _later(run["max"], order.get("updated_at"))
        if answer.get("cursor"):
            run["page"] = answer["cursor"]
        elif (run["chunk"] + 1) * MAX_LOCATIONS < len(run["locs"]):
            run["chunk"], run["page"] = run["chunk"] + 1, None
        else:  # the run's last page: the high-water mark moves, the next run starts a new query
            return SyncResult(records, cursor=self._encode("sales", hwm=_later(hwm, run["max"]), run=None))
        return SyncResult(records, cursor=self._encode("sales", hwm=hwm, run=run), has_more=True)

    def _order_record(self, order: Mapping[str, Any], catalog: Mapping[str, dict[str, Any] | None]) -> dict[str, Any]:
        total_minor, currency, total = _money(order.get("total_money"))
        lines = []
        for line in order.get("line_items") or []:
            variation = catalog.get(line.get("catalog_object_id") or "")
            gross_minor, gross_currency, gross = _money(line.get("gross_sales_money"))
            line_total_minor, _, line_total = _money(line.get("total_money"))
            lines.append(
                {
                    "uid": line.get("uid"),
                    "sku": variation["sku"] if variation else None,
                    "variation_id": line.get("catalog_object_id"),
                    "name": line.get("name"),
                    "variation_name": line.get("variation_name"),
                    "quantity": line.get("quantity"),
                    "gross_sales": gross,
                    "gross_sales_minor": gross_minor,
                    "total": line_total,
                    "total_minor": line_total_minor,
                    "currency": gross_currency,
                }
            )
        tax_minor, _, tax = _money(order.get("total_tax_money"))
        discount_minor, _, discount = _money(order.get("total_discount_money"))
        return {
            "id": order.get("id"),
            "location": order.get("location_id"),
            "state": order.get("state"),
            "created_at": order.get("created_at"),
            "updated_at": order.get("updated_at"),
            "closed_at": order.get("closed_at"),
            "version": order.get("version"),
            "reference_id": order.get("reference_id"),
            "customer_id": order.get("customer_id"),
            "source": (order.get("source") or {}).get("name"),
            "currency": currency,
            "total": total,
            "total_minor": total_minor,
            "total_tax": tax,
            "total_tax_minor": tax_minor,
            "total_discount": discount,
            "total_discount_minor": discount_minor,
            "line_items": lines,
        }

    # sales_daily -------------------------------------------------------------------------------------

    def _sync_daily(self, request: SyncRequest, state: dict[str, Any], size: int) -> SyncResult:
        nxt: str | None = state.get("next")
        hwm: str | None = state.get("hwm")
        run: dict[str, Any] | None = state.get("run")
        if run is None:
            started = self.clock()
            first = date.fromisoformat(nxt) if nxt else self._start_date(request.options)
            run = {
                "locs": self._locations(),
                "until": self._today().isoformat(),
                "started": rfc3339(started),
                "seq": first.isoformat(),
                "dirty": [],
                "skip": 0,
                "scan": None,
            }
            if hwm is not None and nxt is not None:  # days before `next` are done: find the ones changed since
                moment = parse_timestamp(hwm)
                assert moment is not None
                run["scan"] = {"since": rfc3339(moment - self.lookback), "chunk": 0, "page": None}
        if run["scan"] is not None:
            return self._scan_changes(run, state, date.fromisoformat(run["seq"]))
        if not run["dirty"] and run["seq"] > run["until"]:  # a start_date after today: nothing to read
            return SyncResult([], self._encode("sales_daily", next=nxt, hwm=hwm, run=None), primary_key=DAILY_KEY)
        day = date.fromisoformat(run["dirty"][0] if run["dirty"] else run["seq"])
        aggregate = self._aggregate_day(day, run["locs"])
        records = aggregate[run["skip"] : run["skip"] + size]
        if run["skip"] + size < len(aggregate):  # the rest of this day on the next page
            run["skip"] += size
            return SyncResult(records, self._daily_cursor(state, run), has_more=True, primary_key=DAILY_KEY)
        run["skip"] = 0
        if run["dirty"]:
            run["dirty"].pop(0)
        else:
            run["seq"] = (day + timedelta(days=1)).isoformat()
        if not run["dirty"] and run["seq"] > run["until"]:
            # Done: today is aggregated again by the next run; its scan starts where this run began.
            cursor = self._encode("sales_daily", next=run["until"], hwm=run["started"], run=None)
            return SyncResult(records, cursor, has_more=False, primary_key=DAILY_KEY)
        return SyncResult(records, self._daily_cursor(state, run), has_more=True, primary_key=DAILY_KEY)

    def _daily_cursor(self, state: Mapping[str, Any], run: dict[str, Any]) -> str:
        return self._encode("sales_daily", next=state.get("next"), hwm=state.get("hwm"), run=run)

    def _scan_changes(self, run: dict[str, Any], state: Mapping[str, Any], first_pending: date) -> SyncResult:
        """One page of the orders changed since the last run began: the past days they closed on are dirty."""
        scan = run["scan"]
        chunk = run["locs"][scan["chunk"] * MAX_LOCATIONS : (scan["chunk"] + 1) * MAX_LOCATIONS]
        body: dict[str, Any] = {
            "location_ids": chunk,
            "limit": MAX_LIMIT,
            "query": {
                "filter": {
                    "state_filter": {"states": ["COMPLETED"]},
                    "date_time_filter": {"updated_at": {"start_at": scan["since"]}},
                },
                "sort": {"sort_field": "UPDATED_AT", "sort_order": "ASC"},
            },
        }
        if scan["page"]:
            body["cursor"] = scan["page"]
        answer = self._call("POST", "/v2/orders/search", body)
        dirty = set(run["dirty"])
        for order in answer.get("orders") or []:
            closed = parse_timestamp(order.get("closed_at"))
            if closed is not None:
                day = closed.astimezone(self.zone).date()
                if day < first_pending:
                    dirty.add(day.isoformat())
        run["dirty"] = sorted(dirty)
        if answer.get("cursor"):
            scan["page"] = answer["cursor"]
        elif (scan["chunk"] + 1) * MAX_LOCATIONS < len(run["locs"]):
            scan["chunk"], scan["page"] = scan["chunk"] + 1, None
        else:
            run["scan"] = None
        return SyncResult([], self._daily_cursor(state, run), has_more=True, primary_key=DAILY_KEY)

    def _day_orders(self, day: date, locations: list[str]) -> list[Mapping[str, Any]]:
        """Every COMPLETED order closed on ``day`` (in the configured zone), following Square's cursor."""
        start = datetime.combine(day, datetime.min.time(), self.zone)
        end = datetime.combine(day + timedelta(days=1), datetime.min.time(), self.zone) - timedelta(milliseconds=1)
        orders: list[Mapping[str, Any]] = []
        for offset in range(0, len(locations), MAX_LOCATIONS):
            body: dict[str, Any] = {
                "location_ids": locations[offset : offset + MAX_LOCATIONS],
                "limit": MAX_LIMIT,
                "query": {
                    "filter": {
                        "state_filter": {"states": ["COMPLETED"]},
                        # Square's time ranges include both ends: the day ends a millisecond before midnight.
                        "date_time_filter": {"closed_at": {"start_at": rfc3339(start), "end_at": rfc3339(end)}},
                    },
                    "sort": {"sort_field": "CLOSED_AT", "sort_order": "ASC"},
                },
            }
            while True:
                answer = self._call("POST", "/v2/orders/search", body)
                orders.extend(o for o in answer.get("orders") or [] if isinstance(o, Mapping))
                if not answer.get("cursor"):
                    break
                body["cursor"] = answer["cursor"]
        return orders

    def _aggregate_day(self, day: date, locations: list[str]) -> list[dict[str, Any]]:
        orders = self._day_orders(day, locations)
        # Sales are line items; returns (Square's return orders) are their returns' return line items.
        lines: list[tuple[Mapping[str, Any], str, Mapping[str, Any], str, str]] = []
        for order in orders:
            for line in order.get("line_items") or []:
                lines.append((order, "sale", line, "gross_sales_money", "revenue"))
            for returned in order.get("returns") or []:
                for line in returned.get("return_line_items") or []:
                    lines.append((order, "return", line, "gross_return_money", "returned"))
        catalog = self.variations(line.get("catalog_object_id") for _, _, line, _, _ in lines)
        totals: dict[tuple[str, str], dict[str, Any]] = {}
        for order, kind, line, money_field, money_key in lines:
            variation_id = line.get("catalog_object_id")
            if not variation_id:
                continue  # a custom amount: no SKU to forecast
            variation = catalog.get(variation_id)
            sku = variation["sku"] if variation else variation_id
            entry = totals.setdefault(
                (str(order.get("location_id")), sku),
                {
                    "variation_id": variation_id,
                    "name": (variation or {}).get("name") or line.get("name"),
                    "units": Decimal(0),
                    "returned_units": Decimal(0),
                    "orders": set(),
                    "revenue": {},
                    "returned": {},
                },
            )
            entry["units" if kind == "sale" else "returned_units"] += _decimal(line.get("quantity"))
            if kind == "sale":
                entry["orders"].add(order.get("id"))
            amount, currency, _ = _money(line.get(money_field))
            if amount is not None and currency:
                entry[money_key][currency] = entry[money_key].get(currency, 0) + amount
        records = []
        for (location, sku), entry in sorted(totals.items()):
            revenue_minor = dict(sorted(entry["revenue"].items()))
            returned_minor = dict(sorted(entry["returned"].items()))
            records.append(
                {
                    "sku": sku,
                    "date": day.isoformat(),
                    "location": location,
                    "variation_id": entry["variation_id"],
                    "name": entry["name"],
                    "units": _decimal_text(entry["units"]),
                    "orders": len(entry["orders"]),
                    "revenue": {c: str(from_minor_units(a, c)) for c, a in revenue_minor.items()},
                    "revenue_minor": revenue_minor,
                    "returned_units": _decimal_text(entry["returned_units"]),
                    "returned": {c: str(from_minor_units(a, c)) for c, a in returned_minor.items()},
                    "returned_minor": returned_minor,
                }
            )
        return records

    # catalog and inventory: Square pages cut to the hub's page size ----------------------------------------

    def _sliced(
        self,
        stream: str,
        state: dict[str, Any],
        size: int,
        fetch: Callable[[str | None, str | None], tuple[list[Any], str | None]],
        stamp: Callable[[Any], Any],
        build: Callable[[list[Any]], list[dict[str, Any]]],
        primary_key: tuple[str, ...] = (),
    ) -> SyncResult:
        """A Square page (``fetch(since, square_cursor)``) served in slices of ``size``: the cursor keeps the Square
        cursor of the page and how many of its objects were served, so any page size works whatever Square's."""
        hwm: str | None = state.get("hwm")
        run: dict[str, Any] | None = state.get("run")
        if run is None:
            moment = parse_timestamp(hwm)
            run = {"since": rfc3339(moment - self.lookback) if moment else None, "page": None, "skip": 0, "max": None}
        objects, next_page = fetch(run["since"], run["page"])
        served = objects[run["skip"] : run["skip"] + size]
        for item in served:
            run["max"] = _later(run["max"], stamp(item))
        records = build(served)
        if run["skip"] + size < len(objects):
            run["skip"] += size
        elif next_page:
            run["page"], run["skip"] = next_page, 0
        else:
            cursor = self._encode(stream, hwm=_later(hwm, run["max"]), run=None)
            return SyncResult(records, cursor, has_more=False, primary_key=primary_key)
        return SyncResult(records, self._encode(stream, hwm=hwm, run=run), has_more=True, primary_key=primary_key)

    def _sync_catalog(self, request: SyncRequest, state: dict[str, Any], size: int) -> SyncResult:
        def fetch(since: str | None, page: str | None) -> tuple[list[Any], str | None]:
            body: dict[str, Any] = {
                "object_types": ["ITEM_VARIATION"],
                "include_related_objects": True,
                "limit": size,
            }
            if since:  # an incremental run also sees deletions
                body["begin_time"], body["include_deleted_objects"] = since, True
            if page:
                body["cursor"] = page
            answer = self._call("POST", "/v2/catalog/search", body)
            items = {o["id"]: o for o in answer.get("related_objects") or [] if o.get("type") == "ITEM"}
            objects = [dict(o, _items=items) for o in answer.get("objects") or [] if o.get("type") == "ITEM_VARIATION"]
            return objects, answer.get("cursor")

        return self._sliced(
            "catalog", state, size, fetch, lambda o: o.get("updated_at"), lambda objs: [self._catalog(o) for o in objs]
        )

    def _catalog(self, variation: Mapping[str, Any]) -> dict[str, Any]:
        items = variation.get("_items") or {}
        described = self._variation(variation, items)
        data = variation.get("item_variation_data") or {}
        price_minor, currency, price = _money(data.get("price_money"))
        with self._lock:  # what a sync saw is fresh: line items and pushes map through it
            self._variations[variation["id"]] = (time.monotonic(), described)
            if described["has_sku"]:
                self._by_sku[described["sku"]] = (time.monotonic(), variation["id"])
        return {
            "id": variation["id"],
            "sku": data.get("sku"),
            "name": described["name"],
            "item_id": described["item_id"],
            "item_name": described["item_name"],
            "variation_name": described["variation_name"],
            "price": price,
            "price_minor": price_minor,
            "currency": currency,
            "pricing_type": data.get("pricing_type"),
            "track_inventory": data.get("track_inventory"),
            "updated_at": variation.get("updated_at"),
            "version": variation.get("version"),
            "deleted": bool(variation.get("is_deleted")),
        }

    def _sync_inventory(self, request: SyncRequest, state: dict[str, Any], size: int) -> SyncResult:
        location = request.options.get("location")

        def fetch(since: str | None, page: str | None) -> tuple[list[Any], str | None]:
            body: dict[str, Any] = {"states": ["IN_STOCK"]}
            locations = [str(location)] if location else self.settings["location_ids"]
            if locations:
                body["location_ids"] = list(locations)
            if since:
                body["updated_after"] = since
            if page:
                body["cursor"] = page
            answer = self._call("POST", "/v2/inventory/counts/batch-retrieve", body)
            counts = [
                c
                for c in answer.get("counts") or []
                if c.get("catalog_object_id") and c.get("catalog_object_type", "ITEM_VARIATION") == "ITEM_VARIATION"
            ]
            return counts, answer.get("cursor")

        def build(counts: list[Any]) -> list[dict[str, Any]]:
            catalog = self.variations(c["catalog_object_id"] for c in counts)
            records = []
            for count in counts:
                variation = catalog.get(count["catalog_object_id"])
                records.append(
                    {
                        "sku": variation["sku"] if variation else count["catalog_object_id"],
                        "location": count.get("location_id"),
                        "quantity": _number(count.get("quantity")),
                        "variation_id": count["catalog_object_id"],
                        "name": (variation or {}).get("name"),
                        "state": count.get("state"),
                        "calculated_at": count.get("calculated_at"),
                    }
                )
            return records

        return self._sliced("inventory", state, size, fetch, lambda c: c.get("calculated_at"), build)

    # --- push --------------------------------------------------------------------------------------------

    def _variation_for_sku(self, sku: str) -> str | None:
        ttl = self.settings["catalog_cache_seconds"]
        with self._lock:
            cached = self._by_sku.get(sku)
            if cached is not None and time.monotonic() - cached[0] <= ttl:
                return cached[1]
        answer = self._call(
            "POST",
            "/v2/catalog/search",
            {
                "object_types": ["ITEM_VARIATION"],
                "query": {"exact_query": {"attribute_name": "sku", "attribute_value": sku}},
                "limit": 10,
            },
        )
        # Square matches case-insensitively and partly: keep the variation whose SKU is exactly this one.
        for variation in answer.get("objects") or []:
            if (variation.get("item_variation_data") or {}).get("sku") == sku:
                with self._lock:
                    self._by_sku[sku] = (time.monotonic(), variation["id"])
                return str(variation["id"])
        return None

    @hookimpl
    def sync_push(self, push: InventoryPush) -> PushResult:
        results: list[PushItemResult] = []
        for index, update in enumerate(push.updates):
            try:
                results.append(self._push_one(push, index, update))
            except (TransientError, ConfigurationError) as error:
                return PushResult.cut_short(push, results, error)
        return PushResult(results)

    def _push_one(self, push: InventoryPush, index: int, update: InventoryUpdate) -> PushItemResult:
        def failed(reason: str) -> PushItemResult:
            return PushItemResult(update.sku, update.location, "failed", error=reason)

        variation_id = self._variation_for_sku(update.sku)
        if variation_id is None:  # a variation without a SKU: its records carry the variation id as their SKU
            try:
                known = self.variations([update.sku]).get(update.sku)
            except NotFoundError:
                known = None
            if known is not None and not known["has_sku"]:
                variation_id = update.sku
        if variation_id is None:
            return failed(f"no Square item variation has SKU {update.sku!r}")
        quantity = _decimal(update.quantity)
        occurred = rfc3339(self.clock())
        if update.mode == "set":
            if quantity < 0:
                return failed("a stock level cannot be negative")
            change: dict[str, Any] = {
                "type": "PHYSICAL_COUNT",
                "physical_count": {
                    "catalog_object_id": variation_id,
                    "state": "IN_STOCK",
                    "location_id": update.location,
                    "quantity": _decimal_text(quantity),
                    "occurred_at": occurred,
                },
            }
        elif quantity == 0:
            return failed("an adjustment of 0 changes nothing")
        else:
            # Stock comes in from NONE (received) and goes out to SOLD (a sale) or WASTE (anything else).
            outgoing = "SOLD" if (update.reason or "").lower() == "sale" else "WASTE"
            change = {
                "type": "ADJUSTMENT",
                "adjustment": {
                    "catalog_object_id": variation_id,
                    "from_state": "NONE" if quantity > 0 else "IN_STOCK",
                    "to_state": "IN_STOCK" if quantity > 0 else outgoing,
                    "location_id": update.location,
                    "quantity": _decimal_text(abs(quantity)),
                    "occurred_at": occurred,
                },
            }
        key = idempotency_key(update.id or f"{push.id}:{index}")
        try:
            answer = self._call(
                "POST",
                "/v2/inventory/changes/batch-create",
                {"idempotency_key": key, "changes": [change], "ignore_unchanged_counts": False},
            )
        except PermanentError as error:
            if isinstance(error, ConfigurationError):
                raise
            return failed(error.message)
        level = next(
            (
                _number(count.get("quantity"))
                for count in answer.get("counts") or []
                if count.get("catalog_object_id") == variation_id
                and count.get("location_id") == update.location
                and count.get("state") == "IN_STOCK"
            ),
            None,
        )
        return PushItemResult(update.sku, update.location, "sent", quantity=level)

    # --- every provider ------------------------------------------------------------------------------

    @hookimpl
    def health(self) -> HealthResult:
        try:
            locations = self._call("GET", "/v2/locations", timeout=min(3.0, self.http.timeout))
        except ProviderError as error:
            return HealthResult("error", error.message)
        return HealthResult("success", f"Square reachable: {len(locations.get('locations') or [])} location(s)")

    @hookimpl
    def close(self) -> None:
        self.http.close()


#: The primary key of ``sales_daily`` records.
DAILY_KEY = ("sku", "date", "location")


def _first_error(response: Any) -> dict[str, Any]:
    try:
        errors = response.json().get("errors")
    except (ValueError, AttributeError):
        return {}
    if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
        return {k: v for k, v in errors[0].items() if isinstance(v, str)}
    return {}


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(SquarePos)
