"""Notify provider ``slack-webhook``: chat messages through Slack incoming webhooks.

An incoming webhook is a secret URL bound to one channel: ``POST`` a JSON document
``{"text": ..., "blocks": [...]}`` and Slack answers ``200 ok``, or an error word in the body with
the status: ``400 invalid_payload`` / ``invalid_blocks`` / ``no_text``, ``403 action_prohibited`` /
``invalid_token``, ``404 channel_not_found`` / ``no_service``, ``410 channel_is_archived``, ``429``
with ``Retry-After``, ``5xx``.

A recipient's address is a destination name (``#ops``; ``default`` when the request named none).
``channels`` maps destination names to their own webhook URLs; any other destination goes to
``webhook_url`` with ``"channel": "<name>"`` in the payload, which legacy webhooks honour and app
webhooks ignore (they always post to their own channel) -- or fails, with
``unknown_destinations: fail``. One POST per distinct destination; every recipient of that
destination gets its outcome.

A destination's POST can fail alone: Slack refuses the payload (its recipients ``failed``), or its
webhook is unusable (archived channel, revoked URL: its recipients ``retry``, and the other
destinations are still posted). A transient failure (429, 5xx, no answer) stops the batch: that
destination and the ones not posted yet are ``retry``. The core hands ``retry`` recipients to the next
provider, so no destination is posted twice. An error is raised only when nothing was posted.

Webhook URLs are credentials: they never appear in an error message or a log line (errors name
the destination instead).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from hub import hookimpl
from hub.capabilities import HealthResult, Message, NotifyResult, Provider, ProviderContext, RecipientResult
from hub.errors import ConfigurationError, PermanentError, ProviderError, TransientError, UnsupportedError
from hub.http import HttpClient, HttpSettings, ProviderReason

if TYPE_CHECKING:
    import requests

__all__ = ["SlackSettings", "SlackWebhook", "register_providers"]

DEFAULT_DESTINATION = "default"
#: Hosts Slack serves incoming webhooks from.
SLACK_HOSTS = ("hooks.slack.com", "hooks.slack-gov.com")
# /services/T…/B…/<secret> (incoming webhooks); /workflows/… and /triggers/… (Workflow Builder webhooks).
_WEBHOOK_PATH = re.compile(
    r"^/(services/[A-Za-z0-9]+/[A-Za-z0-9]+/[A-Za-z0-9_-]+|(workflows|triggers)(/[A-Za-z0-9_-]+){3,4})/?$"
)
_ERROR_WORD = re.compile(r"^[a-z_]{1,64}$")


class SlackSettings(HttpSettings):
    """``providers.<name>`` settings of a ``slack-webhook`` provider (HttpSettings adds ``timeout`` and
    ``connect_timeout``, in seconds)."""

    #: The default destination's webhook (``SLACK_WEBHOOK_URL``).
    webhook_url = fields.Url(load_default=None, allow_none=True, require_tld=False, schemes={"http", "https"})
    #: Destination name -> that channel's webhook URL (``{"#ops": "https://hooks.slack.com/services/..."}``).
    channels = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=200)),
        values=fields.Url(require_tld=False, schemes={"http", "https"}),
        load_default=dict,
    )
    #: Other destinations: ``default`` -> webhook_url with a channel override, ``fail`` -> that recipient fails.
    unknown_destinations = fields.String(load_default="default", validate=validate.OneOf(["default", "fail"]))
    #: Legacy webhooks only (app webhooks ignore them): the bot name and emoji shown.
    username = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=80))
    icon_emoji = fields.String(load_default=None, allow_none=True, validate=validate.Regexp(r"^:[a-z0-9_+'-]+:$"))

    @validates_schema
    def _somewhere_to_post(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("webhook_url") and not data.get("channels"):
            raise ValidationError(
                {"webhook_url": ["set webhook_url (or SLACK_WEBHOOK_URL), or a channels mapping of webhooks"]}
            )


@dataclass
class _Route:
    """Where the recipients of one destination are posted."""

    destination: str
    url: str
    channel_override: str | None = None
    positions: list[int] = field(default_factory=list)


def _key(destination: str) -> str:
    """Destination names compare without their ``#`` and case (``#Ops`` is ``ops``)."""
    return destination.strip().lstrip("#").lower()


