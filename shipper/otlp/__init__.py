"""The mapping between records and OTLP, in one room.

- `semconv`: the attribute names of OTel GenAI and OpenInference, and a record's fields mapped onto them;
- `messages`: LLM messages between the record's form and the conventions' forms, both ways;
- `langfuse`: Langfuse's own attribute names (written by its exporter, read back by `decode`);
- `text`: structured values as JSON text in attributes, and back;
- `encode`: records → OTLP `ExportTraceServiceRequest` (protobuf or OTLP/JSON), for every OTLP exporter;
- `decode`: OpenTelemetry spans → records, for every OTel intake (the SDK bridge, the OTLP receivers).

A new record field is mapped here (and validated in `shipper.record`, set in the client): exporters and
receivers only choose which mappers they use.
"""
