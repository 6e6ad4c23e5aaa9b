"""Greedy held-out evaluation: left padding changes nothing, and scores use the checkers."""

from __future__ import annotations

import torch

from rollstream.services.models.evaluate import greedy_completions, heldout_accuracy
from rollstream.services.tasks import Item, get_task


def one_by_one(model, tok, prompt: str, max_new_tokens: int) -> str:
    """Reference: no batch, no padding, no cache - argmax of a full forward per token."""
    ids = tok(prompt)["input_ids"]
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            nxt = int(model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            out.append(nxt)
    return tok.decode(out, skip_special_tokens=True)


def test_batched_greedy_equals_one_prompt_at_a_time(tiny_model_dir):
    from rollstream.services.models.load import load_model, load_tokenizer

    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    prompts = ["add 1+2=", "rev abcdefgh=", "sort 9=", "abcabc count a="]  # unequal lengths
    got = greedy_completions(model, tok, prompts, max_new_tokens=6, batch_size=3)
    assert got == [one_by_one(model, tok, p, 6) for p in prompts]


def test_accuracy_counts_what_the_checker_accepts(tiny_model_dir):
    from rollstream.services.models.load import load_model, load_tokenizer

    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    prompts = ["add 1+2=", "rev ab=", "sort 21="]
    said = greedy_completions(model, tok, prompts, max_new_tokens=4)
    # answers chosen so that exactly the first two items are right
    items = [
        get_task("add").item(prompts[0], said[0].strip(), 1),
        get_task("reverse").item(prompts[1], said[1].strip(), 2),
        Item("x", "sort", prompts[2], said[2].strip() + "9", 2),
    ]
    acc = heldout_accuracy(model, tok, items, max_new_tokens=4)
    assert acc.n == 3 and abs(acc.accuracy - 2 / 3) < 1e-9
    assert acc.per_task == {"add": 1.0, "reverse": 1.0, "sort": 0.0}
