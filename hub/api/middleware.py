"""What every API request shares: request ids, bearer-token + tenant authentication, idempotency keys,
the envelope (``{"success": true, "data": ...}``) and the mapping of errors to responses, in one place."""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import TYPE_CHECKING, Any

from flask import Response, current_app, g, jsonify, request
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from hub.bulkheads import ProviderBusyError
from hub.errors import Conflict, HubError, RateLimitedError, ValidationError
from hub.observability import request_id_var, tenant_var
from hub.records import IdempotentRequest, utcnow
from hub.resilience import database_outage_reason, is_database_outage
from hub.runtime.ledger import request_scope, riding_along, take_deferred
from hub.schemas import MAX_DEPTH, check_text

if TYPE_CHECKING:
    from hub.manager import IntegrationManager

API_PREFIX = "/api/integrations"
TENANT_HEADER = "X-Tenant-ID"
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: An idempotency key whose first request never finished (its process died) may be used again after this.
ABANDONED_AFTER = timedelta(minutes=5)
#: Request ids are stored (records, audit rows: 64 characters) and echoed in a header: printable ASCII.
REQUEST_ID_LENGTH = 64
_PRINTABLE_ASCII = re.compile(r"^[\x21-\x7e]+$")
#: Idempotency keys: 1-255 printable ASCII characters (the column's size; a key is an opaque token).
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
#: The largest ``?offset=`` (a bigger one would overflow the database's integer before finding nothing).
MAX_OFFSET = 2**31 - 1


class BadRequestError(ValidationError):
    """A malformed header or query parameter: 400, with the field named like any validation error."""

    status_code = 400


def manager() -> IntegrationManager:
    return current_app.extensions["hub"]


def public(view: Callable[..., Any]) -> Callable[..., Any]:
    """A view callable without a token (the OpenAPI document; webhooks, authenticated by signature)."""
    view.public = True  # type: ignore[attr-defined]
    return view


# --- envelope and errors ---------------------------------------------------------------------------


