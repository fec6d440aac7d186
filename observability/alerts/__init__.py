"""The alert webhook's logic: payload reading (payload), authentication (auth), the run context
(mapping), and storing, deduplicating and starting runs (processing). The view is observability/webhooks.py.
"""
