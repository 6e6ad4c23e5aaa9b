"""Shared fixtures. Integration tests use the real embedded broker (or ROLLSTREAM_TEST_BOOTSTRAP
to point at another Kafka) and a unique namespace per test, so topic names never collide."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from rollstream.services.runtime.settings import KafkaSettings


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
