"""Notify provider ``smtp``: email through any SMTP server (a company relay, Gmail, a transactional service).

One message per recipient, over a small pool of authenticated connections reused across ``notify`` calls:
no connection set-up (TCP, EHLO, STARTTLS, AUTH) per message. A batch is spread over the pool's free
connections, a thread each, every connection taking the next recipient not yet taken: against a remote relay,
where each message waits out round trips, ``max_connections`` connections send about that many times faster
than one. The message is rendered once per notification; per recipient only the ``To`` and ``Message-ID``
headers are added, so a message costs little more than its SMTP round trips.

The client is the standard library's :mod:`smtplib`, imported when the first connection is opened.
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from email.headerregistry import Address
from email.utils import formataddr, formatdate
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from hub import hookimpl
from hub.capabilities import HealthResult, Message, NotifyResult, Provider, ProviderContext, RecipientResult
from hub.errors import ConfigurationError, PermanentError, ProviderError, TransientError

if TYPE_CHECKING:
    import smtplib

__all__ = ["PRESETS", "SmtpProvider", "SmtpSettings", "register_providers"]

SECURITY_MODES = ("starttls", "ssl", "none")
DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}

#: Well-known services: ``preset: gmail`` fills these settings; settings given explicitly win.
PRESETS: dict[str, dict[str, Any]] = {
    # Gmail / Google Workspace: an App Password (needs 2-Step Verification) as `password`.
    "gmail": {"host": "smtp.gmail.com", "port": 587, "security": "starttls"},
}

_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
# RFC 5321 4.5.3.2.7: servers may drop a client idle for 5 minutes; a connection idle that long is
# reopened without asking.
_MAX_IDLE_SECONDS = 300.0
# How long a send waits for one of the pool's connections before giving up (transient: try later).
_POOL_WAIT_SECONDS = 60.0
# A Message-ID's left part: dot-atom text (RFC 5322 3.6.4) from the hub's id, or a digest of it.
_ID_LEFT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
# A display name that needs neither quoting nor encoding (atext and spaces).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9 !#$%&'*+/=?^_`{|}~-]{1,64}")


# --- settings ------------------------------------------------------------------------------------


class SmtpSettings(Schema):
    """``providers.<name>`` settings of an ``smtp`` provider."""

    preset = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(sorted(PRESETS)))
    host = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=253))
    port = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1, max=65535))
    security = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(SECURITY_MODES))
    username = fields.String(load_default=None, allow_none=True)
    password = fields.String(load_default=None, allow_none=True)
    from_address = fields.Email(required=True)
    from_name = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    timeout = fields.Float(load_default=10.0, validate=validate.Range(min=0.1, max=600))
    max_connections = fields.Integer(load_default=4, validate=validate.Range(min=1, max=100))
    reuse_idle_seconds = fields.Float(load_default=30.0, validate=validate.Range(min=0, max=_MAX_IDLE_SECONDS))
    verify_tls = fields.Boolean(load_default=True)
    ca_file = fields.String(load_default=None, allow_none=True)
    local_hostname = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=253))

    @validates_schema
    def _consistent(self, data: dict[str, Any], **_: Any) -> None:
        merged = _apply_preset(data)
        errors: dict[str, list[str]] = {}
        if not merged.get("host"):
            errors["host"] = ["Missing data for required field (or set preset: gmail)."]
        security, port = merged["security"], merged["port"]
        # The two TLS modes are exclusive by construction (one `security` value); these catch the usual
        # port mix-ups, which otherwise show up as a timeout: each side waits for the other to speak first.
        if port == 465 and security != "ssl":
            errors["security"] = ["port 465 is implicit TLS: use security: ssl"]
        elif port in (25, 587) and security == "ssl":
            errors["security"] = [f"port {port} starts in plain text: use security: starttls"]
        if bool(merged.get("username")) != bool(merged.get("password")):
            errors["username" if not merged.get("username") else "password"] = [
                "username and password go together (set both, or neither for a relay without AUTH)"
            ]
        if merged.get("preset") == "gmail" and not merged.get("username"):
            errors["username"] = ["Gmail needs username (the Google account) and password (an App Password)"]
        if merged.get("password") and security == "none" and merged.get("host") not in _LOOPBACK_HOSTS:
            errors["security"] = ["security: none would send the password in clear text; use starttls or ssl"]
        for name in ("from_name", "host", "local_hostname"):
            if any(character in (data.get(name) or "") for character in "\r\n"):
                errors[name] = ["must not contain line breaks"]
        ca_file = data.get("ca_file")
        if ca_file and not Path(ca_file).is_file():
            errors["ca_file"] = [f"no such file: {ca_file}"]
        if errors:
            raise ValidationError(errors)

    @post_load
    def _resolve(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return _apply_preset(data)


def _apply_preset(data: dict[str, Any]) -> dict[str, Any]:
    """The settings with the preset filled in where nothing was given: ``host``, then ``security``
    (implicit TLS when only port 465 is given) and ``port`` (the preset's when its security mode is kept,
    else the mode's standard port)."""
    resolved = dict(data)
    preset = PRESETS.get(data.get("preset") or "", {})
    resolved["host"] = resolved.get("host") or preset.get("host")
    security = resolved.get("security") or ("ssl" if resolved.get("port") == 465 else None)
    security = security or preset.get("security") or "starttls"
    if not resolved.get("port"):
        resolved["port"] = preset["port"] if preset.get("security") == security else DEFAULT_PORTS[security]
    resolved["security"] = security
    return resolved


@cache
def _default_local_hostname() -> str:
    # smtplib would call socket.getfqdn() (a DNS lookup) on every connection; once per process is enough.
    name = socket.getfqdn()
    return name if name and name.isascii() else "localhost"


# --- messages ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rendered:
    """A message rendered once per batch: every header but ``To`` and ``Message-ID``, and the body, already
    in DATA form (CRLF line ends, leading dots doubled, the final ``.`` line)."""

    common: bytes
    id_left: str
    domain: str

    @classmethod
    def from_message(cls, raw: bytes, id_left: str, domain: str) -> _Rendered:
        # What smtplib.SMTP.data() does to every message, done once for the batch.
        raw = _BARE_LINE_END.sub(b"\r\n", raw)
        raw = _LEADING_DOT.sub(b"..", raw)
        if not raw.endswith(b"\r\n"):
            raw += b"\r\n"
        return cls(raw + b".\r\n", id_left, domain)

    def message_id(self, index: int) -> str:
        return f"<{self.id_left}.{index}@{self.domain}>"

    def for_recipient(self, to_header: bytes, message_id: str) -> bytes:
        # Neither added header starts with a dot: the whole stays in DATA form.
        return b"".join((to_header, b"Message-ID: ", message_id.encode("ascii"), b"\r\n", self.common))


_BARE_LINE_END = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def _transaction(smtp: smtplib.SMTP, mail_from: str, rcpt_to: str, data: bytes, utf8: bool) -> None:
    """One mail transaction, as ``smtplib.SMTP.sendmail`` runs it (same commands, same exceptions), without
    its per-message address parsing and re-encoding of the body: ``data`` is already in DATA form."""
    import smtplib

    options = f" SIZE={len(data)}" if smtp.does_esmtp and smtp.has_extn("size") else ""
    if utf8:
        options += " SMTPUTF8"
        smtp.command_encoding = "utf-8"  # as smtplib.SMTP.mail() does for SMTPUTF8
    code, reply = smtp.docmd("MAIL", f"FROM:<{mail_from}>{options}")
    if code != 250:
        _end_transaction(smtp, code)
        raise smtplib.SMTPSenderRefused(code, reply, mail_from)
    code, reply = smtp.docmd("RCPT", f"TO:<{rcpt_to}>")
    if code not in (250, 251):
        _end_transaction(smtp, code)
        raise smtplib.SMTPRecipientsRefused({rcpt_to: (code, reply)})
    code, reply = smtp.docmd("DATA")
    if code != 354:
        _end_transaction(smtp, code)
        raise smtplib.SMTPDataError(code, reply)
    smtp.send(data)
    code, reply = smtp.getreply()
    if code != 250:
        _end_transaction(smtp, code)
        raise smtplib.SMTPDataError(code, reply)


def _end_transaction(smtp: smtplib.SMTP, code: int) -> None:
    if code == 421:  # the server is closing the connection
        smtp.close()
        return
    with suppress(OSError):  # RSET so the next MAIL starts clean; a dead connection shows on the next command
        smtp.rset()


def _single_line(value: str) -> str:
    if not value.isascii():  # a lone surrogate cannot be encoded into a header: '?' in its place, not a crash
        value = value.encode("utf-8", "replace").decode("utf-8")
    return " ".join(value.splitlines()) if ("\n" in value or "\r" in value) else value


def _ascii_domain(domain: str) -> str:
    return domain if domain.isascii() else domain.encode("idna").decode("ascii")


def _envelope_address(address: str) -> tuple[str, bool]:
    """The address as written in RCPT TO, and whether it needs SMTPUTF8 (a non-ASCII local part)."""
    local, _, domain = address.rpartition("@")
    try:
        domain = _ascii_domain(domain)
    except UnicodeError:
        return address, True
    return f"{local}@{domain}", not local.isascii()


def _to_header(address: str, name: str | None, utf8: bool) -> bytes:
    name = _single_line(name).strip() if name else None
    if utf8:  # SMTPUTF8 message: headers may carry UTF-8 as is
        value = f'"{name}" <{address}>' if name and '"' not in name and "\\" not in name else address
        return f"To: {value}\r\n".encode()
    if not name:
        return f"To: {address}\r\n".encode("ascii")
    if _PLAIN_NAME.fullmatch(name):
        return f"To: {name} <{address}>\r\n".encode("ascii")
    return f"To: {formataddr((name, address), charset='utf-8')}\r\n".encode("ascii")


# --- connections ---------------------------------------------------------------------------------


class _Lease:
    """One pooled connection, held by one thread for one batch. ``reopen`` replaces a dropped one."""

    def __init__(self, pool: _ConnectionPool, smtp: smtplib.SMTP | None) -> None:
        self._pool = pool
        self.smtp = smtp

    def discard(self) -> None:
        if self.smtp is not None:
            _close_quietly(self.smtp)
            self.smtp = None

    def reopen(self) -> smtplib.SMTP:
        self.discard()
        self.smtp = self._pool.connect()
        return self.smtp


class _ConnectionPool:
    """Up to ``size`` open connections shared by the provider's worker threads.

    Idle connections are kept newest-first; one idle longer than ``check_after`` seconds is checked with
    NOOP before use (and replaced if the server dropped it); one idle over five minutes is replaced.
    """

    def __init__(self, connect: Callable[[], smtplib.SMTP], size: int, check_after: float) -> None:
        self.connect = connect
        self.size = size
        self.check_after = check_after
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[tuple[smtplib.SMTP, float]] = []
        #: Sends blocked waiting for a slot: a batch's extra connections give theirs up to them.
        self.waiting = 0

    def reserve(self, wanted: int) -> int:
        """Take up to ``wanted`` free slots without waiting (none while a send waits for one): a batch's extra
        connections, each then opened by :meth:`lease` with ``reserved=True``."""
        taken = 0
        while taken < wanted and not self.waiting and self._slots.acquire(blocking=False):
            taken += 1
        return taken

    def release_reserved(self, count: int) -> None:
        for _ in range(count):
            self._slots.release()

    @contextmanager
    def lease(self, reserved: bool = False) -> Iterator[_Lease]:
        """One connection for the caller's thread; ``reserved``: its slot was taken by :meth:`reserve`."""
        if not reserved and not self._slots.acquire(blocking=False):
            with self._lock:
                self.waiting += 1
            try:
                acquired = self._slots.acquire(timeout=_POOL_WAIT_SECONDS)
            finally:
                with self._lock:
                    self.waiting -= 1
            if not acquired:
                raise TransientError(f"all {self.size} SMTP connections stayed busy for {_POOL_WAIT_SECONDS:.0f} s")
        lease = _Lease(self, None)
        try:
            lease.smtp = self._take_idle() or self.connect()
            try:
                yield lease
            except BaseException:
                lease.discard()  # it may be mid-transaction: never hand it to another send
                raise
        finally:
            now = time.monotonic()
            with self._lock:
                if lease.smtp is not None:
                    self._idle.append((lease.smtp, now))
                # Oldest first: connections a burst opened and nobody used since, which the server has
                # most likely dropped by now.
                stale = [smtp for smtp, last_used in self._idle if now - last_used > _MAX_IDLE_SECONDS]
                if stale:
                    self._idle = self._idle[len(stale) :]
            self._slots.release()
            for smtp in stale:
                _close_quietly(smtp)  # no QUIT: it would wait for a server that is probably gone

    def _take_idle(self) -> smtplib.SMTP | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                smtp, last_used = self._idle.pop()
            idle = time.monotonic() - last_used
            if idle <= self.check_after:
                return smtp
            if idle <= _MAX_IDLE_SECONDS and _answers_noop(smtp):
                return smtp
            _close_quietly(smtp)

    def close(self) -> int:
        with self._lock:
            idle, self._idle = self._idle, []
        for smtp, _ in idle:
            _close_quietly(smtp, quit_first=True)
        return len(idle)


def _answers_noop(smtp: smtplib.SMTP) -> bool:
    try:
        return smtp.noop()[0] == 250
    except (OSError, ValueError):  # smtplib.SMTPException is an OSError
        return False


def _close_quietly(smtp: smtplib.SMTP, quit_first: bool = False) -> None:
    if quit_first:
        with suppress(OSError, ValueError):
            if smtp.sock is not None:
                smtp.sock.settimeout(2.0)  # a polite QUIT, not a wait on a vanished server
            smtp.quit()
    with suppress(OSError, ValueError):
        smtp.close()


# --- a batch in flight ---------------------------------------------------------------------------


class _BatchRun:
    """One ``notify`` call's recipients and their results, shared by the connections sending them.

    Each connection takes the next recipient not yet taken (:meth:`take`) and settles it; a recipient whose
    connection was lost for good is given back for another. What is still unsettled when every connection
    has stopped is ``retry`` (or the batch's error, when nobody was delivered)."""

    def __init__(self, recipients: list[Any], rendered: _Rendered) -> None:
        self.recipients = recipients
        self.rendered = rendered
        self.results: list[RecipientResult | None] = [None] * len(recipients)
        self.sent = 0
        self.postponed: str | None = None  # the first 4xx refusal: the reason of a TransientError
        self.error: ProviderError | None = None  # the first that stopped a connection
        self.reconnects = 0
        self.active = 1  # connections still sending (the calling thread's, and the extra ones)
        self._next = 0
        self._given_back: list[int] = []
        self._stopped = False
        self._lock = threading.Lock()

    def take(self) -> int | None:
        with self._lock:
            if self._stopped:
                return None
            if self._given_back:
                return self._given_back.pop()
            if self._next >= len(self.recipients):
                return None
            self._next += 1
            return self._next - 1

    def settle(self, index: int, outcome: RecipientResult) -> None:
        with self._lock:
            self.results[index] = outcome
            if outcome.status == "sent":
                self.sent += 1
            elif outcome.status == "retry" and self.postponed is None:
                self.postponed = outcome.error

    def give_back(self, index: int) -> None:
        with self._lock:
            self._given_back.append(index)

    def stop(self, error: ProviderError, *, everyone: bool) -> None:
        """A connection stops on ``error`` (and then leaves); ``everyone``: the others stop at their next take."""
        with self._lock:
            self.error = self.error or error
            self._stopped = self._stopped or everyone

    def leave(self) -> None:
        with self._lock:
            self.active -= 1

    def leave_if_others(self) -> bool:
        """Leave unless this is the last connection still sending (someone must finish the batch)."""
        with self._lock:
            if self.active <= 1:
                return False
            self.active -= 1
            return True

    def reconnected(self) -> None:
        with self._lock:
            self.reconnects += 1


# --- the provider --------------------------------------------------------------------------------


class SmtpProvider(Provider):
    type_name = "smtp"
    capability = "notify"
    channels = ("email",)
    settings_schema: ClassVar[type[Schema]] = SmtpSettings
    env_settings: ClassVar[dict[str, str]] = {
        "host": "SMTP_HOST",
        "port": "SMTP_PORT",
        "username": "SMTP_USER",
        "password": "SMTP_PASS",
    }
    secret_settings: ClassVar[tuple[str, ...]] = ("password",)
    description = "Email over SMTP (STARTTLS/SSL, AUTH), a batch spread over pooled connections; preset: gmail."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        self.host: str = settings["host"]
        self.port: int = settings["port"]
        self.security: str = settings["security"]
        self.username: str | None = settings.get("username") or None
        self._password: str | None = settings.get("password") or None
        self.from_address: str = settings["from_address"]
        self.timeout: float = settings["timeout"]
        local, _, domain = self.from_address.rpartition("@")
        self._envelope_from = f"{local}@{_ascii_domain(domain)}"
        self._message_id_domain = _ascii_domain(domain)
        self._tls_context: ssl.SSLContext | None = None
        self._tls_lock = threading.Lock()
        if not settings["verify_tls"]:
            self.log.warning("smtp %s: TLS certificates are not verified (verify_tls: false)", name)
        self.pool = _ConnectionPool(self._connect, settings["max_connections"], settings["reuse_idle_seconds"])
        # The last few renderings, by notification: a bulk send's batches share one (building it costs more
        # than sending a small batch's messages).
        self._rendered: dict[tuple[Any, ...], tuple[_Rendered, float]] = {}
        self._rendered_lock = threading.Lock()
        # Threads for a batch's extra connections, started with the first batch that uses one.
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # --- connecting ------------------------------------------------------------------------------

    def tls_context(self) -> ssl.SSLContext:
        with self._tls_lock:  # built once: loading the CA bundle takes milliseconds
            if self._tls_context is None:
                context = ssl.create_default_context(cafile=self.settings.get("ca_file") or None)
                if not self.settings["verify_tls"]:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                self._tls_context = context
            return self._tls_context

    def _connect(self, timeout: float | None = None) -> smtplib.SMTP:
        """Open, greet, secure and authenticate one connection; raise the hub's errors."""
        import smtplib

        timeout = timeout or self.timeout
        local_hostname = self.settings.get("local_hostname") or _default_local_hostname()
        smtp: smtplib.SMTP | None = None
        try:
            if self.security == "ssl":
                smtp = smtplib.SMTP_SSL(
                    self.host, self.port, local_hostname=local_hostname, timeout=timeout, context=self.tls_context()
                )
            else:
                smtp = smtplib.SMTP(self.host, self.port, local_hostname=local_hostname, timeout=timeout)
            smtp.ehlo()
            if self.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise ConfigurationError(f"SMTP server {self.address} does not offer STARTTLS (security: starttls)")
                smtp.starttls(context=self.tls_context())
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self._password or "")
            return smtp
        except ProviderError:
            if smtp is not None:
                _close_quietly(smtp)
            raise
        except Exception as error:
            if smtp is not None:
                _close_quietly(smtp)
            raise self._connection_error(error, timeout) from None

    def _connection_error(self, error: BaseException, timeout: float | None = None) -> ProviderError:
        """Map what opening a connection raised to the hub's hierarchy."""
        import smtplib

        where = f"SMTP server {self.address}"
        if isinstance(error, smtplib.SMTPAuthenticationError):
            hint = ""
            if error.smtp_code == 534 or self.host.endswith("gmail.com"):
                hint = " (Gmail needs an App Password, which needs 2-Step Verification)"
            return ConfigurationError(
                f"{where} refused the login for {self.username}: {self._reply(error)}{hint}",
                provider_code=str(error.smtp_code),
            )
        if isinstance(error, smtplib.SMTPNotSupportedError):
            return ConfigurationError(f"{where}: {self._redact(str(error))} (check security and credentials)")
        if isinstance(error, ssl.SSLCertVerificationError):
            return ConfigurationError(
                f"{where}: TLS certificate not trusted ({error.verify_message}); set ca_file for a private CA"
            )
        if isinstance(error, ssl.SSLError):
            return ConfigurationError(
                f"{where}: TLS handshake failed ({error.reason or error}); check security and port"
            )
        if isinstance(error, smtplib.SMTPResponseException):
            code = error.smtp_code
            error_class = ConfigurationError if 500 <= code < 600 and code != 554 else TransientError
            return error_class(f"{where} answered {self._reply(error)}", provider_code=str(code))
        # smtplib reports a reply that never came as "Connection unexpectedly closed: timed out".
        if isinstance(error, TimeoutError) or isinstance(error.__context__, TimeoutError):
            return TransientError(f"{where} did not answer within {timeout or self.timeout:g} s")
        if isinstance(error, socket.gaierror):
            return TransientError(f"{where}: host name lookup failed ({error.strerror})")
        if isinstance(error, OSError):
            reason = error.strerror or type(error).__name__
            if isinstance(error, smtplib.SMTPException):
                reason = str(error) or type(error).__name__
            return TransientError(f"{where}: {self._redact(reason)}")
        return TransientError(f"{where}: {type(error).__name__}: {self._redact(str(error))}")

    def _redact(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text

    def _reply(self, error: Any) -> str:
        """``"550 5.1.1 text"`` from an smtplib error that carries the server's reply."""
        reply = error.smtp_error
        text = reply.decode("utf-8", errors="replace") if isinstance(reply, bytes) else str(reply)
        return f"{error.smtp_code} {self._redact(' '.join(text.split()))}"

    # --- notify ----------------------------------------------------------------------------------

    def render(self, message: Message) -> _Rendered:
        """Render everything the recipients share, once per notification: headers, text and HTML alternative."""
        stable = _stable_id(message)
        if stable is None:
            return self._render(message, message.id)
        key = (stable, message.subject, message.text, message.html, message.priority)
        now = time.monotonic()
        with self._rendered_lock:
            rendered, made = self._rendered.get(key, (None, 0.0))
        if rendered is None or now - made > _RENDERED_SECONDS:  # a retry much later gets a fresh Date
            rendered = self._render(message, stable)
            with self._rendered_lock:
                self._rendered.pop(key, None)
                if len(self._rendered) >= _RENDERED_KEPT:
                    self._rendered.pop(next(iter(self._rendered)))  # the oldest
                self._rendered[key] = (rendered, now)
        return rendered

    def _render(self, message: Message, stable: str) -> _Rendered:
        from email.message import EmailMessage

        mail = EmailMessage(policy=_seven_bit_policy())
        mail["From"] = Address(
            display_name=_single_line(self.settings.get("from_name") or ""), addr_spec=self.from_address
        )
        if message.subject:
            mail["Subject"] = _single_line(message.subject)
        mail["Date"] = formatdate(usegmt=True)
        mail["X-Hub-Message-Id"] = _single_line(message.notification_id or message.id)
        if message.priority in ("high", "low"):
            mail["X-Priority"] = "1 (Highest)" if message.priority == "high" else "5 (Lowest)"
            mail["Importance"] = message.priority
        mail.set_content(message.text or "")
        if message.html:
            mail.add_alternative(message.html, subtype="html")
        id_left = stable if _ID_LEFT.fullmatch(stable) else hashlib.sha256(stable.encode()).hexdigest()[:40]
        return _Rendered.from_message(mail.as_bytes(), id_left, self._message_id_domain)

    @hookimpl
    def notify(self, message: Message) -> NotifyResult:
        if message.channel not in self.channels:
            raise PermanentError(f"smtp delivers email, not {message.channel}")
        recipients = message.recipients
        if not recipients:
            return NotifyResult([])
        run = _BatchRun(recipients, self.render(message))

        with self.pool.lease() as lease:
            # The batch is spread over the pool: the free slots (at least two messages each) get a
            # connection and a thread of their own, and every connection takes the next recipient not yet
            # taken, so a slow connection (or one still opening) holds back nobody else's.
            extra = self.pool.reserve(min(self.pool.size - 1, (len(recipients) + 1) // 2 - 1))
            helpers = []
            if extra:
                executor = self._executor_for_batches()
                for _ in range(extra):
                    run.active += 1
                    try:
                        helpers.append(executor.submit(self._send_extra, run))
                    except RuntimeError:  # close() shut the executor down meanwhile: this slot goes unused
                        run.leave()
                        self.pool.release_reserved(1)
            try:
                self._send_share(lease, run)
            finally:
                run.leave()
                for helper in helpers:
                    helper.result()  # each catches its own errors; this waits for its sends to end

        if run.reconnects:
            self.log.info("smtp %s: reconnected %d time(s) during message %s", self.name, run.reconnects, message.id)
        if run.sent == 0 and (run.error is not None or run.postponed is not None):
            # Nothing was delivered: a retry (or the next provider) cannot send anything twice.
            raise run.error or TransientError(f"SMTP server {self.address}: {run.postponed}")
        # Some were delivered, so raising would deliver them twice: the core hands only the unsent on.
        reason = run.error.message if run.error is not None else "not sent"
        results = [
            result or RecipientResult(recipient.address, "retry", error=reason)
            for result, recipient in zip(run.results, recipients, strict=True)
        ]
        self.log.info("smtp %s: message %s sent to %d of %d recipient(s)", self.name, message.id, run.sent, len(recipients))
        return NotifyResult(results)

    def _executor_for_batches(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                # Never more extra connections at once than slots beside the calling thread's own.
                self._executor = ThreadPoolExecutor(
                    max_workers=max(1, self.pool.size - 1), thread_name_prefix=f"hub-smtp-{self.name}"
                )
            return self._executor

    def _send_extra(self, run: _BatchRun) -> None:
        """An extra connection's share of a batch (in an executor thread; its pool slot is reserved)."""
        left = False
        try:
            with self.pool.lease(reserved=True) as lease:
                left = self._send_share(lease, run, extra=True)
        except ProviderError as error:  # the extra connection did not open: the others send its share
            self.log.debug("smtp %s: an extra connection could not be opened: %s", self.name, error.message)
        except Exception as error:  # a bug must not go unseen, nor leave the batch's results half-known
            self.log.exception("smtp %s: sending on an extra connection failed", self.name)
            run.stop(TransientError(f"SMTP server {self.address}: {type(error).__name__}"), everyone=False)
        finally:
            if not left:
                run.leave()

    def _send_share(self, lease: _Lease, run: _BatchRun, extra: bool = False) -> bool:
        """Send recipients of ``run`` over ``lease``'s connection, one at a time, until none is left (or this
        connection is lost for good, or, for an ``extra`` connection, another send waits for the pool).
        Returns whether it left ``run`` already (:meth:`_BatchRun.leave_if_others`); the caller leaves otherwise."""
        import smtplib

        rendered = run.rendered
        may_reconnect = True  # once per stretch without progress: a server dropping every try ends it
        index = run.take()
        while index is not None:
            recipient = run.recipients[index]
            address = recipient.address
            message_id = rendered.message_id(index if recipient.index is None else recipient.index)
            envelope_to, utf8 = _envelope_address(address)
            outcome: RecipientResult | None = None
            dropped: str | None = None
            batch_error: ProviderError | None = None  # stops this connection (a refused sender: every one)
            try:
                smtp = lease.smtp or lease.reopen()
                if any(character in address for character in "\r\n<>"):
                    outcome = RecipientResult(address, "failed", error="invalid address")
                elif utf8 and not smtp.has_extn("smtputf8"):
                    outcome = RecipientResult(
                        address, "failed", error="the SMTP server lacks SMTPUTF8, needed for this address"
                    )
                else:
                    data = rendered.for_recipient(
                        _to_header(address if utf8 else envelope_to, recipient.name, utf8), message_id
                    )
                    _transaction(smtp, self._envelope_from, envelope_to, data, utf8)
                    outcome = RecipientResult(address, "sent", provider_message_id=message_id)
            except smtplib.SMTPRecipientsRefused as error:
                code, reply = next(iter(error.recipients.values()), (0, b""))
                if code == 421:
                    dropped = self._describe_reply(code, reply)
                else:
                    outcome = self._refused(address, code, reply)
            except smtplib.SMTPSenderRefused as error:
                code = error.smtp_code
                if code == 421:
                    dropped = self._reply(error)
                elif 400 <= code < 500 or code == 552:  # 552: this message is too large
                    outcome = self._refused(address, code, error.smtp_error)
                else:  # the account may not send as from_address (553, 550, 530)
                    batch_error = ConfigurationError(
                        f"SMTP server {self.address} refused the sender {self.from_address}: {self._reply(error)}",
                        provider_code=str(code),
                    )
            except smtplib.SMTPDataError as error:
                if error.smtp_code == 421:
                    dropped = self._reply(error)
                else:
                    outcome = self._refused(address, error.smtp_code, error.smtp_error)
            except smtplib.SMTPNotSupportedError as error:
                outcome = RecipientResult(address, "failed", error=str(error))
            except ProviderError as error:  # reopening failed
                batch_error = error
            except UnicodeError:  # smtplib refused to encode the address: nothing was sent
                outcome = RecipientResult(address, "failed", error="invalid address")
            except OSError as error:  # disconnected, reset, timed out mid-command
                dropped = self._redact(str(error)) or type(error).__name__

            if dropped is not None:
                lease.discard()
                if not may_reconnect:
                    batch_error = TransientError(f"SMTP server {self.address} dropped the connection: {dropped}")
                else:
                    may_reconnect = False
                    run.reconnected()
                    continue  # retry this recipient on a new connection (opened at the loop's top)
            if batch_error is not None:
                # This recipient goes to another connection of the batch, if one is still sending. A
                # configuration error (login or sender refused) is the account's: every connection stops.
                run.give_back(index)
                run.stop(batch_error, everyone=isinstance(batch_error, ConfigurationError))
                return False
            assert outcome is not None
            run.settle(index, outcome)
            if outcome.status == "sent":
                may_reconnect = True
            if extra and self.pool.waiting and run.leave_if_others():
                return True  # another send waits for a connection: this one's share goes to the batch's others
            index = run.take()
        return False

    def _describe_reply(self, code: int, reply: bytes | str) -> str:
        text = reply.decode("utf-8", errors="replace") if isinstance(reply, bytes) else str(reply)
        return f"{code} {self._redact(' '.join(text.split()))}"

    def _refused(self, address: str, code: int, reply: bytes | str) -> RecipientResult:
        """A per-recipient refusal: 5xx is final (``failed``); 4xx means "not now" (``retry``: see the README)."""
        return RecipientResult(address, "failed" if code >= 500 else "retry", error=self._describe_reply(code, reply))

    # --- health and shutdown ---------------------------------------------------------------------

    @hookimpl
    def health(self) -> HealthResult:
        try:
            smtp = self._connect(timeout=min(self.timeout, 5.0))
        except ProviderError as error:
            return HealthResult("error", error.message)
        try:
            code, reply = smtp.noop()
            if code != 250:
                return HealthResult(
                    "error", f"SMTP server {self.address} answered NOOP with {self._describe_reply(code, reply)}"
                )
        except (OSError, ValueError) as error:
            return HealthResult("error", self._connection_error(error, min(self.timeout, 5.0)).message)
        finally:
            _close_quietly(smtp, quit_first=True)
        who = f"as {self.username}" if self.username else "without login"
        return HealthResult("success", f"Connected to {self.address} ({self.security}) {who}")

    @hookimpl
    def close(self) -> None:
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)  # a batch still sending finishes first (its connections then close)
        closed = self.pool.close()
        if closed:
            self.log.info("smtp %s: closed %d pooled connection(s)", self.name, closed)


#: Renderings kept (one per recent notification: a few workers each send one).
_RENDERED_KEPT = 16
#: ...and reused for this long (the ``Date`` header is the first batch's).
_RENDERED_SECONDS = 60.0


def _stable_id(message: Message) -> str | None:
    """With the recipients' positions in the notification known, the Message-ID names the notification and the
    position, not the batch: a batch resumed after a crash, or cut short and sent again, starts at another
    recipient, and a repeated message must keep its id for receivers to drop it."""
    if message.notification_id and all(recipient.index is not None for recipient in message.recipients):
        return f"{message.notification_id}-{message.channel}"
    return None


@cache
def _seven_bit_policy() -> Any:
    import email.policy

    # 7-bit output (quoted-printable or base64 bodies, RFC 2047 headers): no need for 8BITMIME.
    return email.policy.SMTP.clone(cte_type="7bit")


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(SmtpProvider)
