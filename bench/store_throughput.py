"""File throughput and memory: uploads and downloads through ``hub serve`` (S3 provider) vs. bare boto3, one moto server.

One moto server (S3 in server mode) runs on 127.0.0.1. Two contenders move the same objects to and from it:

1. **hub**: the real ``hub serve`` (gunicorn, SQLite) with the ``hub-s3`` provider as its only ``fileStorage``
   provider. Upload: ``POST /api/integrations/files`` with a raw body streamed from a generator (``requests``
   sends it chunked: the hub does not know the size in advance); download:
   ``GET /api/integrations/files/<id>/content`` read in 1 MiB chunks and dropped;
2. **boto3**: ``upload_fileobj`` from the same generator (behind an ``io.BufferedReader``, which gives
   s3transfer the full reads it needs), ``download_fileobj`` into a sink (parallel ranged GETs), and one streamed
   ``get_object`` read in 1 MiB chunks (what the provider does), each in a child process of its own
   so its memory is measured cleanly, with the provider's ``TransferConfig`` (8 MiB parts, 4 at a time;
   ``--bare-config default`` for boto3's own defaults, 10 at a time).

For each size the transfers run interleaved (hub up, boto3 up, hub down, boto3 down, boto3 get), ``--rounds`` times; the
objects are deleted between rounds. Memory: the peak resident set of the hub's whole process group (gunicorn
master and worker; ``VmRSS`` sampled every 10 ms plus each process's ``VmHWM`` after resetting it through
``/proc/<pid>/clear_refs``) minus what it was just before the transfer, against the same measure of the boto3
child (after its imports and client were made). Both contenders are warmed up first (boto3 imported in the hub
worker, one multipart upload), so import costs are not counted as growth.

    python bench/store_throughput.py [--sizes 100,500] [--rounds 1] [--bare-config provider|default]

Sizes are MiB. Needs ``moto[server]`` and the ``hub-s3`` plugin installed (``pip install -e plugins/hub-s3``).
Only 127.0.0.1 is contacted; every process the bench starts is stopped when it ends. Prints one line per
transfer and, at the end, a JSON document with the ratios (throughput hub/boto3 for up and down; memory growth).

moto answers a ranged GET by copying the whole object (a 500 MiB object, 8 MiB ranges: 64 copies), so
``download_fileobj`` is slow against it; ``hub_over_boto3_get_object`` compares like with like.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_throughput import HOST, Server, free_port  # noqa: E402  (the bench folder is not a package)

REPO = Path(__file__).resolve().parent.parent
TENANT = "bench"
FILES = "/api/integrations/files"
MIB = 1024 * 1024
BUCKET = "hub-bench"
KEYS = {"region_name": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
#: hub-s3's defaults: the bare contender uses the same unless --bare-config default.
PROVIDER_TRANSFER = {"multipart_threshold": 8 * MIB, "multipart_chunksize": 8 * MIB, "max_concurrency": 4}
#: One pseudo-random MiB, repeated: generating the content costs nothing, so the bench measures the transfer.
BLOCK = hashlib.shake_256(b"hub store bench").digest(MIB)


def content(size: int) -> Iterator[bytes]:
    for _ in range(size // MIB):
        yield BLOCK


def content_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for block in content(size):
        digest.update(block)
    return digest.hexdigest()


# --- memory ------------------------------------------------------------------------------------------------


def _status_kib(pid: int, field: str) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def group_pids(group: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == group:
                pids.append(int(stat.parent.name))
    return pids


class PeakMemory:
    """Peak RSS growth of some processes while the block runs: the larger of the 10 ms samples of their summed
    ``VmRSS`` and of their summed ``VmHWM`` (reset at the start through ``clear_refs``, so a spike between two
    samples still counts), minus the summed ``VmRSS`` at the start."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids
        self._stop = threading.Event()
        self.baseline = self.sampled = self.high_water = 0
        self.hwm_reset = False

    def _rss(self) -> int:
        return sum(_status_kib(pid, "VmRSS") for pid in self._pids()) * 1024

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.sampled = max(self.sampled, self._rss())

    def __enter__(self) -> PeakMemory:
        pids = self._pids()
        resets = 0
        for pid in pids:
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
                resets += 1
        self.hwm_reset = bool(pids) and resets == len(pids)
        self.baseline = self.sampled = self._rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sampled = max(self.sampled, self._rss())
        if self.hwm_reset:
            self.high_water = sum(_status_kib(pid, "VmHWM") for pid in self._pids()) * 1024

    @property
    def growth(self) -> int:
        return max(self.sampled, self.high_water) - self.baseline


