"""Canonical example of every wire message, and the generator of their golden bytes.

`examples()` builds one message of each type in rollstream.schemas.MESSAGE_TYPES with fixed
values (no clocks, no randomness). tests/unit/test_schemas.py compares `encode(example)` with
tests/golden/<Name>.msgpack byte for byte, so an accidental change of the wire format fails.

After an intended format change (say so in the commit), rewrite the files:

    .venv/bin/python tests/golden/make_golden.py
"""

from __future__ import annotations

from pathlib import Path

from rollstream.schemas import (
    BatchItem,
    ControlUpdate,
    DeadLetter,
    DropRecord,
    EvalResult,
    Feedback,
    Group,
    GroupStats,
    Message,
    PromptStats,
    PromptTask,
    Rollout,
    Sampling,
    ScoredRollout,
    TrainBatch,
    WeightUpdate,
    encode,
    pack_floats,
    pack_ids,
)

HERE = Path(__file__).parent
T0 = 1_700_000_000.25  # a fixed produced_at


def rollout() -> Rollout:
    """Token ids are those of the built-in character tokenizer: <bos> 2 + 3 = | 5 <eos>."""
    return Rollout(
        rollout_id="g1-0",
        group_id="g1",
        task_id="add-17",
        task="add",
        sample_index=0,
        group_size=2,
        prompt="2+3=",
        completion="5",
        prompt_ids=pack_ids([1, 23, 16, 24, 34]),
        completion_ids=pack_ids([26, 2]),
        logprobs=pack_floats([-0.25, -1.5]),
        finish_reason="stop",
        policy_version=3,
        sampling=Sampling(n=2, temperature=1.0, top_p=1.0, max_tokens=16, seed=7),
        answer="5",
        reference={"kind": "int"},
        generator_id="gen-0",
        queued_s=0.5,
        generate_s=1.25,
        produced_at=T0,
    )


def scored() -> ScoredRollout:
    return ScoredRollout(
        rollout=rollout(),
        reward=1.0,
        rewards={"correct": 1.0, "format": 0.5},
        correct=True,
        timed_out=[],
        score_s=0.125,
        produced_at=T0 + 1,
    )


def group() -> Group:
    return Group(
        group_id="g1",
        task_id="add-17",
        task="add",
        samples=[scored()],
        advantages=[0.5],
        stats=GroupStats(
            reward_mean=0.5, reward_std=0.5, pass_rate=0.5, generated=2, kept=1, assembly_s=0.75
        ),
        policy_version=3,
        produced_at=T0 + 2,
    )


def examples() -> dict[str, Message]:
    """One fixed example per message type, by type name."""
    msgs: list[Message] = [
        PromptTask(
            task_id="add-17",
            task="add",
            prompt="2+3=",
            n=2,
            answer="5",
            reference={"kind": "int"},
            sampling=Sampling(temperature=0.7),
            template="plain",
            epoch=1,
            produced_at=T0,
        ),
        rollout(),
        scored(),
        group(),
        DropRecord(
            group_id="g2",
            task_id="add-18",
            reason="zero_variance",
            filter="zero_variance",
            rollout_ids=["g2-0", "g2-1"],
            stats={"reward_std": 0.0, "pass_rate": 1.0},
            policy_version=3,
            produced_at=T0,
        ),
        PromptStats(
            task_id="add-17",
            task="add",
            pass_rate=0.5,
            last_pass_rate=0.5,
            groups=4,
            recent=[0.0, 1.0, 0.5],
            policy_version=3,
            produced_at=T0,
        ),
        TrainBatch(
            batch_id="b1",
            learner_id="learner-0",
            seq=1,
            items=[BatchItem(group=group(), weight=1.0, uses=1, replayed=False)],
            learner_version=3,
            produced_at=T0,
        ),
        Feedback(
            learner_id="learner-0",
            credits_total=4,
            learner_version=4,
            step=4,
            trained_batches=["b1"],
            trained_groups=["g1"],
            trained_rollouts=2,
            priorities={"g1": 0.25},
            produced_at=T0,
        ),
        WeightUpdate(
            policy="policy",
            version=4,
            uri="file:///tmp/weights/v4",
            sha256="ab" * 32,
            chunk_bytes=16 << 20,
            size_bytes=1024,
            files={"model.safetensors": "ab" * 32},
            step=4,
            produced_at=T0,
        ),
        ControlUpdate(
            stage="generator",
            params={"temperature": 0.8, "max_tokens": 64},
            revision=2,
            issued_by="cli",
            produced_at=T0,
        ),
        EvalResult(
            run="r1",
            policy_version=4,
            step=4,
            accuracy=0.75,
            n=8,
            per_task={"add": 0.75},
            eval_s=2.5,
            produced_at=T0,
        ),
        DeadLetter(
            topic="prompts",
            partition=0,
            offset=7,
            key=b"add-17",
            value=b"\xc1garbage",
            error="PromptTask: malformed bytes",
            consumer="generator",
            produced_at=T0,
        ),
    ]
    return {type(m).__name__: m for m in msgs}


def golden_path(name: str) -> Path:
    return HERE / f"{name}.msgpack"


def main() -> None:
    for name, msg in examples().items():
        golden_path(name).write_bytes(encode(msg))
        print(f"wrote {golden_path(name)}")


if __name__ == "__main__":
    main()
