"""The tiny tokenizer fixture: the committed files are what the generator writes, and it works."""

from __future__ import annotations

import pytest

from _support.tiny_tokenizer import FIXTURE_DIR, MASK, SPACE_MARK, WORDS, tokenizer_files


def test_committed_fixture_is_generated() -> None:
    for name, text in tokenizer_files().items():
        assert (FIXTURE_DIR / name).read_text(encoding="utf-8") == text, name


@pytest.mark.hf
def test_every_word_is_one_token_and_text_round_trips() -> None:
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(FIXTURE_DIR))
    vocab = tokenizer.get_vocab()
    for word in WORDS:
        assert tokenizer.tokenize(word) == [word], word
        assert tokenizer.tokenize(" " + word) == [SPACE_MARK + word], word
    text = "Ünïcode, digits 123 and \t tabs: anything encodes."
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == text
    assert (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.mask_token_id == vocab[MASK] == len(vocab) - 1
