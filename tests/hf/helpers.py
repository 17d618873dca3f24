"""Shared pieces of the Hugging Face adapter tests (``tests/hf``).

Imported by the test modules as ``mega_hf_helpers`` (``tests/hf/conftest.py`` registers it
under that name, so it never collides with another test folder's ``helpers``) and by
``make_reference_checkpoints.py`` (which runs in the transformers 4.57 environment).

Nothing here imports pytest or the reference at import time: the module works in both
environments, with and without the deprecated MEGA of transformers 4.57.
"""

from __future__ import annotations

import dataclasses
import importlib
import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor, nn

REFERENCE_PACKAGE = "transformers.models.deprecated.mega"

# Every tiny model of these tests: hidden 16, 2 layers, values 24, z 8, EMA 4, NFFN 20, vocab 60.
TINY: Mapping[str, Any] = {
    "vocab_size": 60,
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "intermediate_size": 24,
    "shared_representation_size": 8,
    "ema_projection_size": 4,
    "nffn_hidden_size": 20,
    "max_positions": 32,
    "type_vocab_size": 2,
    # Larger than the default 0.02 so that activations (and their differences) are not tiny.
    "initializer_range": 0.1,
    # Non-zero dropouts: eval mode must switch every one of them off.
    "dropout_prob": 0.1,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "nffn_activation_dropout_prob": 0.1,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}

NO_DROPOUT: Mapping[str, Any] = {
    "dropout_prob": 0.0,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "nffn_activation_dropout_prob": 0.0,
    "classifier_dropout": 0.0,
}

CHUNK = 8
BATCH = 3
NUM_CHOICES = 2
NUM_CLASSES = 3
TOLERANCE = 1e-5


# --------------------------------------------------------------------------------------
# Configurations: a covering design over every MegaConfig option
# --------------------------------------------------------------------------------------

ATTENTIONS = ("softmax", "laplace", "relu2")
BIASES = ("rotary", "simple")
CHUNKINGS = ("chunk8", "nochunk")
# causal: is_decoder + causal EMA; bidir: encoder with a bidirectional EMA;
# unidir: encoder (non-causal attention) with a causal EMA.
MODES = ("causal", "bidir", "unidir")
NORMS = ("scalenorm", "layernorm", "batchnorm")
ACTIVATIONS = ("silu", "relu", "linear", "gelu", "gelu_accurate")

# Secondary options: each gets a balanced, independently shuffled assignment over the grid.
SECONDARY: Mapping[str, tuple[Any, ...]] = {
    "normalization_type": NORMS,
    "activation": ACTIVATIONS,
    "norm_affine": (True, False),
    "normalize_before_mega": (True, False),
    "normalize_before_ffn": (True, False),
    "use_normalized_ffn": (True, False),
    "truncation": (None, 5),
    "add_token_type_embeddings": (False, True),
    "add_lm_hidden_dense_layer": (True, False),
    "ema_projection_size": (4, 1),
    "use_feature_dropout": (False, True),
}


@dataclass(frozen=True)
class Case:
    """One configuration of the parity grid."""

    attention: str
    bias: str
    chunking: str
    mode: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def causal(self) -> bool:
        return self.mode == "causal"

    @property
    def chunked(self) -> bool:
        return self.chunking == "chunk8"

    @property
    def length(self) -> int:
        # Chunked: a multiple of the chunk (the reference needs it). Otherwise not a multiple of 8.
        return 16 if self.chunked else 20

    @property
    def id(self) -> str:
        return "-".join((self.attention, self.bias, self.chunking, self.mode, self.options["normalization_type"]))

    def config_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """MegaConfig keyword arguments (valid for both our config and the reference's)."""
        kwargs = dict(TINY)
        kwargs.update(
            attention_activation=self.attention,
            relative_positional_bias=self.bias,
            use_chunking=self.chunked,
            chunk_size=CHUNK if self.chunked else -1,
            is_decoder=self.causal,
            bidirectional=self.mode == "bidir",
        )
        kwargs.update(self.options)
        kwargs.update(overrides)
        return kwargs


def _balanced(values: tuple[Any, ...], count: int, rng: random.Random) -> list[Any]:
    assignment = [values[i % len(values)] for i in range(count)]
    rng.shuffle(assignment)
    return assignment


def parity_grid() -> list[Case]:
    """18 configurations: every (attention, mode, bias) triple; chunking alternates so that every
    pair of attention x bias x chunking x mode values occurs; the secondary options are spread
    evenly and independently (each value occurs at least 3 times, with varied partners)."""
    primary = []
    for a, attention in enumerate(ATTENTIONS):
        for m, mode in enumerate(MODES):
            for b, bias in enumerate(BIASES):
                chunking = CHUNKINGS[(a + m + b) % 2]
                primary.append((attention, bias, chunking, mode))
    rng = random.Random(20240917)
    columns = {name: _balanced(values, len(primary), rng) for name, values in SECONDARY.items()}
    return [
        Case(*row, options={name: column[i] for name, column in columns.items()})
        for i, row in enumerate(primary)
    ]


