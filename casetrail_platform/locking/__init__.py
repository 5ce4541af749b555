"""Mutual exclusion and leadership across every process of a service (issue 11).

A rule that reads, decides and then writes outside one stream (no duplicate clients, a worker's
caseload limit) holds named locks around it; a task that must run in one process at a time (the
outbox relay) runs only while its process leads. ``port.Locks`` is the port; ``inprocess`` is
the embedded backend's adapter (one process owns the SQLite files), ``postgres`` the shared one
(PostgreSQL advisory locks, released by the server when the holding session ends).
"""
