"""faust's Monitor sensor without its per-message bookkeeping.

faust calls its Monitor on every message in and out, every event, table access and send
(counters, timestamps, latency deques: several microseconds each). Nothing here reads them:
the stages export their own Prometheus metrics. Commits, rebalances and assignments are still
recorded. Imported by faust (the `Monitor` setting of rollstream/services/runtime/faust/app.py), so
only by processes that run a faust app.
"""

from __future__ import annotations

from typing import Any

from faust.sensors import Monitor


class QuietMonitor(Monitor):  # type: ignore[misc]
    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_table_get(self, table: Any, key: Any) -> None:
        pass

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        pass

    def on_table_del(self, table: Any, key: Any) -> None:
        pass

    def on_send_initiated(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_send_completed(self, *args: Any, **kwargs: Any) -> None:
        pass
