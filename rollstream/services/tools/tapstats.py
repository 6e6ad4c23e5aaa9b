"""`rollstream tap --stats`: message count, rate, sizes and per-field summaries.

Pure accumulation over decoded messages (plain dicts, bytes fields as bytes); `print` writes
the summary to stdout as a table or, with `--json`, as one JSON object. No Kafka here.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024  # Kafka's default max.message.bytes (1 MiB)
MAX_DISTINCT = 10_000  # distinct values tracked per string field
PACKED_4 = frozenset({"prompt_ids", "completion_ids", "logprobs"})  # 4 bytes per token


@dataclass
class Numeric:
    count: int = 0
    total: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf

    def add(self, x: float) -> None:
        self.count += 1
        self.total += x
        self.lo = min(self.lo, x)
        self.hi = max(self.hi, x)


@dataclass
class TapStats:
    count: int = 0
    errors: int = 0
    sizes: list[int] = field(default_factory=list)
    first_ms: int | None = None
    last_ms: int | None = None
    numeric: dict[str, Numeric] = field(default_factory=dict)
    strings: dict[str, Counter[str]] = field(default_factory=dict)

    def add_error(self) -> None:
        self.errors += 1

    def add(self, message: dict[str, Any], size: int, timestamp_ms: int) -> None:
        """Count one decoded message of `size` bytes produced at `timestamp_ms`."""
        self.count += 1
        self.sizes.append(size)
        if timestamp_ms > 0:
            self.first_ms = (
                timestamp_ms if self.first_ms is None else min(self.first_ms, timestamp_ms)
            )
            self.last_ms = max(self.last_ms or timestamp_ms, timestamp_ms)
        self._walk(message, "")

    def _walk(self, d: dict[str, Any], prefix: str) -> None:
        for k, v in d.items():
            path = prefix + k
            if isinstance(v, dict):
                self._walk(v, path + ".")
            elif isinstance(v, bool) or v is None:
                self._string(path, str(v))
            elif isinstance(v, (int, float)):
                if math.isfinite(v):
                    self.numeric.setdefault(path, Numeric()).add(float(v))
            elif isinstance(v, str):
                self._string(path, v if len(v) <= 40 else v[:37] + "...")
            elif isinstance(v, bytes):
                n = len(v) // 4 if k in PACKED_4 else len(v)
                self.numeric.setdefault(f"len({path})", Numeric()).add(float(n))
            elif isinstance(v, list):
                self.numeric.setdefault(f"len({path})", Numeric()).add(float(len(v)))

    def _string(self, path: str, value: str) -> None:
        c = self.strings.setdefault(path, Counter())
        if value in c or len(c) < MAX_DISTINCT:
            c[value] += 1

    @property
    def window_s(self) -> float:
        if self.first_ms is None or self.last_ms is None:
            return 0.0
        return (self.last_ms - self.first_ms) / 1000

    @property
    def rate(self) -> float | None:
        """Messages per second over the produce timestamps seen (None under two messages)."""
        if self.count < 2 or self.window_s <= 0:
            return None
        return (self.count - 1) / self.window_s

    def as_dict(self) -> dict[str, Any]:
        sizes = sorted(self.sizes)
        out: dict[str, Any] = {
            "count": self.count,
            "errors": self.errors,
            "window_s": round(self.window_s, 3),
            "rate_msgs_per_s": None if self.rate is None else round(self.rate, 3),
            "size_bytes": None,
            "numeric": {
                p: {"mean": n.total / n.count, "min": n.lo, "max": n.hi, "count": n.count}
                for p, n in sorted(self.numeric.items())
            },
            "strings": {
                p: {"distinct": len(c), "top": [[v, k] for v, k in c.most_common(3)]}
                for p, c in sorted(self.strings.items())
            },
        }
        if sizes:
            out["size_bytes"] = {
                "min": sizes[0],
                "median": statistics.median(sizes),
                "max": sizes[-1],
                "max_fraction_of_1MiB_limit": round(sizes[-1] / DEFAULT_MAX_MESSAGE_BYTES, 4),
            }
        return out

    def print(self, as_json: bool = False) -> None:
        d = self.as_dict()
        if as_json:
            sys.stdout.write(json.dumps(d) + "\n")
            return
        from rich.console import Console
        from rich.table import Table

        con = Console(highlight=False, soft_wrap=True)
        rate = "-" if self.rate is None else f"{self.rate:,.2f} msgs/s"
        con.print(
            f"count {self.count} messages, {self.errors} undecodable; "
            f"rate {rate} over {self.window_s:.1f} s of produce timestamps"
        )
        s = d["size_bytes"]
        if s:
            pct = 100 * s["max"] / DEFAULT_MAX_MESSAGE_BYTES
            warn = "  OVER the limit" if s["max"] > DEFAULT_MAX_MESSAGE_BYTES else ""
            con.print(
                f"size  min {_bytes(s['min'])}  median {_bytes(s['median'])}  "
                f"max {_bytes(s['max'])} ({pct:.1f}% of the 1 MiB default "
                f"max.message.bytes){warn}"
            )
        if d["numeric"]:
            t = Table("field", "mean", "min", "max", title="numeric fields", title_justify="left")
            for p, n in d["numeric"].items():
                t.add_row(p, f"{n['mean']:.4g}", f"{n['min']:.4g}", f"{n['max']:.4g}")
            con.print(t)
        if d["strings"]:
            t = Table("field", "distinct", "top values", title="text fields", title_justify="left")
            for p, c in d["strings"].items():
                all_distinct = c["distinct"] == self.count and self.count > 3
                top = (
                    "all distinct"
                    if all_distinct
                    else ", ".join(f"{v!r} x{k}" for v, k in c["top"])
                )
                t.add_row(p, str(c["distinct"]), top)
            con.print(t)


def _bytes(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.2f} MiB"
