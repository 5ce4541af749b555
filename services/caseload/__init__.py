"""caseload: a stream processor (Faust) that keeps live caseloads and overdue follow-ups.

It reads the case-event topic like any other consumer and answers questions no single service's
store can: how many open cases each worker carries, which follow-ups are overdue, how many
contacts a worker logged per day. It writes no case events and imports only ``events``.

Run it as its own process: ``python -m services.caseload worker -l info`` (settings from the
environment, see ``settings.CaseloadSettings.from_env``); the tables are served as JSON by
Faust's web server (``web``). ``processor`` holds the topology, ``domain`` the pure folds,
``queries`` the table readers.
"""
