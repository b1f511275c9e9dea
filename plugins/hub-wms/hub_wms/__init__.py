"""Sync provider ``wms``: warehouse stock, shipments and returns from Fulfillment.com APIv2 (a 3PL's WMS API).

Streams (``SyncRequest.data_type``), one API request per ``sync`` call:

* ``inventory`` -- ``GET /inventory?warehouseIds=<one>&page=&limit=``, warehouse by warehouse (the answer names no
  warehouse, so each is read alone to give every level a location). Records: ``sku`` (``item.skuReference``),
  ``location`` (``locations[warehouseId]``, else the id as a string), ``quantity``
  (``quantity.total.availableToPromise``). No date filter exists: every run reads the whole stream again (the last
  page's cursor is ``None``).
* ``shipments`` -- ``GET /orders?fromDate=&toDate=&page=&limit=&hydrate=...``: orders with their status, dates,
  warehouse and tracking numbers. Incremental.
* ``receipts`` -- ``GET /returns?fromDate=&toDate=&page=&limit=``: returns received at a facility. Incremental.

**Incremental cursor.** JSON ``{"v": 1, "offset": <records delivered in this run>, "from": <ISO>, "to": <ISO>,
"hwm": <ISO>}``. A run fixes its window (``from`` = the last run's ``to`` minus ``lookback``, ``to`` = now) so
every page of it is asked for with the same dates; when the last page is read the cursor keeps ``hwm = to`` and
no position, and the next run starts there. Pages are ``page``/``limit`` (FDC's ``page`` is a multiplier of
``limit``), so the cursor counts records, not pages: a resumed run with another page size still starts at the
right record.

**Errors** go through :mod:`hub.http`: 429/5xx -> ``TransientError`` with ``Retry-After``, 401/403 ->
``ConfigurationError``, other 4xx -> ``PermanentError``, each with FDC's ``message``. FDC answers 404 ``No ...
Found`` for an empty list: that is an empty page here.

No ``sync_push``: the description has no endpoint that writes a stock level (WMS levels are read-only to the hub).
No ``handle_webhook``: the description defines no webhooks.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from hub import hookimpl
from hub.capabilities import HealthResult, Provider, ProviderContext, SyncRequest, SyncResult
from hub.errors import ConfigurationError, PermanentError, ProviderError, UnsupportedError
from hub.http import HttpClient, HttpSettings, json_error

__all__ = ["DATA_TYPES", "WmsSettings", "WmsSource", "register_providers"]

DEFAULT_BASE_URL = "https://api.fulfillment.com/v2"
DATA_TYPES = ("inventory", "shipments", "receipts")
#: The description's ``limit`` maximum.
MAX_LIMIT = 200
CURSOR_VERSION = 1
#: Seconds before a token's stated expiry at which it is renewed.
TOKEN_SKEW = 60.0
#: The ``hydrate`` values GET /orders takes (the description's enum).
HYDRATE_VALUES = ("integrator", "lineItems", "trackingNumbers.carrier")
_LOOKBACK = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_ERROR = json_error(code=None, message="message")


def _duration(value: Any) -> None:
    if isinstance(value, bool) or not (
        (isinstance(value, int | float) and value >= 0) or (isinstance(value, str) and _LOOKBACK.match(value))
    ):
        raise ValidationError("seconds (a number) or a duration like '30s', '5m', '2h', '1d'")


def _seconds(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    match = _LOOKBACK.match(str(value))
    assert match is not None
    return float(int(match.group(1)) * _UNITS[match.group(2)])


def _iso_datetime(value: Any) -> None:
    if _parse_time(value) is None:
        raise ValidationError("an ISO 8601 date-time, e.g. 2026-01-01T00:00:00Z")


class OAuthSchema(Schema):
    """FDC's OAuth2 password grant (``POST /oauth/access_token``); tokens are renewed with their refresh token."""

    client_id = fields.String(required=True, validate=validate.Length(min=1))
    client_secret = fields.String(required=True, validate=validate.Length(min=1))
    username = fields.String(required=True, validate=validate.Length(min=1))
    password = fields.String(required=True, validate=validate.Length(min=1))
    scope = fields.String(load_default="oms", validate=validate.OneOf(("oms",)))


