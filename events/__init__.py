"""The case-event catalog and the event platform shared by every casetrail service.

Nothing runs at import time: modules here define types and functions only.
"""
