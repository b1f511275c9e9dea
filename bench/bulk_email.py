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

Every contender sends the same plain-text message. The contenders' order turns by one each round. Beside each
median rate is this process's CPU time per message (all its threads, the timed part only): on a shared 2-core
machine the rates swing with the other processes' load much more than the CPU per message does, which tells
whether the hub itself costs more per message than the bare loop. ``--security starttls`` (the default) runs the server
with STARTTLS + AUTH, as a real relay would be; ``--security none`` runs it without either.

Real relays are remote: a second server (this file's ``--serve-relay`` mode, its own process) answers each
message ``--relay-latency-ms`` (5) after its final dot, as a relay across a network does. It waits with
``asyncio.sleep`` in ``handle_DATA``, so it keeps serving its other connections meanwhile. Against it run
smtplib on one reused connection, the hub on a pool of 1 and of ``--relay-connections`` (8), and, to tell
whether the pool or the way one job uses it is the limit, the same pool shared by as many notifications
delivered at once (one thread each, as that many workers would). The relay reports how many messages it holds
at once (sampled every 20 ms): the peak says how many connections really sent in parallel.

    python bench/bulk_email.py [--messages 10000] [--relay-messages 2000] [--relay-latency-ms 5]
                               [--apprise-messages 500] [--security starttls|none] [--batch-size 500] [--quick]

Needs ``pip install ./plugins/hub-smtp apprise``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import smtplib
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hub.testing.servers import SmtpServer, free_port, wait_for_port  # noqa: E402

SENDER = "alerts@example.com"
SUBJECT = "Low stock: WIDGET-001 at WAREHOUSE-A"
BODY = "WIDGET-001 at WAREHOUSE-A is down to 5 (threshold 10)."
USERNAME, PASSWORD = "bench", "bench-secret"
BATCH_SIZE = [500]  # queue.batch_size of the hub runs (--batch-size)


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
    """A server process prints its certificate path and ``messages N [inflight K]`` as it receives them.

    ``inflight`` (the relay only) is how many messages it holds at that moment, each waiting out its
    latency: ``peak`` keeps the highest seen since :meth:`reset_peak`.
    """

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.value = 0
        self.peak = 0
        self.certificate: str | None = None
        self._thread = threading.Thread(target=self._follow, args=(process,), daemon=True)
        self._thread.start()

    def _follow(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("messages "):
                fields = line.split()
                self.value = int(fields[1])
                if len(fields) >= 4 and fields[2] == "inflight":
                    self.peak = max(self.peak, int(fields[3]))
            elif line.startswith("certificate "):
                self.certificate = line.split(" ", 1)[1].strip()

    def reset_peak(self) -> None:
        self.peak = 0

    def wait_for(self, expected: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while self.value < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"server received {self.value} of {expected}")
            time.sleep(0.02)


class SlowRelay(SmtpServer):
    """The test SMTP server answering each message ``latency`` seconds after its final dot.

    ``asyncio.sleep`` rather than ``time.sleep``: aiosmtpd serves every connection on one event loop, so the
    wait holds only the connection it delays, as a remote relay's round trip and queueing would.
    """

    def __init__(self, latency: float, **options: Any) -> None:
        super().__init__(**options)
        self.latency = latency
        self.inflight = 0  # touched on the event loop only

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        self.inflight += 1
        try:
            await asyncio.sleep(self.latency)
        finally:
            self.inflight -= 1
        return await super().handle_DATA(server, session, envelope)


def serve_relay(arguments: argparse.Namespace) -> None:
    """``--serve-relay``: run :class:`SlowRelay` until SIGTERM, printing what :class:`ServerOutput` reads."""
    import signal

    relay = SlowRelay(
        arguments.relay_latency_ms / 1000,
        port=arguments.port,
        username=USERNAME,
        password=PASSWORD,
        starttls=arguments.security == "starttls",
        require_auth=arguments.security == "starttls",
        cert_dir=tempfile.mkdtemp(prefix="hub-bench-relay-cert-"),
        keep_messages=False,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    relay.start()
    if relay.cert_path is not None:
        print(f"certificate {relay.cert_path}", flush=True)
    try:
        # Every 20 ms, even unchanged: the in-flight count is a sample, and a fast one catches the peak.
        while not stop.wait(0.02):
            print(f"messages {relay.count} inflight {relay.inflight}", flush=True)
    finally:
        relay.stop()


@dataclass
class Timing:
    """One contender's run: wall-clock seconds, and CPU seconds of this process (all its threads) meanwhile."""

    elapsed: float
    cpu: float


class Timer:
    """Wall clock and this process's CPU time from :meth:`start` to :meth:`stop`.

    The CPU time tells the client's own cost per message apart from the waits: on a shared 2-core machine the
    wall-clock rates swing with the other processes' load, while CPU per message moves much less."""

    def start(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def stop(self) -> Timing:
        return Timing(time.perf_counter() - self._wall, time.process_time() - self._cpu)


def bare_smtplib(target: Target, addresses: list[str]) -> Timing:
    """The strictest baseline: one message built once, then only ``sendmail`` per recipient."""
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = "undisclosed-recipients:;"
    message["Subject"] = SUBJECT
    message.set_content(BODY)
    data = message.as_bytes()
    timer = Timer()
    timer.start()
    with smtplib.SMTP("127.0.0.1", target.port, timeout=30) as client:
        if target.security == "starttls":
            client.starttls(context=target.tls_context())
            client.login(USERNAME, PASSWORD)
        for address in addresses:
            client.sendmail(SENDER, [address], data)
    return timer.stop()


def through_hub(target: Target, addresses: list[str], connections: int = 1, jobs: int = 1) -> Timing:
    """The hub's bulk path on a pool of ``connections``. ``jobs`` > 1 splits the recipients into that many
    notifications delivered at once, one thread each (as that many workers would): the pool then has
    several senders, which one notification alone never gives it."""
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
            "queue": {"workers": 0, "batch_size": BATCH_SIZE[0]},
            # The same plain-text message the smtplib baseline sends, so the server does the same work.
            "templates": {"bench_alert": [{"channel": "email", "subject": SUBJECT, "text": BODY}]},
        },
        environ={},
    )
    hub = IntegrationManager(config, environ={}, entry_points=True)
    try:
        if "smtp" not in hub.host.provider_types:
            raise SystemExit("the hub-smtp plugin is not installed: pip install ./plugins/hub-smtp")
        shares = [addresses[share::jobs] for share in range(jobs)]
        timer = Timer()
        timer.start()
        accepted = [
            hub.send_notification("email", [{"email": address} for address in share], template="bench_alert", tenant_id="bench")
            for share in shares
        ]
        if jobs == 1:
            hub.run_record(accepted[0]["messageId"])  # what a background worker does
        else:
            threads = [threading.Thread(target=hub.run_record, args=(item["messageId"],)) for item in accepted]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        timing = timer.stop()
        for item, share in zip(accepted, shares, strict=True):
            record = hub.get_record(item["messageId"], "bench")
            if record.status != "succeeded" or record.result["sent"] != len(share):
                raise SystemExit(f"hub run incomplete: {record.status} {record.result}")
        return timing
    finally:
        hub.close()


def through_apprise(target: Target, addresses: list[str]) -> Timing:
    import apprise
    from apprise.plugins.email import NotifyEmail

    if target.security == "starttls":
        credentials, mode = f"{USERNAME}:{PASSWORD}@", "starttls&verify=no"  # its own CA bundle cannot take ours
    else:
        credentials, mode = "", "insecure"
    timer = Timer()
    timer.start()
    for address in addresses:
        url = f"mailto://{credentials}127.0.0.1:{target.port}?from={SENDER}&to={address}&mode={mode}"
        plugin = apprise.Apprise.instantiate(url)
        if not isinstance(plugin, NotifyEmail):
            raise SystemExit(f"apprise did not understand {url}")
        plugin.request_rate_per_sec = 0  # its built-in throttle off, for a fair comparison
        if not plugin.notify(body=BODY, title=SUBJECT):
            raise SystemExit("apprise failed to send")
    return timer.stop()


Contender = tuple[str, Callable[[Target, list[str]], Timing], int]


def start_server(command: list[str], security: str) -> tuple[subprocess.Popen[str], ServerOutput, Target]:
    port = free_port()
    server = subprocess.Popen([*command, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    output = ServerOutput(server)
    wait_for_port("127.0.0.1", port, timeout=30, process=server)
    while security == "starttls" and output.certificate is None:
        time.sleep(0.05)
    return server, output, Target(port, security, output.certificate)


@dataclass
class Measured:
    """Every round of one contender: its rates (msg/s) and this process's CPU per message (µs)."""

    rates: list[float]
    cpu_us: list[float]
    peak: int = 0


def run_rounds(contenders: list[Contender], output: ServerOutput, target: Target, rounds: int, tag: str) -> dict[str, Measured]:
    """Interleaved rounds, so a slow moment of the machine hurts every contender alike; the order of the
    contenders turns by one each round, so none always runs first (right after a server's idle moment)."""
    measured: dict[str, Measured] = {name: Measured([], []) for name, _, _ in contenders}
    for round_number in range(rounds):
        shift = round_number % len(contenders)
        for position, (name, run, messages) in list(enumerate(contenders))[shift:] + list(enumerate(contenders))[:shift]:
            before = output.value
            output.reset_peak()
            timing = run(target, recipients(messages, f"{tag}{round_number}c{position}-"))
            output.wait_for(before + messages)
            entry = measured[name]
            entry.rates.append(messages / timing.elapsed)
            entry.cpu_us.append(timing.cpu / messages * 1e6)
            entry.peak = max(entry.peak, output.peak)
    return measured


def report(title: str, measured: dict[str, Measured], baseline_name: str, peaks: bool = False) -> dict[str, float]:
    print(title)
    baseline = statistics.median(measured[baseline_name].rates)
    baseline_cpu = statistics.median(measured[baseline_name].cpu_us)
    medians: dict[str, float] = {}
    for name, entry in measured.items():
        medians[name] = rate = statistics.median(entry.rates)
        cpu = statistics.median(entry.cpu_us)
        spread = ", ".join(f"{value:.0f}" for value in entry.rates)
        peak = f"  peak in flight {entry.peak}" if peaks else ""
        print(
            f"  {name:<44} {rate:8.1f} msg/s  ratio to smtplib {rate / baseline:5.2f}   client CPU {cpu:6.0f} us/msg"
            f" ({cpu / baseline_cpu:4.2f}x)   (rounds: {spread}){peak}"
        )
    return medians


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000, help="per contender and round, local server")
    parser.add_argument("--relay-messages", type=int, default=2_000, help="per contender and round, slow relay")
    parser.add_argument("--relay-latency-ms", type=float, default=5.0, help="the slow relay's wait before each reply")
    parser.add_argument("--relay-connections", type=int, default=8, help="the pool size measured against the relay")
    parser.add_argument("--apprise-messages", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median rate is reported")
    parser.add_argument("--security", choices=["starttls", "none"], default="starttls")
    parser.add_argument("--batch-size", type=int, default=500, help="the hub's queue.batch_size (recipients per provider call)")
    parser.add_argument("--quick", action="store_true", help="1,000 local and 400 relay messages, 50 for apprise")
    parser.add_argument("--serve-relay", action="store_true", help=argparse.SUPPRESS)  # the relay's own process
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_relay:
        serve_relay(args)
        return
    if args.quick:
        args.messages, args.relay_messages, args.apprise_messages = 1_000, 400, 50
    pool = args.relay_connections
    BATCH_SIZE[0] = args.batch_size

    local_command = [sys.executable, "-m", "hub.testing.servers", "smtp", "--report-every", "0.05"]
    local_command += ["--username", USERNAME, "--password", PASSWORD, "--cert-dir", tempfile.mkdtemp(prefix="hub-bench-cert-")]
    if args.security == "none":
        local_command += ["--no-tls", "--no-auth"]
    relay_command = [sys.executable, str(Path(__file__).resolve()), "--serve-relay", "--security", args.security]
    relay_command += ["--relay-latency-ms", str(args.relay_latency_ms)]

    smtplib_name = "smtplib, one reused connection"
    local: list[Contender] = [
        (smtplib_name, bare_smtplib, args.messages),
        ("hub bulk path, 1 connection", through_hub, args.messages),
        ("hub bulk path, 4 connections (default)", lambda target, addresses: through_hub(target, addresses, 4), args.messages),
    ]
    relay: list[Contender] = [
        (smtplib_name, bare_smtplib, args.relay_messages),
        ("hub bulk path, 1 connection", through_hub, args.relay_messages),
        (f"hub bulk path, {pool} connections", lambda target, addresses: through_hub(target, addresses, pool), args.relay_messages),
        (
            f"hub, {pool} connections, {pool} notifications at once",
            lambda target, addresses: through_hub(target, addresses, pool, jobs=pool),
            args.relay_messages,
        ),
    ]

    server, output, target = start_server(local_command, args.security)
    try:
        local_rates = run_rounds(local, output, target, args.rounds, "l")
        if importlib.util.find_spec("apprise") is None:
            print("apprise is not installed (pip install apprise): its row is left out")
        elif args.apprise_messages:
            before = output.value
            timing = through_apprise(target, recipients(args.apprise_messages, "apprise"))
            output.wait_for(before + args.apprise_messages)
            local_rates["apprise mailto://, throttle off"] = Measured(
                [args.apprise_messages / timing.elapsed], [timing.cpu / args.apprise_messages * 1e6]
            )
    finally:
        server.terminate()
        server.wait(timeout=10)
    server, output, target = start_server(relay_command, args.security)
    try:
        relay_rates = run_rounds(relay, output, target, args.rounds, "r")
    finally:
        server.terminate()
        server.wait(timeout=10)

    local_medians = report(
        f"local SMTP server (aiosmtpd, own process, security {args.security}); {args.messages} messages x "
        f"{args.rounds} interleaved rounds ({args.apprise_messages} once for apprise); median rates",
        local_rates,
        smtplib_name,
    )
    relay_medians = report(
        f"slow relay ({args.relay_latency_ms:g} ms per message, aiosmtpd, own process, security {args.security}); "
        f"{args.relay_messages} messages x {args.rounds} interleaved rounds; median rates",
        relay_rates,
        smtplib_name,
        peaks=True,
    )
    one = local_medians["hub bulk path, 1 connection"] / local_medians[smtplib_name]
    pooled = relay_medians[f"hub bulk path, {pool} connections"] / relay_medians[smtplib_name]
    print(f"targets: hub on 1 connection / smtplib, local server {one:.2f} (>= 0.95: {'met' if one >= 0.95 else 'NOT met'}); "
          f"hub on {pool} connections / smtplib, slow relay {pooled:.2f} (>= 4: {'met' if pooled >= 4 else 'NOT met'})")


if __name__ == "__main__":
    main()
