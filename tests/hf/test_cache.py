"""``MegaCache`` as a ``transformers.Cache`` on the running transformers (4.57 or 5.x).

Correctness bar: ``generate()`` continued from the cache a previous ``generate()`` returned gives
the tokens of one ``generate()`` over the whole length, which the 4.57 reference (uncached, a full
forward per token) gives too; a cropped cache continues with the logits of a full forward; the
cache's pytree leaves are exactly the core state's tensors and rebuild an equal cache.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import torch.utils._pytree as pytree  # noqa: E402
from transformers.cache_utils import Cache, CacheLayerMixin  # noqa: E402

import mega_plugin  # noqa: E402,F401  (registers the Auto classes)
from mega_plugin.adapters.hf import MegaCache, MegaForCausalLM  # noqa: E402
from mega_plugin.adapters.hf.cache import CROP_TAKES_A_LENGTH, MegaCacheLayer  # noqa: E402
from mega_plugin.adapters.hf.modeling_lm import CACHE_KEYWORD  # noqa: E402
from mega_hf_helpers import CAUSAL_VOCAB, tiny_causal_config  # noqa: E402
from mega_plugin.core.state import LAYER_STATE_FIELDS  # noqa: E402

CHUNK = 4
VOCAB = CAUSAL_VOCAB
TOLERANCE = 1e-4




def build(**overrides: object) -> MegaForCausalLM:
    torch.manual_seed(0)
    model = MegaForCausalLM(tiny_causal_config(**overrides)).eval()
    with torch.no_grad():  # move the qk bias off its trivial init
        for layer in model.mega.layers:
            layer.mega_layer.qk_bias.normal_(std=0.3)
    return model


def cache_of(output: object) -> MegaCache:
    return getattr(output, CACHE_KEYWORD)


def crop_to(cache: MegaCache, length: int) -> None:
    """Roll ``cache`` back to ``length`` tokens in this version's ``crop`` convention."""
    cache.crop(length if CROP_TAKES_A_LENGTH else length - cache.get_seq_length())


SETUPS = {
    "softmax-global": dict(use_chunking=False),
    "laplace-chunk4": dict(use_chunking=True, chunk_size=CHUNK, attention_activation="laplace"),
    "relu2-chunk4-simple": dict(
        use_chunking=True, chunk_size=CHUNK, attention_activation="relu2", relative_positional_bias="simple"
    ),
}


def test_is_a_transformers_cache_with_one_layer_per_model_layer() -> None:
    model = build(use_chunking=True, chunk_size=CHUNK)
    with torch.no_grad():
        cache = cache_of(model(torch.randint(3, VOCAB, (2, 6)), use_cache=True))
    assert isinstance(cache, Cache)
    assert len(cache.layers) == model.config.num_hidden_layers
    assert all(isinstance(layer, CacheLayerMixin) and isinstance(layer, MegaCacheLayer) for layer in cache.layers)
    assert cache.get_seq_length() == 6 and all(layer.get_seq_length() == 6 for layer in cache.layers)
    # chunk 4: the keys of the current chunk (positions 4, 5) are what each layer holds
    assert all(layer.keys.shape[:2] == (2, 2) for layer in cache.layers)
    assert not cache.is_compileable and not any(layer.is_sliding for layer in cache.layers)
    if hasattr(cache, "is_linear"):  # 5.x: a MEGA layer holds attention keys, not only a recurrent state
        assert not any(cache.is_linear)
    assert cache.get_mask_sizes(torch.arange(3), 0)[0] == 9 if CROP_TAKES_A_LENGTH else True


