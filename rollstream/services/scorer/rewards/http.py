"""Reward-model / LLM-judge client over HTTP: batches rollouts, POSTs them as JSON, reads one
score per rollout back.

Batching: calls to `score` queue up; a batch goes out when `batch_size` rollouts have queued
or `max_wait_ms` after the first one, whichever comes first. Several batches may be in
flight (`max_in_flight`). Request body (defaults):

    {"items": [{"prompt": ..., "completion": ..., "answer": ...}, ...], **extra}

`items_key`, `fields` (request key -> Rollout attribute) and `extra` shape it. The response
must hold a list of numbers at `scores_path` (dotted keys, e.g. "result.scores"), one per
item in order; with `score_key`, a list of objects whose `score_key` is the number.

Retries: connection errors, request timeouts, HTTP 429 and 5xx are retried `retries` times
with exponential backoff (`backoff_s` * 2^attempt, capped at `max_backoff_s`); when every
attempt failed the reward raises RewardTimeout, so the scorer uses the fallback value and
counts it as a timeout. Other 4xx answers and malformed responses raise (dead-letter topic).

Writes nothing but HTTP requests to `url`; reads `api_key_env` (if set) once, when built.
"""

from __future__ import annotations

import asyncio
import math
import os
from typing import Any

from pydantic import Field

from rollstream.schemas import Rollout
from rollstream.services.scorer.reward import RewardParams, RewardTimeout, parse_params

ROLLOUT_FIELDS = (
    "prompt",
    "completion",
    "answer",
    "task",
    "task_id",
    "rollout_id",
    "group_id",
    "reference",
    "finish_reason",
)


class HttpJudge:
    """Scores rollouts with a remote reward model or judge (see module docstring)."""

    name = "http_judge"

    class Params(RewardParams):
        url: str
        """Endpoint that receives the POST."""
        batch_size: int = Field(16, ge=1, le=4096)
        """Most rollouts in one request."""
        max_wait_ms: float = Field(20.0, ge=0, le=60_000)
        """Longest a rollout waits for its batch to fill."""
        max_in_flight: int = Field(4, ge=1, le=1024)
        """Requests outstanding at once."""
        request_timeout_s: float = Field(30.0, gt=0, le=3600)
        """Timeout of one HTTP attempt."""
        retries: int = Field(3, ge=0, le=100)
        """Extra attempts after a retryable failure."""
        backoff_s: float = Field(0.5, ge=0, le=600)
        """First retry delay; doubles each attempt."""
        max_backoff_s: float = Field(10.0, ge=0, le=3600)
        """Longest retry delay."""
        items_key: str = "items"
        """Request key holding the list of items."""
        fields: dict[str, str] = {
            "prompt": "prompt",
            "completion": "completion",
            "answer": "answer",
        }
        """Item key -> Rollout attribute (one of ROLLOUT_FIELDS)."""
        extra: dict[str, Any] = {}
        """Fixed keys added to every request body (e.g. the judge model's name)."""
        scores_path: str = "scores"
        """Dotted path to the list of scores in the response."""
        score_key: str | None = None
        """When the list holds objects: the key of the number in each."""
        headers: dict[str, str] = {}
        """Extra HTTP headers."""
        api_key_env: str | None = None
        """Environment variable holding a bearer token for the Authorization header."""

    def __init__(self, **params: object) -> None:
        self.params = p = parse_params(self.Params, dict(params), self.name)
        bad = sorted(set(p.fields.values()) - set(ROLLOUT_FIELDS))
        if bad:
            raise ValueError(f"{self.name}: params.fields maps to unknown attributes {bad}")
        self._headers = dict(p.headers)
        if p.api_key_env:
            token = os.environ.get(p.api_key_env)
            if not token:
                raise ValueError(f"{self.name}: params.api_key_env {p.api_key_env!r} is not set")
            self._headers["Authorization"] = f"Bearer {token}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[Rollout, asyncio.Future[float]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._client: Any = None
        self._slots: asyncio.Semaphore | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self.requests = 0  # HTTP attempts made (for tests and metrics)

    async def score(self, rollout: Rollout) -> float:
        self._start()
        assert self._queue is not None and self._loop is not None
        future: asyncio.Future[float] = self._loop.create_future()
        self._queue.put_nowait((rollout, future))
        return await future

    async def close(self) -> None:
        """Stop the batcher and close the HTTP connection pool."""
        if self._worker is not None:
            self._worker.cancel()
            for task in list(self._sending):
                task.cancel()
            await asyncio.gather(self._worker, *self._sending, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
        self._worker = self._client = self._queue = self._loop = None

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._worker is not None and not self._worker.done():
            return
        import httpx

        self._loop = loop
        self._queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.params.max_in_flight)
        self._client = httpx.AsyncClient(headers=self._headers)
        self._worker = loop.create_task(self._batcher())

    async def _batcher(self) -> None:
        assert self._queue is not None and self._slots is not None
        queue, loop, wait_s = self._queue, asyncio.get_running_loop(), self.params.max_wait_ms / 1e3
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + wait_s
            while len(batch) < self.params.batch_size:
                if not queue.empty():
                    batch.append(queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            batch = [(r, f) for r, f in batch if not f.done()]  # drop those given up on
            if not batch:
                continue
            await self._slots.acquire()
            task = loop.create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[Rollout, asyncio.Future[float]]]) -> None:
        assert self._slots is not None
        try:
            scores = await self.post([r for r, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # hand the error to every waiting caller
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), value in zip(batch, scores, strict=True):
                if not future.done():
                    future.set_result(value)
        finally:
            self._slots.release()

    def body(self, rollouts: list[Rollout]) -> dict[str, Any]:
        """The JSON request body for a batch."""
        items = [
            {key: getattr(r, attr) for key, attr in self.params.fields.items()} for r in rollouts
        ]
        return {**self.params.extra, self.params.items_key: items}

    async def post(self, rollouts: list[Rollout]) -> list[float]:
        """One batch: POST with retries; the scores in request order."""
        import httpx

        p = self.params
        body = self.body(rollouts)
        last = ""
        for attempt in range(p.retries + 1):
            if attempt:
                await asyncio.sleep(min(p.backoff_s * 2 ** (attempt - 1), p.max_backoff_s))
            self.requests += 1
            try:
                resp = await self._client.post(p.url, json=body, timeout=p.request_timeout_s)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                last = f"HTTP {resp.status_code}"
                continue
            if resp.status_code >= 400:
                raise ValueError(
                    f"judge refused the request: HTTP {resp.status_code} {resp.text[:200]}"
                )
            return self.parse(resp.json(), len(rollouts))
        raise RewardTimeout(f"judge at {p.url} failed {p.retries + 1} attempts; last: {last}")

    def parse(self, data: Any, expected: int) -> list[float]:
        """The scores from a response body; raises ValueError when the shape is wrong."""
        node = data
        for key in self.params.scores_path.split("."):
            if not isinstance(node, dict) or key not in node:
                raise ValueError(f"judge response has no {self.params.scores_path!r}")
            node = node[key]
        if not isinstance(node, list) or len(node) != expected:
            got = len(node) if isinstance(node, list) else type(node).__name__
            raise ValueError(f"judge returned {got} scores for {expected} items")
        if self.params.score_key is not None:
            node = [x.get(self.params.score_key) if isinstance(x, dict) else None for x in node]
        scores = []
        for x in node:
            if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
                raise ValueError(f"judge returned a non-number score {x!r}")
            scores.append(float(x))
        return scores
