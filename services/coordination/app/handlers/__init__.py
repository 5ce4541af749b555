"""Running coordination's commands: facts from the bus, history from coordination's own store.

Each command is decided on exactly one stream of the store (``casetrail_platform.decide.execute``):
the case (assignment, referrals, eligibility, claims), the client's schedule (services of all of
the client's cases) or a budget line. Facts from other streams and from the bus are read
before and passed to the pure decision; a retried command returns its first result, looked up
before anything is checked (``running.earlier_answer``).

One module a part of the cycle, as in ``domain``: ``assignment``, ``referrals``, ``scheduling``
(the client's services), ``funding`` (eligibility, budgets, claims); ``carriers`` checks who may
act on the case on the history a command records after, and ``running`` holds what they all
run with (``Dependencies``, the locks, the facts, ``run``).
"""
