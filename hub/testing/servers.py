"""Real servers for provider tests: subprocesses in their own process group, and an in-process SMTP server.

* :class:`ServerProcess` runs a command (moto, Azurite, a Kafka broker…) on a free port, waits until the port
  accepts connections, and on stop ends the whole process group (SIGTERM, then SIGKILL), so a server that forks
  workers leaves nothing behind.
* :func:`moto_server` is the S3/SNS server the storage and SMS plugins test against.
* :class:`WsgiServer` serves a WSGI app (a plugin's fake of an API that publishes no machine-readable
  description) over real HTTP on 127.0.0.1 from a background thread; :func:`refused_url` is an address where
  nothing listens, for "the provider's service is down".
* :func:`smtp_server` is an aiosmtpd server with STARTTLS and AUTH on a self-signed certificate made on the spot;
  it keeps every message it receives for the test to inspect.
* ``python -m hub.testing.servers smtp --port P`` runs that SMTP server as its own process, for benchmarks.

Heavy imports (aiosmtpd, cryptography, werkzeug) happen inside the functions that need them: plugin test suites
import ``hub.testing`` without needing any of this.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import email
import email.message
import email.policy
import functools
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

__all__ = [
    "ReceivedMessage",
    "ServerProcess",
    "ServerStartError",
    "SmtpServer",
    "WsgiServer",
    "free_port",
    "make_self_signed_certificate",
    "moto_server",
    "refused_url",
    "smtp_server",
    "wait_for_port",
]


class ServerStartError(RuntimeError):
    """A test server did not come up; the message carries the end of its output."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it; another process could still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 30.0, *, process: subprocess.Popen[Any] | None = None) -> None:
    """Block until ``host:port`` accepts a TCP connection.

    Raises ``TimeoutError`` after ``timeout`` seconds, or :class:`ServerStartError` at once if ``process`` (the
    server being waited for) exits first — waiting out the timeout for a server that crashed wastes CI minutes.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise ServerStartError(f"the server exited with status {process.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s") from None
            time.sleep(0.05)


class ServerProcess:
    """A server command run in its own session/process group, reachable on ``host:port``.

    Use it as a context manager (or :meth:`start`/:meth:`stop`). Output goes to a log file (:attr:`log_path`)
    rather than a pipe, which a chatty server would fill and block on; :meth:`log_tail` shows its end, and a
    failed start includes it in the error.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        port: int,
        host: str = "127.0.0.1",
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        startup_timeout: float = 30.0,
        name: str | None = None,
    ) -> None:
        self.command = list(command)
        self.port = port
        self.host = host
        self.env = dict(env or {})
        self.cwd = cwd
        self.startup_timeout = startup_timeout
        self.name = name or Path(self.command[0]).name
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerProcess:
        if self.process is not None:
            return self
        handle, log_name = tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log")
        self.log_path = Path(log_name)
        with os.fdopen(handle, "wb") as log:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                cwd=self.cwd,
                # Its own process group, so stop() can end the server and every child it forked.
                start_new_session=True,
            )
        try:
            wait_for_port(self.host, self.port, self.startup_timeout, process=self.process)
        except (TimeoutError, ServerStartError) as exc:
            tail = self.log_tail()
            self.stop()
            raise ServerStartError(f"{self.name} ({' '.join(self.command)}): {exc}\n--- output ---\n{tail}") from exc
        return self

    def stop(self, timeout: float = 10.0) -> None:
        process = self.process
        if process is None:
            return
        self.process = None
        group = process.pid  # start_new_session made the server its group's leader
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
                process.wait()
        # Children that outlived the leader are still in its group: end them too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)

    def log_tail(self, characters: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-characters:].decode("utf-8", errors="replace")

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def moto_server(port: int | None = None, *, startup_timeout: float = 30.0) -> ServerProcess:
    """A moto server (S3, SNS… in one process) on ``127.0.0.1:port`` (a free port by default); not yet started.

    Needs ``moto[server]``. State can be read at ``GET /moto-api/data.json`` and cleared with
    ``POST /moto-api/reset``.
    """
    port = port or free_port()
    executable = shutil.which("moto_server")
    command = [executable] if executable else [sys.executable, "-m", "moto.server"]
    return ServerProcess(
        [*command, "-H", "127.0.0.1", "-p", str(port)], port=port, startup_timeout=startup_timeout, name="moto"
    )


# ---------------------------------------------------------------------------------------------------------------
# HTTP


def refused_url(path: str = "", host: str = "127.0.0.1") -> str:
    """``http://host:PORT`` + ``path`` on a port nothing listens on: connecting is refused at once.

    Point a provider at it to test "the provider's service is down" (a transient error, failover to the next
    provider) without waiting for a timeout. The OS picked the port as free a moment ago; in theory another
    process could take it before the test connects, in practice within one test it does not happen.
    """
    return f"http://{host}:{free_port(host)}{path}"


