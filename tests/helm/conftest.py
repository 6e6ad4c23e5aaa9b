"""Fixtures for the chart tests: the chart loaded once, and its renders (one per values set,
cached for the session, see helmchart.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import helm_python as helm
import pytest
from helmchart import CHART, VALUE_SETS, Rendered, render


@pytest.fixture(scope="session")
def chart() -> Iterator[helm.Chart]:
    c = helm.Chart.load(str(CHART))
    yield c
    c.close()


@pytest.fixture(scope="module", params=VALUE_SETS)
def rendered(request: pytest.FixtureRequest, chart: helm.Chart) -> Rendered:
    """Each test that takes it runs once per values set (defaults, examples, extra sets)."""
    return render(chart, request.param)


@pytest.fixture(scope="session")
def render_set(chart: helm.Chart) -> Callable[[str], Rendered]:
    """Render (cached) one values set by name: render_set("gpu")."""
    return lambda name: render(chart, name)