# --------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """A model class plus the config and inputs it is exercised with."""

    id: str
    class_name: str
    auto_name: str
    config_extra: Mapping[str, Any] = field(default_factory=dict)
    per_token: tuple[str, ...] = ()
    """Output fields with a sequence axis (compared at valid positions only)."""
    per_sequence: tuple[str, ...] = ()
    """Output fields compared in full."""


HEADS: tuple[Head, ...] = (
    Head("Model", "MegaModel", "AutoModel", per_token=("last_hidden_state",), per_sequence=("pooler_output",)),
    Head("CausalLM", "MegaForCausalLM", "AutoModelForCausalLM", per_token=("logits",), per_sequence=("loss",)),
    Head("MaskedLM", "MegaForMaskedLM", "AutoModelForMaskedLM", per_token=("logits",), per_sequence=("loss",)),
    Head(
        "SeqClsRegression",
        "MegaForSequenceClassification",
        "AutoModelForSequenceClassification",
        {"num_labels": 1, "problem_type": "regression"},
        per_sequence=("loss", "logits"),
    ),
    Head(
        "SeqClsSingleLabel",
        "MegaForSequenceClassification",
        "AutoModelForSequenceClassification",
        {"num_labels": NUM_CLASSES, "problem_type": "single_label_classification"},
        per_sequence=("loss", "logits"),
    ),
    Head(
        "SeqClsMultiLabel",
        "MegaForSequenceClassification",
        "AutoModelForSequenceClassification",
        {"num_labels": NUM_CLASSES, "problem_type": "multi_label_classification"},
        per_sequence=("loss", "logits"),
    ),
    Head("MultipleChoice", "MegaForMultipleChoice", "AutoModelForMultipleChoice", per_sequence=("loss", "logits")),
    Head(
        "TokenClassification",
        "MegaForTokenClassification",
        "AutoModelForTokenClassification",
        {"num_labels": NUM_CLASSES},
        per_token=("logits",),
        per_sequence=("loss",),
    ),
    Head(
        "QuestionAnswering",
        "MegaForQuestionAnswering",
        "AutoModelForQuestionAnswering",
        {"num_labels": 2},
        per_token=("start_logits", "end_logits"),
        # The QA loss is a softmax over *all* positions, padding included, and padded positions are
        # don't-care (they differ between implementations); its loss is compared on an unpadded batch.
    ),
)
HEADS_BY_ID = {head.id: head for head in HEADS}


# --------------------------------------------------------------------------------------
# Building models
# --------------------------------------------------------------------------------------


def reference_modules() -> tuple[Any, Any]:
    """(modeling, configuration) modules of the transformers 4.57 deprecated MEGA."""
    modeling = importlib.import_module(f"{REFERENCE_PACKAGE}.modeling_mega")
    configuration = importlib.import_module(f"{REFERENCE_PACKAGE}.configuration_mega")
    return modeling, configuration


def reference_config(kwargs: Mapping[str, Any]) -> Any:
    _, configuration = reference_modules()
    return configuration.MegaConfig(**kwargs)


def our_config(kwargs: Mapping[str, Any]) -> Any:
    from mega_plugin.adapters.hf import MegaConfig

    return MegaConfig(**kwargs)


def head_kwargs(head: Head, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(kwargs)
    merged.update(head.config_extra)
    return merged


@torch.no_grad()
def randomize_(model: nn.Module, seed: int) -> nn.Module:
    """Perturb what the reference initialisation leaves trivial (zero biases, qk_bias, unit norms,
    batch-norm statistics) so that parity covers them. Works on both implementations: it goes by
    checkpoint names, which are the same."""
    generator = torch.Generator().manual_seed(seed)

    def normal(tensor: Tensor, std: float, mean: float = 0.0) -> None:
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * std + mean)

    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        leaf = name.rsplit(".", 1)[-1]
        in_norm = ".norm.norm." in name or name.startswith("norm.norm.")
        if leaf == "qk_bias":
            normal(tensor, 0.2)
        elif in_norm and leaf in ("weight", "scalar"):
            normal(tensor, 0.2, mean=1.0)
        elif in_norm and leaf == "bias":
            normal(tensor, 0.1)
        elif leaf == "running_mean":
            normal(tensor, 0.2)
        elif leaf == "running_var":
            tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
        elif leaf == "num_batches_tracked":
            tensor.fill_(7)
        elif leaf == "bias" and tensor.is_floating_point():
            normal(tensor, 0.1)
    return model


