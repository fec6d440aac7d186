"""Alert ingestion: the webhook that Grafana and Alertmanager call (webhooks), payload reading (payload),
authentication (auth), the run context (mapping), storing, deduplicating and starting runs (processing), the
stored deliveries and alerts (models) and their console pages (admin).
"""
