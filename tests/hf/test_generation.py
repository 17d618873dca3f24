"""Streaming decoding through ``generate()`` on the running transformers (4.57 or 5.x).

Correctness bar: cached decoding gives the logits of a full forward over the same prefix
(<= 1e-4 fp32) and the same greedy tokens, for every attention function, with and without
chunking, both relative biases, prompts shorter than / equal to / longer than a chunk, and
generations that cross several chunk boundaries.
"""

from __future__ import annotations

import itertools
import tempfile

import pytest
import torch

transformers = pytest.importorskip("transformers")

import mega_plugin  # noqa: E402,F401  (registers the Auto classes)
from mega_plugin.adapters.hf import MegaCache, MegaConfig, MegaForCausalLM, MegaForMaskedLM  # noqa: E402
from mega_plugin.adapters.hf.modeling_lm import CACHE_KEYWORD  # noqa: E402
from mega_hf_helpers import CAUSAL_VOCAB, tiny_causal_config  # noqa: E402

CHUNK = 4
VOCAB = CAUSAL_VOCAB




def build(seed: int = 0, **overrides: object) -> MegaForCausalLM:
    torch.manual_seed(seed)
    model = MegaForCausalLM(tiny_causal_config(**overrides)).eval()
    with torch.no_grad():  # move the qk bias and relative bias off their trivial init
        for layer in model.mega.layers:
            layer.mega_layer.qk_bias.normal_(std=0.3)
            for parameter in layer.mega_layer.rel_pos_bias.parameters():
                parameter.normal_(std=0.3)
    return model


def cache_of(output: object) -> MegaCache:
    return getattr(output, CACHE_KEYWORD)


GRID = list(
    itertools.product(
        ["softmax", "laplace", "relu2"], [False, True], ["rotary", "simple"], [CHUNK - 1, CHUNK, CHUNK + 3]
    )
)


@pytest.mark.parametrize(
    "attention,chunking,bias,prompt_length",
    GRID,
    ids=[f"{a}-{'chunk' + str(CHUNK) if c else 'global'}-{b}-prompt{p}" for a, c, b, p in GRID],
)
def test_cached_steps_equal_full_forward(attention: str, chunking: bool, bias: str, prompt_length: int) -> None:
    model = build(
        attention_activation=attention,
        use_chunking=chunking,
        chunk_size=CHUNK if chunking else -1,
        relative_positional_bias=bias,
    )
    prompt = torch.randint(3, VOCAB, (2, prompt_length))
    new_tokens = 3 * CHUNK + 2  # crosses several chunk boundaries
    with torch.no_grad():
        cached = model.generate(prompt, max_new_tokens=new_tokens, do_sample=False, use_cache=True)
        uncached = model.generate(prompt, max_new_tokens=new_tokens, do_sample=False, use_cache=False)
        assert torch.equal(cached, uncached)
        full = model(cached).logits
        step = model(cached[:, :prompt_length], use_cache=True)
        assert (step.logits - full[:, :prompt_length]).abs().max().item() <= 1e-4
        cache = cache_of(step)
        for position in range(prompt_length, cached.shape[1]):
            step = model(cached[:, position : position + 1], use_cache=True, **{CACHE_KEYWORD: cache})
            cache = cache_of(step)
            assert (step.logits[:, 0] - full[:, position]).abs().max().item() <= 1e-4, position
            if chunking:
                assert all(layer.cached_length < CHUNK for layer in cache.state.layers)


def test_multi_token_steps_from_a_non_empty_cache() -> None:
    model = build(use_chunking=True, chunk_size=CHUNK, attention_activation="laplace")
    tokens = torch.randint(3, VOCAB, (2, 17))
    with torch.no_grad():
        full = model(tokens).logits
        cache = None
        start = 0
        for size in (3, 1, 6, 2, 5):
            kwargs = {CACHE_KEYWORD: cache} if cache is not None else {}
            out = model(tokens[:, start : start + size], use_cache=True, **kwargs)
            cache = cache_of(out)
            assert (out.logits - full[:, start : start + size]).abs().max().item() <= 1e-4
            start += size


