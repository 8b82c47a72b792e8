"""Issue 10 item 11: a 401/403 is an AuthExportError (retryable, loud, slow), never dead-lettered as rejected.

A real daemon subprocess exports over OTLP/HTTP to a real server on loopback that refuses the
credentials three times, then accepts.
"""

from __future__ import annotations

import httpx
import orjson
import pytest
from support import Daemon, wait_for

from shipper import errors
from shipper.errors import AUTH_STATUSES, RETRYABLE_STATUSES, AuthExportError, RetryableExportError
from shipper.exporters.http import classify
from shipper.testing import OTLPServer, Reply, send_seqpacket


def test_one_list_of_statuses_and_auth_is_its_own_retryable_class():
    """classify() follows the lists in shipper.errors; the tree documents AuthExportError."""
    assert {401, 403} == AUTH_STATUSES and not AUTH_STATUSES & RETRYABLE_STATUSES
    assert {408, 429, 500, 502, 503, 504} <= RETRYABLE_STATUSES and 501 not in RETRYABLE_STATUSES
    for code in (*AUTH_STATUSES, *RETRYABLE_STATUSES, 400, 404, 413, 501):
        error = classify(httpx.Response(code, request=httpx.Request("POST", "http://x")), "backend")
        assert isinstance(error, AuthExportError) == (code in AUTH_STATUSES)
        assert isinstance(error, RetryableExportError) == (code in AUTH_STATUSES or code in RETRYABLE_STATUSES)
    assert "AuthExportError" in (errors.__doc__ or "")
    assert issubclass(AuthExportError, RetryableExportError)


@pytest.mark.parametrize("code", sorted(AUTH_STATUSES))
def test_refused_credentials_are_retried_loudly_then_delivered(code: int):
    with OTLPServer(Reply.status(code, "bad key"), Reply.status(code, "bad key"), Reply.status(code, "bad key")) as server:
        daemon = Daemon()
        daemon.config["exporters"] = {"backend": {
            "type": "otlp_http", "endpoint": server.url,
            # A fast backoff for other failures; refused credentials must wait max_interval instead.
            "retry": {"initial_interval": "1ms", "max_interval": "200ms"}, "batch": {"max_delay": "10ms"}}}
        daemon.set_config()
        try:
            daemon.start()
            record = {"v": 1, "trace_id": "ab" * 16, "span_id": "cd" * 8, "name": "call", "start_ns": 1,
                      "end_ns": 2}
            send_seqpacket(daemon.socket, [orjson.dumps(record)])
            spans = server.wait_for_spans(4, timeout=30)  # three refused, then taken
            assert len(server.requests) == 4
            figures = wait_for(lambda: (s := daemon.status()["exporters"]["backend"])["exported"] == 1 and s)
            assert figures["retried"] == 3
            assert figures["dead_lettered"] == 0
            assert not (daemon.state / "deadletter" / "backend.ndjson").exists()
            assert spans[-1]["name"] == "call"
            log = daemon.log()
            assert "ERROR shipper.delivery: Exporter backend: the backend refused our credentials" in log
            assert "will not be retried" not in log
            assert daemon.stop() == 0
        finally:
            daemon.cleanup()
