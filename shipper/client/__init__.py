"""The client shim: standard library only (orjson when importable); it never blocks and never raises.

The public API is re-exported by `shipper` itself; the modules here are its parts. Other producers of
records in the same process send them with `shipper.client.transport.emit_record(record)`.
"""
