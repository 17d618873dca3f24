"""``MegaCausalLM`` forward: padded and packed layouts, the CausalLM loss contract, meta init."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from fs2_helpers import build_model, require_fairseq2

require_fairseq2()
pytestmark = pytest.mark.fairseq2

TOLERANCE = 1e-5


def _doc(length: int, seed: int) -> torch.Tensor:
    return torch.randint(2, 100, (length,), generator=torch.Generator().manual_seed(seed))


def _alone(model: Any, doc: torch.Tensor) -> torch.Tensor:
    from fairseq2.nn import BatchLayout

    ids = doc[None]
    return model(ids, BatchLayout.of(ids))[0]


@torch.no_grad()
def test_padded_batch_equals_each_sequence_alone(tiny_config: Any) -> None:
    from fairseq2.nn import BatchLayout

    model = build_model(tiny_config)
    docs = [_doc(n, seed) for seed, n in enumerate((13, 5, 20))]
    batch = torch.full((3, 20), 1)
    for row, doc in enumerate(docs):
        batch[row, : len(doc)] = doc
    logits = model(batch, BatchLayout.of(batch, [len(d) for d in docs]))
    for row, doc in enumerate(docs):
        assert (logits[row, : len(doc)] - _alone(model, doc)).abs().max() <= TOLERANCE


@torch.no_grad()
@pytest.mark.parametrize("trailing_pad", [0, 3], ids=["exact", "trailing-pad"])
def test_packed_batch_equals_each_document_alone(tiny_config: Any, trailing_pad: int) -> None:
    from fairseq2.nn import BatchLayout

    model = build_model(tiny_config)
    docs = [_doc(n, 10 + seed) for seed, n in enumerate((11, 3, 17, 9))]
    seqs = torch.cat(docs + [torch.ones(trailing_pad, dtype=torch.long)])
    logits = model(seqs, BatchLayout.of(seqs, [len(d) for d in docs], packed=True))
    assert logits.shape == (seqs.shape[0], tiny_config.vocab_size)
    start = 0
    for doc in docs:
        assert (logits[start : start + len(doc)] - _alone(model, doc)).abs().max() <= TOLERANCE
        start += len(doc)


def test_loss_contract(tiny_config: Any) -> None:
    from fairseq2.nn import BatchLayout
    from fairseq2.nn.functional import cross_entropy

    model = build_model(tiny_config)
    seqs = torch.randint(2, 100, (2, 12))
    targets = torch.randint(2, 100, (2, 12))
    targets[1, 9:] = tiny_config.pad_idx
    layout = BatchLayout.of(seqs)
    logits = model(seqs, layout)
    loss_sum = model(seqs, layout, targets)
    loss_mean, logits_again = model(seqs, layout, targets, reduction="mean", return_logits=True)
    assert torch.equal(logits_again, logits)
    assert torch.allclose(loss_sum, cross_entropy(logits, targets, tiny_config.pad_idx, reduction="sum"))
    assert torch.allclose(loss_mean, cross_entropy(logits, targets, tiny_config.pad_idx, reduction="mean"))
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0, :4] = True
    masked = model(seqs, layout, targets, target_mask=mask)
    assert torch.allclose(masked, cross_entropy(logits[0, :4], targets[0, :4], tiny_config.pad_idx, reduction="sum"))
    smoothed = model(seqs, layout, targets, label_smoothing=0.1)
    assert smoothed.shape == () and not torch.allclose(smoothed, loss_sum)


def test_frontend_is_a_fairseq2_embedding_with_pad_idx(tiny_config: Any) -> None:
    from fairseq2.nn import Embedding

    model = build_model(tiny_config)
    embed = model.decoder_frontend.embed
    assert isinstance(embed, Embedding)
    assert embed.num_embeddings == tiny_config.vocab_size and embed.pad_idx == tiny_config.pad_idx
    assert model.final_proj.weight is embed.weight  # tied


def test_meta_construction_then_reset_gives_reference_init(tiny_config: Any) -> None:
    from fairseq2.nn.utils.module import reset_parameters, to_empty

    from mega_plugin.adapters.fairseq2.factory import create_mega_model

    with torch.device("meta"):
        model = create_mega_model(tiny_config)
    to_empty(model, torch.device("cpu"))
    reset_parameters(model)
    assert model.final_proj.weight is model.decoder_frontend.embed.weight
    embed = model.decoder_frontend.embed.weight
    assert torch.count_nonzero(embed[tiny_config.pad_idx]) == 0
    for name, parameter in model.named_parameters():
        assert torch.isfinite(parameter).all(), name
        if name.endswith(("v_proj.weight", "mx_proj.weight", "fc1.weight", "dense.weight")):
            assert abs(parameter.std().item() - tiny_config.initializer_range) < 0.01, name
        if name.endswith(("v_proj.bias", "final_proj.bias", "fc2.bias")):
            assert torch.count_nonzero(parameter) == 0, name
    for name, buffer in model.named_buffers():
        assert torch.isfinite(buffer).all(), name


def test_packed_input_refuses_state_bag(tiny_config: Any) -> None:
    from fairseq2.nn import BatchLayout, IncrementalStateBag

    model = build_model(tiny_config)
    seqs = torch.randint(2, 100, (10,))
    with pytest.raises(ValueError, match="packed"):
        model(seqs, BatchLayout.of(seqs, [4, 6], packed=True), state_bag=IncrementalStateBag(32))


@pytest.mark.parametrize("variant", ["tiny", "untied-layernorm-simple"])
def test_every_module_owning_tensors_can_reset_them(tiny_config: Any, variant: str) -> None:
    # fairseq2's meta-device and FSDP initialisation call reset_parameters() on each module
    # (and reset_non_persistent_buffers()); a module that owns tensors without it stays garbage.
    import dataclasses

    from fairseq2.nn.utils.module import ModuleWithNonPersistentBuffer, ModuleWithParameter

    from mega_plugin.adapters.fairseq2.factory import create_mega_model

    config = tiny_config
    if variant != "tiny":
        config = dataclasses.replace(
            tiny_config, tie_embeddings=False, normalization_type="layernorm", relative_positional_bias="simple",
            add_token_type_embeddings=True,
        )
    model = create_mega_model(config)
    for name, module in model.named_modules():
        own_parameters = list(module.parameters(recurse=False))
        own_buffers = dict(module.named_buffers(recurse=False))
        if own_parameters or own_buffers:
            assert isinstance(module, ModuleWithParameter), f"{name} ({type(module).__name__}) has no reset_parameters"
        non_persistent = set(own_buffers) & module._non_persistent_buffers_set
        if non_persistent:
            assert isinstance(module, ModuleWithNonPersistentBuffer), f"{name} lacks reset_non_persistent_buffers"


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(reduction="none"), "reduction must be one of sum, mean"),
        (dict(targets_len=11), "targets must have the shape of seqs"),
        (dict(mask_len=11), "target_mask must have the shape of seqs"),
    ],
    ids=["reduction", "targets-shape", "target-mask-shape"],
)
def test_bad_loss_arguments_are_named(tiny_config: Any, bad: dict[str, Any], message: str) -> None:
    from fairseq2.nn import BatchLayout

    model = build_model(tiny_config)
    seqs = torch.randint(2, 100, (2, 12))
    targets = torch.randint(2, 100, (2, bad.get("targets_len", 12)))
    mask = torch.ones(2, bad.get("mask_len", 12), dtype=torch.bool)
    with pytest.raises(ValueError, match=message):
        model(seqs, BatchLayout.of(seqs), targets, target_mask=mask, reduction=bad.get("reduction", "sum"))


@pytest.mark.parametrize(
    "field, value",
    [
        ("pad_idx", 100),
        ("pad_idx", -1),
        ("max_seq_len", 0),
        ("tie_embeddings", "yes"),
        ("normalization_type", "groupnorm"),
    ],
)
def test_bad_config_fields_are_named(tiny_config: Any, field: str, value: Any) -> None:
    import dataclasses

    from mega_plugin.adapters.fairseq2.factory import create_mega_model

    with pytest.raises(ValueError, match=field):
        create_mega_model(dataclasses.replace(tiny_config, **{field: value}))
