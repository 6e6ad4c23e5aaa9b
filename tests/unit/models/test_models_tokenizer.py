"""The built-in character tokenizer: ids by hand, round trips, and loading from disk."""

from __future__ import annotations

from rollstream.services.models.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    VOCAB,
    build_tokenizer,
    save_tokenizer,
)


def test_ids_are_one_per_character_after_bos():
    tok = build_tokenizer()
    # ids: specials 0-3, "\n" 4, then chr(32..126) at 5..99, so char c has id ord(c) - 27
    assert tok("add 1+2=")["input_ids"] == [BOS_ID, 70, 73, 73, 5, 22, 16, 23, 34]
    assert (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert len(VOCAB) == 100 and len(tok) == 100
    assert tok("é")["input_ids"] == [BOS_ID, UNK_ID]


def test_decoding_joins_characters_exactly():
    tok = build_tokenizer()
    text = "rev ab c=\n  x"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.decode([70, 71, EOS_ID], skip_special_tokens=True) == "ab"
    assert tok.convert_tokens_to_string(["1", " ", "2"]) == "1 2"


def test_saved_tokenizer_loads_with_autotokenizer_and_pads_left(tmp_path):
    from transformers import AutoTokenizer

    save_tokenizer(tmp_path)
    tok = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert tok.is_fast
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (PAD_ID, BOS_ID, EOS_ID)
    batch = tok(["a", "abc"], padding=True)
    assert batch["input_ids"] == [[PAD_ID, PAD_ID, BOS_ID, 70], [BOS_ID, 70, 71, 72]]
    assert batch["attention_mask"] == [[0, 0, 1, 1], [1, 1, 1, 1]]
    chat = tok.apply_chat_template([{"role": "user", "content": "sort 31="}], tokenize=True)
    ids = chat["input_ids"] if hasattr(chat, "keys") else chat
    assert list(ids) == tok("sort 31=")["input_ids"]


def test_saving_twice_writes_identical_files(tmp_path):
    a, b = save_tokenizer(tmp_path / "a"), save_tokenizer(tmp_path / "b")
    names = sorted(p.name for p in a.iterdir())
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= set(names)
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
