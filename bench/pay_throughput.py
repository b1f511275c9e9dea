"""Payments per second: ``POST /payments`` through ``hub serve`` vs. the bare stripe SDK, against one Stripe server.

One Stripe contract server (``hub_stripe.testing``: Stripe's official OpenAPI description, every request checked,
state kept like Stripe's test mode) runs in its own process on 127.0.0.1. Two contenders charge it, the same
PaymentIntent each time (10.00 USD, ``pm_card_visa``, confirmed at once, an idempotency key per payment):

1. **bare**: ``stripe.StripeClient.v1.payment_intents.create`` from N threads in this process -- what a service
   charging Stripe by hand does;
2. **hub**: N threads posting ``POST /api/integrations/payments`` (``gateway: stripe``) to the real ``hub serve``
   on its embedded defaults (SQLite, in-memory rate limits) with the ``hub-stripe`` plugin, which records the
   payment, calls Stripe through the same SDK and stores the answer.

Rounds alternate bare, hub, bare, hub... for a fixed time each; while one contender runs, the hub server is idle
(bare) or the bench's own SDK threads are (hub). The ratio hub/bare of payments per second is the figure (target
>= 0.8): the Stripe server's own cost is in both, so the ratio shows what the hub adds on the way.

    python bench/pay_throughput.py [--rounds 3] [--duration 6] [--threads 8]

Needs ``pip install ./plugins/hub-stripe`` (the README's test command installs it) and npm for the description.
Only 127.0.0.1 is contacted; every process the bench starts is stopped when it ends.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_throughput import HOST, Server, free_port  # noqa: E402  (the bench folder is not a package)

REPO = Path(__file__).resolve().parent.parent
TENANT = "bench"
PATH = "/api/integrations/payments"
PAYMENT = {"amount": "10.00", "currency": "USD", "paymentMethod": "pm_card_visa", "gateway": "stripe"}


def serve_stripe(port: int) -> None:
    """The ``--serve-stripe`` child: the Stripe fake on ``port`` until killed."""
    from hub_stripe.testing import DEFAULT_API_KEY, StripeFake, stripe_spec

    from hub.testing.contract_server import ContractServer

    server = ContractServer(stripe_spec(), port=port)
    StripeFake(server, (DEFAULT_API_KEY,))
    with server:
        print("serving", flush=True)
        threading.Event().wait()


def write_hub_config(folder: Path, stripe_url: str, api_key: str) -> None:
    import yaml

    config = yaml.safe_load((REPO / "hub.yaml").read_text())
    config["providers"] = {
        **config.get("providers", {}),
        "stripe": {"type": "stripe", "api_key": api_key, "api_base": stripe_url, "timeout": 30},
    }
    config.setdefault("services", {})["payment"] = {"providers": ["stripe"]}
    config["rate_limits"]["limits"] = {**config["rate_limits"].get("limits", {}), "payment": "1000000000/minute"}
    (folder / "hub.yaml").write_text(yaml.safe_dump(config))


def wait_for(check: Callable[[], bool], what: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not start in {timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")


def spawn(name: str, command: list[str], folder: Path, env: dict[str, str], port: int) -> tuple[Server, Path]:
    log = folder / f"{name}.log"
    process = subprocess.Popen(
        command, cwd=folder, env=env, start_new_session=True, stdout=open(log, "wb"), stderr=subprocess.STDOUT  # noqa: SIM115
    )
    return Server(name, port, process), log


def run_round(threads: int, seconds: float, one: Callable[[], None]) -> tuple[float, list[float], int]:
    """Closed loop: ``threads`` threads each call ``one()`` back to back for ``seconds``; (rate, latencies, errors)."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    stop = time.monotonic() + seconds

    def loop(index: int) -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                one()
            except Exception:
                errors[index] += 1
                continue
            latencies[index].append(time.perf_counter() - started)

    workers = [threading.Thread(target=loop, args=(index,)) for index in range(threads)]
    began = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - began
    flat = [latency for per_thread in latencies for latency in per_thread]
    return len(flat) / elapsed, flat, sum(errors)


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6, help="seconds per round and contender")
    parser.add_argument("--threads", type=int, default=8, help="concurrent payers (both contenders)")
    parser.add_argument("--hub-threads", type=int, default=8, help="hub serve's threads per worker")
    parser.add_argument("--hub-workers", type=int, default=1, help="hub serve's worker processes (hub.yaml's default: 1)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, databases)")
    parser.add_argument("--serve-stripe", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_stripe:
        serve_stripe(args.serve_stripe)
        return

    import requests
    import stripe
    from hub_stripe.testing import DEFAULT_API_KEY

    folder = Path(tempfile.mkdtemp(prefix="hub-pay-throughput-"))
    env = {
        **os.environ,
        "HUB_LOG_LEVEL": "WARNING",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    servers: list[Server] = []
    try:
        stripe_port = free_port()
        fake, fake_log = spawn("stripe", [sys.executable, __file__, "--serve-stripe", str(stripe_port)], folder, env, stripe_port)
        servers.append(fake)
        wait_for(lambda: "serving" in fake_log.read_text(), "the Stripe contract server", fake.process, fake_log)
        stripe_url = f"http://{HOST}:{stripe_port}"
        write_hub_config(folder, stripe_url, DEFAULT_API_KEY)
        hub_command = [sys.executable, "-m", "hub.cli"]
        token = subprocess.run(
            [*hub_command, "token", "create", "--tenant", TENANT], cwd=folder, env=env, capture_output=True, text=True, check=True
        ).stdout.split()[-1]
        hub_port = free_port()
        hub, hub_log = spawn(
            "hub", [*hub_command, "serve", "--port", str(hub_port), "--workers", str(args.hub_workers), "--threads", str(args.hub_threads)], folder, env, hub_port
        )
        servers.append(hub)
        headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": TENANT}
        local = threading.local()

        def session() -> requests.Session:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            return local.session

        def hub_payment() -> None:
            response = session().post(
                f"http://{HOST}:{hub_port}{PATH}", json=PAYMENT, headers={**headers, "Idempotency-Key": uuid.uuid4().hex}, timeout=60
            )
            if response.status_code != 201 or response.json()["data"]["status"] != "succeeded":
                raise RuntimeError(f"hub answered {response.status_code}: {response.text[:300]}")

        client = stripe.StripeClient(
            DEFAULT_API_KEY, base_addresses={"api": stripe_url}, max_network_retries=0, http_client=stripe.RequestsClient(timeout=60)
        )

        def bare_payment() -> None:
            intent = client.v1.payment_intents.create(
                params={"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True, "metadata": {"order_id": "bench"}},
                options={"idempotency_key": uuid.uuid4().hex},
            )
            if intent.status != "succeeded":
                raise RuntimeError(f"Stripe answered {intent.status}")

        def hub_ready() -> bool:
            hub_payment()
            return True

        wait_for(hub_ready, "hub serve", hub.process, hub_log)
        for one in (bare_payment, hub_payment):  # warm both paths (imports, pools, the fake's caches)
            run_round(args.threads, 1.5, one)
        print(
            f"{PATH} (10.00 USD, pm_card_visa, confirmed) through hub serve (gunicorn gthread {args.hub_workers} x {args.hub_threads}, SQLite) vs. "
            f"stripe.StripeClient payment_intents.create, both against one Stripe contract server; {args.threads} payer threads; "
            f"{args.rounds} interleaved rounds of {args.duration:g} s"
        )
        rates: dict[str, list[float]] = {"bare": [], "hub": []}
        latencies: dict[str, list[float]] = {"bare": [], "hub": []}
        for number in range(1, args.rounds + 1):
            for name, one in (("bare", bare_payment), ("hub", hub_payment)):
                rate, measured, errors = run_round(args.threads, args.duration, one)
                rates[name].append(rate)
                latencies[name] += measured
                suffix = f"  errors {errors}" if errors else ""
                print(
                    f"round {number} {name:<4} {rate:7.1f} payments/s  p50 {percentile(measured, 0.5):7.1f} ms  "
                    f"p99 {percentile(measured, 0.99):7.1f} ms{suffix}",
                    flush=True,
                )
        bare_rate, hub_rate = statistics.median(rates["bare"]), statistics.median(rates["hub"])
        ratios = [hub_rate_ / bare_rate_ for hub_rate_, bare_rate_ in zip(rates["hub"], rates["bare"], strict=True)]
        print(
            json.dumps(
                {
                    "bare_payments_per_s": round(bare_rate, 1),
                    "hub_payments_per_s": round(hub_rate, 1),
                    "ratio_hub_over_bare": round(hub_rate / bare_rate, 3),
                    "ratio_per_round": [round(ratio, 3) for ratio in ratios],
                    "p99_ms": {name: round(percentile(values, 0.99), 1) for name, values in latencies.items()},
                    "target_ratio": 0.8,
                }
            )
        )
    finally:
        for server in reversed(servers):
            server.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"kept {folder}")


if __name__ == "__main__":
    main()
