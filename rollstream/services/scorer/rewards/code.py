"""Code-execution reward: run the completion's Python code against the reference tests in the
sandbox (sandbox.py) and score the fraction of tests passed, or 1.0 only if all pass.

Reads `rollout.reference[tests_key]`: a list of Python statements (usually `assert ...`), or
one string holding them all (then it counts as one test). The code is the last fenced
```python block of the completion (any fenced block if none is marked python; the whole
completion if there is no block). A run that times out, floods its output or crashes scores
`failure_value`. A rollout without tests is an error (dead-letter topic).

Set the combiner's `timeout_s` above `time_s` plus the queueing you expect: a run waits for
one of `max_concurrency` slots before its clock starts.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from rollstream.schemas import Rollout
from rollstream.services.scorer.reward import RewardParams, parse_params
from rollstream.services.scorer.sandbox import Isolation, Limits, Sandbox, SandboxResult

_FENCE = re.compile(r"```([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def extract_code(completion: str, how: Literal["last_block", "first_block", "whole"]) -> str:
    """The code to run: a fenced block (python-tagged ones preferred) or the whole text."""
    if how == "whole":
        return completion
    blocks = _FENCE.findall(completion)
    python = [body for lang, body in blocks if lang.lower() in ("python", "py", "python3")]
    chosen = python or [body for _, body in blocks]
    if not chosen:
        return completion
    return chosen[-1] if how == "last_block" else chosen[0]


class CodeExec:
    """Fraction (or all-or-nothing) of reference tests that the completion's code passes."""

    name = "code_exec"
    checker = True

    class Params(RewardParams):
        mode: Literal["fraction", "all"] = "fraction"
        """fraction: passed / total; all: 1.0 only when every test passes."""
        failure_value: float = 0.0
        """Score when the run times out, floods its output or crashes."""
        extract: Literal["last_block", "first_block", "whole"] = "last_block"
        """Which code to run (see module docstring)."""
        tests_key: str = "tests"
        """Key of the tests in `rollout.reference`."""
        time_s: float = Field(5.0, gt=0, le=600)
        """Wall-clock limit of one run, code and all tests."""
        memory_mb: int = Field(512, ge=32, le=1 << 20)
        """Address-space limit of the child (RLIMIT_AS)."""
        max_procs: int = Field(16, ge=1, le=4096)
        """Process/thread limit inside the sandbox (RLIMIT_NPROC)."""
        max_output_kb: int = Field(64, ge=1, le=1 << 20)
        """Cap on what the child writes to its verdict pipe."""
        max_file_mb: int = Field(16, ge=0, le=1 << 20)
        """Largest file the code may write (RLIMIT_FSIZE)."""
        max_concurrency: int = Field(4, ge=1, le=1024)
        """Sandboxes running at once in this process."""
        isolation: Isolation = "auto"
        """namespace (unshare), audit (audit-hook fallback) or auto (namespace if it works)."""
        python: str | None = None
        """Interpreter for the child; None tries this one, then /usr/bin/python3."""
        uid: int = Field(65534, ge=1, le=2**31 - 1)
        """User the child runs as when the scorer runs as root."""

    def __init__(self, **params: object) -> None:
        self.params = p = parse_params(self.Params, dict(params), self.name)
        limits = Limits(
            time_s=p.time_s,
            memory_mb=p.memory_mb,
            max_procs=p.max_procs,
            max_output_bytes=p.max_output_kb * 1024,
            max_file_mb=p.max_file_mb,
        )
        self.sandbox = Sandbox(
            limits,
            isolation=p.isolation,
            python=p.python,
            uid=p.uid,
            max_concurrency=p.max_concurrency,
        )

    def tests_of(self, rollout: Rollout) -> list[str]:
        tests = rollout.reference.get(self.params.tests_key)
        if isinstance(tests, str):
            tests = [tests]
        if not tests or not all(isinstance(t, str) for t in tests):
            key = self.params.tests_key
            raise ValueError(
                f"{self.name}: rollout {rollout.rollout_id} has no reference[{key!r}] "
                "list of test strings"
            )
        return list(tests)

    def value(self, result: SandboxResult) -> float:
        """Score of one sandbox outcome."""
        if result.status != "ok" or result.total == 0:
            return self.params.failure_value
        if self.params.mode == "all":
            return 1.0 if result.passed == result.total else 0.0
        return result.passed / result.total

    async def score(self, rollout: Rollout) -> float:
        tests = self.tests_of(rollout)
        code = extract_code(rollout.completion, self.params.extract)
        return self.value(await self.sandbox.run(code, tests))