# --- the bare boto3 child ----------------------------------------------------------------------------------


class _Sink(io.RawIOBase):
    """A write-only, non-seekable destination that drops what it is given (and counts it)."""

    def __init__(self) -> None:
        super().__init__()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.size += len(data)
        return len(data)


class _Blocks(io.RawIOBase):
    def __init__(self, size: int) -> None:
        super().__init__()
        self._blocks = content(size)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._pending:
            self._pending = memoryview(next(self._blocks, b""))
            if not self._pending:
                return 0
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def boto3_child(direction: str, size: int, key: str, endpoint: str, bare_config: str) -> None:
    """``--boto3-child``: one transfer with bare boto3; prints its seconds and memory growth as JSON."""
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"}), **KEYS)
    client.head_bucket(Bucket=BUCKET)  # the connection pool and credentials are ready before measuring
    if bare_config == "default":
        config = TransferConfig()
    else:
        config = TransferConfig(
            multipart_threshold=PROVIDER_TRANSFER["multipart_threshold"],
            multipart_chunksize=PROVIDER_TRANSFER["multipart_chunksize"],
            max_concurrency=PROVIDER_TRANSFER["max_concurrency"],
        )
    pid = os.getpid()
    with PeakMemory(lambda: [pid]) as memory:
        started = time.perf_counter()
        if direction == "up":
            # A non-seekable source, as the hub's request body is; BufferedReader gives the full reads s3transfer needs.
            source = io.BufferedReader(_Blocks(size), buffer_size=MIB)
            client.upload_fileobj(source, BUCKET, key, Config=config)
            moved = size
        elif direction == "get":
            # One streamed GET, as the hub's provider reads an object.
            moved = sum(len(chunk) for chunk in client.get_object(Bucket=BUCKET, Key=key)["Body"].iter_chunks(MIB))
        else:
            sink = _Sink()
            client.download_fileobj(BUCKET, key, sink, Config=config)
            moved = sink.size
        seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "bytes": moved, "growth": memory.growth, "hwm": memory.hwm_reset}))


