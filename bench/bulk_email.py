"""Bulk email throughput: the hub's bulk path vs. a bare smtplib loop vs. Apprise, side by side.

One local SMTP server (aiosmtpd, its own process) receives, in interleaved rounds:

1. ``smtplib``: one reused connection, a message built once and one ``sendmail`` per recipient — the
   strictest baseline (no per-message work at all);
2. the hub: ``send_notification`` with all recipients (accepted, 202-style, then delivered by the
   background-worker path ``run_record``) through the ``hub-smtp`` plugin — everything the hub adds is
   measured: validation, template rendering, records, rate limiting, batching, audit, outcomes —
   once on one connection (like for like) and once with the plugin's default pool of four;
3. Apprise (``mailto://``) with its per-send throttle turned off (``request_rate_per_sec = 0``) for
   fairness; it opens a connection per message, so it runs a smaller sample and is compared by rate.

Every contender sends the same plain-text message. ``--security starttls`` (the default) runs the server
with STARTTLS + AUTH, as a real relay would be; ``--security none`` runs it without either.

    python bench/bulk_email.py [--messages 10000] [--apprise-messages 500] [--security starttls|none]

Needs ``pip install ./plugins/hub-smtp apprise``.
"""

from __future__ import annotations

import argparse
import importlib.util
import smtplib
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hub.testing.servers import free_port, wait_for_port  # noqa: E402

SENDER = "alerts@example.com"
SUBJECT = "Low stock: WIDGET-001 at WAREHOUSE-A"
BODY = "WIDGET-001 at WAREHOUSE-A is down to 5 (threshold 10)."
USERNAME, PASSWORD = "bench", "bench-secret"


@dataclass
class Target:
    port: int
    security: str  # "starttls" or "none"
    certificate: str | None = None

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.certificate)


def recipients(count: int, prefix: str) -> list[str]:
    return [f"{prefix}{index}@example.com" for index in range(count)]


