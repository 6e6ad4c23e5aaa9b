"""The image cannot be built here, so check what it would install and run: every pip extra the
Dockerfile names exists in pyproject.toml, each variant maps to its extras, and the entrypoint
is the console script pyproject declares (the chart's stage commands rely on it)."""

from __future__ import annotations

import json
import re
import tomllib

from helmchart import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE, flags=re.M))


def test_every_variant_installs_extras_that_exist() -> None:
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    args = _args()
    variants = re.findall(r"^\s+(\w+)\) extras=\"\$(EXTRAS_\w+)\"", DOCKERFILE, flags=re.M)
    assert {v for v, _ in variants} == {"cpu", "gpu"}
    assert args["VARIANT"] == "cpu"
    for variant, arg in variants:
        wanted = args[arg].split(",")
        assert set(wanted) <= extras, f"{variant}: {set(wanted) - extras} not in pyproject"
    assert "cpu" in args["EXTRAS_CPU"].split(",")  # CPU-only torch in the CPU image
    assert {"s3"} <= set(args["EXTRAS_CPU"].split(",")) & set(args["EXTRAS_GPU"].split(","))
    assert re.search(r'pip install \$index "/src\[\$extras\]"', DOCKERFILE)


def test_entrypoint_is_the_console_script() -> None:
    (line,) = [ln for ln in DOCKERFILE.splitlines() if ln.startswith("ENTRYPOINT")]
    entry = json.loads(line.split(None, 1)[1])
    assert entry == ["rollstream"]
    assert PYPROJECT["project"]["scripts"]["rollstream"] == "rollstream.services.cli:main"


def test_image_copies_what_the_package_is_built_from() -> None:
    """pip builds the wheel from these: the packages pyproject finds, and its readme."""
    sources = {
        w for srcs in re.findall(r"^COPY (.+) \./", DOCKERFILE, flags=re.M) for w in srcs.split()
    }
    for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:
        src = pattern.rstrip("*")
        assert src in sources, f"{src} is not copied into the image"
    assert PYPROJECT["project"]["readme"] in sources
