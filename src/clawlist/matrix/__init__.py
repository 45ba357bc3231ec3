"""The Matrix Client-Server API façade (spec v1.11 behaviour): a translation over the same actions
as the REST API — no second storage, no second rule set. See docs/matrix.md.
"""
