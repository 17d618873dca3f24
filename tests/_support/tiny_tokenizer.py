"""A tiny RoBERTa-style byte-level BPE tokenizer, written from a word list (no download).

Every byte has a token (so any text encodes), and each word of :data:`WORDS` is merged into one
token (with and without the leading-space marker), so the sentences of the model document encode
to short, readable token sequences. Special tokens follow RoBERTa's ids: ``<s>`` 0, ``<pad>`` 1,
``</s>`` 2, ``<unk>`` 3; ``<mask>`` is the last id. ``write_tiny_tokenizer(directory)`` writes
``vocab.json``, ``merges.txt``, ``tokenizer_config.json`` and ``special_tokens_map.json``;
``tests/fixtures/tokenizers/tiny-roberta-bpe`` holds the committed copy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

SPECIALS: Final = ("<s>", "<pad>", "</s>", "<unk>")
MASK: Final = "<mask>"
SPACE_MARK: Final = "\u0120"  # byte-level BPE writes a leading space as this character ("Ġ")

# The words of the model document's examples (and of docs/*.md), merged into whole tokens.
WORDS: Final = (
    "Hello my dog is cute The capital of France Paris In Italy pizza served in formal settings such as "
    "at a restaurant presented unsliced It eaten with fork and knife while held the hand "
    "HuggingFace company based New York Who was Jim Henson nice puppet MEGA moving average gated "
    "attention streams text one token at time"
).split()

FIXTURE_DIR: Final = Path(__file__).resolve().parents[1] / "fixtures" / "tokenizers" / "tiny-roberta-bpe"


def byte_alphabet() -> list[str]:
    """The 256 characters byte-level BPE uses for the bytes 0..255, in byte order.

    Printable Latin-1 bytes stand for themselves; every other byte gets the next unused code point
    from 256 upwards (the convention of GPT-2's and RoBERTa's vocabularies)."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    alphabet = []
    next_free = 256
    for byte in range(256):
        if byte in printable:
            alphabet.append(chr(byte))
        else:
            alphabet.append(chr(next_free))
            next_free += 1
    return alphabet


def bpe_pieces(form: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-level BPE of one pre-token: merge the lowest-ranked adjacent pair until none is left."""
    pieces = list(form)
    while len(pieces) > 1:
        pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(zip(pieces, pieces[1:]))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        pieces[i : i + 2] = [pieces[i] + pieces[i + 1]]
    return pieces


def merges_for(words: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """Merges under which each word (and its space-marked form) is one token.

    A word first gets left-to-right merges; where earlier merges of other words split it
    differently, merges of its current pieces are appended (a later rank applies last), until
    every form is whole."""
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}

    def add(pair: tuple[str, str]) -> None:
        if pair not in ranks:
            ranks[pair] = len(merges)
            merges.append(pair)

    forms = [form for word in words for form in (word, SPACE_MARK + word)]
    for form in forms:
        for end in range(2, len(form) + 1):
            add((form[: end - 1], form[end - 1]))
    for _ in range(len(forms)):
        split = [(form, bpe_pieces(form, ranks)) for form in forms]
        split = [(form, pieces) for form, pieces in split if len(pieces) > 1]
        if not split:
            return merges
        for _, pieces in split:
            joined = pieces[0]
            for piece in pieces[1:]:
                add((joined, piece))
                joined += piece
    raise AssertionError("tiny tokenizer: the merges did not converge")


def vocabulary(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Specials, the byte alphabet, every merge result, then ``<mask>``."""
    tokens = [*SPECIALS, *byte_alphabet(), *(left + right for left, right in merges), MASK]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab


def tokenizer_files() -> dict[str, str]:
    """File name -> text of the tokenizer directory."""
    merges = merges_for(WORDS)
    vocab = vocabulary(merges)
    config = {
        "tokenizer_class": "RobertaTokenizer",
        "model_max_length": 512,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": {"content": MASK, "lstrip": True, "normalized": False, "rstrip": False, "single_word": False},
        "add_prefix_space": False,
        "errors": "replace",
        "trim_offsets": True,
    }
    specials = {key: config[key] for key in ("bos_token", "eos_token", "sep_token", "cls_token", "unk_token", "pad_token")}
    specials["mask_token"] = config["mask_token"]
    return {
        "vocab.json": json.dumps(vocab, ensure_ascii=False, indent=0) + "\n",
        "merges.txt": "#version: 0.2\n" + "".join(f"{left} {right}\n" for left, right in merges),
        "tokenizer_config.json": json.dumps(config, indent=2) + "\n",
        "special_tokens_map.json": json.dumps(specials, indent=2) + "\n",
    }


def vocab_size() -> int:
    return len(vocabulary(merges_for(WORDS)))


def write_tiny_tokenizer(directory: Path) -> Path:
    """Write the tokenizer files into ``directory`` (created if needed); returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in tokenizer_files().items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


if __name__ == "__main__":  # regenerate the committed fixture: python tests/_support/tiny_tokenizer.py
    print(write_tiny_tokenizer(FIXTURE_DIR))