def test_chunked_state_size_does_not_grow() -> None:
    model = build(use_chunking=True, chunk_size=CHUNK)
    tokens = torch.randint(3, VOCAB, (1, 40))
    sizes = []
    with torch.no_grad():
        out = model(tokens[:, :1], use_cache=True)
        for position in range(1, 40):
            out = model(tokens[:, position : position + 1], use_cache=True, **{CACHE_KEYWORD: cache_of(out)})
            sizes.append(cache_of(out).size_bytes())
    assert max(sizes) == max(sizes[:CHUNK])  # bounded by one chunk of keys/values plus the EMA state


def test_left_padded_batch_generates_like_unpadded_rows() -> None:
    model = build(use_chunking=False)
    long_prompt = torch.randint(3, VOCAB, (1, 7))
    short_prompt = torch.randint(3, VOCAB, (1, 4))
    pad = model.config.pad_token_id
    batch = torch.cat([long_prompt, torch.cat([torch.full((1, 3), pad), short_prompt], dim=1)])
    mask = torch.ones_like(batch)
    mask[1, :3] = 0
    with torch.no_grad():
        together = model.generate(batch, attention_mask=mask, max_new_tokens=6, do_sample=False)
        alone_long = model.generate(long_prompt, max_new_tokens=6, do_sample=False)
        alone_short = model.generate(short_prompt, max_new_tokens=6, do_sample=False)
    assert torch.equal(together[0], alone_long[0])
    assert torch.equal(together[1, 3:], alone_short[0])


def test_beam_search_sampling_and_return_sequences() -> None:
    model = build(use_chunking=True, chunk_size=CHUNK)
    prompt = torch.randint(3, VOCAB, (2, 5))
    with torch.no_grad():
        beams = model.generate(prompt, max_new_tokens=7, num_beams=3, num_return_sequences=2, do_sample=False)
        assert beams.shape == (4, 12)
        # The best beam of a cached search equals the best beam of an uncached search.
        uncached = model.generate(prompt, max_new_tokens=7, num_beams=3, do_sample=False, use_cache=False)
        cached = model.generate(prompt, max_new_tokens=7, num_beams=3, do_sample=False)
        assert torch.equal(cached, uncached)
        torch.manual_seed(3)
        first = model.generate(prompt, max_new_tokens=6, do_sample=True, top_k=8)
        torch.manual_seed(3)
        second = model.generate(prompt, max_new_tokens=6, do_sample=True, top_k=8)
    assert torch.equal(first, second)
    assert first.shape == (2, 11)


def test_generation_stops_at_eos() -> None:
    model = build(use_chunking=True, chunk_size=CHUNK)
    prompt = torch.randint(3, VOCAB, (1, 3))
    with torch.no_grad():
        free = model.generate(prompt, max_new_tokens=10, do_sample=False)
    eos = int(free[0, 5])  # the third generated token
    with torch.no_grad():
        stopped = model.generate(prompt, max_new_tokens=10, do_sample=False, eos_token_id=eos, pad_token_id=1)
    first_eos = (stopped[0, 3:] == eos).nonzero()[0].item() + 3
    assert stopped[0, first_eos] == eos
    assert stopped.shape[1] == first_eos + 1


def test_bidirectional_or_encoder_model_refuses_to_generate() -> None:
    torch.manual_seed(0)
    model = MegaForCausalLM(tiny_causal_config(is_decoder=False, bidirectional=True)).eval()
    with pytest.raises(ValueError, match="bidirectional=False.*is_decoder=True"):
        model.generate(torch.randint(3, VOCAB, (1, 4)), max_new_tokens=2)
    with pytest.raises(ValueError, match="is_decoder=True.*bidirectional=False"):
        MegaForCausalLM(tiny_causal_config(is_decoder=True, bidirectional=True))


