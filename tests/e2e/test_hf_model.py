"""`rollstream up` on a model that is not the built-in one: a tiny Qwen2-architecture model
with its own byte-level BPE tokenizer (trained offline), ChatML chat template, two stop tokens
and tied embeddings, saved as an ordinary Hugging Face directory
(rollstream/services/models/synthetic.py).

The whole pipeline must run on it - prompts through its chat template, rollouts scored,
groups trained, versions published - with a balanced ledger, and every published version must
load with plain `transformers.AutoModelForCausalLM.from_pretrained`, holding exactly the
weights the learner published.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rollstream.services.models.synthetic import build_hf_model

    return build_hf_model(tmp_path_factory.mktemp("models") / "tiny-qwen2", arch="qwen2")


def up_balanced(up, tmp_path: Path, name: str, *args: str) -> str:
    """`rollstream up --name NAME ARGS` in `tmp_path` (its own ROLLSTREAM_HOME): it must end
    with a balanced ledger and trained groups. Returns the stages' logs."""
    res = up(tmp_path / "home", tmp_path, *args, "--name", name, timeout=600)
    out = res.stdout[-4000:] + res.stderr[-4000:]
    assert res.returncode == 0, out
    assert "ledger BALANCED" in res.stdout, out
    run = tmp_path / "runs" / name
    ledger = json.loads((run / "ledger.json").read_text())["ledger"]
    assert ledger["trained"] > 0 and ledger["unknown"] == 0, ledger
    return "\n".join(p.read_text() for p in run.rglob("*.log"))


def sets(*settings: str) -> list[str]:
    return [arg for s in settings for arg in ("--set", s)]


def test_up_trains_a_tiny_qwen2_dir_and_its_versions_load_with_transformers(
    tiny_qwen: Path, tmp_path: Path, up
) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    args = sets(
        f"model.path={tiny_qwen}",
        "model.system_prompt=Answer briefly.",
        "target.steps=6",
        "target.minutes=2",
        "generator.sampling.max_tokens=8",
        # A random model is never right on a task: a reward for writing a digit gives its
        # groups some variance, hence a gradient.
        "scorer.rewards=[{name: task}, {name: format, params: {pattern: '[0-9]', mode: search}}]",
        "filter.chain=[]",
        "replay.batch_groups=4",
        "evaluator.items_per_task=8",
        "evaluator.min_interval_s=5",
    )
    logs = up_balanced(up, tmp_path, "qwen", *args)
    assert not (tmp_path / "home" / "models").exists(), "the built-in model was built anyway"
    assert "prompts as chat" in logs, "the generator did not use the model's chat template"
    assert "Qwen2ForCausalLM" in logs, "no stage logged the model it runs"

    run = tmp_path / "runs" / "qwen"
    versions = sorted((run / "weights" / "policy").glob("v*"))
    assert versions and versions[-1].name != "v00000000", versions
    newest = versions[-1]
    model = AutoModelForCausalLM.from_pretrained(str(newest), local_files_only=True)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    published = load_file(str(newest / "model.safetensors"))
    state = model.state_dict()
    for name, tensor in published.items():
        assert torch.equal(state[name].to(tensor.dtype), tensor), name
    base = load_file(str(tiny_qwen / "model.safetensors"))
    assert any(not torch.equal(base[k].to(v.dtype), v) for k, v in published.items()), (
        "the published weights are the base model's: nothing was trained"
    )
    assert (newest / "chat_template.jinja").exists() or "chat_template" in (
        newest / "tokenizer_config.json"
    ).read_text(), "the chat template did not travel with the version"


def test_the_gsm8k_example_runs_on_a_chat_model_with_math_verify(
    tiny_qwen: Path, tmp_path: Path, up
) -> None:
    """examples/gsm8k.yaml as shipped, on the tiny chat model and the shipped sample data: the
    questions go through the chat template, Math-Verify scores every rollout, the learner
    trains and the ledger balances."""
    import yaml

    root = Path(__file__).resolve().parents[2]
    cfg = yaml.safe_load((root / "examples" / "gsm8k.yaml").read_text())
    data = root / cfg["feed"]["datasets"][0]["path"]
    assert data.exists() and data.read_text().count("####") >= 200
    cfg["feed"]["datasets"][0]["path"] = str(data)
    cfg["filter"]["chain"] = []  # a random model is never right: keep its groups anyway
    run_file = tmp_path / "gsm8k.yaml"
    run_file.write_text(yaml.safe_dump(cfg))
    args = sets(
        f"model.path={tiny_qwen}",
        "target.steps=3",
        "target.minutes=2",
        "generator.sampling.max_tokens=8",
        "replay.batch_groups=2",
    )
    logs = up_balanced(up, tmp_path, "gsm8k", "--config", str(run_file), *args)
    assert "prompts as chat" in logs
