"""Credit accounting between replay and one learner (pull-based back-pressure). Pure; no I/O.

The learner grants credits cumulatively (`Feedback.credits_total`: all credits ever granted),
so a duplicate, reordered or re-sent Feedback can never over-grant: replay keeps the largest
total it has seen and may have sent at most that many batches. `sent` is the number of
batches replay has emitted to that learner (the `seq` of the last one), which replay restores
after a restart from its own output, so `can_send()` stays exact across restarts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Credits:
    """Granted (cumulative, from the learner) versus sent (batches emitted)."""

    granted: int = 0
    sent: int = 0

    def grant(self, credits_total: int) -> None:
        """Apply a Feedback's cumulative total; smaller (older) totals change nothing."""
        if credits_total < 0:
            raise ValueError("credits_total must be >= 0")
        self.granted = max(self.granted, credits_total)

    @property
    def outstanding(self) -> int:
        """Batches the learner asked for and has not been sent yet."""
        return max(0, self.granted - self.sent)

    def can_send(self) -> bool:
        return self.sent < self.granted

    def record_sent(self) -> int:
        """Count one emitted batch and return its seq (1, 2, ...); raises without a credit."""
        if not self.can_send():
            raise RuntimeError(f"no credit: sent {self.sent} of {self.granted} granted")
        self.sent += 1
        return self.sent

    def observe_sent(self, seq: int) -> None:
        """Restore from emitted output: a batch with this seq was already sent."""
        self.sent = max(self.sent, seq)

    def snapshot(self) -> dict[str, int]:
        return {"granted": self.granted, "sent": self.sent}

    @classmethod
    def restore(cls, data: dict[str, int]) -> Credits:
        return cls(granted=int(data["granted"]), sent=int(data["sent"]))