class WmsSettings(HttpSettings):
    base_url = fields.Url(load_default=DEFAULT_BASE_URL, require_tld=False, schemes={"http", "https"})
    #: Sent as ``x-api-key`` (the description's ``apiKey`` scheme).
    api_key = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    oauth = fields.Nested(OAuthSchema, load_default=None, allow_none=True)
    #: The warehouses to read stock from: the description offers no list of warehouses.
    warehouse_ids = fields.List(
        fields.Integer(strict=False, validate=validate.Range(min=1)), required=True, validate=validate.Length(min=1)
    )
    #: warehouse id -> the location name records carry (default: the id as a string).
    locations = fields.Dict(
        keys=fields.String(), values=fields.String(validate=validate.Length(min=1)), load_default=dict
    )
    #: Only these merchants' stock and orders (``merchantIds``); empty: every merchant the credentials see.
    merchant_ids = fields.List(fields.Integer(strict=False), load_default=list)
    #: How far before the last run's end the next incremental window starts (clock skew, late updates).
    lookback = fields.Raw(load_default="1h", validate=_duration)
    #: Where a first (or full) incremental run starts; absent: ``history_days`` before now.
    start_date = fields.String(load_default=None, allow_none=True, validate=_iso_datetime)
    history_days = fields.Integer(load_default=90, validate=validate.Range(min=1))
    #: ``hydrate`` for GET /orders: line items give each shipment its SKUs and quantities.
    hydrate = fields.List(fields.String(validate=validate.OneOf(HYDRATE_VALUES)), load_default=lambda: ["lineItems"])

    @validates_schema
    def _credentials(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("api_key") and not data.get("oauth"):
            raise ValidationError({"api_key": ["set api_key (x-api-key), oauth (password grant), or both"]})
        bad = [key for key in data.get("locations") or {} if not key.isdigit()]
        if bad:
            raise ValidationError({"locations": [f"keys are warehouse ids: {', '.join(bad)}"]})


# --- helpers ---------------------------------------------------------------------------------------


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _get(document: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(document, Mapping):
            return None
        document = document.get(part)
    return document


def _latest(*values: Any) -> str | None:
    times = [moment for moment in (_parse_time(value) for value in values) if moment is not None]
    return _iso(max(times)) if times else None


class _Tokens:
    """Password-grant access tokens, renewed with the refresh token before expiry or after a 401."""

    def __init__(self, oauth: Mapping[str, Any], http: HttpClient) -> None:
        self.oauth = oauth
        self.http = http
        self._lock = threading.Lock()
        self._access: str | None = None
        self._refresh: str | None = None
        self._expires = 0.0
        #: Grants asked for, by type (for tests and logs).
        self.grants: list[str] = []

    def token(self) -> str:
        with self._lock:
            if self._access is None or time.monotonic() >= self._expires:
                self._renew()
            assert self._access is not None
            return self._access

    def invalidate(self, token: str) -> None:
        with self._lock:
            if self._access == token:
                self._access = None

    def _renew(self) -> None:
        if self._refresh:
            try:
                self._grant({"grant_type": "refresh_token", "refresh_token": self._refresh})
                return
            except ConfigurationError:  # refresh token expired or revoked: log in again
                self._refresh = None
        self._grant({"grant_type": "password", "username": self.oauth["username"], "password": self.oauth["password"]})

    def _grant(self, grant: dict[str, str]) -> None:
        body = {
            **grant,
            "client_id": self.oauth["client_id"],
            "client_secret": self.oauth["client_secret"],
            "scope": self.oauth["scope"],
        }
        self.grants.append(grant["grant_type"])
        response = self.http.post("/oauth/access_token", json=body, service="Fulfillment.com OAuth")
        try:
            answer = response.json()
            access = str(answer["access_token"])
        except (ValueError, KeyError, TypeError):
            raise ConfigurationError("Fulfillment.com OAuth answered without an access_token") from None
        lifetime = answer.get("expires_in")
        lifetime = float(lifetime) if isinstance(lifetime, int | float) and not isinstance(lifetime, bool) else 3600.0
        self._access = access
        self._refresh = answer.get("refresh_token") or self._refresh
        self._expires = time.monotonic() + max(0.0, lifetime - min(TOKEN_SKEW, lifetime / 2))


# --- the provider ----------------------------------------------------------------------------------


class WmsSource(Provider):
    type_name = "wms"
    capability = "sync"
    settings_schema: ClassVar[type[Schema]] = WmsSettings
    env_settings: ClassVar[dict[str, str]] = {"api_key": "WMS_API_KEY"}
    secret_settings = ("api_key", "oauth")
    description = "Fulfillment.com APIv2 (3PL WMS): stock per warehouse, shipments and returns, read-only."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        self.base_url: str = settings["base_url"].rstrip("/")
        self.warehouse_ids: list[int] = list(dict.fromkeys(settings["warehouse_ids"]))
        self.locations: dict[str, str] = dict(settings["locations"])
        self.lookback = _seconds(settings["lookback"])
        headers = {"Accept": "application/json", "User-Agent": "integration-hub-wms"}
        if settings.get("api_key"):
            headers["x-api-key"] = settings["api_key"]
        self.http = HttpClient.from_settings(
            f"Fulfillment.com ({name})", settings, base_url=self.base_url, headers=headers, extract_error=_ERROR
        )
        self.tokens: _Tokens | None = None
        if settings.get("oauth"):
            # A refused grant (400: bad client or password) is a setting to fix, not a bad request of ours.
            token_http = HttpClient.from_settings(
                f"Fulfillment.com OAuth ({name})",
                settings,
                base_url=self.base_url,
                headers={"Accept": "application/json"},
                extract_error=_ERROR,
                status_errors={400: ConfigurationError},
            )
            self.tokens = _Tokens(settings["oauth"], token_http)

    def location_of(self, warehouse_id: Any) -> str:
        return self.locations.get(str(warehouse_id), str(warehouse_id))

    # --- requests ----------------------------------------------------------------------------------

    def _get(self, path: str, params: Mapping[str, Any]) -> Any:
        """GET ``path``; the JSON answer, or ``None`` for FDC's 404 "No ... Found" (an empty list)."""
        if self.tokens is None:
            response = self.http.get(path, params=params, check=False)
        else:
            token = self.tokens.token()
            response = self.http.get(path, params=params, headers={"Authorization": f"Bearer {token}"}, check=False)
            if response.status_code == 401:  # revoked or expired early: renew once and ask again
                self.tokens.invalidate(token)
                token = self.tokens.token()
                response = self.http.get(path, params=params, headers={"Authorization": f"Bearer {token}"}, check=False)
        if response.status_code == 404 and _is_fdc_error(response):
            return None
        error = self.http.error_for(response)
        if error is not None:
            raise error
        try:
            return response.json()
        except ValueError:
            raise PermanentError(f"Fulfillment.com ({self.name}): the answer to GET {path} is not JSON") from None

    # --- sync --------------------------------------------------------------------------------------

    @hookimpl
    def sync(self, request: SyncRequest) -> SyncResult:
        if request.data_type not in DATA_TYPES:
            raise UnsupportedError(
                f"Fulfillment.com ({self.name}) offers no {request.data_type!r}; it offers {', '.join(DATA_TYPES)}"
            )
        state = self._decode(request.cursor)
        if request.data_type == "inventory":
            return self._inventory(state, request.page_size)
        return self._incremental(request.data_type, state, request.page_size)

    def _decode(self, cursor: str | None) -> dict[str, Any]:
        if not cursor:
            return {}
        try:
            state = json.loads(cursor)
        except ValueError:
            state = None
        if not isinstance(state, dict) or state.get("v") != CURSOR_VERSION:
            raise PermanentError(f"Fulfillment.com ({self.name}): a cursor it cannot read; run a full resync")
        return state

    @staticmethod
    def _window(offset: int, page_size: int) -> tuple[int, int]:
        """``(page, limit)`` whose first record is record ``offset``: FDC skips ``(page - 1) * limit`` records."""
        limit = max(1, min(int(page_size), MAX_LIMIT))
        if offset % limit:
            limit = math.gcd(offset, limit)  # only after a resume with another page size
        return offset // limit + 1, limit

    def _merchants(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.settings["merchant_ids"]:
            params["merchantIds"] = ",".join(str(merchant) for merchant in self.settings["merchant_ids"])
        return params

    def _inventory(self, state: Mapping[str, Any], page_size: int) -> SyncResult:
        index, offset = int(state.get("warehouse", 0)), int(state.get("offset", 0))
        if not 0 <= index < len(self.warehouse_ids):
            index, offset = 0, 0  # the warehouse list changed since: read it all again
        warehouse = self.warehouse_ids[index]
        page, limit = self._window(offset, page_size)
        body = self._get("/inventory", self._merchants({"warehouseIds": str(warehouse), "page": page, "limit": limit}))
        items = [item for item in (_get(body, "data") or []) if isinstance(item, Mapping)]
        records = [self._level(item, warehouse) for item in items]
        total = _get(body, "meta", "pagination", "total")
        offset += len(items)
        more_here = bool(items) and (offset < total if isinstance(total, int) else len(items) == limit)
        if more_here:
            cursor: str | None = _encode({"warehouse": index, "offset": offset})
        elif index + 1 < len(self.warehouse_ids):
            cursor = _encode({"warehouse": index + 1, "offset": 0})
        else:
            cursor = None  # no change feed: the next run reads every warehouse again
        return SyncResult(records=records, cursor=cursor, has_more=cursor is not None)

    def _level(self, item: Mapping[str, Any], warehouse: int) -> dict[str, Any]:
        quantity = _get(item, "quantity", "total", "availableToPromise")
        return {
            "sku": _get(item, "item", "skuReference"),
            "location": self.location_of(warehouse),
            "quantity": quantity if isinstance(quantity, int | float) else 0,
            "warehouseId": warehouse,
            "itemId": _get(item, "item", "id"),
            "merchant": _get(item, "merchant", "name"),
        }

    def _incremental(self, data_type: str, state: Mapping[str, Any], page_size: int) -> SyncResult:
        if state.get("from") and state.get("to"):  # within a run: the same window for every page
            start, end, offset = str(state["from"]), str(state["to"]), int(state.get("offset", 0))
        else:
            now = datetime.now(UTC)
            if state.get("hwm"):
                hwm = _parse_time(state["hwm"])
                if hwm is None:
                    raise PermanentError(f"Fulfillment.com ({self.name}): a cursor it cannot read; run a full resync")
                begin = hwm - timedelta(seconds=self.lookback)
            elif self.settings.get("start_date"):
                begin = _parse_time(self.settings["start_date"]) or now
            else:
                begin = now - timedelta(days=self.settings["history_days"])
            start, end, offset = _iso(min(begin, now)), _iso(now), 0
        page, limit = self._window(offset, page_size)
        params: dict[str, Any] = {"fromDate": start, "toDate": end, "page": page, "limit": limit}
        if data_type == "shipments":
            self._merchants(params)
            params["warehouseIds"] = ",".join(str(warehouse) for warehouse in self.warehouse_ids)
            if self.settings["hydrate"]:
                params["hydrate"] = ",".join(dict.fromkeys(self.settings["hydrate"]))
            body = self._get("/orders", params)
            convert: Callable[[Mapping[str, Any]], dict[str, Any]] = self._shipment
        else:
            body = self._get("/returns", params)
            convert = _receipt
        items = [item for item in (_get(body, "data") or []) if isinstance(item, Mapping)]
        records = [convert(item) for item in items]
        total = _get(body, "meta", "pagination", "total")
        offset += len(items)
        more = bool(items) and (offset < total if isinstance(total, int) else len(items) == limit)
        # Once the window is read, the next run starts at its end (minus lookback).
        cursor = {"offset": offset, "from": start, "to": end, "hwm": state.get("hwm")} if more else {"hwm": end}
        return SyncResult(records=records, cursor=_encode(cursor), has_more=more, primary_key=("id",))

    def _shipment(self, order: Mapping[str, Any]) -> dict[str, Any]:
        status = _get(order, "currentStatus", "status") or {}
        warehouse = _get(order, "warehouse", "id")
        lines = []
        for line in order.get("lineItems") or []:
            if not isinstance(line, Mapping):
                continue
            sku = _get(line, "lineDetails", "externalSku") or _get(line, "requestedSkuData", "sku")
            quantity = _get(line, "lineDetails", "totalQuantity")
            if quantity is None:
                quantity = _get(line, "requestedSkuData", "quantity")
            lines.append({"sku": sku, "quantity": quantity})
        return {
            "id": order.get("id"),
            "merchantOrderId": order.get("merchantOrderId"),
            "merchantId": _get(order, "merchant", "id"),
            "statusCode": status.get("code"),
            "state": _get(status, "state", "name"),
            "stage": _get(status, "stage", "name"),
            "statusDate": _get(order, "currentStatus", "date"),
            "recordedOn": order.get("recordedOn"),
            "dispatchDate": order.get("dispatchDate"),
            "departDate": order.get("departDate"),
            "warehouseId": warehouse,
            "location": self.location_of(warehouse) if warehouse is not None else None,
            "shippingMethod": order.get("merchantShippingMethod"),
            "trackingNumbers": [
                {"value": number.get("value"), "carrierId": _get(number, "carrier", "id")}
                for number in order.get("trackingNumbers") or []
                if isinstance(number, Mapping)
            ],
            "lines": lines,
            "updatedAt": _latest(
                order.get("recordedOn"),
                order.get("dispatchDate"),
                order.get("departDate"),
                _get(order, "currentStatus", "date"),
            ),
        }

    # --- health ------------------------------------------------------------------------------------

    @hookimpl
    def health(self) -> HealthResult:
        """``GET /users/me``: cheap, and it checks the credentials."""
        headers: dict[str, str] = {}
        if self.tokens is not None:
            try:
                headers["Authorization"] = f"Bearer {self.tokens.token()}"
            except ProviderError as error:
                return HealthResult("error", error.message)
        return self.http.probe("GET", "/users/me", headers=headers)

    @hookimpl
    def close(self) -> None:
        self.http.close()
        if self.tokens is not None:
            self.tokens.http.close()


def _receipt(item: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": item.get("id"),
        "rmaNumber": item.get("rmaNumber"),
        "orderId": _get(item, "order", "id"),
        "merchantOrderId": _get(item, "order", "merchantOrderId"),
        "status": _get(item, "status", "title"),
        "reason": _get(item, "reason", "title"),
        "returnedBy": item.get("returnedBy"),
        "createdAt": item.get("createdAt"),
        "updatedAt": item.get("updatedAt"),
        "lines": [
            {
                "sku": _get(line, "item", "sku"),
                "quantityExpected": line.get("quantityExpected"),
                "quantityReturned": line.get("quantityReturned"),
                "quantityRestocked": line.get("quantityRestocked"),
                "nonRestockedReason": _get(line, "nonRestockedReason", "title"),
            }
            for line in item.get("rmaItems") or []
            if isinstance(line, Mapping)
        ],
    }


def _encode(state: Mapping[str, Any]) -> str:
    return json.dumps({"v": CURSOR_VERSION, **state}, separators=(",", ":"), sort_keys=True)


def _is_fdc_error(response: Any) -> bool:
    """FDC's own ``{"message": ...}`` answer, as opposed to a proxy's page for a wrong URL."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, Mapping) and isinstance(body.get("message"), str)


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(WmsSource)
