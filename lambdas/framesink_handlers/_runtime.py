"""What every handler shares: one Service per warm container, and Powertools objects."""

from __future__ import annotations

from functools import lru_cache

from aws_lambda_powertools import Tracer

from framesink_core.service import Service
from framesink_core.shared.observability import logger, metrics

# No-op outside Lambda; X-Ray segments when active tracing is on. Patches botocore (the AWS
# calls) and nothing else: the X-Ray SDK's httplib patch wraps http.client's _send_request,
# which urllib3 2 (how create-bot calls Recall) never calls, and patching every library the
# SDK knows (sqlite3, requests, ...) costs ~8 ms CPU per cold start.
tracer = Tracer(patch_modules=("botocore",))
# Every handler and method is traced with capture_response=False: responses hold presigned
# URLs (query), meeting URLs that may carry a passcode (create-bot) and never belong in
# X-Ray. tests/unit/test_tracing.py reads the emitted segments to hold that.

__all__ = ["logger", "metrics", "service", "tracer"]


@lru_cache(maxsize=1)
def service() -> Service:
    """Built on first use, not at import, so tests and the emulator can set the env first."""
    return Service()
