"""Who is acting: the verified principal behind every call (issue 9).

Identity comes only from a verified credential (a bearer token checked by
``casetrail_platform.identity`` adapters), never from a request field.
"""
