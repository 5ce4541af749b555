"""The one access policy of casetrail (issue 9): who may read what of a case record, and why.

``decide(principal, action, purpose, facts, now)`` is a pure function of the caller (a verified
``casetrail_platform.identity.Principal``), what they ask to do, the purpose they state and the
facts of the case learnt from events (relationships, consents, emergency accesses). It returns a
``Decision``: allowed or not, the rule that decided (``matrix.RULES``), the policy version, the
sections and whether sensitive fields may be disclosed, the consent it relied on and the obligations
that travel with the answer (the 42 CFR Part 2 redisclosure notice).

Every service applies it the same way (``casetrail_platform.policy.guard``): decide, redact the
answer, record ``casetrail.record.accessed`` (or ``record.access_denied``) in the service's own
store, and only then answer.
"""