@pytest.mark.parametrize("setup", list(SETUPS), ids=list(SETUPS))
@pytest.mark.parametrize("num_beams", [1, 2], ids=["greedy", "beams2"])
def test_generate_continues_from_the_returned_cache(setup: str, num_beams: int) -> None:
    model = build(**SETUPS[setup])
    prompt = torch.randint(3, VOCAB, (2, 5))
    options = dict(do_sample=False, num_beams=num_beams)
    with torch.no_grad():
        whole = model.generate(prompt, max_new_tokens=11, **options)
        first = model.generate(prompt, max_new_tokens=5, return_dict_in_generate=True, **options)
        cache = cache_of(first)
        assert isinstance(cache, MegaCache) and cache.get_seq_length() == first.sequences.shape[1] - 1
        if num_beams > 1:
            return  # the beams' cache rows follow the beam search, not the returned sequences
        rest = model.generate(first.sequences, max_new_tokens=6, **options, **{CACHE_KEYWORD: cache})
    assert torch.equal(rest, whole)


@pytest.mark.reference
@pytest.mark.parametrize("bias", ["rotary", "simple"])
@pytest.mark.parametrize("attention", ["softmax", "laplace"])
def test_continued_generation_matches_the_reference(bias: str, attention: str) -> None:
    from transformers.models.deprecated.mega import modeling_mega
    from transformers.models.deprecated.mega.configuration_mega import MegaConfig as ReferenceConfig

    # no chunking: the reference's chunked forward needs lengths that are multiples of the chunk
    ours = build(use_chunking=False, relative_positional_bias=bias, attention_activation=attention)
    settings = {k: v for k, v in ours.config.to_dict().items() if k not in ("model_type", "architectures")}
    reference = modeling_mega.MegaForCausalLM(ReferenceConfig(**settings)).eval()
    reference.load_state_dict(ours.state_dict())
    prompt = torch.randint(3, VOCAB, (2, 5))
    with torch.no_grad():
        # greedy by a full reference forward per token (4.57's deprecated class has no generate())
        expected = prompt
        for _ in range(9):
            expected = torch.cat([expected, reference(expected).logits[:, -1:].argmax(-1)], dim=1)
        first = ours.generate(prompt, max_new_tokens=4, do_sample=False, return_dict_in_generate=True)
        rest = ours.generate(first.sequences, max_new_tokens=5, do_sample=False, **{CACHE_KEYWORD: cache_of(first)})
    assert torch.equal(rest, expected)


@pytest.mark.parametrize("setup", list(SETUPS), ids=list(SETUPS))
def test_crop_rolls_back_to_a_recorded_call(setup: str) -> None:
    model = build(**SETUPS[setup])
    tokens = torch.randint(3, VOCAB, (2, 12))
    with torch.no_grad():
        full = model(tokens).logits
        cache = cache_of(model(tokens[:, :5], use_cache=True))
        cache.activate_past_recording()
        assert cache.is_croppable
        for start, stop in ((5, 7), (7, 8), (8, 11)):
            cache = cache_of(model(tokens[:, start:stop], use_cache=True, **{CACHE_KEYWORD: cache}))
        crop_to(cache, 7)
        assert cache.get_seq_length() == 7
        out = model(tokens[:, 7:12], use_cache=True, **{CACHE_KEYWORD: cache})
    assert (out.logits - full[:, 7:12]).abs().max().item() <= TOLERANCE


def test_crop_to_an_unrecorded_position_names_the_recorded_ones() -> None:
    model = build(use_chunking=True, chunk_size=CHUNK)
    tokens = torch.randint(3, VOCAB, (1, 9))
    with torch.no_grad():
        cache = cache_of(model(tokens[:, :4], use_cache=True))
        with pytest.raises(ValueError, match=r"recorded: none.*activate_past_recording"):
            crop_to(cache, 2)
        cache.activate_past_recording()
        cache = cache_of(model(tokens[:, 4:9], use_cache=True, **{CACHE_KEYWORD: cache}))
    # a call on a recording cache runs token by token, so any position inside it can be returned to
    crop_to(cache, 6)
    assert cache.get_seq_length() == 6
    with torch.no_grad():
        continued = model(tokens[:, 6:9], use_cache=True, **{CACHE_KEYWORD: cache}).logits
        torch.testing.assert_close(continued, model(tokens).logits[:, 6:9], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"from 9 to 3 tokens.*recorded: 4"):
        crop_to(cache, 3)  # before recording began
    assert cache.get_seq_length() == 9  # a refused crop changes nothing
    if not CROP_TAKES_A_LENGTH:
        with pytest.raises(ValueError, match="negative integer"):
            cache.crop(3)


