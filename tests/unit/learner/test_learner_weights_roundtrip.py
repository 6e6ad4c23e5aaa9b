"""Round trip: the weights the learner publishes load into the generator's engine and give
the same logits as the learner's own model."""

from __future__ import annotations

import torch

from rollstream.services.generator.backend_hf import HFBackend
from rollstream.services.learner.config import LearnerConfig
from rollstream.services.learner.trainer import Trainer
from rollstream.services.models.load import load_model
from rollstream.services.models.weights import fetch_version, publish_version


def test_published_weights_give_the_learners_logits_in_the_generator(
    tiny_model_dir, tmp_path, make_batch
):
    learner_model = load_model(tiny_model_dir, dtype="float32")
    trainer = Trainer(LearnerConfig(learner_id="L", lr=1e-2, objective="grpo"), learner_model)
    # two groups with opposite advantages over real token ids of the char vocabulary
    batch = make_batch(
        [
            ("g1", [([1, 20, 21], [30, 31, 2]), ([1, 20, 21], [40, 41, 2])], [1.0, -1.0], 1.0),
            ("g2", [([1, 22], [50, 2]), ([1, 22], [60, 61, 2])], [-1.0, 1.0], 1.0),
        ]
    )
    before = {k: v.clone() for k, v in learner_model.state_dict().items()}
    assert trainer.train(batch) is not None
    assert any(not torch.equal(before[k], v) for k, v in learner_model.state_dict().items())

    upd = publish_version(
        learner_model,
        store=str(tmp_path / "store"),
        policy="policy",
        version=1,
        step=1,
        model_dir=tiny_model_dir,
        keep=2,
    )
    local = fetch_version(upd.uri, upd.sha256, upd.weights_file, chunk_bytes=upd.chunk_bytes)

    gen = HFBackend(tiny_model_dir, dtype="float32")
    ids = torch.tensor([[1, 20, 21, 30, 31, 2, 22, 50]])
    with torch.no_grad():
        old = gen.model(input_ids=ids).logits
        gen.load_weights(str(local))
        new = gen.model(input_ids=ids).logits
        want = learner_model.eval()(input_ids=ids).logits
    assert not torch.allclose(old, want, atol=1e-4), "the step must have changed the logits"
    torch.testing.assert_close(new, want, atol=1e-5, rtol=1e-5)
