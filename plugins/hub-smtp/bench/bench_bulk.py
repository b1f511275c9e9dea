"""Bulk email throughput: the hub's bulk path through hub-smtp vs. a bare smtplib loop on one connection.

    python plugins/hub-smtp/bench/bench_bulk.py [--messages 2000] [--rounds 3]

Starts the test SMTP server (aiosmtpd, STARTTLS + AUTH) as its own process, then measures, in turn:

* ``bare``: one smtplib connection (STARTTLS, LOGIN) and ``sendmail`` of a pre-built message per recipient --
  the floor any SMTP client on smtplib can reach;
* ``provider``: ``notify`` called directly with batches of 200, as the core calls it (the plugin's own cost);
* ``hub``: a 202-accepted bulk notification delivered by ``IntegrationManager.run_record`` (what a worker
  does): templates, batches of ``queue.batch_size``, records and audit rows, and the plugin's pooled sends.

The target is hub >= 90 % of bare. Both share the machine with the server, so run it on an idle machine and
read the median of a few rounds.
"""

from __future__ import annotations

import argparse
import smtplib
import ssl
import statistics
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import hub_smtp

from hub.config import validate_config
from hub.manager import IntegrationManager
from hub.testing.servers import ServerProcess, free_port


def bare_loop(port: int, context: ssl.SSLContext, count: int) -> float:
    message = EmailMessage()
    message["From"] = "bench@hub.example.com"
    message["To"] = "someone@shop.example"
    message["Subject"] = "Bulk notice"
    message.set_content("Widget stock is at 5.\n")
    message.add_alternative("<p>Widget stock is at 5.</p>", subtype="html")
    data = message.as_bytes()
    with smtplib.SMTP("127.0.0.1", port, local_hostname="bench", timeout=30) as client:
        client.starttls(context=context)
        client.login("hub", "secret")
        started = time.perf_counter()
        for number in range(count):
            client.sendmail("bench@hub.example.com", [f"customer{number}@shop.example"], data)
        return count / (time.perf_counter() - started)


def provider_direct(port: int, cert: Path, count: int, data_dir: Path, batch_size: int = 200) -> float:
    from hub.capabilities import Message, Recipient
    from hub.testing import ProviderHarness

    harness = ProviderHarness(data_dir)
    harness.add_plugin(hub_smtp, "smtp")
    provider = harness.build("smtp", _settings(port, cert))
    try:
        warm_up = Message(id="warm-up", tenant="t", channel="email", recipients=[Recipient("w@shop.example")], text="x")
        harness.call(provider, "notify", message=warm_up)
        started = time.perf_counter()
        for start in range(0, count, batch_size):
            message = Message(
                id=f"bench-email-{start}",
                tenant="t",
                channel="email",
                recipients=[
                    Recipient(f"customer{n}@shop.example") for n in range(start, min(count, start + batch_size))
                ],
                subject="Bulk notice",
                text="Widget stock is at 5.\n",
                html="<p>Widget stock is at 5.</p>",
            )
            harness.call(provider, "notify", message=message)
        return count / (time.perf_counter() - started)
    finally:
        harness.close()


def _settings(port: int, cert: Path) -> dict[str, object]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "username": "hub",
        "password": "secret",
        "from_address": "bench@hub.example.com",
        "ca_file": str(cert),
        "local_hostname": "bench",
    }


def hub_bulk(port: int, cert: Path, count: int, data_dir: Path) -> float:
    config = validate_config(
        {
            "data_dir": str(data_dir),
            "providers": {"smtp": {"type": "smtp", **_settings(port, cert)}},
            "services": {"email": {"providers": ["smtp"]}},
            "queue": {"workers": 0},
            "rate_limits": {"limits": {"email": "1000000/minute"}},
        },
        environ={},
    )
    hub = IntegrationManager(config, environ={}, entry_points=False, plugins=[(hub_smtp, "smtp")])
    try:
        hub.send_notification("email", [{"email": "warm-up@shop.example"}], data={"subject": "x", "message": "x"})
        view = hub.send_notification(
            "email",
            [{"email": f"customer{number}@shop.example"} for number in range(count)],
            data={"subject": "Bulk notice", "message": "Widget stock is at 5."},
            tenant_id="default",
        )
        started = time.perf_counter()
        hub.run_record(view["messageId"])
        rate = count / (time.perf_counter() - started)
        delivered = hub.notification_view(hub.get_record(view["messageId"], "default", "notification"))
        if delivered["sent"] != count:
            raise SystemExit(f"hub delivered {delivered['sent']} of {count}: {delivered['error']}")
        return rate
    finally:
        hub.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="hub-smtp-bench-") as folder:
        command = [sys.executable, "-m", "hub.testing.servers", "smtp", "--port", str(port), "--cert-dir", folder]
        with ServerProcess(command, port=port, name="smtp"):
            cert = Path(folder) / "cert.pem"
            context = ssl.create_default_context(cafile=str(cert))
            bare: list[float] = []
            provider: list[float] = []
            hub: list[float] = []
            for round_number in range(arguments.rounds):
                bare.append(bare_loop(port, context, arguments.messages))
                provider.append(provider_direct(port, cert, arguments.messages, Path(folder) / f"p{round_number}"))
                hub.append(hub_bulk(port, cert, arguments.messages, Path(folder) / f"var{round_number}"))
                print(
                    f"round {round_number + 1}: bare {bare[-1]:.0f}, provider {provider[-1]:.0f}, hub {hub[-1]:.0f} msg/s",
                    flush=True,
                )
            floor = statistics.median(bare)
            print(
                f"median: bare {floor:.0f} msg/s; provider.notify {statistics.median(provider):.0f} msg/s "
                f"({statistics.median(provider) / floor:.0%}); hub bulk path {statistics.median(hub):.0f} msg/s "
                f"({statistics.median(hub) / floor:.0%}; target >= 90 %)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
