"""Feed metrics (names `rollstream_feed_*`), for the service and the metrics catalog."""

from __future__ import annotations

from rollstream.services.feed.service import FeedMetrics
from rollstream.services.runtime.metrics import StageMetrics


def register(m: StageMetrics) -> FeedMetrics:
    """Every metric this stage exports, in `m`'s registry."""
    return FeedMetrics(m)