#: A WSGI application: ``app(environ, start_response) -> iterable of bytes``.
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@functools.cache
def _quiet_request_handler() -> type:
    from werkzeug.serving import WSGIRequestHandler

    class QuietRequestHandler(WSGIRequestHandler):
        # One stderr line per request drowns test output; fakes keep their own request logs. Errors still show.
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            return None

    return QuietRequestHandler


class ThreadedServer(ABC):
    """What a server served from a background thread of this process shares: :meth:`serve` starts its
    loop, :meth:`stop` ends it and closes the port, and it is a context manager. Subclasses call
    :meth:`serve` (with a ``socketserver``-style server) from their ``start``."""

    _server: Any = None
    _thread: threading.Thread | None = None

    def serve(self, server: Any, name: str) -> None:
        self._server = server
        # A short poll interval: stop() waits for the serving loop to notice the shutdown.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
        )
        self._thread.start()

    @abstractmethod
    def start(self) -> Self:
        """Listen and serve (calling :meth:`serve`); returns ``self``. Starting a running server does nothing."""

    def stop(self) -> None:
        """Stop serving and close the port (connections are then refused); stopping a stopped server does nothing."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class WsgiServer(ThreadedServer):
    """A WSGI application served over HTTP by werkzeug on ``host:port``, from a background thread of this process.

    For fakes of HTTP APIs: a test points the provider at :attr:`url` and the provider's own HTTP client (its SDK,
    requests…) talks real HTTP to it. Either pass the application, or subclass and make the subclass itself the
    application by defining ``__call__(environ, start_response)`` — handy for a fake that keeps state::

        class FakeGateway(WsgiServer):
            def __init__(self) -> None:
                super().__init__(name="fake-gateway")
                self.received: list[dict[str, str]] = []

            def __call__(self, environ, start_response):
                request = werkzeug.wrappers.Request(environ)
                self.received.append(request.form.to_dict())
                return werkzeug.wrappers.Response("OK")(environ, start_response)

        with FakeGateway() as gateway:
            provider = harness.build("gateway", {"base_url": gateway.url})

    The port is chosen when the object is made (a free one unless ``port`` is given), so :attr:`url` is known
    before :meth:`start`: a test can configure a server it starts later, or one it has stopped (connections are
    then refused). ``port=0`` lets the OS pick at :meth:`start` instead, which cannot race with another process;
    :attr:`url` is known once started. Requests are handled on threads of their own (``threaded=True``), so the
    app must lock shared state. Requests are not logged to stderr; errors are.
    """

    def __init__(
        self,
        app: WsgiApp | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        name: str | None = None,
    ) -> None:
        if app is None and not callable(self):
            raise TypeError("pass a WSGI app, or subclass WsgiServer and define __call__(environ, start_response)")
        self.app: WsgiApp = app if app is not None else self  # type: ignore[assignment]
        self.host = host
        self._port = free_port(host) if port is None else port
        self.name = name or type(self).__name__

    @property
    def port(self) -> int:
        if self._server is not None:
            return int(self._server.server_port)
        if self._port == 0:
            raise RuntimeError(f"{self.name} is not started: with port=0 its port is chosen at start()")
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port``, without a trailing slash."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        """Listen and serve; returns ``self`` (``server = FakeX().start()``). Starting a running server does nothing."""
        from werkzeug.serving import make_server

        if self._server is None:
            self.serve(
                make_server(self.host, self._port, self.app, threaded=True, request_handler=_quiet_request_handler()),
                self.name,
            )
        return self


# ---------------------------------------------------------------------------------------------------------------
# SMTP


def make_self_signed_certificate(directory: str | os.PathLike[str], hostname: str = "localhost") -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` for ``hostname``, ``localhost`` and ``127.0.0.1`` into ``directory``.

    Clients verify the server with ``ssl.create_default_context(cafile=cert_path)``.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    alternative_names = {hostname, "localhost"}
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(alt) for alt in sorted(alternative_names)]
                + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@dataclass
class ReceivedMessage:
    """One message the SMTP server accepted: the envelope as sent, and the parsed message."""

    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage
    raw: bytes
    login: str | None = None
    received_at: float = field(default_factory=time.time)


class SmtpServer:
    """An aiosmtpd server in a background thread of this process; see :func:`smtp_server`."""

    def __init__(
        self,
        *,
        port: int | None = None,
        username: str = "hub",
        password: str = "secret",
        starttls: bool = True,
        require_auth: bool = True,
        cert_dir: str | os.PathLike[str] | None = None,
        keep_messages: bool = True,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.username = username
        self.password = password
        self.starttls = starttls
        self.require_auth = require_auth
        self.keep_messages = keep_messages
        #: Accepted messages, oldest first (only when ``keep_messages``).
        self.messages: list[ReceivedMessage] = []
        #: How many messages were accepted, kept even when the messages themselves are not.
        self.count = 0
        #: Failed AUTH attempts.
        self.failed_logins = 0
        self.cert_path: Path | None = None
        self.key_path: Path | None = None
        self._cert_dir = Path(cert_dir) if cert_dir is not None else None
        self._temporary: tempfile.TemporaryDirectory[str] | None = None
        self._controller: Any = None
        self._lock = threading.Lock()

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode("utf-8", errors="replace")
            password = auth_data.password.decode("utf-8", errors="replace")
            if login == self.username and password == self.password:
                return AuthResult(success=True, auth_data=login)
        with self._lock:
            self.failed_logins += 1
        # handled=False lets aiosmtpd answer "535 Authentication credentials invalid"; handled=True without a
        # response of our own would leave the client waiting for one.
        return AuthResult(success=False, handled=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        raw = bytes(envelope.original_content or envelope.content)
        with self._lock:
            self.count += 1
            if self.keep_messages:
                message = email.message_from_bytes(raw, policy=email.policy.default)
                login = session.auth_data if isinstance(session.auth_data, str) else None
                self.messages.append(
                    ReceivedMessage(
                        mail_from=envelope.mail_from,
                        rcpt_tos=list(envelope.rcpt_tos),
                        message=message,  # type: ignore[arg-type]
                        raw=raw,
                        login=login,
                    )
                )
        return "250 Message accepted for delivery"

    def start(self) -> SmtpServer:
        import ssl

        from aiosmtpd.controller import Controller

        if self._controller is not None:
            return self
        options: dict[str, Any] = {}
        if self.starttls:
            if self._cert_dir is None:
                self._temporary = tempfile.TemporaryDirectory(prefix="hub-smtp-")
                self._cert_dir = Path(self._temporary.name)
            self.cert_path, self.key_path = make_self_signed_certificate(self._cert_dir)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.cert_path, self.key_path)
            options.update(tls_context=context, require_starttls=True)
        if self.require_auth:
            # auth_require_tls only where TLS is offered: AUTH over plain text is otherwise refused outright.
            options.update(authenticator=self._authenticate, auth_required=True, auth_require_tls=self.starttls)
        self._controller = Controller(self, hostname=self.host, port=self.port, **options)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        if self._temporary is not None:
            self._temporary.cleanup()
            self._temporary = None

    def reset(self) -> None:
        with self._lock:
            self.messages.clear()
            self.count = 0
            self.failed_logins = 0

    def client_tls_context(self) -> Any:
        """An ``ssl.SSLContext`` that trusts this server's certificate (for ``smtplib.SMTP.starttls``)."""
        import ssl

        if self.cert_path is None:
            raise RuntimeError("the SMTP server runs without TLS, or is not started")
        return ssl.create_default_context(cafile=str(self.cert_path))

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def smtp_server(
    *,
    port: int | None = None,
    username: str = "hub",
    password: str = "secret",
    starttls: bool = True,
    require_auth: bool = True,
    cert_dir: str | os.PathLike[str] | None = None,
    keep_messages: bool = True,
) -> SmtpServer:
    """An SMTP server (aiosmtpd) on ``127.0.0.1``, with STARTTLS required and AUTH LOGIN/PLAIN; not yet started.

    Use as ``with smtp_server() as smtp:``; messages arrive in ``smtp.messages``. A self-signed certificate is
    made in ``cert_dir`` (a temporary folder by default); clients trust it with ``smtp.client_tls_context()``.
    ``starttls=False`` and ``require_auth=False`` give a plain server.
    """
    return SmtpServer(
        port=port,
        username=username,
        password=password,
        starttls=starttls,
        require_auth=require_auth,
        cert_dir=cert_dir,
        keep_messages=keep_messages,
    )


