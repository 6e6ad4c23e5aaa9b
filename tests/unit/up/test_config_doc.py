"""docs/config.md, the run-file reference, is generated from the config models: it must match
them (regenerate with `python scripts/configdoc.py --write`) and cover every field."""

from __future__ import annotations

from pathlib import Path

from generated_docs import script_output

from rollstream.services.up.main import default_config_path

ROOT = Path(__file__).resolve().parents[3]


def test_config_reference_is_current() -> None:
    fresh = script_output("configdoc.py")
    assert (ROOT / "docs" / "config.md").read_text() == fresh, (
        "docs/config.md is out of date: run `python scripts/configdoc.py --write`"
    )


def test_config_reference_documents_every_field_of_the_default_run() -> None:
    import yaml

    doc = (ROOT / "docs" / "config.md").read_text()
    rows = [x for x in doc.splitlines() if x.startswith("| `")]
    assert rows and all(not x.endswith("|  |") for x in rows), [
        x for x in rows if x.endswith("|  |")
    ]

    def leaves(d: dict, prefix: str = "") -> list[str]:
        out = []
        for k, v in d.items():
            if isinstance(v, dict) and prefix != "stages.":
                out += leaves(v, f"{prefix}{k}.")
            else:
                out.append(f"{prefix}{k}")
        return out

    default = yaml.safe_load(default_config_path().read_text())
    for key in leaves(default):
        if key.startswith("stages."):
            key = "stages"
        assert f"| `{key}` |" in doc, f"{key} (set in default.yaml) is not in docs/config.md"
