"""The public case-event catalog shared by every casetrail service and by outside subscribers.

Event models, JSON Schemas, envelope, registry, CloudEvents mapping and the contract data
(topics, dead-letter headers, ordering). Importable alone: nothing here imports the platform
(``casetrail_platform``); ``tests/unit/test_catalog_boundary.py`` keeps it so. Nothing runs at
import time: modules here define types and functions only.
"""
