"""The HTTP judge against a real tiny server on 127.0.0.1 (aiohttp, in the test's loop):
batching, request/response shape, retry on 500, timeout -> fallback, errors -> RewardError."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from scorer_builders import rollout

from rollstream.services.scorer.combine import Combiner, Component, Score
from rollstream.services.scorer.reward import RewardConfigError, RewardError
from rollstream.services.scorer.rewards.http import HttpJudge

Handler = Callable[[dict[str, Any], int], Awaitable[web.Response]]


async def serve(handler: Handler) -> tuple[web.AppRunner, str, list[dict[str, Any]]]:
    """Start a server whose POST /judge calls handler(body, call_number); record bodies."""
    bodies: list[dict[str, Any]] = []

    async def judge(request: web.Request) -> web.Response:
        body = await request.json()
        bodies.append(body)
        return await handler(body, len(bodies))

    app = web.Application()
    app.router.add_post("/judge", judge)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/judge", bodies


async def length_scores(body: dict[str, Any], call: int) -> web.Response:
    return web.json_response({"scores": [len(it["completion"]) for it in body["items"]]})


def judge_scores(
    handler: Handler, completions: list[str], timeout_s: float = 10.0, **params: Any
) -> tuple[list[Score], list[dict[str, Any]], HttpJudge]:
    async def go():
        runner, url, bodies = await serve(handler)
        judge = HttpJudge(url=url, **params)
        combiner = Combiner(
            [Component("judge", judge, timeout_s=timeout_s, fallback=-1.0, run="async")]
        )
        try:
            rollouts = [rollout(c, answer="gold", index=i) for i, c in enumerate(completions)]
            scores = await asyncio.gather(*(combiner.score(r) for r in rollouts))
        finally:
            await combiner.close()
            await runner.cleanup()
        return scores, bodies, judge

    return asyncio.run(go())


def test_rollouts_are_batched_and_scores_come_back_in_order() -> None:
    scores, bodies, _ = judge_scores(
        length_scores, ["a", "bb", "ccc", "dddd", "eeeee"], batch_size=4, max_wait_ms=200
    )
    assert [s.components["judge"] for s in scores] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [len(b["items"]) for b in bodies] == [4, 1]
    assert bodies[0]["items"][1] == {"prompt": "question", "completion": "bb", "answer": "gold"}


def test_request_and_response_shape_are_configurable() -> None:
    async def nested(body: dict[str, Any], call: int) -> web.Response:
        assert body["model"] == "judge-1"
        results = [{"value": 0.5 if x["text"] == "yes" else 0.0} for x in body["inputs"]]
        return web.json_response({"result": {"items": results}})

    scores, bodies, _ = judge_scores(
        nested,
        ["yes", "no"],
        batch_size=2,
        max_wait_ms=200,
        items_key="inputs",
        fields={"text": "completion", "id": "rollout_id"},
        extra={"model": "judge-1"},
        scores_path="result.items",
        score_key="value",
    )
    assert [s.components["judge"] for s in scores] == [0.5, 0.0]
    assert bodies[0]["inputs"] == [{"text": "yes", "id": "g0/0"}, {"text": "no", "id": "g0/1"}]


def test_a_500_is_retried_then_succeeds() -> None:
    async def flaky(body: dict[str, Any], call: int) -> web.Response:
        if call == 1:
            return web.Response(status=500, text="overloaded")
        return await length_scores(body, call)

    scores, bodies, judge = judge_scores(flaky, ["abc"], backoff_s=0.01, retries=2)
    assert scores[0].components == {"judge": 3.0}
    assert scores[0].timed_out == []
    assert len(bodies) == 2 and judge.requests == 2


def test_a_judge_that_stays_down_gives_the_fallback_and_counts_as_timed_out() -> None:
    async def down(body: dict[str, Any], call: int) -> web.Response:
        return web.Response(status=503)

    scores, bodies, _ = judge_scores(down, ["abc"], backoff_s=0.01, retries=2)
    assert scores[0].components == {"judge": -1.0}
    assert scores[0].timed_out == ["judge"]
    assert len(bodies) == 3  # first try + 2 retries


def test_a_slow_judge_times_out_to_the_fallback() -> None:
    async def slow(body: dict[str, Any], call: int) -> web.Response:
        await asyncio.sleep(5)
        return await length_scores(body, call)

    # the request timeout (per attempt) expires; no retries left -> fallback
    scores, _, _ = judge_scores(slow, ["abc"], request_timeout_s=0.1, retries=0)
    assert (scores[0].components, scores[0].timed_out) == ({"judge": -1.0}, ["judge"])
    # the combiner's own timeout expires first -> fallback as well
    scores, _, _ = judge_scores(slow, ["abc"], timeout_s=0.2, request_timeout_s=30)
    assert (scores[0].components, scores[0].timed_out) == ({"judge": -1.0}, ["judge"])


@pytest.mark.parametrize(
    ("status", "payload", "message"),
    [
        (400, {"error": "bad"}, "HTTP 400"),
        (200, {"scores": [1.0, 2.0]}, "2 scores for 1 items"),
        (200, {"other": []}, "no 'scores'"),
        (200, {"scores": ["high"]}, "non-number"),
    ],
)
def test_refusals_and_malformed_answers_are_errors(status: int, payload: Any, message: str) -> None:
    async def wrong(body: dict[str, Any], call: int) -> web.Response:
        return web.json_response(payload, status=status)

    with pytest.raises(RewardError, match=message):
        judge_scores(wrong, ["abc"], retries=3, backoff_s=0.01)


def test_bad_params_name_the_field() -> None:
    with pytest.raises(RewardConfigError, match="params.batch_size"):
        HttpJudge(url="http://x", batch_size=0)
    with pytest.raises(ValueError, match="unknown attributes"):
        HttpJudge(url="http://x", fields={"a": "secret"})
