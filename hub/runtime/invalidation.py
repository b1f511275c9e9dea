"""Caches invalidated in every hub process at once, over Redis pub/sub.

Each process keeps short-lived caches (verified tokens, a tenant's saved templates, stored credentials) so the hot
path does not query the database per request. A change made in one process clears its own cache at once; with
Redis configured it is also published on :data:`CHANNEL`, and every other process clears the same entry when the
message arrives (milliseconds). Without Redis, or while it does not answer, the caches' own expiry (a few seconds)
is the bound: nothing waits on Redis, and a lost message costs at most that expiry.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

CHANNEL = "hub:invalidate"


class Invalidations:
    """``on(topic, callback)`` registers what clears a cache; ``changed(topic, key)`` clears it everywhere."""

    #: Seconds between reconnection attempts while Redis does not answer.
    RETRY_SECONDS = 2.0

    def __init__(self, redis_url: str | None) -> None:
        self.redis_url = redis_url
        self._callbacks: dict[str, list[Callable[[str], None]]] = defaultdict(list)
        #: Tells this process's own messages apart (already applied locally when published).
        self._origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._publisher: Any = None
        self._lock = threading.Lock()
        #: Messages applied from other processes (for tests and ``/status``-style introspection).
        self.received = 0

    def on(self, topic: str, callback: Callable[[str], None]) -> None:
        self._callbacks[topic].append(callback)
        if self.redis_url and self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._listen, name="hub-invalidations", daemon=True)
                    self._thread.start()

    def changed(self, topic: str, key: str = "") -> None:
        """Clear ``topic``'s entry ``key`` here now, and in every other process through Redis (best effort)."""
        self._apply(topic, key)
        if not self.redis_url:
            return
        message = json.dumps({"topic": topic, "key": key, "origin": self._origin})
        try:
            self._client().publish(CHANNEL, message)
        except Exception as error:  # Redis down: the other processes' caches expire on their own
            log.info("cache invalidation for %s not published (%s); other processes see it within their cache expiry", topic, error)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)

    # --- internals ------------------------------------------------------------------------------------

    def _apply(self, topic: str, key: str) -> None:
        for callback in self._callbacks.get(topic, ()):
            try:
                callback(key)
            except Exception:  # one broken cache must not keep the others stale
                log.exception("clearing the %s cache failed", topic)

    def _client(self) -> Any:
        if self._publisher is None:
            import redis

            self._publisher = redis.Redis.from_url(self.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        return self._publisher

    def _listen(self) -> None:
        import redis

        while not self._stop.is_set():
            pubsub = None
            try:
                client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=1.0, socket_timeout=None)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                # Whatever changed while this process was not subscribed is unknown: clear everything once.
                for topic in list(self._callbacks):
                    self._apply(topic, "*")
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is None or message.get("type") != "message":
                        continue
                    body = json.loads(message["data"])
                    if body.get("origin") != self._origin:
                        self.received += 1
                        self._apply(str(body.get("topic")), str(body.get("key", "")))
            except Exception as error:
                if not self._stop.is_set():
                    log.info("cache invalidation channel unavailable (%s); caches fall back to their expiry", error)
                    self._stop.wait(self.RETRY_SECONDS)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):  # closing a dead connection
                        pubsub.close()
