"""The built-in character-level tokenizer: one token per character, no download.

Vocabulary: `<pad>` `<bos>` `<eos>` `<unk>` (ids 0-3), then newline and every printable ASCII
character (ids 4-99), so any prompt of the built-in tasks - and most user tasks - encodes
without `<unk>`. Encoding prepends `<bos>`; decoding joins characters with nothing between.

Writes an ordinary Hugging Face tokenizer directory (tokenizer.json, tokenizer_config.json,
special_tokens_map.json) that `AutoTokenizer.from_pretrained` loads as a fast tokenizer and
vLLM loads as a PreTrainedTokenizerFast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
CHARS = "\n" + "".join(chr(i) for i in range(32, 127))
VOCAB: dict[str, int] = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *CHARS))}
PAD_ID, BOS_ID, EOS_ID, UNK_ID = (VOCAB[t] for t in SPECIAL_TOKENS)
# The model config fields that fit a model to this tokenizer: its vocabulary and special ids.
CONFIG_FIELDS: dict[str, int] = dict(
    vocab_size=len(VOCAB), bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID
)
MODEL_MAX_LENGTH = 512
# "chat" template for the tiny model: the messages' text as is, after <bos>, so chat and
# plain prompts give the same tokens.
CHAT_TEMPLATE = "{{ bos_token }}{% for message in messages %}{{ message['content'] }}{% endfor %}"


def build_backend() -> Any:
    """The `tokenizers.Tokenizer`: WordLevel over single characters, `<bos>` prepended."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel(dict(VOCAB), unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, BOS_ID)]
    )
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok


def build_tokenizer() -> Any:
    """A transformers fast tokenizer around `build_backend()` (left padding, for generation)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=build_backend(),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
        model_max_length=MODEL_MAX_LENGTH,
        chat_template=CHAT_TEMPLATE,
    )


def save_tokenizer(out_dir: str | Path) -> Path:
    """Write the tokenizer files into `out_dir` (created if needed); returns the directory.

    `tokenizer_class` is pinned to "PreTrainedTokenizerFast", the name every transformers
    version (and so vLLM, whatever version it pins) resolves to a fast tokenizer."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    build_tokenizer().save_pretrained(str(out))
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.setdefault("chat_template", CHAT_TEMPLATE)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "unk_token": UNK}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    return out
