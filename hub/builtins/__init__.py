"""The hub's built-in plugins: providers and templates that let the hub run with no external service.

They use exactly the contract third-party plugins use (:mod:`hub.hookspecs`), which keeps the core
honest: ``templates`` (the notification templates), ``outbox`` (notify: writes messages to files),
``local_disk`` (store), ``event_log`` (publish: an append-only local log), ``file_source`` (sync: JSON/CSV
files) and ``sandbox`` (pay: a test-mode gateway, refused in production).
"""
