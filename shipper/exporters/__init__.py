"""Exporters: where batches go (files, OTLP/HTTP, Langfuse, Braintrust, Phoenix)."""
