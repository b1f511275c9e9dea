"""The server: finds the operation a request addresses, checks it, runs its handler, checks the answer."""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import json
import threading
import time
import traceback
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from hub.testing.servers import WsgiServer

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError
from hub.testing.contract_server.description import (
    OpenAPIDocument,
)
from hub.testing.contract_server.forms import (
    _form_param_name,
    _json_param_name,
    parse_nested_form,
)
from hub.testing.contract_server.messages import (
    _HTTP_METHODS,
    ContractError,
    ContractRequest,
    ErrorShaper,
    Handler,
    HandlerResult,
    _FormStructureError,
    _Refused,
    default_error_shaper,
)
from hub.testing.contract_server.operations import (
    _find_media,
    _media_kind,
    _normalise_base_path,
    _Operation,
    _Parameter,
    _parse_credentials,
)


class ContractServer:
    """A real HTTP server on 127.0.0.1 that serves one API description, statefully.

    :param spec: the parsed description (see :mod:`hub.testing.specs`).
    :param base_path: prefix the paths are served under. ``None`` (default) takes it from the description —
        the path of the first ``servers`` URL (``/v3`` for SendGrid's ``https://api.sendgrid.com/v3``), per path
        item or operation where they have their own, or Swagger's ``basePath``. ``""`` serves the paths as written.
    :param handlers: ``{operationId or "METHOD /template": handler}``; see :meth:`register`.
    :param error_shaper: turns a :class:`ContractError` into ``(status, body, headers)`` in the provider's shape.
    :param validate_responses: check each handler's response against the description; a violation answers 500
        with the reason and is recorded in :attr:`errors` (a fake that drifts from the real API fails loudly).
    :param require_auth: refuse with 401 a request without the credentials its operation's ``security`` asks
        for (Basic, Bearer, an API-key header/query parameter); operations without ``security`` are not checked.
    :param auth_check: optional ``(request) -> bool`` that checks the credentials' values (e.g. the test key).
    """

    def __init__(
        self,
        spec: Mapping[str, Any],
        *,
        base_path: str | None = None,
        handlers: Mapping[str, Handler] | None = None,
        error_shaper: ErrorShaper = default_error_shaper,
        validate_responses: bool = True,
        require_auth: bool = True,
        auth_check: Callable[[ContractRequest], bool] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.document = OpenAPIDocument(spec)
        self.error_shaper = error_shaper
        self.validate_responses = validate_responses
        self.require_auth = require_auth
        self.auth_check = auth_check
        self.host = host
        self._port = port
        self._base_path = None if base_path is None else _normalise_base_path(base_path)
        #: State shared by the handlers; cleared by :meth:`reset`.
        self.state: dict[str, Any] = {}
        #: Every request received, in order, including refused ones.
        self.requests: list[ContractRequest] = []
        #: Contract violations of the *fakes* (handler responses, handler exceptions); see :meth:`check`.
        self.errors: list[str] = []
        self._lock = threading.RLock()
        #: operationId -> [seconds, answers left] (see :meth:`delay_answers`)
        self._delays: dict[str, list[float]] = {}
        self._handlers: dict[str, Handler] = {}
        self._routes: dict[str, list[_Operation]] = {}
        self._by_key: dict[str, _Operation] = {}
        self._index()
        for key, handler in (handlers or {}).items():
            self.register(key, handler)
        self._server: WsgiServer | None = None

    # -- indexing ------------------------------------------------------------------------------------------------

    def _server_path(self, *levels: Mapping[str, Any]) -> str:
        if self._base_path is not None:
            return self._base_path
        spec = self.document.spec
        if self.document.is_swagger2:
            return _normalise_base_path(str(spec.get("basePath", "")))
        for level in [*levels, spec]:
            servers = level.get("servers")
            if servers:
                server = servers[0]
                url = str(server.get("url", ""))
                for name, variable in (server.get("variables") or {}).items():
                    url = url.replace("{" + name + "}", str(variable.get("default", "")))
                return _normalise_base_path(urlsplit(url).path)
        return ""

    def _index(self) -> None:
        for template, raw_item in (self.document.spec.get("paths") or {}).items():
            path_item = self.document.deref(raw_item)
            for method in _HTTP_METHODS:
                operation = path_item.get(method)
                if not isinstance(operation, Mapping):
                    continue
                base = self._server_path(operation, path_item)
                entry = _Operation(self.document, method, template, base, path_item, operation)
                self._routes.setdefault(entry.method, []).append(entry)
                self._by_key[entry.key] = entry
                self._by_key.setdefault(entry.operation_id, entry)
        for entries in self._routes.values():
            entries.sort(key=lambda entry: entry.sort_key)

    def _operation(self, key: str) -> _Operation:
        entry = self._by_key.get(key)
        if entry is None:
            method, _, template = key.partition(" ")
            entry = next(
                (op for op in self._routes.get(method.upper(), []) if op.full_template == template),
                None,
            )
        if entry is None:
            raise KeyError(f"the description has no operation {key!r} (an operationId or 'METHOD /path/{{param}}')")
        return entry

    @property
    def operation_ids(self) -> list[str]:
        """Every operation's id (``operationId``, or ``"METHOD /template"`` where it has none)."""
        return sorted({entry.operation_id for entries in self._routes.values() for entry in entries})

    # -- handlers ------------------------------------------------------------------------------------------------

    def register(self, key: str, handler: Handler) -> None:
        """Serve the operation ``key`` (its ``operationId`` or ``"POST /v1/refunds"``) with ``handler``.

        ``handler(request, state)`` gets the validated :class:`ContractRequest` and the server's shared
        :attr:`state` dict, and returns ``(status, body)`` or ``(status, body, headers)``. Handlers run one at a
        time, so they need no locking of their own. An unknown key raises ``KeyError`` at once, so a typo in a
        fixture does not silently fall back to the default handler.
        """
        self._handlers[self._operation(key).operation_id] = handler

    def handler(self, key: str) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register`."""

        def decorate(function: Handler) -> Handler:
            self.register(key, function)
            return function

        return decorate

    def delay_answers(self, key: str, seconds: float, times: int = 1) -> None:
        """Hold back the next ``times`` answers to operation ``key`` (an operationId or ``"METHOD /template"``)
        for ``seconds`` *after* its handler ran: the request takes effect (the payment is made) but a client
        whose timeout is shorter gives up first -- the "timeout after the request reached the server" case.
        Other requests are served meanwhile."""
        operation = self._operation(key).operation_id
        with self._lock:
            self._delays[operation] = [float(seconds), float(times)]

    def sample_response(self, key: str, status: int | str | None = None) -> Any:
        """A minimal body the description allows for operation ``key`` (first 2xx response unless ``status``).

        The first documented example that matches the schema, else the schema's required properties with
        placeholder values: the base a stateful handler fills in.
        """
        entry = self._operation(key)
        responses = entry.prepared().responses
        code = str(status) if status is not None else self._first_success(responses)
        if code not in responses:
            return None
        media = self._response_media(self.document.deref(responses[code]), "application/json")
        if media is None:
            return None
        schema = media.get("schema", {})
        documented = [media["example"]] if "example" in media else []
        examples = media.get("examples")
        if isinstance(examples, Mapping):
            documented += [
                example["value"]
                for example in map(self.document.deref, examples.values())
                if isinstance(example, Mapping) and "value" in example
            ]
        for example in documented:
            if self.document.is_valid(example, schema):
                return example
        return self.document.sample(schema)

    @staticmethod
    def _first_success(responses: Mapping[str, Any]) -> str:
        codes = sorted(code for code in responses if str(code).startswith("2"))
        return str(codes[0]) if codes else "default"

    def _default_handler(self, request: ContractRequest, state: dict[str, Any]) -> HandlerResult:
        entry = self._operation(request.operation_id or "")
        responses = entry.prepared().responses
        code = self._first_success(responses)
        status = int(code) if code.isdigit() else 200
        body = None if status == 204 else self.sample_response(entry.operation_id, code if code in responses else None)
        return status, body

    # -- lifecycle -----------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the contract server is not started")
        return self._server.port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` — the SDK's base address; the description's base path is served beneath it."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> ContractServer:
        if self._server is None:
            self._server = WsgiServer(self._wsgi_app, host=self.host, port=self._port, name="contract-server").start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.stop()
        self._server = None

    def __enter__(self) -> ContractServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget state, logged requests and recorded errors (between tests sharing one server)."""
        with self._lock:
            self.state.clear()
            self.requests.clear()
            self.errors.clear()
            self._delays.clear()

    def check(self) -> None:
        """Raise ``AssertionError`` if a handler broke the description or crashed; call it at fixture teardown."""
        if self.errors:
            raise AssertionError("contract server: " + "\n".join(self.errors))

    def check_requests(self, *, allow_refused: Collection[str] = ()) -> None:
        """Raise ``AssertionError`` if the server refused a request the client sent, listing each one.

        A refused request means the code under test sent something the official description does not allow
        (a missing parameter, a body of the wrong shape, an unknown path): the provider would refuse it too.
        ``allow_refused`` names :attr:`ContractError.kind` values a test suite provokes on purpose, e.g.
        ``{"unauthorized"}`` where tests send a wrong API key.
        """
        refused = [
            f"{request.method} {request.path}: {request.error.message}"
            for request in self.requests
            if request.error is not None and request.error.kind not in allow_refused
        ]
        if refused:
            raise AssertionError(
                "contract server refused requests the description does not allow:\n" + "\n".join(refused)
            )

    @contextlib.contextmanager
    def isolated(self, *, allow_refused: Collection[str] = ()) -> Iterator[ContractServer]:
        """One test's use of a shared (session-scoped) server: reset it, then check it at the end.

        Yields the server emptied by :meth:`reset`; when the block ends without an exception, asserts that the
        fakes kept to the description (:meth:`check`) and that every request met it (:meth:`check_requests`
        with ``allow_refused``). The per-test fixture of a plugin's suite::

            @pytest.fixture(scope="session")
            def twilio_server(twilio_spec):
                with ContractServer(twilio_spec, error_shaper=twilio_error_shaper) as server:
                    yield server

            @pytest.fixture
            def twilio(twilio_server):
                with twilio_server.isolated(allow_refused={"unauthorized"}) as server:
                    yield server

        (pytest resumes a fixture normally at teardown even when the test failed, so the checks run then too.)
        """
        self.reset()
        yield self
        self.check()
        self.check_requests(allow_refused=allow_refused)

    # -- request processing --------------------------------------------------------------------------------------

    def _wsgi_app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        from werkzeug.wrappers import Request

        request = Request(environ)
        status, headers, payload = self.handle(
            request.method,
            request.path,
            request.query_string.decode("latin-1"),
            dict(request.headers.items()),
            request.get_data(cache=False),
        )
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        headers = {**headers, "Content-Length": str(len(payload))}
        start_response(f"{status} {reason}", list(headers.items()))
        return [payload]

    def handle(
        self, method: str, path: str, query_string: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Process one request and return ``(status, headers, payload)``; the HTTP layer only transports it.

        ``path`` is the percent-decoded path, ``query_string`` the raw query string.
        """
        request = ContractRequest(
            method=method.upper(),
            path=path,
            headers={name.lower(): value for name, value in headers.items()},
            raw_body=body,
            query_string=query_string,
        )
        request.auth = _parse_credentials(request.header("authorization"))
        try:
            entry = self._route(request)
            self._check_auth(entry, request)
            self._check_parameters(entry, request)
            self._check_body(entry, request)
        except _Refused as refused:
            return self._refuse(request, refused.error)
        return self._respond(entry, request)

    def _refuse(self, request: ContractRequest, error: ContractError) -> tuple[int, dict[str, str], bytes]:
        status, body, headers = self.error_shaper(error)
        request.status = status
        request.error = error
        with self._lock:
            self.requests.append(request)
        return self._encode(status, body, headers)

    def _route(self, request: ContractRequest) -> _Operation:
        for entry in self._routes.get(request.method, []):
            params = entry.match(request.path)
            if params is not None:
                request.operation_id = entry.operation_id
                request.path_template = entry.template
                request.path_params = dict(params)
                return entry
        other_methods = sorted(
            method
            for method, entries in self._routes.items()
            if method != request.method and any(entry.regex.fullmatch(request.path) for entry in entries)
        )
        message = f"Unrecognized request URL ({request.method}: {request.path})."
        if other_methods:
            message += f" This path accepts: {', '.join(other_methods)}."
        raise _Refused(
            ContractError(status=404, kind="not_found", message=message, location="path", details=(message,))
        )

    def _check_auth(self, entry: _Operation, request: ContractRequest) -> None:
        prepared = entry.prepared()
        if (
            self.require_auth
            and prepared.security
            and not any(
                all(self._scheme_satisfied(name, request) for name in requirement) for requirement in prepared.security
            )
        ):
            schemes = sorted({name for requirement in prepared.security for name in requirement})
            message = f"No valid credentials provided (this operation needs one of: {', '.join(schemes)})."
            raise _Refused(
                ContractError(
                    status=401, kind="unauthorized", message=message, location="header",
                    operation_id=entry.operation_id, details=(message,),
                )
            )  # fmt: skip
        if self.auth_check is not None and not self.auth_check(request):
            message = "Invalid credentials provided."
            raise _Refused(
                ContractError(
                    status=401, kind="unauthorized", message=message, location="header",
                    operation_id=entry.operation_id, details=(message,),
                )
            )  # fmt: skip

    def _scheme_satisfied(self, name: str, request: ContractRequest) -> bool:
        spec = self.document.spec
        schemes = (
            spec.get("securityDefinitions")
            if self.document.is_swagger2
            else (spec.get("components") or {}).get("securitySchemes")
        )
        scheme = self.document.deref((schemes or {}).get(name) or {})
        kind = str(scheme.get("type", "")).lower()
        auth = request.auth
        if kind in ("http", "basic"):
            wanted = "basic" if kind == "basic" else str(scheme.get("scheme", "")).lower()
            if wanted in ("basic", "bearer"):
                return auth is not None and auth.scheme == wanted and bool(auth.token or auth.username)
            return auth is not None
        if kind == "apikey":
            location, key = scheme.get("in"), str(scheme.get("name", ""))
            if location == "header":
                return bool(request.header(key))
            if location == "query":
                return key in dict(parse_qsl(request.query_string, keep_blank_values=True))
            if location == "cookie":
                return f"{key}=" in (request.header("cookie") or "")
            return True
        if kind in ("oauth2", "openidconnect"):
            return auth is not None and auth.scheme == "bearer" and bool(auth.token)
        # mutualTLS and unknown schemes cannot be checked over plain HTTP.
        return True

    def _invalid(
        self, entry: _Operation, message: str, *, param: str | None, location: str, details: Iterable[str] = ()
    ) -> _Refused:
        return _Refused(
            ContractError(
                status=400,
                kind="invalid_request",
                message=message,
                param=param,
                location=location,
                operation_id=entry.operation_id,
                details=tuple(details) or (message,),
            )
        )

    def _schema_failure(
        self, entry: _Operation, errors: list[ValidationError], *, prefix: list[Any], location: str, notation: str
    ) -> _Refused:
        namer = _form_param_name if notation == "form" else _json_param_name
        described = []
        for error in errors:
            path = [*prefix, *error.absolute_path]
            missing = getattr(error, "missing", None)
            unexpected = getattr(error, "unexpected", None)
            if missing is not None:
                described.append((f"Missing required param: {namer([*path, missing])}.", namer([*path, missing])))
            elif unexpected:
                name = namer([*path, unexpected[0]])
                described.append((f"Received unknown parameter: {name}.", name))
            else:
                name = namer(path) if path else None
                where = f" for {name}" if name else ""
                # jsonschema spells out the whole enum; Stripe's longest run to hundreds of values.
                detail = error.message if len(error.message) <= 300 else error.message[:300] + "…"
                described.append((f"Invalid value{where}: {detail}.", name))
        message, param = described[0]
        return self._invalid(entry, message, param=param, location=location, details=[text for text, _ in described])

    def _check_parameters(self, entry: _Operation, request: ContractRequest) -> None:
        prepared = entry.prepared()
        query_pairs = parse_qsl(request.query_string, keep_blank_values=True)
        try:
            nested_query = parse_nested_form(query_pairs)
        except _FormStructureError as exc:
            raise self._invalid(
                entry, f"Invalid structure for query parameter {exc}.", param=str(exc), location="query"
            ) from exc
        query: dict[str, Any] = {}
        for parameter in prepared.parameters:
            if parameter.location == "path":
                raw: Any = request.path_params.get(parameter.name)
            elif parameter.location == "query":
                raw = nested_query.get(parameter.name)
            elif parameter.location == "header":
                # OpenAPI: header parameters named Accept, Content-Type or Authorization are ignored (security and
                # content negotiation cover them).
                if parameter.name.lower() in ("accept", "content-type", "authorization"):
                    continue
                raw = request.header(parameter.name)
            else:
                continue
            if raw is None:
                if parameter.required:
                    raise self._invalid(
                        entry,
                        f"Missing required {parameter.location} parameter: {parameter.name}.",
                        param=parameter.name,
                        location=parameter.location,
                    )
                continue
            value = self._parameter_value(parameter, raw)
            errors = self.document.validate(value, parameter.schema, mode="request")
            if errors:
                raise self._schema_failure(
                    entry, errors, prefix=[parameter.name], location=parameter.location, notation="form"
                )
            if parameter.location == "path":
                request.path_params[parameter.name] = value
            elif parameter.location == "query":
                query[parameter.name] = value
        # Query keys the description does not declare are kept (many APIs ignore them), unconverted.
        for name, value in nested_query.items():
            query.setdefault(name, value)
        request.query = query

    def _parameter_value(self, parameter: _Parameter, raw: Any) -> Any:
        schema = self.document.deref(parameter.schema)
        kind = self.document._schema_type(schema) if isinstance(schema, Mapping) else None
        if isinstance(raw, str) and (kind == "array" or (isinstance(kind, list) and "array" in kind)):
            separator = self._array_separator(parameter)
            if separator is not None:
                raw = raw.split(separator) if raw else []
        return self.document.coerce(raw, schema)

    def _array_separator(self, parameter: _Parameter) -> str | None:
        """How an array sent as one string is split; ``None`` when each item comes as its own repeated key."""
        if self.document.is_swagger2:
            collection = parameter.collection_format or "csv"
            return {"csv": ",", "ssv": " ", "tsv": "\t", "pipes": "|"}.get(collection)
        style = parameter.style or ("form" if parameter.location in ("query", "cookie") else "simple")
        explode = parameter.explode if parameter.explode is not None else style == "form"
        if style == "form" and explode:
            return None
        return {"spaceDelimited": " ", "pipeDelimited": "|"}.get(style, ",")

    def _check_body(self, entry: _Operation, request: ContractRequest) -> None:
        body_spec = entry.prepared().body
        raw = request.raw_body
        full_type = request.header("content-type") or ""
        media_type = full_type.split(";")[0].strip().lower()
        request.content_type = media_type or None
        if body_spec is None:
            # A body on an operation that defines none is ignored, as real servers do: some SDKs send "{}" on
            # GET or DELETE, and refusing that would fail tests for a difference the provider never sees.
            return
        if not raw and not media_type:
            if body_spec.required:
                raise self._invalid(entry, "A request body is required.", param=None, location="body")
            return
        found = _find_media(body_spec.content, media_type) if media_type else None
        if found is None:
            accepted = ", ".join(sorted(body_spec.content)) or "none"
            message = f"Unsupported content type {media_type or '(none)'!r}; this operation accepts: {accepted}."
            raise _Refused(
                ContractError(
                    status=415, kind="unsupported_media_type", message=message, location="body",
                    operation_id=entry.operation_id, details=(message,),
                )
            )  # fmt: skip
        _, media = found
        media = self.document.deref(media)
        schema = media.get("schema") if isinstance(media, Mapping) else None
        kind = _media_kind(media_type)
        if kind in ("json", "text", "binary") and not raw:
            if body_spec.required:
                raise self._invalid(entry, "A request body is required.", param=None, location="body")
            return
        value, notation = self._decode_body(entry, kind, full_type, raw, schema)
        request.body = value
        if schema is None or kind == "binary":
            return
        errors = self.document.validate(value, schema, mode="request")
        if errors:
            raise self._schema_failure(entry, errors, prefix=[], location="body", notation=notation)

    def _decode_body(self, entry: _Operation, kind: str, full_type: str, raw: bytes, schema: Any) -> tuple[Any, str]:
        if kind == "json":
            try:
                return json.loads(raw.decode("utf-8")), "json"
            except (UnicodeDecodeError, ValueError) as exc:
                raise self._invalid(entry, f"Invalid JSON body: {exc}.", param=None, location="body") from exc
        if kind in ("form", "multipart"):
            try:
                pairs = (
                    parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
                    if kind == "form"
                    else _multipart_pairs(full_type, raw)
                )
                nested = parse_nested_form(pairs)
            except UnicodeDecodeError as exc:
                raise self._invalid(entry, "The form body is not UTF-8.", param=None, location="body") from exc
            except _FormStructureError as exc:
                raise self._invalid(
                    entry, f"Invalid structure for parameter {exc}.", param=str(exc), location="body"
                ) from exc
            return (self.document.coerce(nested, schema) if schema is not None else nested), "form"
        if kind == "text":
            return raw.decode("utf-8", errors="replace"), "json"
        return raw, "json"

    def _respond(self, entry: _Operation, request: ContractRequest) -> tuple[int, dict[str, str], bytes]:
        handler = self._handlers.get(entry.operation_id, self._default_handler)
        delay: list[float] | None = None
        with self._lock:
            try:
                result = handler(request, self.state)
                status, body, headers = (*result, {}) if len(result) == 2 else result  # type: ignore[misc]
                headers = dict(headers)
            except Exception:
                problem = f"{entry.operation_id}: handler raised\n{traceback.format_exc()}"
                self.errors.append(problem)
                request.status = 500
                self.requests.append(request)
                return self._encode(500, {"contract_server_error": problem}, {})
            problem = self._check_response(entry, status, body, headers) if self.validate_responses else None
            if problem is not None:
                self.errors.append(problem)
                status, body, headers = 500, {"contract_server_error": problem}, {}
            request.status = status
            self.requests.append(request)
            delay = self._delays.get(entry.operation_id)
            if delay is not None:
                delay[1] -= 1
                if delay[1] <= 0:
                    del self._delays[entry.operation_id]
        if delay is not None:
            time.sleep(delay[0])  # outside the lock: the server goes on serving others
        return self._encode(status, body, headers)

    def _response_media(self, response: Mapping[str, Any], media_type: str) -> Mapping[str, Any] | None:
        if self.document.is_swagger2:
            return {"schema": response["schema"]} if "schema" in response else None
        content = {key.split(";")[0].strip().lower(): value for key, value in (response.get("content") or {}).items()}
        if not content:
            return None
        found = _find_media(content, media_type)
        if found is None:
            # Prefer JSON when the handler did not say which of several documented types it answers with.
            json_type = next((key for key in content if _media_kind(key) == "json"), None)
            found = (json_type, content[json_type]) if json_type else next(iter(content.items()))
        return self.document.deref(found[1])

    def _check_response(self, entry: _Operation, status: int, body: Any, headers: Mapping[str, str]) -> str | None:
        responses = entry.prepared().responses
        candidates = [str(status), f"{str(status)[0]}XX", f"{str(status)[0]}xx", "default"]
        code = next((candidate for candidate in candidates if candidate in responses), None)
        if code is None:
            if status >= 400:
                # Many descriptions document no error responses at all (Twilio's), while the real API still
                # answers errors: a fake's error status cannot be held to a schema that does not exist.
                return None
            return f"{entry.operation_id}: status {status} is not documented (documented: {', '.join(map(str, responses))})"
        if body is None or isinstance(body, bytes | str):
            return None
        content_type = next(
            (value for name, value in headers.items() if name.lower() == "content-type"), "application/json"
        )
        media = self._response_media(self.document.deref(responses[code]), content_type.split(";")[0].strip().lower())
        if media is None or "schema" not in media:
            return None
        errors = self.document.validate(body, media["schema"], mode="response")
        if not errors:
            return None
        details = "; ".join(
            f"{_json_param_name(error.absolute_path) or '(root)'}: {error.message}" for error in errors[:5]
        )
        return f"{entry.operation_id}: the handler's {status} response breaks the description: {details}"

    @staticmethod
    def _encode(status: int, body: Any, headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        headers = dict(headers)
        has_type = any(name.lower() == "content-type" for name in headers)
        if body is None:
            payload = b""
        elif isinstance(body, bytes):
            payload = body
            if not has_type:
                headers["Content-Type"] = "application/octet-stream"
        elif isinstance(body, str):
            payload = body.encode("utf-8")
            if not has_type:
                headers["Content-Type"] = "text/plain; charset=utf-8"
        else:
            payload = json.dumps(body).encode("utf-8")
            if not has_type:
                headers["Content-Type"] = "application/json"
        return status, headers, payload


def _multipart_pairs(full_type: str, raw: bytes) -> list[tuple[str, str]]:
    """Fields of a ``multipart/form-data`` body as (name, value) pairs; file contents decoded as Latin-1."""
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    message = parser.parsebytes(b"Content-Type: " + full_type.encode("latin-1") + b"\r\n\r\n" + raw)
    pairs: list[tuple[str, str]] = []
    if not message.is_multipart():
        return pairs
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            pairs.append((str(name), payload.decode("latin-1")))
        else:
            pairs.append((str(name), payload.decode(part.get_content_charset() or "utf-8", errors="replace")))
    return pairs
