"""What every handler shares: one Service per warm container, and Powertools objects."""

from __future__ import annotations

from functools import lru_cache

from aws_lambda_powertools import Tracer

from framesink_core.observability import logger, metrics
from framesink_core.service import Service

# No-op outside Lambda; X-Ray segments when active tracing is on. Patches what the functions
# call out through (AWS via botocore, Recall via urllib3 -> http.client), not every library
# the X-Ray SDK knows (sqlite3, requests, ...): that costs ~8 ms CPU per cold start.
tracer = Tracer(patch_modules=("botocore", "httplib"))
# Every handler and method is traced with capture_response=False: responses hold presigned
# URLs (query), meeting URLs that may carry a passcode (create-bot) and never belong in
# X-Ray. tests/unit/test_tracing.py reads the emitted segments to hold that.

__all__ = ["logger", "metrics", "service", "tracer"]


@lru_cache(maxsize=1)
def service() -> Service:
    """Built on first use, not at import, so tests and the emulator can set the env first."""
    return Service()
