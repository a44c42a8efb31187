"""What every handler shares: one Service per warm container, and Powertools objects."""

from __future__ import annotations

from functools import lru_cache

from aws_lambda_powertools import Tracer

from framesink_core.observability import logger, metrics
from framesink_core.service import Service

tracer = Tracer()  # no-op outside Lambda; X-Ray segments when active tracing is on

__all__ = ["logger", "metrics", "service", "tracer"]


@lru_cache(maxsize=1)
def service() -> Service:
    """Built on first use, not at import, so tests and the emulator can set the env first."""
    return Service()