def build_reference(head: Head, kwargs: Mapping[str, Any], seed: int = 0) -> nn.Module:
    """The reference head with seeded random weights, in eval mode."""
    modeling, _ = reference_modules()
    torch.manual_seed(seed)
    model = getattr(modeling, head.class_name)(reference_config(head_kwargs(head, kwargs)))
    randomize_(model, seed)
    return model.eval()


def build_ours(head: Head, kwargs: Mapping[str, Any], seed: int = 0) -> nn.Module:
    import mega_plugin.adapters.hf as hf

    torch.manual_seed(seed)
    model = getattr(hf, head.class_name)(our_config(head_kwargs(head, kwargs)))
    randomize_(model, seed)
    return model.eval()


def load_strict(target: nn.Module, source: nn.Module) -> None:
    """``target.load_state_dict(source.state_dict(), strict=True)`` and assert no key is off."""
    result = target.load_state_dict(source.state_dict(), strict=True)
    assert list(result.missing_keys) == [] and list(result.unexpected_keys) == [], result


def ours_from_reference(head: Head, reference: nn.Module, kwargs: Mapping[str, Any]) -> nn.Module:
    ours = build_ours(head, kwargs, seed=12345)  # different weights, then overwritten
    load_strict(ours, reference)
    return ours.train(reference.training)


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


@dataclass
class Batch:
    """Forward keyword arguments plus the (B, L) bool mask of real tokens."""

    kwargs: dict[str, Any]
    valid: Tensor
    """(B, L) for most heads, (B, C, L) for multiple choice."""

    def flat_valid(self) -> Tensor:
        return self.valid.reshape(-1, self.valid.shape[-1])

    def without(self, *names: str) -> dict[str, Any]:
        return {k: v for k, v in self.kwargs.items() if k not in names}


def make_batch(
    head: Head,
    kwargs: Mapping[str, Any],
    *,
    length: int,
    padded: bool = True,
    seed: int = 1,
    batch: int = BATCH,
) -> Batch:
    """A right-padded batch (rows of length L, L - 3, L - 11 when ``padded``) with labels."""
    generator = torch.Generator().manual_seed(seed)
    vocab = kwargs["vocab_size"]
    pad = kwargs["pad_token_id"]
    lead = (batch, NUM_CHOICES) if head.id == "MultipleChoice" else (batch,)
    shape = lead + (length,)
    lengths = torch.full(lead, length)
    if padded:
        cuts = torch.tensor([0, 3, 11][:batch] + [5] * max(0, batch - 3))
        lengths = (length - cuts.clamp(max=length - 1)).view(batch, *([1] * (len(lead) - 1))).expand(lead).clone()
        if head.id == "MultipleChoice":
            lengths[:, 1] = (lengths[:, 1] - 2).clamp(min=1)
    positions = torch.arange(length)
    valid = positions < lengths.unsqueeze(-1)
    input_ids = torch.randint(3, vocab, shape, generator=generator)
    input_ids.view(-1, length)[0, 0] = kwargs["bos_token_id"]  # a bos somewhere
    input_ids = input_ids.masked_fill(~valid, pad)
    forward: dict[str, Any] = {"input_ids": input_ids, "attention_mask": valid.long()}
    if kwargs.get("add_token_type_embeddings"):
        types = torch.randint(0, kwargs["type_vocab_size"], shape, generator=generator)
        forward["token_type_ids"] = types.masked_fill(~valid, 0)
    ignore = torch.full(shape, -100)
    if head.id == "CausalLM":
        forward["labels"] = torch.where(valid, input_ids, ignore)
    elif head.id == "MaskedLM":
        labels = torch.randint(0, vocab, shape, generator=generator)
        keep = valid & (torch.rand(shape, generator=generator) < 0.6)
        forward["labels"] = torch.where(keep, labels, ignore)
    elif head.id == "SeqClsRegression":
        forward["labels"] = torch.randn(batch, generator=generator)
    elif head.id == "SeqClsSingleLabel":
        forward["labels"] = torch.randint(0, NUM_CLASSES, (batch,), generator=generator)
    elif head.id == "SeqClsMultiLabel":
        forward["labels"] = torch.randint(0, 2, (batch, NUM_CLASSES), generator=generator).float()
    elif head.id == "MultipleChoice":
        forward["labels"] = torch.randint(0, NUM_CHOICES, (batch,), generator=generator)
    elif head.id == "TokenClassification":
        labels = torch.randint(0, NUM_CLASSES, shape, generator=generator)
        forward["labels"] = torch.where(valid, labels, ignore)
    elif head.id == "QuestionAnswering":
        start = (torch.rand(batch, generator=generator) * lengths.float()).long()
        end = torch.minimum(start + 2, lengths - 1)
        forward["start_positions"] = start
        forward["end_positions"] = end
    return Batch(forward, valid)


# --------------------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------------------


