"""One service per capability (notify, pay, store, publish, sync), plus webhooks and health.

Each service is built on the shared :class:`hub.runtime.Runtime`, owns its validation, its records' life
cycle and its views, and registers its background handlers with ``runtime.jobs``.
"""