def ok(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> tuple[Response, int]:
    response = jsonify({"success": True, "data": data})
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response, status


def error_response(status: int, message: str, error: Any = None, **extra: Any) -> Response:
    body = {"success": False, "message": message, "error": error if error is not None else message, **extra}
    response = jsonify(body)
    response.status_code = status
    return response


def hub_error(error: HubError) -> Response:
    extra: dict[str, Any] = {}
    detail: Any = error.detail or error.message
    if isinstance(error, ValidationError):
        extra["errors"] = error.errors
        detail = "; ".join(f"{path}: {reason}" for path, reason in _flatten(error.errors))
    code = getattr(error, "provider_code", None)
    if code:
        extra["code"] = code
    if getattr(error, "attempts", None):
        extra["attempts"] = error.attempts  # type: ignore[attr-defined]
    response = error_response(error.status_code, error.message, detail, **extra)
    if isinstance(error, RateLimitedError | ProviderBusyError):
        response.headers["Retry-After"] = str(max(1, int(error.retry_after + 0.999)))
    return response


def http_error(error: HTTPException) -> Response:
    status = error.code or 500
    if status == 500:
        # Flask's wrapper of an exception raised outside the view (an after-request hook): the hub's own 500.
        return unexpected_error(getattr(error, "original_exception", None) or error)
    if status == 413:
        # Past MAX_CONTENT_LENGTH (a multipart body parsed before the view): the same answer as an upload
        # found too large while it streams.
        response = error_response(413, "Request body is too large", "file: over the configured max_file_size", errors={"file": ["over the configured max_file_size"]})
    else:
        response = error_response(status, error.name, error.description)
    # werkzeug's own headers: Allow of a 405, WWW-Authenticate, Retry-After (its Content-Type is text/html).
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        response.headers["Allow"] = ", ".join(_allowed_methods(error.valid_methods))
    return response


def _allowed_methods(valid_methods: list[str]) -> list[str]:
    """The methods of the resource the URL names. werkzeug lists those of every rule the path fits: for
    ``/events/batch`` (POST) also ``/events/<event_id>``'s GET. A rule with fewer variables is the better match
    (the one routing prefers), so only the methods routed to the best-matching rules are allowed."""
    adapter = current_app.url_map.bind_to_environ(request.environ)
    variables: dict[str, int] = {}
    for method in valid_methods:
        try:
            rule, _arguments = adapter.match(method=method, return_rule=True)
        except HTTPException:
            continue
        variables[method] = len(rule.arguments)
    if not variables:
        return sorted(valid_methods)
    fewest = min(variables.values())
    return sorted(method for method, count in variables.items() if count == fewest)


def unexpected_error(error: Exception) -> Response:
    if is_database_outage(error):
        # Not a bug: the database is restarting or out of reach. 503 so that clients and load balancers retry.
        reason = database_outage_reason(error)
        current_app.logger.warning("database unavailable: %s (%s)", reason, type(getattr(error, "orig", error)).__name__)
        response = error_response(503, f"Service unavailable: {reason}; try again shortly", reason, code="database_unavailable")
        response.headers["Retry-After"] = "1"
        return response
    current_app.logger.exception("unhandled error")
    # The exception's text may name server paths or data: it goes to the log, the client gets the request id.
    return error_response(500, "Internal server error", f"{type(error).__name__} (request {request_id_var.get()})")


def _flatten(errors: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(errors, dict):
        pairs = []
        for key, value in errors.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            pairs.extend(_flatten(value, path))
        return pairs
    if isinstance(errors, list):
        if errors and all(isinstance(item, str) for item in errors):
            return [(prefix, " ".join(errors))]
        pairs = []
        for item in errors:
            pairs.extend(_flatten(item, prefix))
        return pairs
    return [(prefix, str(errors))]


# --- request lifecycle: ids, auth, audit, metrics -------------------------------------------------


def start_request() -> Response | None:
    g.started = time.perf_counter()
    g.request_id = _request_id(request.headers.get("X-Request-ID", ""))
    g.request_id_token = request_id_var.set(g.request_id)
    g.tenant = None
    hub = manager()
    # Audit rows wait for the end of the request, to be written with its last transaction.
    g.audit_scope = hub.runtime.audit.buffered()
    g.audit_scope.__enter__()
    g.write_scope = request_scope()
    g.write_scope.__enter__()
    refused = authenticate()
    if refused is None:
        check_request_text()
    return refused


def _request_id(sent: str) -> str:
    """The client's ``X-Request-ID`` when it is printable ASCII (cut to what is stored), else a new one."""
    if sent and _PRINTABLE_ASCII.match(sent):
        return sent[:REQUEST_ID_LENGTH]
    return uuid.uuid4().hex


def check_request_text() -> None:
    """Refuse a URL (path parts, query parameters) or ``Idempotency-Key`` the hub could not store or look up."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None and not IDEMPOTENCY_KEY.match(key):
        raise BadRequestError({IDEMPOTENCY_HEADER: ["1 to 255 printable ASCII characters (no spaces)"]}, "Invalid Idempotency-Key header")
    if request.view_args:
        check_text(request.view_args, "The URL holds text the hub cannot store or look up")
    if request.args:
        check_text(request.args.to_dict(flat=False), "The query holds text the hub cannot store or look up")


def finish_request(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id", "")
    hub = manager()
    endpoint = request.url_rule.rule if request.url_rule else "unmatched"
    hub.metrics.http_requests.labels(request.method, endpoint, str(response.status_code)).inc()
    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    hub.metrics.http_latency.labels(endpoint).observe(elapsed)
    if g.get("tenant") and (request.method != "GET" or response.status_code >= 400):
        # Every change and every refusal is in the audit trail, beside the provider calls it caused
        # (successful reads are not: they change nothing, and are counted in the metrics).
        outcome = "success" if response.status_code < 400 else ("rejected" if response.status_code < 500 else "error")
        hub.runtime.audit_api_call(g.tenant, f"{request.method} {endpoint}", outcome, elapsed * 1000, f"HTTP {response.status_code}")
    elif response.status_code == 401:
        # A refused token or a forged webhook signature: counted for the security alert (no tenant is known).
        hub.runtime.audit_api_call(None, f"{request.method} {endpoint}", "refused", elapsed * 1000, "HTTP 401")
    return _commit_request(hub, response)


def _commit_request(hub: IntegrationManager, response: Response) -> Response:
    """The request's last transaction, before the response leaves: the writes services deferred to it
    (an inline notification's outcomes and status), its idempotent answer and its audit rows."""
    rows = hub.runtime.audit.take()
    work = take_deferred()
    try:
        with hub.db.session() as session:
            for write in work:
                write(session)
            _save_answer(session)
            hub.runtime.audit.write(session, rows)
    except IntegrityError:
        # A concurrent request with the same key answered first: its answer stands; the rest is kept.
        with hub.db.session() as session:
            for write in work:
                write(session)
            hub.runtime.audit.write(session, rows)
    except Exception as error:
        if is_database_outage(error):
            # The work may be done (an inline send went out) but is not recorded yet: the record stays leased
            # and the sweep finishes it; the client is told to retry (with its Idempotency-Key it gets that record).
            return unexpected_error(error)
        current_app.logger.exception("the request's last transaction failed")
        return error_response(500, "Internal server error", f"the result could not be saved (request {request_id_var.get()})")
    return response


def teardown_request(_error: BaseException | None) -> None:
    for name in ("write_scope", "audit_scope"):
        scope = g.pop(name, None)
        if scope is not None:
            try:
                scope.__exit__(None, None, None)  # the audit scope writes rows left unwritten (a request that failed early)
            except Exception:
                # The response has left already: a failure here would reach the WSGI server as its own HTML 500.
                current_app.logger.exception("closing the request's %s failed", name)


def authenticate() -> Response | None:
    if not request.path.startswith(API_PREFIX) or request.endpoint is None:
        return None
    if getattr(current_app.view_functions.get(request.endpoint), "public", False):
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _with_auth_header(error_response(401, "Authentication required", "Send Authorization: Bearer <token>"))
    row = manager().tokens.verify(token.strip())
    if row is None:
        return _with_auth_header(error_response(401, "Invalid or expired token", "The bearer token is not valid"))
    tenant = request.headers.get(TENANT_HEADER, "").strip()
    if not tenant:
        return error_response(403, "Tenant access required", f"Send the {TENANT_HEADER} header")
    if tenant != row.tenant:
        return error_response(403, "Tenant access denied", "The token does not belong to this tenant")
    g.tenant = tenant
    g.token = row
    tenant_var.set(tenant)
    return None


def _with_auth_header(response: Response) -> Response:
    response.headers["WWW-Authenticate"] = 'Bearer realm="hub"'
    return response


def require_admin(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not g.token.admin:
            return error_response(403, "Admin token required", "Create one with: hub token create --tenant T --admin")
        return view(*args, **kwargs)

    return wrapper


# --- idempotency ------------------------------------------------------------------------------------


def idempotent(view: Callable[..., Any] | None = None, *, with_record: bool = True) -> Any:
    """Same ``Idempotency-Key`` and body: the first response again, no second side effect. Same key
    with another body: 422. A key whose first request is still running: 409.

    ``with_record``: the view creates a record, and the key's claim is written in the same transaction
    (a concurrent request with the same key then finds the record and replays it). Views that create no
    record claim the key in a transaction of its own before they run.
    """
    if view is None:
        return lambda function: idempotent(function, with_record=with_record)

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not IDEMPOTENCY_KEY.match(key):  # also checked before every request (check_request_text)
            raise BadRequestError({IDEMPOTENCY_HEADER: ["1 to 255 printable ASCII characters (no spaces)"]}, "Invalid Idempotency-Key header")
        hub = manager()
        fingerprint = hashlib.sha256(request.method.encode() + request.path.encode() + b"\0" + _body_fingerprint()).hexdigest()
        with hub.db.session() as session:
            stored = session.get(IdempotentRequest, (g.tenant, key))
            if stored is not None:
                if stored.request_hash != fingerprint:
                    raise ValidationError(
                        {IDEMPOTENCY_HEADER: ["this key was already used with a different request"]},
                        "Idempotency-Key reused with a different request body or path",
                    )
                if stored.status_code is not None:
                    response = jsonify(stored.response)
                    response.status_code = stored.status_code
                    response.headers["Idempotent-Replayed"] = "true"
                    return response
                if utcnow() - stored.created_at < ABANDONED_AFTER:
                    raise Conflict("A request with this Idempotency-Key is still being processed")
                # Its process died mid-request: let this one through; the records keep the work exactly-once.
                session.delete(stored)
            # The path is informative (the fingerprint covers all of it): cut to its column's size.
            path = request.path[: IdempotentRequest.__table__.c.path.type.length]
            claim = IdempotentRequest(tenant=g.tenant, key=key, method=request.method, path=path, request_hash=fingerprint, created_at=utcnow())
            if not with_record:
                try:
                    session.add(claim)
                    session.flush()
                except IntegrityError:
                    raise Conflict("A request with this Idempotency-Key is still being processed") from None
        g.idempotency_key = key
        pending = [claim] if with_record else []
        try:
            with riding_along(pending):
                response = current_app.make_response(view(*args, **kwargs))
        except HubError as error:
            response = hub_error(error)
        except Exception:
            if not pending:
                _forget_key(hub, key)
            raise
        claimed = not pending  # the claim row was written (with the record, or before the view)
        if response.status_code >= 500 or response.status_code == 429:
            if claimed:
                _forget_key(hub, key)  # nothing happened: the client may retry with the same key
        else:
            # Written with the request's audit rows at its end (see finish_request).
            g.idempotent_answer = (key, claim, claimed, response.status_code, response.get_json())
        return response

    return wrapper


#: Bodies up to this size may be read whole (the idempotency fingerprint, small raw uploads); larger ones
#: are streamed, never held in memory.
SMALL_BODY = 1024 * 1024


def _body_fingerprint() -> bytes:
    """What identifies the request's body: the body itself when it is small, else what describes it (a
    streamed upload: its type, length, name and query), since reading it here would hold it in memory."""
    if request.content_length is not None and request.content_length <= SMALL_BODY:
        return request.get_data()
    # The type without its parameters: a multipart boundary is new on every try of the same upload.
    described = (request.mimetype, str(request.content_length), request.headers.get("X-File-Name", ""), request.query_string.decode("latin-1"))
    return "\0".join(described).encode()


def _save_answer(session: Any) -> None:
    answer = g.pop("idempotent_answer", None)
    if answer is None:
        return
    key, claim, claimed, status_code, body = answer
    stored = session.get(IdempotentRequest, (g.tenant, key)) if claimed else None
    if stored is None:
        if claimed:
            return  # forgotten meanwhile
        claim.status_code, claim.response = status_code, body
        session.add(claim)  # a view that failed before it created a record: its 4xx is the answer
    else:
        stored.status_code, stored.response = status_code, body


def _forget_key(hub: IntegrationManager, key: str) -> None:
    with hub.db.session() as session:
        stored = session.get(IdempotentRequest, (g.tenant, key))
        if stored is not None:
            session.delete(stored)


def idempotency_key() -> str | None:
    return g.get("idempotency_key") or request.headers.get(IDEMPOTENCY_HEADER) or None


# --- request helpers ----------------------------------------------------------------------------------


def json_body() -> Any:
    if not request.data:
        return None
    try:
        body = json.loads(request.data)
    except RecursionError:  # deeper than the interpreter's stack: far past MAX_DEPTH
        raise ValidationError({"body": [f"nested too deeply (at most {MAX_DEPTH} levels)"]}, "Request body is nested too deeply") from None
    except ValueError:
        raise ValidationError({"body": ["not valid JSON"]}, "Request body is not valid JSON") from None
    if not isinstance(body, dict):
        # Every request body is an object: null, 0, false or [] are no body left out (which views read as {}).
        raise ValidationError({"body": ["must be a JSON object"]}, "Request body must be a JSON object")
    return body


def paging() -> tuple[int, int]:
    try:
        limit = min(max(int(request.args.get("limit", 50)), 1), 500)
        offset = max(int(request.args.get("offset", 0)), 0)
    except ValueError:
        raise ValidationError({"limit": ["limit and offset must be integers"]}) from None
    if offset > MAX_OFFSET:
        raise ValidationError({"offset": [f"at most {MAX_OFFSET}"]})
    return limit, offset


def list_records(kind: str | None, view: Callable[[Any], dict[str, Any]]) -> Any:
    """A page of the tenant's records of one kind, newest first (``?status=&limit=&offset=``)."""
    limit, offset = paging()
    records = manager().list_records(g.tenant, kind, request.args.get("status"), limit, offset)
    return ok({"items": [view(record) for record in records], "limit": limit, "offset": offset})
