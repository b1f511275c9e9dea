"""What handlers and tests see of a request: the request, its credentials, contract errors and their shape."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass



_HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

#: What a handler returns: ``(status, body)`` or ``(status, body, headers)``. A dict or list body is sent as
#: JSON, ``str`` as text, ``bytes`` as is, ``None`` as an empty body.
HandlerResult = tuple[int, Any] | tuple[int, Any, Mapping[str, str]]
Handler = Callable[["ContractRequest", dict[str, Any]], HandlerResult]


@dataclass(frozen=True)
class ContractError:
    """Why the server refused a request, handed to the provider's error shaper.

    ``kind`` is one of ``"not_found"`` (no such path, or the path has no such method), ``"unauthorized"``
    (credentials missing, or refused by ``auth_check``), ``"invalid_request"`` (a parameter or the body breaks
    the description), ``"unsupported_media_type"`` (a body in a content type the operation does not take).
    ``param`` names the offending parameter in the request's own notation: ``metadata[order_id]`` for forms and
    query strings, ``personalizations.0.to`` for JSON. ``details`` lists every violation found, not only the one
    reported in ``message``.
    """

    status: int
    kind: str
    message: str
    param: str | None = None
    location: str | None = None
    operation_id: str | None = None
    details: tuple[str, ...] = ()


ErrorShaper = Callable[[ContractError], tuple[int, Any, Mapping[str, str]]]


def default_error_shaper(error: ContractError) -> tuple[int, Any, Mapping[str, str]]:
    """The Stripe-like shape many APIs share: ``{"error": {"type", "message", "param"}}`` with the error's status."""
    error_type = "authentication_error" if error.status == 401 else "invalid_request_error"
    body: dict[str, Any] = {"type": error_type, "message": error.message}
    if error.param is not None:
        body["param"] = error.param
    return error.status, {"error": body}, {}


@dataclass(frozen=True)
class Credentials:
    """The credentials of a request's ``Authorization`` header.

    ``scheme`` is lower-case (``"basic"``, ``"bearer"``…). Basic credentials are split into ``username`` and
    ``password``; any other scheme's value is in ``token``.
    """

    scheme: str
    token: str | None = None
    username: str | None = None
    password: str | None = None


@dataclass
class ContractRequest:
    """A request as the server understood it; handlers receive it and ``ContractServer.requests`` logs it.

    ``path_params``, ``query`` and ``body`` hold values already converted to the description's types (a form's
    ``amount=2000`` is the integer 2000, ``metadata[order_id]=7`` is ``{"metadata": {"order_id": "7"}}``).
    ``headers`` has lower-case names. ``status`` is the status the server answered with, and ``error`` the
    reason it refused the request, if it did.
    """

    method: str
    path: str
    headers: dict[str, str]
    raw_body: bytes
    query_string: str = ""
    operation_id: str | None = None
    path_template: str | None = None
    path_params: dict[str, Any] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    content_type: str | None = None
    auth: Credentials | None = None
    status: int | None = None
    error: ContractError | None = None

    def header(self, name: str, default: str | None = None) -> str | None:
        """A request header by case-insensitive name."""
        return self.headers.get(name.lower(), default)


class _Refused(Exception):
    """Raised inside request processing to answer with the provider-shaped error."""

    def __init__(self, error: ContractError) -> None:
        super().__init__(error.message)
        self.error = error


class _FormStructureError(ValueError):
    pass
