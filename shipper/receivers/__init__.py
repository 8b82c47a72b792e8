"""Receivers: where records come in (a Unix socket, spool files, OTLP/HTTP)."""
