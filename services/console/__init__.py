"""The audit console: auditors and supervisors read a case's trail in the browser.

A Starlette application with server-rendered Jinja2 templates; every page that shows case data
calls audit's gRPC API with the signed-in user's bearer token, so audit records each page as
an access like any other read.
"""
