"""The public case-event catalog: one module per area of the case cycle.

Every event here is part of a public contract (services in other languages subscribe to it),
so names and shapes only change through a new ``schema_version`` plus an upcaster. The full
list and the registry live in ``events.catalog_registry``; nothing is built at import time.
"""