def test_reorder_cache_reorders_recorded_states_too() -> None:
    model = build(use_chunking=True, chunk_size=CHUNK)
    tokens = torch.randint(3, VOCAB, (3, 7))
    order = torch.tensor([2, 0, 1])
    with torch.no_grad():
        full = model(tokens[order]).logits
        cache = cache_of(model(tokens[:, :3], use_cache=True))
        cache.activate_past_recording()
        cache = cache_of(model(tokens[:, 3:5], use_cache=True, **{CACHE_KEYWORD: cache}))
        cache.reorder_cache(order)
        crop_to(cache, 3)
        out = model(tokens[order, 3:7], use_cache=True, **{CACHE_KEYWORD: cache})
    assert (out.logits - full[:, 3:7]).abs().max().item() <= TOLERANCE


def test_pytree_leaves_are_the_state_tensors_and_rebuild_the_cache() -> None:
    model = build(use_chunking=True, chunk_size=CHUNK)
    tokens = torch.randint(3, VOCAB, (2, 10))
    with torch.no_grad():
        full = model(tokens).logits
        cache = cache_of(model(tokens[:, :6], use_cache=True))
    leaves, spec = pytree.tree_flatten(cache)
    held = [getattr(layer, name) for layer in cache.state.layers for name in LAYER_STATE_FIELDS]
    held = [tensor for tensor in held if tensor is not None]  # absent fields are in the spec, not leaves
    assert len(leaves) == len(held) and all(a is b for a, b in zip(leaves, held))
    rebuilt = pytree.tree_unflatten([leaf.clone() for leaf in leaves], spec)
    assert isinstance(rebuilt, MegaCache) and rebuilt.get_seq_length() == 6 and len(rebuilt.layers) == 2
    for mine, theirs in zip(rebuilt.state.layers, cache.state.layers):
        for name in LAYER_STATE_FIELDS:
            a, b = getattr(mine, name), getattr(theirs, name)
            assert (a is None and b is None) or torch.equal(a, b), name
    with torch.no_grad():
        out = model(tokens[:, 6:], use_cache=True, **{CACHE_KEYWORD: rebuilt})
    assert (out.logits - full[:, 6:]).abs().max().item() <= TOLERANCE
    empty_leaves, empty_spec = pytree.tree_flatten(MegaCache())
    assert empty_leaves == [] and pytree.tree_unflatten([], empty_spec).get_seq_length() == 0


def test_recording_widens_and_reports_what_it_keeps() -> None:
    cache = MegaCache()
    assert not cache.is_recording_past() and cache.get_recurrent_states_to_keep() == 0
    cache.activate_past_recording(recurrent_states_to_keep=2)
    cache.activate_past_recording(recurrent_states_to_keep=1)  # 5.x asks for 1 more: keeps 2
    assert cache.is_recording_past() and cache.get_recurrent_states_to_keep() == 2
    cache.activate_past_recording()  # all
    cache.activate_past_recording(recurrent_states_to_keep=1)
    assert cache.keep is None and cache.get_recurrent_states_to_keep() == 0
    cache.stop_past_recording()
    assert not cache.is_croppable and cache.get_recurrent_states_to_keep() == 0


def test_generate_fills_a_cache_passed_in() -> None:
    model = build(use_chunking=True, chunk_size=CHUNK)
    prompt = torch.randint(3, VOCAB, (2, 5))
    mine = MegaCache()
    with torch.no_grad():
        expected = model.generate(prompt, max_new_tokens=6, do_sample=False)
        got = model.generate(prompt, max_new_tokens=6, do_sample=False, **{CACHE_KEYWORD: mine})
    assert torch.equal(got, expected)
    assert mine.get_seq_length() == got.shape[1] - 1 and len(mine.layers) == 2