def _run_smtp(arguments: argparse.Namespace) -> int:
    server = smtp_server(
        port=arguments.port,
        username=arguments.username,
        password=arguments.password,
        starttls=not arguments.no_tls,
        require_auth=not arguments.no_auth,
        cert_dir=arguments.cert_dir,
        keep_messages=False,  # a benchmark sends many messages: count them, do not hold them
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    print(f"listening on {server.host}:{server.port}", flush=True)
    if server.cert_path is not None:
        print(f"certificate {server.cert_path}", flush=True)
    reported = 0
    try:
        while not stop.wait(arguments.report_every):
            if server.count != reported:
                reported = server.count
                print(f"messages {reported}", flush=True)
    finally:
        server.stop()
        print(f"total messages {server.count}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub.testing.servers", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    smtp = commands.add_parser("smtp", help="an SMTP server with STARTTLS and AUTH that counts what it receives")
    smtp.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    smtp.add_argument("--username", default="hub")
    smtp.add_argument("--password", default="secret")
    smtp.add_argument("--cert-dir", default=None, help="where to write the self-signed certificate")
    smtp.add_argument("--no-tls", action="store_true", help="no STARTTLS")
    smtp.add_argument("--no-auth", action="store_true", help="no AUTH")
    smtp.add_argument("--report-every", type=float, default=1.0, help="seconds between message-count lines")
    arguments = parser.parse_args(argv)
    return _run_smtp(arguments)


if __name__ == "__main__":
    sys.exit(main())