class ServerOutput:
    """The server process prints its certificate path and ``messages N`` as it receives them."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.value = 0
        self.certificate: str | None = None
        self._thread = threading.Thread(target=self._follow, args=(process,), daemon=True)
        self._thread.start()

    def _follow(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("messages "):
                self.value = int(line.split()[1])
            elif line.startswith("certificate "):
                self.certificate = line.split(" ", 1)[1].strip()

    def wait_for(self, expected: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while self.value < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"server received {self.value} of {expected}")
            time.sleep(0.02)


def bare_smtplib(target: Target, addresses: list[str]) -> float:
    """The strictest baseline: one message built once, then only ``sendmail`` per recipient."""
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = "undisclosed-recipients:;"
    message["Subject"] = SUBJECT
    message.set_content(BODY)
    data = message.as_bytes()
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", target.port, timeout=30) as client:
        if target.security == "starttls":
            client.starttls(context=target.tls_context())
            client.login(USERNAME, PASSWORD)
        for address in addresses:
            client.sendmail(SENDER, [address], data)
    return time.perf_counter() - started


def through_hub(target: Target, addresses: list[str], connections: int = 1) -> float:
    from hub.config import validate_config
    from hub.manager import IntegrationManager

    smtp = {"type": "smtp", "host": "127.0.0.1", "port": target.port, "security": target.security, "from_address": SENDER, "max_connections": connections}
    if target.security == "starttls":
        smtp.update(username=USERNAME, password=PASSWORD, ca_file=target.certificate)
    config = validate_config(
        {
            "data_dir": tempfile.mkdtemp(prefix="hub-bench-"),
            "providers": {"smtp": smtp},
            "services": {"email": {"providers": ["smtp"]}},
            "rate_limits": {"limits": {"email": "1000000/minute"}},
            "queue": {"workers": 0, "batch_size": 500},
            # The same plain-text message the smtplib baseline sends, so the server does the same work.
            "templates": {"bench_alert": [{"channel": "email", "subject": SUBJECT, "text": BODY}]},
        },
        environ={},
    )
    hub = IntegrationManager(config, environ={}, entry_points=True)
    try:
        if "smtp" not in hub.host.provider_types:
            raise SystemExit("the hub-smtp plugin is not installed: pip install ./plugins/hub-smtp")
        started = time.perf_counter()
        accepted = hub.send_notification("email", [{"email": address} for address in addresses], template="bench_alert", tenant_id="bench")
        hub.run_record(accepted["messageId"])  # what a background worker does
        elapsed = time.perf_counter() - started
        record = hub.get_record(accepted["messageId"], "bench")
        if record.status != "succeeded" or record.result["sent"] != len(addresses):
            raise SystemExit(f"hub run incomplete: {record.status} {record.result}")
        return elapsed
    finally:
        hub.close()


def through_apprise(target: Target, addresses: list[str]) -> float:
    import apprise
    from apprise.plugins.email import NotifyEmail

    if target.security == "starttls":
        credentials, mode = f"{USERNAME}:{PASSWORD}@", "starttls&verify=no"  # its own CA bundle cannot take ours
    else:
        credentials, mode = "", "insecure"
    started = time.perf_counter()
    for address in addresses:
        url = f"mailto://{credentials}127.0.0.1:{target.port}?from={SENDER}&to={address}&mode={mode}"
        plugin = apprise.Apprise.instantiate(url)
        if not isinstance(plugin, NotifyEmail):
            raise SystemExit(f"apprise did not understand {url}")
        plugin.request_rate_per_sec = 0  # its built-in throttle off, for a fair comparison
        if not plugin.notify(body=BODY, title=SUBJECT):
            raise SystemExit("apprise failed to send")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--apprise-messages", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median rate is reported")
    parser.add_argument("--security", choices=["starttls", "none"], default="starttls")
    args = parser.parse_args()
    port = free_port()
    command = [sys.executable, "-m", "hub.testing.servers", "smtp", "--port", str(port), "--report-every", "0.05"]
    command += ["--username", USERNAME, "--password", PASSWORD, "--cert-dir", tempfile.mkdtemp(prefix="hub-bench-cert-")]
    if args.security == "none":
        command += ["--no-tls", "--no-auth"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    output = ServerOutput(server)
    contenders = (
        ("smtplib, one reused connection", bare_smtplib, args.messages),
        ("hub bulk path, 1 connection", through_hub, args.messages),
        ("hub bulk path, 4 connections", lambda target, addresses: through_hub(target, addresses, 4), args.messages),
    )
    rates: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        while args.security == "starttls" and output.certificate is None:
            time.sleep(0.05)
        target = Target(port, args.security, output.certificate)
        # Interleaved rounds, so a slow moment of the machine hurts every contender alike.
        for round_number in range(args.rounds):
            for name, run, messages in contenders:
                before = output.value
                elapsed = run(target, recipients(messages, f"r{round_number}{name.split()[0]}"))
                output.wait_for(before + messages)
                rates[name].append(messages / elapsed)
        if importlib.util.find_spec("apprise") is None:
            print("apprise is not installed (pip install apprise): its row is left out")
        elif args.apprise_messages:
            before = output.value
            elapsed = through_apprise(target, recipients(args.apprise_messages, "apprise"))
            output.wait_for(before + args.apprise_messages)
            rates["apprise mailto://, throttle off"] = [args.apprise_messages / elapsed]
    finally:
        server.terminate()
        server.wait(timeout=10)
    baseline = statistics.median(rates["smtplib, one reused connection"])
    print(
        f"local SMTP server (aiosmtpd, own process, security {args.security}); {args.messages} messages x "
        f"{args.rounds} interleaved rounds ({args.apprise_messages} once for apprise); median rates"
    )
    for name, measured in rates.items():
        rate = statistics.median(measured)
        spread = ", ".join(f"{value:.0f}" for value in measured)
        print(f"{name:<34} {rate:8.1f} msg/s  ratio to smtplib {rate / baseline:5.2f}   (rounds: {spread})")


if __name__ == "__main__":
    main()
