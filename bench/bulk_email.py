"""Bulk email throughput: the hub's bulk path vs. a bare smtplib loop vs. Apprise, side by side.

One local SMTP server (aiosmtpd, its own process, no TLS/AUTH so that only the client side differs)
receives:

1. ``smtplib``: one reused connection, a message built once and one ``sendmail`` per recipient — the
   strictest baseline (no per-message work at all);
2. the hub: ``send_notification`` with all recipients (accepted, 202-style, then delivered by the
   background-worker path ``run_record``) through the ``hub-smtp`` plugin — everything the hub adds is
   measured: validation, template rendering, records, rate limiting, batching, audit, outcomes;
   — once on one connection (like for like) and once with the plugin's default pool of four;
3. Apprise (``mailto://``) with its per-send throttle turned off (``request_rate_per_sec = 0``) for
   fairness; it opens a connection per message, so it runs a smaller sample and is compared by rate.

    python bench/bulk_email.py [--messages 10000] [--apprise-messages 500]

Needs ``pip install ./plugins/hub-smtp apprise``.
"""

from __future__ import annotations

import argparse
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hub.testing.servers import free_port, wait_for_port  # noqa: E402

SENDER = "alerts@example.com"
SUBJECT = "Low stock: WIDGET-001 at WAREHOUSE-A"
BODY = "WIDGET-001 at WAREHOUSE-A is down to 5 (threshold 10)."


def recipients(count: int, prefix: str) -> list[str]:
    return [f"{prefix}{index}@example.com" for index in range(count)]


class ServerCount:
    """The server process prints ``messages N`` as it receives them; follow that count."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.value = 0
        self._thread = threading.Thread(target=self._follow, args=(process,), daemon=True)
        self._thread.start()

    def _follow(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("messages "):
                self.value = int(line.split()[1])

    def wait_for(self, expected: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while self.value < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"server received {self.value} of {expected}")
            time.sleep(0.02)


def bare_smtplib(port: int, addresses: list[str]) -> float:
    """The strictest baseline: one message built once, then only ``sendmail`` per recipient."""
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = "undisclosed-recipients:;"
    message["Subject"] = SUBJECT
    message.set_content(BODY)
    data = message.as_bytes()
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        for address in addresses:
            client.sendmail(SENDER, [address], data)
    return time.perf_counter() - started


def through_hub(port: int, addresses: list[str], connections: int = 1) -> float:
    from hub.config import validate_config
    from hub.manager import IntegrationManager

    data_dir = tempfile.mkdtemp(prefix="hub-bench-")
    config = validate_config(
        {
            "data_dir": data_dir,
            "providers": {"smtp": {"type": "smtp", "host": "127.0.0.1", "port": port, "security": "none", "from_address": SENDER, "max_connections": connections}},
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


def through_apprise(port: int, addresses: list[str]) -> float:
    import apprise
    from apprise.plugins.email import NotifyEmail

    notifier = apprise.Apprise()
    started = time.perf_counter()
    for address in addresses:
        url = f"mailto://127.0.0.1:{port}?from={SENDER}&to={address}&mode=insecure"
        plugin = apprise.Apprise.instantiate(url)
        if not isinstance(plugin, NotifyEmail):
            raise SystemExit(f"apprise did not understand {url}")
        plugin.request_rate_per_sec = 0  # its built-in throttle off, for a fair comparison
        if not plugin.notify(body=BODY, title=SUBJECT):
            raise SystemExit("apprise failed to send")
    del notifier
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--apprise-messages", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median rate is reported")
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "hub.testing.servers", "smtp", "--port", str(port), "--no-tls", "--no-auth", "--report-every", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    count = ServerCount(server)
    contenders = (
        ("smtplib, one reused connection", bare_smtplib, args.messages),
        ("hub bulk path, 1 connection", through_hub, args.messages),
        ("hub bulk path, 4 connections", lambda port, addresses: through_hub(port, addresses, 4), args.messages),
    )
    rates: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        # Interleaved rounds, so a slow moment of the machine hurts every contender alike.
        for round_number in range(args.rounds):
            for name, run, messages in contenders:
                before = count.value
                elapsed = run(port, recipients(messages, f"r{round_number}{name.split()[0]}"))
                count.wait_for(before + messages)
                rates[name].append(messages / elapsed)
        before = count.value
        elapsed = through_apprise(port, recipients(args.apprise_messages, "apprise"))
        count.wait_for(before + args.apprise_messages)
        rates["apprise mailto://, throttle off"] = [args.apprise_messages / elapsed]
    finally:
        server.terminate()
        server.wait(timeout=10)
    baseline = statistics.median(rates["smtplib, one reused connection"])
    print(
        f"local SMTP server (aiosmtpd, own process); {args.messages} messages x {args.rounds} interleaved rounds "
        f"({args.apprise_messages} once for apprise); median rates"
    )
    for name, measured in rates.items():
        rate = statistics.median(measured)
        spread = ", ".join(f"{value:.0f}" for value in measured)
        print(f"{name:<34} {rate:8.1f} msg/s  ratio to smtplib {rate / baseline:5.2f}   (rounds: {spread})")


if __name__ == "__main__":
    main()