def max_diff(a: Tensor, b: Tensor) -> float:
    assert a.shape == b.shape, (tuple(a.shape), tuple(b.shape))
    if a.numel() == 0:
        return 0.0
    return (a.detach().double() - b.detach().double()).abs().max().item()


def assert_close(actual: Tensor, expected: Tensor, what: str, tolerance: float = TOLERANCE) -> None:
    assert torch.isfinite(actual).all(), f"{what}: non-finite values in ours"
    diff = max_diff(actual, expected)
    assert diff <= tolerance, f"{what}: max abs diff {diff:.3g} > {tolerance:g}"


def valid_query_rows(attentions: Tensor, valid: Tensor) -> Tensor:
    """(B, C, Lq, Lk) attention weights -> which (B, C, Lq) rows belong to real tokens."""
    batch, chunks, query_length, _ = attentions.shape
    if chunks * query_length != valid.shape[-1]:
        raise AssertionError(f"attention shape {tuple(attentions.shape)} does not tile length {valid.shape[-1]}")
    return valid.view(batch, chunks, query_length)


def compare_hidden_states(ours: Iterable[Tensor], reference: Iterable[Tensor], valid: Tensor) -> int:
    ours, reference = tuple(ours), tuple(reference)
    assert len(ours) == len(reference), (len(ours), len(reference))
    for index, (a, b) in enumerate(zip(ours, reference)):
        assert_close(a[valid], b[valid], f"hidden_states[{index}]")
    return len(ours)


def compare_attentions(ours: Iterable[Tensor], reference: Iterable[Tensor], valid: Tensor) -> int:
    ours, reference = tuple(ours), tuple(reference)
    assert len(ours) == len(reference), (len(ours), len(reference))
    for index, (a, b) in enumerate(zip(ours, reference)):
        assert a.shape == b.shape, f"attentions[{index}]: shape {tuple(a.shape)} != {tuple(b.shape)}"
        rows = valid_query_rows(a, valid)
        assert_close(a[rows], b[rows], f"attentions[{index}]")
    return len(ours)


def compare_head_outputs(head: Head, ours: Any, reference: Any, batch: Batch) -> None:
    valid = batch.flat_valid() if head.id == "MultipleChoice" else batch.valid
    for name in head.per_token:
        a, b = getattr(ours, name), getattr(reference, name)
        assert_close(a[valid], b[valid], f"{head.id}.{name}")
    for name in head.per_sequence:
        a, b = getattr(ours, name), getattr(reference, name)
        assert a is not None and b is not None, f"{head.id}.{name} missing"
        assert_close(a, b, f"{head.id}.{name}")


def weighted_scalar(tensors: Iterable[Tensor], masks: Iterable[Tensor | None], seed: int = 7) -> Tensor:
    """sum_i sum(t_i[mask_i] * w_i) with fixed random weights w_i: a loss touching every output."""
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros(())
    for tensor, mask in zip(tensors, masks):
        selected = tensor if mask is None else tensor[mask]
        # Normalised like a mean so that gradients are O(1) whatever the output size.
        weights = torch.randn(selected.shape, generator=generator) / max(1, selected.numel()) ** 0.5
        total = total + (selected * weights).sum()
    return total


def describe_grid(cases: Iterable[Case]) -> dict[str, dict[Any, int]]:
    """How often each option value occurs in ``cases`` (used to assert coverage)."""
    counts: dict[str, dict[Any, int]] = {}
    for case in cases:
        for name, value in list(dataclasses.asdict(case).items()) + list(case.options.items()):
            if name == "options":
                continue
            counts.setdefault(name, {}).setdefault(value, 0)
            counts[name][value] += 1
    return counts


CAUSAL_VOCAB = 40
"""Vocabulary of :func:`tiny_causal_config` (generation and cache tests)."""


def right_padded_batch(*, length: int, real: int, seed: int, vocab: int = 60) -> dict[str, Tensor]:
    """Two rows of ids in [3, vocab) (seeded) and their 0/1 ``attention_mask``; the second row is
    padding after its first ``real`` tokens."""
    ids = torch.randint(3, vocab, (2, length), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    mask[1, real:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def tiny_causal_config(**overrides: object) -> Any:
    """A tiny causal-LM MegaConfig (hidden 16, 2 layers, vocabulary 40, no EOS) with ``overrides``."""
    from mega_plugin.adapters.hf import MegaConfig

    values: dict[str, object] = dict(
        vocab_size=CAUSAL_VOCAB,
        hidden_size=16,
        num_hidden_layers=2,
        intermediate_size=24,
        ema_projection_size=4,
        shared_representation_size=8,
        nffn_hidden_size=20,
        max_positions=64,
        is_decoder=True,
        bidirectional=False,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=None,
    )
    values.update(overrides)
    return MegaConfig(**values)
