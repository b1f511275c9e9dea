"""Sync provider ``rest``: a declarative REST source, configured in hub.yaml alone.

Each stream (``streams.<data_type>``) names a path, query params, where the records sit in the JSON answer
(``record_selector``, a dotted path; ``""`` for a top-level list), the primary key, a field mapping (hub field <-
dotted source path), a pagination strategy and an optional incremental cursor. Requests go through :mod:`hub.http`
(timeouts, 401/403 -> ``ConfigurationError``, 429/5xx -> ``TransientError`` with ``Retry-After``, other 4xx ->
``PermanentError``).

**Cursor.** ``sync`` reads one page per call. The cursor it returns is JSON: ``{"v": 1, "page": <pagination
position or null>, "hwm": <the committed high-water mark>, "max": <the largest cursor value seen this run>}``.
Within a run every page is requested with the same incremental param (the committed ``hwm`` minus ``lookback``),
so the pagination stays consistent; ``hwm`` only moves to ``max`` when the stream's last page was read. The core
saves the cursor after storing each page, so a run that fails on page 3 resumes at page 3 and never skips rows.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from hub import hookimpl
from hub.capabilities import HealthResult, Provider, ProviderContext, SyncRequest, SyncResult
from hub.errors import ConfigurationError, PermanentError, ProviderError, UnsupportedError
from hub.http import HttpClient, HttpSettings

__all__ = ["RestSettings", "RestSource", "register_providers"]

AUTH_TYPES = ("none", "bearer", "api_key", "basic", "oauth2_client_credentials")
PAGINATION_TYPES = ("none", "page_number", "offset", "cursor", "link_header", "next_url")
CURSOR_VERSION = 1
#: Seconds before a token's stated expiry at which it is fetched again.
TOKEN_SKEW = 30.0
_LOOKBACK = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_TEMPLATE = re.compile(r"\{options\.([A-Za-z0-9_]+)\}")


def _lookback_field(value: Any) -> None:
    if isinstance(value, bool) or not (
        (isinstance(value, int | float) and value >= 0) or (isinstance(value, str) and _LOOKBACK.match(value))
    ):
        raise ValidationError("seconds (a number) or a duration like '30s', '5m', '2h', '1d'")


class AuthSchema(Schema):
    type = fields.String(load_default="none", validate=validate.OneOf(AUTH_TYPES))
    token = fields.String(load_default=None, allow_none=True)  # bearer
    name = fields.String(load_default=None, allow_none=True)  # api_key
    value = fields.String(load_default=None, allow_none=True)
    in_ = fields.String(data_key="in", load_default="header", validate=validate.OneOf(("header", "query")))
    username = fields.String(load_default=None, allow_none=True)  # basic
    password = fields.String(load_default=None, allow_none=True)
    token_url = fields.String(load_default=None, allow_none=True)  # oauth2_client_credentials
    client_id = fields.String(load_default=None, allow_none=True)
    client_secret = fields.String(load_default=None, allow_none=True)
    scope = fields.String(load_default=None, allow_none=True)

    @validates_schema
    def _required(self, data: dict[str, Any], **_: Any) -> None:
        needed = {
            "bearer": ("token",),
            "api_key": ("name", "value"),
            "basic": ("username", "password"),
            "oauth2_client_credentials": ("token_url", "client_id", "client_secret"),
        }.get(data["type"], ())
        missing = [name for name in needed if not data.get(name)]
        if missing:
            raise ValidationError({name: [f"required for auth type {data['type']}"] for name in missing})


class PaginationSchema(Schema):
    type = fields.String(load_default="none", validate=validate.OneOf(PAGINATION_TYPES))
    page_param = fields.String(load_default="page")
    size_param = fields.String(load_default=None, allow_none=True)
    start = fields.Integer(load_default=1)
    offset_param = fields.String(load_default="offset")
    limit_param = fields.String(load_default=None, allow_none=True)
    cursor_param = fields.String(load_default="cursor")
    cursor_path = fields.String(load_default=None, allow_none=True)
    next_url_path = fields.String(load_default=None, allow_none=True)
    #: The largest page the API serves (the hub's page size is capped at it).
    max_page_size = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1))

    @validates_schema
    def _required(self, data: dict[str, Any], **_: Any) -> None:
        if data["type"] == "cursor" and not data.get("cursor_path"):
            raise ValidationError({"cursor_path": ["required for cursor pagination"]})
        if data["type"] == "next_url" and not data.get("next_url_path"):
            raise ValidationError({"next_url_path": ["required for next_url pagination"]})


class IncrementalSchema(Schema):
    cursor_field = fields.String(required=True, validate=validate.Length(min=1))
    type = fields.String(load_default="datetime", validate=validate.OneOf(("datetime", "integer")))
    param = fields.String(required=True, validate=validate.Length(min=1))
    lookback = fields.Raw(load_default=0, validate=_lookback_field)
    #: ``strftime`` format of the param's value (datetime); ISO 8601 by default.
    format = fields.String(load_default=None, allow_none=True)
    #: Send the value in this request header instead of a query param (``If-Modified-Since``: use ``http-date``).
    header = fields.String(load_default=None, allow_none=True)
    #: The sent text with ``{value}`` in it, for filter languages: ``UpdatedDateUTC>=DateTime({value})``.
    template = fields.String(load_default=None, allow_none=True, validate=validate.Regexp(r".*\{value\}"))


class StreamSchema(Schema):
    path = fields.String(required=True)
    params = fields.Dict(keys=fields.String(), values=fields.Raw(), load_default=dict)
    headers = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    record_selector = fields.String(load_default="")
    primary_key = fields.List(fields.String(validate=validate.Length(min=1)), load_default=lambda: ["id"])
    fields_ = fields.Dict(data_key="fields", keys=fields.String(), values=fields.String(), load_default=dict)
    pagination = fields.Nested(PaginationSchema, load_default=lambda: PaginationSchema().load({}))
    incremental = fields.Nested(IncrementalSchema, load_default=None, allow_none=True)


class RestSettings(HttpSettings):
    base_url = fields.Url(required=True, require_tld=False, schemes={"http", "https"})
    auth = fields.Nested(AuthSchema, load_default=lambda: AuthSchema().load({}))
    headers = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    streams = fields.Dict(
        keys=fields.String(validate=validate.Regexp(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")),
        values=fields.Nested(StreamSchema),
        required=True,
        validate=validate.Length(min=1),
    )
    #: A path for ``health`` (default: the base URL).
    health_path = fields.String(load_default="")


# --- helpers ---------------------------------------------------------------------------------------


def lookup(document: Any, path: str) -> Any:
    """``document`` at the dotted ``path`` (``"data.items"``, ``"links.0.href"``); ``""`` is the document."""
    if not path:
        return document
    for part in path.split("."):
        if isinstance(document, Mapping):
            document = document.get(part)
        elif isinstance(document, list) and part.isdigit() and int(part) < len(document):
            document = document[int(part)]
        else:
            return None
    return document


def lookback_seconds(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    match = _LOOKBACK.match(str(value))
    assert match is not None
    return int(match.group(1)) * _UNITS[match.group(2)]


def parse_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    text = str(value).strip()
    match = re.fullmatch(r"/Date\((\d+)([+-]\d{4})?\)/", text)  # Microsoft JSON dates (Xero)
    if match:
        return datetime.fromtimestamp(int(match.group(1)) / 1000, UTC)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _same_origin(url: str, base: str) -> bool:
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


class _OAuth2:
    """Client-credentials tokens, cached until shortly before expiry; :meth:`invalidate` after a 401."""

    def __init__(self, auth: Mapping[str, Any], http: HttpClient) -> None:
        self.auth = auth
        self.http = http
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires = 0.0
        self.fetched = 0

    def token(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() >= self._expires:
                self._fetch()
            assert self._token is not None
            return self._token

    def invalidate(self, token: str) -> None:
        with self._lock:
            if self._token == token:
                self._token = None

    def _fetch(self) -> None:
        data = {"grant_type": "client_credentials"}
        if self.auth.get("scope"):
            data["scope"] = self.auth["scope"]
        response = self.http.post(
            self.auth["token_url"],
            data=data,
            auth=(self.auth["client_id"], self.auth["client_secret"]),
            headers={"Accept": "application/json"},
            service="the OAuth2 token endpoint",
        )
        try:
            body = response.json()
            token = body["access_token"]
        except (ValueError, KeyError, TypeError):
            raise ConfigurationError("the OAuth2 token endpoint answered without an access_token") from None
        expires_in = body.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) or str(expires_in).isdigit() else 3600.0
        self._token = str(token)
        self._expires = time.monotonic() + max(0.0, lifetime - TOKEN_SKEW)
        self.fetched += 1


# --- the provider ----------------------------------------------------------------------------------


class RestSource(Provider):
    type_name = "rest"
    capability = "sync"
    settings_schema: ClassVar[type[Schema]] = RestSettings
    #: The whole auth block (token, api key value, password, client secret) is never shown.
    secret_settings = ("auth",)
    description = "A declarative REST source: streams, auth, pagination and incremental cursors from hub.yaml."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        self.base_url: str = settings["base_url"].rstrip("/")
        self.auth: dict[str, Any] = dict(settings["auth"])
        self.streams: dict[str, dict[str, Any]] = dict(settings["streams"])
        headers = {"Accept": "application/json", **settings["headers"]}
        basic = None
        kind = self.auth["type"]
        if kind == "bearer":
            headers["Authorization"] = f"Bearer {self.auth['token']}"
        elif kind == "api_key" and self.auth["in_"] == "header":
            headers[self.auth["name"]] = self.auth["value"]
        elif kind == "basic":
            basic = (self.auth["username"], self.auth["password"])
        service = f"REST source {name}"
        self.http = HttpClient.from_settings(service, settings, base_url=self.base_url, headers=headers, auth=basic)
        self.oauth: _OAuth2 | None = None
        if kind == "oauth2_client_credentials":
            token_http = HttpClient.from_settings(
                service, settings, status_errors={400: ConfigurationError, 404: ConfigurationError}
            )
            self.oauth = _OAuth2(self.auth, token_http)

    # --- requests ----------------------------------------------------------------------------------

    def _get(self, url: str, params: dict[str, Any] | None, headers: dict[str, str]) -> Any:
        if self.auth["type"] == "api_key" and self.auth["in_"] == "query":
            params = {**(params or {}), self.auth["name"]: self.auth["value"]}
        if self.oauth is None:
            return self.http.get(url, params=params, headers=headers)
        token = self.oauth.token()
        response = self.http.get(
            url, params=params, headers={**headers, "Authorization": f"Bearer {token}"}, check=False
        )
        if response.status_code == 401:  # expired or revoked early: one fresh token, one retry
            self.oauth.invalidate(token)
            token = self.oauth.token()
            response = self.http.get(
                url, params=params, headers={**headers, "Authorization": f"Bearer {token}"}, check=False
            )
        error = self.http.error_for(response)
        if error is not None:
            raise error
        return response

    # --- sync --------------------------------------------------------------------------------------

    @hookimpl
    def sync(self, request: SyncRequest) -> SyncResult:
        stream = self.streams.get(request.data_type)
        if stream is None:
            raise UnsupportedError(
                f"REST source {self.name}: no stream {request.data_type!r}; streams: {', '.join(sorted(self.streams))}"
            )
        state = self._decode(request.cursor)
        pagination, incremental = stream["pagination"], stream["incremental"]
        size = max(1, int(request.page_size))
        if pagination.get("max_page_size"):
            size = min(size, pagination["max_page_size"])
        params, headers = self._params(stream, request.options), dict(stream["headers"])
        if incremental is not None and state["hwm"] is not None:
            value = self._since(incremental, state["hwm"])
            if incremental.get("template"):
                value = incremental["template"].replace("{value}", value)
            if incremental.get("header"):
                headers[incremental["header"]] = value
            else:
                params[incremental["param"]] = value
        kind = pagination["type"]
        position = state["page"]
        url: str = stream["path"]
        if kind in ("link_header", "next_url") and position is not None:
            url, params = str(position), None  # the API's own next URL carries every param
            self._check_origin(url)
        else:
            if kind == "page_number":
                params[pagination["page_param"]] = pagination["start"] if position is None else position
            elif kind == "offset":
                params[pagination["offset_param"]] = 0 if position is None else position
            elif kind == "cursor" and position is not None:
                params[pagination["cursor_param"]] = position
            size_param = pagination["limit_param"] if kind == "offset" else pagination["size_param"]
            if size_param:
                params[size_param] = size
        response = self._get(url, params, headers)
        body = self._json(response)
        raw = lookup(body, stream["record_selector"])
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            raise PermanentError(
                f"REST source {self.name}: {request.data_type}: record_selector "
                f"{stream['record_selector']!r} does not point at a list"
            )
        raw = [item for item in raw if isinstance(item, Mapping)]
        next_position = self._next(pagination, position, response, body, raw, size, response.url)
        seen = state["max"]
        if incremental is not None:
            for item in raw:
                seen = self._greater(incremental, seen, lookup(item, incremental["cursor_field"]))
        records = [self._map(stream, item) for item in raw]
        if next_position is not None:
            cursor = {"v": CURSOR_VERSION, "page": next_position, "hwm": state["hwm"], "max": seen}
        else:  # the stream's last page: the high-water mark moves, the next run starts at the first page
            hwm = self._greater(incremental, state["hwm"], seen) if incremental is not None else None
            cursor = {"v": CURSOR_VERSION, "page": None, "hwm": hwm, "max": None}
        return SyncResult(
            records=records,
            cursor=json.dumps(cursor, separators=(",", ":")),
            has_more=next_position is not None,
            primary_key=tuple(stream["primary_key"]),
        )

    def _decode(self, cursor: str | None) -> dict[str, Any]:
        empty = {"page": None, "hwm": None, "max": None}
        if not cursor:
            return empty
        try:
            state = json.loads(cursor)
        except ValueError:
            raise PermanentError(f"REST source {self.name}: unreadable cursor; run a full resync") from None
        if not isinstance(state, dict) or state.get("v") != CURSOR_VERSION:
            raise PermanentError(f"REST source {self.name}: cursor of another version; run a full resync")
        return {key: state.get(key) for key in empty}

    def _params(self, stream: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
        """The stream's params with ``{options.<name>}`` filled in; a param whose option is absent is left out."""
        params: dict[str, Any] = {}
        for name, value in stream["params"].items():
            if isinstance(value, str) and _TEMPLATE.search(value):
                names = _TEMPLATE.findall(value)
                if any(options.get(option) in (None, "") for option in names):
                    continue
                value = _TEMPLATE.sub(lambda match: str(options[match.group(1)]), value)
            params[name] = value
        return params

    def _json(self, response: Any) -> Any:
        try:
            return response.json()
        except ValueError:
            raise PermanentError(
                f"REST source {self.name}: the answer (HTTP {response.status_code}) is not JSON"
            ) from None

    def _next(
        self,
        pagination: Mapping[str, Any],
        position: Any,
        response: Any,
        body: Any,
        raw: list[Any],
        size: int,
        url: str,
    ) -> Any:
        kind = pagination["type"]
        if kind in ("page_number", "offset"):
            # A short page ends the stream when the page size is sent, or fixed by the API (max_page_size).
            sized = bool(pagination["limit_param"] if kind == "offset" else pagination["size_param"])
            sized = sized or bool(pagination.get("max_page_size"))
            if not raw or (sized and len(raw) < size):
                return None
            if kind == "page_number":
                return (pagination["start"] if position is None else position) + 1
            return (0 if position is None else position) + len(raw)
        if kind == "cursor":
            token = lookup(body, pagination["cursor_path"])
            return None if token in (None, "") or token == position else token
        if kind == "link_header":
            target = (response.links.get("next") or {}).get("url")
        elif kind == "next_url":
            target = lookup(body, pagination["next_url_path"])
        else:
            return None
        if not target or not isinstance(target, str):
            return None
        target = urljoin(url, target)
        self._check_origin(target)
        if self.auth["type"] == "api_key" and self.auth["in_"] == "query":  # the key is added again per request
            parts = urlsplit(target)
            query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != self.auth["name"]]
            target = urlunsplit(parts._replace(query=urlencode(query)))
        return target

    def _check_origin(self, url: str) -> None:
        if not _same_origin(url, self.base_url):  # never send the credentials to another host
            raise PermanentError(f"REST source {self.name}: the next page's URL leaves the base URL's host")

    def _map(self, stream: Mapping[str, Any], item: Mapping[str, Any]) -> dict[str, Any]:
        mapping = stream["fields_"]
        if not mapping:
            return dict(item)
        return {field_name: lookup(item, path) for field_name, path in mapping.items()}

    # --- incremental values ------------------------------------------------------------------------

    @staticmethod
    def _value(incremental: Mapping[str, Any], value: Any) -> Any:
        if incremental["type"] == "integer":
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
        return parse_datetime(value)

    def _greater(self, incremental: Mapping[str, Any], stored: Any, value: Any) -> Any:
        """The larger of the stored mark (JSON: an int or an ISO string) and ``value``, as stored."""
        new = self._value(incremental, value)
        if new is None:
            return stored
        old = self._value(incremental, stored)
        if old is not None and old >= new:
            return stored
        return new if isinstance(new, int) else new.isoformat()

    def _since(self, incremental: Mapping[str, Any], hwm: Any) -> str:
        seconds = lookback_seconds(incremental["lookback"])
        if incremental["type"] == "integer":
            return str(int(hwm) - int(seconds))
        moment = self._value(incremental, hwm)
        assert isinstance(moment, datetime)
        moment -= timedelta(seconds=seconds)
        fmt = incremental.get("format")
        if fmt == "http-date":
            return moment.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
        return moment.strftime(fmt) if fmt else moment.isoformat()

    # --- health ------------------------------------------------------------------------------------

    @hookimpl
    def health(self) -> HealthResult:
        headers: dict[str, str] = {}
        if self.oauth is not None:
            try:
                headers["Authorization"] = f"Bearer {self.oauth.token()}"
            except ProviderError as error:
                return HealthResult("error", error.message)
        params = None
        if self.auth["type"] == "api_key" and self.auth["in_"] == "query":
            params = {self.auth["name"]: self.auth["value"]}
        return self.http.probe("GET", self.settings["health_path"] or self.base_url, headers=headers, params=params)


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(RestSource)
