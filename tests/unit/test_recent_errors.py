"""The bounded ring of recent error events `facepay doctor` shows."""

from __future__ import annotations

import io
import logging

from facepayd.ops import logs


def test_error_events_are_kept_redacted_and_bounded_and_others_are_not() -> None:
    logs.configure_logging(json=True, level="debug", stream=io.StringIO())
    secret = "s3cr3t-api-key-value-for-ring"
    logs.register_secret(secret)
    log = logs.get_logger("ring.test")
    before = len(logs.recent_errors())
    log.info("not_an_error")
    log.warning("not_an_error_either")
    assert len(logs.recent_errors()) == before
    log.error(f"refused {secret}")
    logging.getLogger("thirdparty").critical("stdlib critical")
    last_two = logs.recent_errors()[-2:]
    assert [(e.logger, e.event) for e in last_two] == [
        ("ring.test", f"refused {logs.REDACTED}"),
        ("thirdparty", "stdlib critical"),
    ]
    assert all(e.timestamp for e in last_two)
    for n in range(50):
        log.error("flood", n=n)
    assert len(logs.recent_errors()) == 20
