"""Live knobs: the settings of a stage that `rollstream control <stage> KEY=VALUE` changes while
the stage runs, checked against the stage's config schema.

Reads: `control` (a Follower thread, no consumer group, keyed by stage). Writes, given a
producer: `control`, keyed `<stage>.applied`, an answer (ControlUpdate with `applied`) with
every live knob in force, once the follower has read `control` to its end and after each
revision applied; the producer's owner flushes it. A stage whose work depends on another's
knobs (the generator paces by replay's batch_groups and the learner's publish_every) reads
these answers, not the requests.
A bad record on `control` is the Follower's dead letter. Each new revision for the stage is
checked by `validate(params, base)`, the same function the CLI calls before it publishes, and
applied onto `base` (the run's config), never onto the current state: a key removed with
`rollstream control <stage> --unset KEY` reverts to the run's value. A refused revision is
logged and counted (`control_updates_total{result="refused"}`), the knobs stay as they were
and nothing is answered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from rollstream.schemas import ControlUpdate
from rollstream.schemas.control import applied_key

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


def check_knobs(
    model: type[M], base: M | None, params: Mapping[str, Any], live: Iterable[str]
) -> M:
    """`base` (the model's defaults if None) with `params` applied; ValueError naming an unknown
    knob or a bad value (pydantic's ValidationError is a ValueError)."""
    live = set(live)
    unknown = set(params) - live
    if unknown:
        raise ValueError(f"unknown knob(s) {sorted(unknown)}; live: {sorted(live)}")
    return model.model_validate({**(base or model()).model_dump(), **params})


class LiveKnobs(Generic[M]):
    """Follows one stage's live knobs. The stage calls `poll()` from its own loop (so knobs
    change between two units of work, never inside one); `apply(config, changed)` gets the
    config with the knobs in force and the names of the fields that changed. The first poll
    applies every knob, so state restored from elsewhere (a checkpoint) follows the config.
    With a follower and a `producer` (runtime.bus.Producer) it answers what it applied."""

    def __init__(
        self,
        stage: str,
        base: M,
        validate: Callable[[dict[str, Any], M], M],
        apply: Callable[[M, frozenset[str]], None],
        live: Iterable[str],
        follower: Any = None,
        counter: Any = None,
        producer: Any = None,
    ) -> None:
        self.stage = stage
        self.base = base
        self.current = base
        self.validate = validate
        self.apply = apply
        self.live = frozenset(live)
        self.follower = follower  # runtime.stage.Follower of `control`, or None
        self.counter = counter  # a Counter with a "result" label, or None
        self.producer = producer
        self.seen = -1  # the follower's seq last looked at; -1: nothing applied yet
        self.revision = 0  # the revision in force (0: the run's config)
        self.answered = False  # an answer sent (needs a follower and a producer)

    def poll(self) -> bool:
        """Apply the newest revision if it is new; True when some knob changed."""
        if self.seen < 0:
            self.seen = 0
            self.apply(self.current, self.live)
        f = self.follower
        changed = False
        if f is not None and f.seq != self.seen and f.latest is not None:
            self.seen = f.seq
            changed = self.update(dict(f.latest.params), f.latest.revision)
        if not self.answered and self._caught_up():  # none applied: answer the run's config
            self._answer()
        return changed

    def _caught_up(self) -> bool:
        """Whether the follower has read `control` to its end once: before that, a revision
        of an earlier session (a resumed run) may still be on its way, and answering the
        run's config first would resize the generators' pacing back and forth."""
        event = getattr(self.follower, "caught_up", None)
        return event is None or event.is_set()

    def update(self, params: dict[str, Any], revision: int = 0) -> bool:
        """Check `params` onto the run's config and apply what changed; False if refused."""
        try:
            new = self.validate(params, self.base)
        except ValueError as exc:
            log.error("%s: control revision %d refused: %s", self.stage, revision, exc)
            self._count("refused")
            return False
        changed = frozenset(k for k in self.live if getattr(new, k) != getattr(self.current, k))
        self.current, self.revision = new, revision
        if changed:
            self.apply(new, changed)
            for k in sorted(changed):
                log.info(
                    "%s: control revision %d: %s = %r", self.stage, revision, k, getattr(new, k)
                )
        self._count("applied")
        self._answer()
        return bool(changed)

    def _answer(self) -> None:
        """Tell the stages that depend on these knobs which values are in force (see above)."""
        if self.producer is None or self.follower is None:
            return
        answer = ControlUpdate(
            stage=self.stage,
            params=self.current.model_dump(mode="json", include=set(self.live)),
            revision=self.revision,
            issued_by=self.stage,
            applied=True,
            produced_at=time.time(),
        )
        self.producer.send("control", answer, applied_key(self.stage))
        self.answered = True

    def _count(self, result: str) -> None:
        if self.counter is not None:
            self.counter.labels(result).inc()

    def close(self) -> None:
        if self.follower is not None:
            self.follower.stop()
