"""The generator's pure steps that `--mode sync` shares with the stage: a PromptTask's own
sampling wins over the generator's defaults, and every sample becomes a Rollout of its group."""

from __future__ import annotations

from rollstream.schemas import PromptTask, Sampling
from rollstream.schemas._base import floats, ids
from rollstream.services.generator.backend import GenSample
from rollstream.services.generator.config import SamplingDefaults
from rollstream.services.generator.rollouts import request_of, rollouts_of


class CharTokenizer:
    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]


def task(**kw) -> PromptTask:
    return PromptTask(
        task_id="t1", task="count", prompt="ab", n=3, answer="2", produced_at=0.0, **kw
    )


def test_the_task_sampling_overrides_the_defaults_but_not_the_group_size() -> None:
    defaults = SamplingDefaults(temperature=1.0, max_tokens=16)
    plain = request_of(task(), "g1", defaults, CharTokenizer(), "plain")
    assert (plain.temperature, plain.max_tokens, plain.n) == (1.0, 16, 3)
    assert plain.prompt_ids == [97, 98]
    tuned = request_of(
        task(sampling=Sampling(n=99, temperature=0.5, max_tokens=4)),
        "g1",
        defaults,
        CharTokenizer(),
        "plain",
    )
    assert (tuned.temperature, tuned.max_tokens, tuned.n) == (0.5, 4, 3)


def test_each_sample_becomes_a_rollout_of_the_group_stamped_with_the_version() -> None:
    t = task()
    req = request_of(t, "t1@0.5", SamplingDefaults(), CharTokenizer(), "plain")
    samples = [
        GenSample(text=str(i), completion_ids=[48 + i], logprobs=[-0.5 * i], finish_reason="stop")
        for i in range(3)
    ]
    ros = rollouts_of(t, req, samples, version=7, now=12.0, generator_id="generator-1")
    assert [r.rollout_id for r in ros] == ["t1@0.5#0", "t1@0.5#1", "t1@0.5#2"]
    assert {r.group_id for r in ros} == {"t1@0.5"} and {r.group_size for r in ros} == {3}
    assert {r.policy_version for r in ros} == {7} and ros[0].generator_id == "generator-1"
    assert [ids(r.completion_ids).tolist() for r in ros] == [[48], [49], [50]]
    assert floats(ros[2].logprobs).tolist() == [-1.0]
    assert ids(ros[0].prompt_ids).tolist() == [97, 98] and ros[0].answer == "2"
    assert ros[0].sampling.temperature == req.temperature