def test_masked_lm_checkpoint_as_causal_lm_explains_the_mismatch() -> None:
    config = tiny_causal_config(is_decoder=False, bidirectional=True)
    with tempfile.TemporaryDirectory() as directory:
        MegaForMaskedLM(config).save_pretrained(directory)
        causal = transformers.AutoConfig.from_pretrained(directory)
        causal.is_decoder, causal.bidirectional = True, False
        with pytest.raises(ValueError, match="bidirectional.*32 rows.*16 rows.*ignore_mismatched_sizes"):
            transformers.AutoModelForCausalLM.from_pretrained(directory, config=causal)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            directory, config=causal, ignore_mismatched_sizes=True
        )
        assert isinstance(model, MegaForCausalLM)


def test_reorder_cache_permutes_the_batch() -> None:
    model = build(use_chunking=True, chunk_size=CHUNK)
    tokens = torch.randint(3, VOCAB, (3, 6))
    with torch.no_grad():
        cache = cache_of(model(tokens, use_cache=True))
        order = torch.tensor([2, 0, 1])
        expected = [layer.keys[order] for layer in cache.state.layers]
        model._reorder_cache(cache, order)
    for layer, keys in zip(cache.state.layers, expected):
        assert torch.equal(layer.keys, keys)


def _reference_module():
    try:
        from transformers.models.deprecated.mega import modeling_mega
    except ImportError:
        return None
    return modeling_mega


@pytest.mark.skipif(_reference_module() is None, reason="needs transformers 4.57's deprecated MEGA")
@pytest.mark.parametrize("bias", ["rotary", "simple"])
def test_steps_match_the_reference_where_it_is_right(bias: str) -> None:
    """Softmax without chunking is where the reference's cached decoding is correct."""
    reference_module = _reference_module()
    ours = build(relative_positional_bias=bias)
    reference = reference_module.MegaForCausalLM(_as_reference_config(ours.config, reference_module)).eval()
    reference.load_state_dict(ours.state_dict())
    tokens = torch.randint(3, VOCAB, (2, 9))
    with torch.no_grad():
        ref_out = reference(tokens[:, :5], use_cache=True)
        our_out = ours(tokens[:, :5], use_cache=True)
        ref_past, our_cache = ref_out.past_key_values, cache_of(our_out)
        for position in range(5, 9):
            ref_out = reference(tokens[:, position : position + 1], past_key_values=ref_past, use_cache=True)
            our_out = ours(tokens[:, position : position + 1], use_cache=True, **{CACHE_KEYWORD: our_cache})
            ref_past, our_cache = ref_out.past_key_values, cache_of(our_out)
            assert (ref_out.logits - our_out.logits).abs().max().item() <= 1e-5


def _as_reference_config(config: MegaConfig, reference_module: object):
    from transformers.models.deprecated.mega.configuration_mega import MegaConfig as ReferenceConfig

    return ReferenceConfig(**{k: v for k, v in config.to_dict().items() if k not in ("model_type", "architectures")})


def test_text_generation_pipeline(tmp_path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast, pipeline

    words = [f"w{i}" for i in range(VOCAB - 3)]
    vocabulary = {"<s>": 0, "<pad>": 1, "</s>": 2, **{word: i + 3 for i, word in enumerate(words)}}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocabulary, unk_token="<pad>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    backend.decoder = tokenizers.decoders.WordPiece()  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<pad>"
    )
    model = build(use_chunking=True, chunk_size=CHUNK)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    generator = pipeline("text-generation", model=str(tmp_path / "model"), tokenizer=str(tmp_path / "model"))
    result = generator("w1 w2 w3", max_new_tokens=5, do_sample=False, return_full_text=False)
    new_words = result[0]["generated_text"].split()
    assert len(new_words) == 5 and all(word in vocabulary for word in new_words)
    expected = model.generate(tokenizer("w1 w2 w3", return_tensors="pt").input_ids, max_new_tokens=5, do_sample=False)
    assert new_words == tokenizer.convert_ids_to_tokens(expected[0, 3:].tolist())