class SlackWebhook(Provider):
    type_name = "slack-webhook"
    capability = "notify"
    channels = ("chat",)
    settings_schema: ClassVar[type[Schema]] = SlackSettings
    env_settings: ClassVar[dict[str, str]] = {"webhook_url": "SLACK_WEBHOOK_URL"}
    secret_settings: ClassVar[tuple[str, ...]] = ("webhook_url", "channels")
    description = "Chat messages (text and Block Kit blocks) through Slack incoming webhooks."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        self._webhooks = {_key(destination): url for destination, url in settings["channels"].items()}
        if settings["webhook_url"]:
            self._webhooks.setdefault(DEFAULT_DESTINATION, settings["webhook_url"])
        # A revoked URL (404 no_service), a deleted or archived channel (404, 410), a workspace policy (403):
        # that webhook is unusable, a setting to fix; the other destinations may still work.
        self.http = HttpClient.from_settings(
            "Slack",
            settings,
            headers={"User-Agent": "integration-hub-slack/0.1"},
            extract_error=_error_word,
            status_errors={404: ConfigurationError, 410: ConfigurationError},
        )

    # --- routing -------------------------------------------------------------------------------------

    def route(self, address: str) -> tuple[str, str, str | None] | None:
        """``(destination, webhook URL, channel override)`` for a recipient address, or ``None`` when
        no webhook serves it."""
        destination = address.strip() or DEFAULT_DESTINATION
        url = self._webhooks.get(_key(destination))
        if url is not None:
            return destination, url, None
        default = self._webhooks.get(DEFAULT_DESTINATION)
        if default is None or self.settings["unknown_destinations"] == "fail":
            return None
        override = destination if destination[:1] in "#@" else f"#{destination}"
        return destination, default, override

    def payload(self, message: Message, channel_override: str | None) -> dict[str, Any]:
        document: dict[str, Any] = {"text": message.text}
        if message.blocks:
            document["blocks"] = message.blocks
        if self.settings["username"]:
            document["username"] = self.settings["username"]
        if self.settings["icon_emoji"]:
            document["icon_emoji"] = self.settings["icon_emoji"]
        if channel_override:
            document["channel"] = channel_override
        return document

    # --- notify --------------------------------------------------------------------------------------

    @hookimpl
    def notify(self, message: Message) -> NotifyResult:
        if message.channel != "chat":
            raise UnsupportedError(f"slack-webhook delivers chat messages only, not {message.channel}")
        results: list[RecipientResult | None] = [None] * len(message.recipients)
        routes: dict[str, _Route] = {}
        for position, recipient in enumerate(message.recipients):
            route = self.route(recipient.address)
            if route is None:
                results[position] = RecipientResult(
                    recipient.address, "failed", error=f"no Slack webhook is configured for {recipient.address!r}"
                )
                continue
            destination, url, override = route
            routes.setdefault(_key(destination), _Route(destination, url, override)).positions.append(position)

        errors: list[ProviderError] = []
        stopped: TransientError | None = None  # Slack is down or limiting: nothing more is posted
        unusable: dict[str, ConfigurationError] = {}  # by webhook URL: one refusal is enough
        for route in routes.values():
            error: ProviderError | None = stopped or unusable.get(route.url)
            if error is None:
                try:
                    self._post(route, self.payload(message, route.channel_override))
                except PermanentError as refused:  # Slack refused this payload: these recipients fail
                    error = refused
                except ConfigurationError as refused:  # this webhook is unusable; the others may work
                    error = unusable[route.url] = refused
                except TransientError as failed:
                    error = stopped = failed
            if error is not None:
                errors.append(error)
            # Not posted for a reason that is not the payload's: the core gives these to the next provider.
            status = "sent" if error is None else "failed" if isinstance(error, PermanentError) else "retry"
            for position in route.positions:
                address = message.recipients[position].address
                results[position] = RecipientResult(address, status, error=error.message if error else None)
        posted = len(routes) - len(errors)
        if errors and not posted:
            raise _most_hopeful(errors)  # nothing was posted: a retry or the next provider posts nothing twice
        self.log.info("slack-webhook: message %s posted to %d of %d destination(s)", message.id, posted, len(routes))
        return NotifyResult([result for result in results if result is not None])

    # --- HTTP ----------------------------------------------------------------------------------------

    def _post(self, route: _Route, payload: dict[str, Any]) -> None:
        """POST one payload to one webhook; hub.http raises the hub error for anything but 2xx, with Slack's
        error word as ``provider_code``. Messages name the destination, never the URL (it is the credential)."""
        self.http.post(route.url, json=payload, service=f"the Slack webhook for {route.destination!r}")

    # --- health and close ----------------------------------------------------------------------------

    @hookimpl
    def health(self) -> HealthResult:
        problems = []
        for destination, url in sorted(self._webhooks.items()):
            problem = _url_problem(url)
            if problem:
                problems.append(f"{destination}: {problem}")
        if problems:
            return HealthResult("error", "; ".join(problems))
        return HealthResult(
            "success",
            f"{len(self._webhooks)} webhook URL(s) well formed; not contacted, as Slack offers no way to check "
            "an incoming webhook without posting a message",
        )

    @hookimpl
    def close(self) -> None:
        self.http.close()


def _error_word(response: requests.Response) -> ProviderReason | None:
    """Slack answers an error word as the body (``invalid_blocks``, ``channel_is_archived``)."""
    word = response.text.strip()[:64]
    return ProviderReason(code=word) if _ERROR_WORD.fullmatch(word) else None


def _most_hopeful(errors: list[ProviderError]) -> ProviderError:
    """The error to raise when no destination was posted: a transient one (trying again may cure it), else
    an unusable webhook (the next provider does not use it), else Slack's refusal of the payload."""
    for kind in (TransientError, ConfigurationError):
        found = next((error for error in errors if isinstance(error, kind)), None)
        if found is not None:
            return found
    return errors[0]


def _url_problem(url: str) -> str | None:
    """What is wrong with a webhook URL's shape, or ``None`` (the URL itself is never quoted)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" and not (parts.scheme == "http" and _is_loopback(host)):
        return "the webhook URL must use https"
    if not _WEBHOOK_PATH.fullmatch(parts.path or ""):
        return "not an incoming-webhook URL (expected /services/T.../B.../...)"
    if parts.query or parts.fragment:
        return "an incoming-webhook URL has no query or fragment"
    if host not in SLACK_HOSTS and not _is_loopback(host):
        return f"not a Slack webhook host (expected {' or '.join(SLACK_HOSTS)})"
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(SlackWebhook)