def run_boto3(
    direction: str, size: int, key: str, endpoint: str, bare_config: str, env: dict[str, str]
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--boto3-child", direction, str(size), key, endpoint, bare_config]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"the boto3 child failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["bytes"] != size:
        raise RuntimeError(f"boto3 {direction} moved {result['bytes']} of {size} bytes")
    return result


# --- the hub ---------------------------------------------------------------------------------------------


def write_hub_config(folder: Path, endpoint: str, largest: int) -> None:
    import yaml

    config = yaml.safe_load((REPO / "hub.yaml").read_text())
    config["providers"] = {
        **config.get("providers", {}),
        "s3": {
            "type": "s3",
            "bucket": BUCKET,
            "endpoint_url": endpoint,
            "access_key_id": "testing",
            "secret_access_key": "testing",
            "timeout": 120,
            **PROVIDER_TRANSFER,
        },
    }
    config.setdefault("services", {})["fileStorage"] = {"providers": ["s3"]}
    config["storage_limits"]["max_file_size"] = largest + MIB
    (folder / "hub.yaml").write_text(yaml.safe_dump(config))


def hub_upload(session: Any, url: str, headers: dict[str, str], size: int) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    response = session.post(
        f"{url}{FILES}?category=bench",
        data=content(size),  # a generator: requests sends it chunked
        headers={**headers, "Content-Type": "application/octet-stream", "X-File-Name": f"bench-{size // MIB}.bin"},
        timeout=1800,
    )
    seconds = time.perf_counter() - started
    if response.status_code != 201:
        raise RuntimeError(f"hub upload answered {response.status_code}: {response.text[:500]}")
    return seconds, response.json()["data"]


def hub_download(session: Any, url: str, headers: dict[str, str], file_id: str) -> tuple[float, int]:
    started = time.perf_counter()
    received = 0
    with session.get(f"{url}{FILES}/{file_id}/content", headers=headers, stream=True, timeout=1800) as response:
        if response.status_code != 200:
            raise RuntimeError(f"hub download answered {response.status_code}: {response.text[:500]}")
        for chunk in response.iter_content(MIB):
            received += len(chunk)
    return time.perf_counter() - started, received


def wait_for(
    check: Callable[[], bool], what: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(OSError, Exception):
            if check():
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not start in {timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,500", help="object sizes in MiB, comma-separated")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--bare-config", choices=("provider", "default"), default="provider")
    parser.add_argument("--threads", type=int, default=8, help="hub serve's threads per worker")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, database)")
    parser.add_argument("--boto3-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.boto3_child:
        direction, size, key, endpoint, bare_config = args.boto3_child
        boto3_child(direction, int(size), key, endpoint, bare_config)
        return

    import boto3
    import requests
    from botocore.config import Config

    from hub.testing.servers import moto_server

    sizes = [int(part) * MIB for part in args.sizes.split(",") if part.strip()]
    folder = Path(tempfile.mkdtemp(prefix="hub-store-throughput-"))
    env = {
        **os.environ,
        "HUB_LOG_LEVEL": "WARNING",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    moto = moto_server()
    hub: Server | None = None
    results: dict[int, dict[str, list[dict[str, float]]]] = {}
    try:
        moto.start()
        admin = boto3.client("s3", endpoint_url=moto.url, config=Config(s3={"addressing_style": "path"}), **KEYS)
        admin.create_bucket(Bucket=BUCKET)
        write_hub_config(folder, moto.url, max(sizes))
        hub_command = [sys.executable, "-m", "hub.cli"]
        token = subprocess.run(
            [*hub_command, "token", "create", "--tenant", TENANT],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[-1]
        port = free_port()
        log = folder / "hub.log"
        process = subprocess.Popen(
            [*hub_command, "serve", "--port", str(port), "--workers", "1", "--threads", str(args.threads)],
            cwd=folder,
            env=env,
            start_new_session=True,
            stdout=open(log, "wb"),  # noqa: SIM115 - the child writes to it for its whole life
            stderr=subprocess.STDOUT,
        )
        hub = Server("hub", port, process)
        url = f"http://{HOST}:{port}"
        headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": TENANT}
        session = requests.Session()
        # Warm-up: the first upload imports boto3 in the worker and makes its client; a multipart one fills the
        # pools. Neither is what a steady hub spends on a file.
        wait_for(lambda: hub_upload(session, url, headers, MIB)[1] is not None, "hub serve", process, log)
        _, warm = hub_upload(session, url, headers, 24 * MIB)
        hub_download(session, url, headers, warm["fileId"])
        session.delete(f"{url}{FILES}/{warm['fileId']}", headers=headers, timeout=60)
        warm_key = f"warm/{uuid.uuid4().hex}"
        run_boto3("up", 24 * MIB, warm_key, moto.url, args.bare_config, env)
        run_boto3("down", 24 * MIB, warm_key, moto.url, args.bare_config, env)
        admin.delete_object(Bucket=BUCKET, Key=warm_key)

        hub_pids = lambda: group_pids(process.pid)  # noqa: E731
        print(
            f"hub serve (gunicorn gthread, 1 worker x {args.threads} threads, SQLite) with hub-s3 "
            f"({PROVIDER_TRANSFER['multipart_chunksize'] // MIB} MiB parts, {PROVIDER_TRANSFER['max_concurrency']} at once) "
            f"vs. bare boto3 ({'boto3 default TransferConfig' if args.bare_config == 'default' else 'the same TransferConfig'}), "
            f"one moto server; {args.rounds} round(s) per size",
            flush=True,
        )
        for size in sizes:
            expected = content_sha256(size)
            per_size = results.setdefault(
                size, {"hub_up": [], "boto3_up": [], "hub_down": [], "boto3_down": [], "boto3_get": []}
            )
            for number in range(1, args.rounds + 1):
                with PeakMemory(hub_pids) as memory:
                    seconds, record = hub_upload(session, url, headers, size)
                if record["size"] != size or record.get("checksum", expected) != expected:
                    raise RuntimeError(f"the hub stored {record.get('size')} bytes / checksum {record.get('checksum')}")
                per_size["hub_up"].append({"seconds": seconds, "growth": memory.growth})
                key = f"bare/{uuid.uuid4().hex}"
                bare = run_boto3("up", size, key, moto.url, args.bare_config, env)
                per_size["boto3_up"].append(bare)
                with PeakMemory(hub_pids) as memory:
                    seconds, received = hub_download(session, url, headers, record["fileId"])
                if received != size:
                    raise RuntimeError(f"the hub sent {received} of {size} bytes")
                per_size["hub_down"].append({"seconds": seconds, "growth": memory.growth})
                per_size["boto3_down"].append(run_boto3("down", size, key, moto.url, args.bare_config, env))
                per_size["boto3_get"].append(run_boto3("get", size, key, moto.url, args.bare_config, env))
                for name in ("hub_up", "boto3_up", "hub_down", "boto3_down", "boto3_get"):
                    entry = per_size[name][-1]
                    print(
                        f"{size // MIB:5d} MiB round {number} {name:<10} {size / MIB / entry['seconds']:8.1f} MiB/s "
                        f"{entry['seconds']:7.2f} s  peak RSS growth {entry['growth'] / MIB:7.1f} MiB",
                        flush=True,
                    )
                session.delete(f"{url}{FILES}/{record['fileId']}", headers=headers, timeout=60)
                admin.delete_object(Bucket=BUCKET, Key=key)

        def rate(entries: list[dict[str, float]], size: int) -> float:
            return statistics.median(size / MIB / entry["seconds"] for entry in entries)

        def growth(entries: list[dict[str, float]]) -> float:
            return max(entry["growth"] for entry in entries) / MIB

        summary: dict[str, Any] = {"unit": "MiB/s and MiB", "bare_config": args.bare_config, "sizes": {}}
        for size, per_size in results.items():
            numbers = {
                name: {"MiB_per_s": round(rate(entries, size), 1), "peak_rss_growth_MiB": round(growth(entries), 1)}
                for name, entries in per_size.items()
            }
            hub_memory = max(growth(per_size["hub_up"]), growth(per_size["hub_down"]))
            bare_memory = max(
                growth(per_size["boto3_up"]), growth(per_size["boto3_down"]), growth(per_size["boto3_get"])
            )
            summary["sizes"][f"{size // MIB}MiB"] = {
                **numbers,
                "ratios": {
                    "upload_throughput_hub_over_boto3": round(
                        rate(per_size["hub_up"], size) / rate(per_size["boto3_up"], size), 3
                    ),
                    "download_throughput_hub_over_boto3": round(
                        rate(per_size["hub_down"], size) / rate(per_size["boto3_down"], size), 3
                    ),
                    "download_throughput_hub_over_boto3_get_object": round(
                        rate(per_size["hub_down"], size) / rate(per_size["boto3_get"], size), 3
                    ),
                    "memory_growth_hub_MiB": round(hub_memory, 1),
                    "memory_growth_boto3_MiB": round(bare_memory, 1),
                    "memory_growth_hub_over_boto3": round(hub_memory / bare_memory, 3) if bare_memory > 0 else None,
                },
            }
        print(json.dumps(summary, indent=2))
    finally:
        if hub is not None:
            hub.stop()
        moto.stop()
        if args.keep:
            print(f"kept {folder}")
        else:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
