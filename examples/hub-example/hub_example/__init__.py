"""hub-example: a notify provider that POSTs each message as JSON to an HTTP endpoint.

The running example of ``docs/writing-a-plugin.md``. The whole plugin is this module:

* :class:`WebhookNotifier` -- provider type ``webhook-notifier`` (channels email, sms and chat). Each
  message becomes one ``POST <url>`` whose JSON body is the message, authenticated with
  ``Authorization: Bearer <token>`` and carrying ``Idempotency-Key: <message id>`` so the receiver can
  drop the duplicate a retry may cause.
* :func:`register_providers` and :func:`register_templates` -- the module's set-up hooks, which the hub
  calls when it loads the ``example`` entry point (see ``pyproject.toml``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from marshmallow import Schema, fields, validate

from hub import hookimpl
from hub.capabilities import (
    HealthResult,
    Message,
    NotifyResult,
    Provider,
    ProviderContext,
    RecipientResult,
    to_dict,
)
from hub.errors import ConfigurationError, PermanentError, TransientError

if TYPE_CHECKING:  # requests is imported when first needed: loading the plugin stays cheap
    import requests

__version__ = "0.1.0"

#: Seconds the health check waits at most, whatever ``timeout`` says: GET /health must stay quick.
HEALTH_TIMEOUT = 3.0


class WebhookNotifierSettings(Schema):
    """The settings of a ``type: webhook-notifier`` provider in hub.yaml."""

    #: Every message is POSTed here.
    url = fields.Url(required=True, require_tld=False, schemes={"http", "https"})
    #: Sent as ``Authorization: Bearer <token>``; read from EXAMPLE_WEBHOOK_TOKEN when absent.
    token = fields.String(required=True, validate=validate.Length(min=1))
    #: Seconds to wait for the endpoint to connect and to answer.
    timeout = fields.Float(load_default=10.0, validate=validate.Range(min=0.1, max=120))


class WebhookNotifier(Provider):
    """Delivers a message by POSTing it, as JSON, to the configured endpoint."""

    type_name = "webhook-notifier"
    capability = "notify"
    channels = ("email", "sms", "chat")
    settings_schema: ClassVar[type[Schema]] = WebhookNotifierSettings
    env_settings: ClassVar[dict[str, str]] = {"token": "EXAMPLE_WEBHOOK_TOKEN"}
    secret_settings: ClassVar[tuple[str, ...]] = ("token",)
    description = "POSTs each message as JSON to an HTTP endpoint (Bearer token)."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        # No network here: the hub builds providers at start-up, which must stay fast and work offline.
        super().__init__(name, settings, context)
        self.url: str = settings["url"]
        self.timeout: float = settings["timeout"]
        #: Where errors and logs say the messages go: host and port only, never credentials, path or query.
        parts = urlsplit(self.url)
        self.endpoint = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
        self._session: requests.Session | None = None
        self._session_lock = threading.Lock()

    def session(self) -> requests.Session:
        """One HTTP session (a connection pool) per provider, opened on first use and again after close."""
        with self._session_lock:
            if self._session is None:
                import requests

                session = requests.Session()
                session.headers["Authorization"] = f"Bearer {self.settings['token']}"
                session.headers["User-Agent"] = f"hub-example/{__version__}"
                self._session = session
            return self._session

    # --- hooks -------------------------------------------------------------------------------

    @hookimpl
    def notify(self, message: Message) -> NotifyResult:
        import requests

        try:
            response = self.session().post(
                self.url,
                json=to_dict(message),
                headers={"Idempotency-Key": message.id},
                timeout=self.timeout,
                allow_redirects=False,  # requests would turn a redirected POST into a GET
            )
        except requests.Timeout as error:
            # The endpoint may have received it; the retry carries the same Idempotency-Key.
            raise TransientError(f"{self.endpoint} did not answer within {self.timeout:g}s") from error
        except requests.RequestException as error:
            raise TransientError(f"could not reach {self.endpoint}: {type(error).__name__}") from error
        raise_for_status(response, self.endpoint)
        # Recipient ids must be unique across every send (the hub indexes delivery webhooks by them),
        # and an endpoint's own id may not be: derive them from the hub's message id, which is.
        return NotifyResult(
            [RecipientResult(r.address, "sent", f"{message.id}:{index}") for index, r in enumerate(message.recipients)],
            provider_message_id=_response_id(response),
        )

    @hookimpl
    def health(self) -> HealthResult:
        """A HEAD request: proves the host resolves, accepts connections and (if it checks the token
        on every request) the token. Nothing is delivered."""
        import requests

        try:
            response = self.session().head(self.url, timeout=min(self.timeout, HEALTH_TIMEOUT), allow_redirects=False)
        except requests.RequestException as error:
            return HealthResult("error", f"webhook-notifier: cannot reach {self.endpoint} ({type(error).__name__})")
        if response.status_code in (401, 403):
            return HealthResult("error", f"webhook-notifier: {self.endpoint} rejected the token (HTTP {response.status_code})")
        if response.status_code >= 500:
            return HealthResult("error", f"webhook-notifier: {self.endpoint} answered HTTP {response.status_code}")
        return HealthResult("success", f"webhook-notifier: {self.endpoint} reachable (HTTP {response.status_code})")

    @hookimpl
    def close(self) -> None:
        # Called on POST /shutdown; the provider may be used again after POST /initialize, so the
        # session is dropped and reopened on the next call rather than left closed.
        with self._session_lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()


def raise_for_status(response: requests.Response, endpoint: str) -> None:
    """Map the endpoint's HTTP status to the hub's errors, which decide retry and failover.

    * 2xx: delivered.
    * 401, 403: the token was refused -- :class:`ConfigurationError` (next provider, no retry).
    * 3xx: the URL is not the endpoint -- :class:`ConfigurationError`.
    * 408, 429 and 5xx: may pass -- :class:`TransientError` (retried, honouring ``Retry-After``).
    * any other 4xx: this message is refused -- :class:`PermanentError` (no retry, no failover).
    """
    status = response.status_code
    if 200 <= status < 300:
        return
    # Never the token, nor the URL's path and query (they may carry secrets): the host and the status.
    where = f"{endpoint} answered HTTP {status}"
    code = str(status)
    if status in (401, 403):
        raise ConfigurationError(f"{where}: check the token (EXAMPLE_WEBHOOK_TOKEN)", provider_code=code)
    if 300 <= status < 400:
        raise ConfigurationError(f"{where} (a redirect): configure the final URL", provider_code=code)
    if status in (408, 429) or status >= 500:
        raise TransientError(where, provider_code=code, retry_after=_retry_after(response))
    raise PermanentError(f"{where}: {_excerpt(response)}", provider_code=code)


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    return float(value) if value.isdigit() else None  # the HTTP-date form is rare; ignore it


def _excerpt(response: requests.Response, limit: int = 200) -> str:
    text = " ".join(response.text.split())
    return text[:limit] or response.reason or "no reason given"


def _response_id(response: requests.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    identifier = body.get("id") if isinstance(body, dict) else None
    return str(identifier) if identifier not in (None, "") else None


# --- set-up hooks (the plugin module) --------------------------------------------------------


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(WebhookNotifier)


@hookimpl
def register_templates(register: Callable[..., None]) -> None:
    register(
        "example_digest",
        "email",
        subject="{{ title }}: {{ items|length }} update{{ '' if items|length == 1 else 's' }}",
        text="{{ title }}\n\n{% for item in items %}- {{ item }}\n{% endfor %}",
        html="<h2>{{ title }}</h2>\n<ul>\n{% for item in items %}<li>{{ item }}</li>\n{% endfor %}</ul>\n",
        required=("title", "items"),
    )
