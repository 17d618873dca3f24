"""The original LRA heads in HF: ``classifier_style='lra'`` (pooling, pair input, MLP, bias-free
projection), real-number input (``input_values`` / ``MegaForImageClassification``) and the final norm.

Parity with the ORIGINAL code is in tests/converters/test_original_lra.py (fixtures of the original
LRA models); here the option space is covered with tiny configs against the head's written formula
(the original's ``act(dropout(linear(x)))`` layers, ``[pooled second, pooled first]`` pairs, mean over
real tokens) and against padding-free runs, plus training, saving, Auto classes, the pipeline and
the validation errors.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

import mega_plugin  # noqa: E402,F401  (registers MEGA with the Auto classes)
from mega_hf_helpers import TINY  # noqa: E402
from mega_plugin.adapters.hf import MegaConfig, MegaForImageClassification, MegaForSequenceClassification  # noqa: E402

pytestmark = pytest.mark.hf

ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "tanh": torch.tanh, "silu": F.silu}


def lra_config(**overrides: Any) -> MegaConfig:
    values: dict[str, Any] = dict(TINY, classifier_style="lra", classifier_pooling="mean", num_labels=3)
    values.update(overrides)
    return MegaConfig(**values)


def padded_batch(lengths: tuple[int, ...], total: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, TINY["vocab_size"], (len(lengths), total), generator=generator)
    mask = (torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids.masked_fill(mask == 0, 1), mask


def expected_logits(model: MegaForSequenceClassification, hidden: torch.Tensor, mask: torch.Tensor, pair: Any = None) -> torch.Tensor:
    """The original LRA head, written out: pool, [second, first], act(W x + b) per layer, W_out x."""
    config = model.config

    def pool(states: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        if config.classifier_pooling == "first":
            return states[:, 0]
        keep = keep.to(states.dtype)
        return (states * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)

    x = pool(hidden, mask)
    if pair is not None:
        x = torch.cat([pool(*pair), x], dim=-1)
    for layer in model.classifier.layers:
        x = ACTIVATIONS[config.classifier_activation](x @ layer.weight.T + layer.bias)
    return x @ model.classifier.out_proj.weight.T


OPTIONS = list(itertools.product(("first", "mean"), (0, 1, 2), ("gelu", "tanh"), (False, True)))


@pytest.mark.parametrize("pooling,layers,activation,dual", OPTIONS)
def test_lra_head_is_the_original_formula(pooling: str, layers: int, activation: str, dual: bool) -> None:
    config = lra_config(
        classifier_pooling=pooling, classifier_layers=layers, classifier_activation=activation,
        classifier_dual_input=dual, classifier_hidden_size=12, use_chunking=True, chunk_size=4,
    )
    model = MegaForSequenceClassification(config).eval()
    ids, mask = padded_batch((9, 6, 3), 9)
    pair_ids, pair_mask = padded_batch((5, 9, 7), 9, seed=1)
    pair_kwargs = dict(pair_input_ids=pair_ids, pair_attention_mask=pair_mask) if dual else {}
    with torch.no_grad():
        logits = model(ids, attention_mask=mask, **pair_kwargs).logits
        hidden = model.mega(ids, attention_mask=mask).last_hidden_state
        pair = (model.mega(pair_ids, attention_mask=pair_mask).last_hidden_state, pair_mask) if dual else None
    assert logits.shape == (3, 3)
    assert model.classifier.out_proj.bias is None and len(model.classifier.layers) == layers
    torch.testing.assert_close(logits, expected_logits(model, hidden, mask, pair))


@pytest.mark.parametrize("chunked", (False, True))
@pytest.mark.parametrize("norm", ("scalenorm", "batchnorm"))
def test_mean_pooling_ignores_padding(chunked: bool, norm: str) -> None:
    config = lra_config(use_chunking=chunked, chunk_size=4 if chunked else -1, normalization_type=norm,
                        normalize_before_mega=True, normalize_before_ffn=True, add_final_norm=True)
    model = MegaForSequenceClassification(config).eval()
    ids, mask = padded_batch((10, 7, 5), 10)
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits
        alone = torch.cat([model(ids[i : i + 1, :n]).logits for i, n in enumerate((10, 7, 5))])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_real_number_models_embed_x_times_weight_plus_bias() -> None:
    config = lra_config(input_type="real_numbers", normalization_type="batchnorm", add_final_norm=True, pad_token_id=None)
    image = MegaForImageClassification(config).eval()
    sequence = MegaForSequenceClassification(config).eval()
    sequence.load_state_dict(image.state_dict())  # one layout, both classes
    pixels = torch.randn(2, 1, 3, 5)
    table = image.mega.embedding_layer.real_number_embeddings
    with torch.no_grad():
        by_image = image(pixel_values=pixels).logits
        by_values = sequence(input_values=pixels.flatten(1)).logits
        by_embeds = sequence(inputs_embeds=pixels.flatten(1)[..., None] * table.weight + table.bias).logits
    torch.testing.assert_close(by_image, by_values)
    torch.testing.assert_close(by_values, by_embeds)
    assert image.get_input_embeddings() is table


def test_batchnorm_running_statistics_are_used_in_eval_and_updated_in_training() -> None:
    config = lra_config(normalization_type="batchnorm", normalize_before_mega=True, normalize_before_ffn=True,
                        add_final_norm=True, input_type="real_numbers", pad_token_id=None)
    model = MegaForImageClassification(config).eval()
    pixels = torch.randn(4, 12)
    before = model(pixel_values=pixels).logits.detach()
    stats = model.mega.final_norm.norm.running_mean
    with torch.no_grad():
        stats.add_(0.5)
    assert not torch.allclose(model(pixel_values=pixels).logits, before)  # eval reads the running mean
    model.train()
    model(pixel_values=pixels)
    assert int(model.mega.final_norm.norm.num_batches_tracked) == 1


@pytest.mark.parametrize("kind", ("tokens", "real_numbers", "pair"))
def test_a_training_step_reaches_every_parameter(kind: str) -> None:
    real = kind == "real_numbers"
    config = lra_config(input_type="real_numbers" if real else "tokens", pad_token_id=None if real else 1,
                        classifier_dual_input=kind == "pair", normalization_type="batchnorm" if real else "layernorm",
                        add_final_norm=real, normalize_before_mega=real, normalize_before_ffn=real)
    model = (MegaForImageClassification if real else MegaForSequenceClassification)(config).train()
    labels = torch.tensor([0, 2, 1])
    if real:
        inputs = dict(pixel_values=torch.randn(3, 1, 2, 4))
    else:
        ids, mask = padded_batch((8, 5, 6), 8)
        inputs = dict(input_ids=ids, attention_mask=mask)
        if kind == "pair":
            inputs.update(pair_input_ids=ids.flip(0), pair_attention_mask=mask.flip(0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(**inputs, labels=labels).loss
    loss.backward()
    skipped = {"mega.embedding_layer.word_embeddings.weight"}  # only the rows of the ids used get gradient
    missing = [n for n, p in model.named_parameters() if p.grad is None or (n not in skipped and not p.grad.any())]
    assert not missing, missing
    optimizer.step()
    assert model(**inputs, labels=labels).loss < loss


def test_save_load_and_auto_classes(tmp_path: Path) -> None:
    config = lra_config(classifier_layers=2, classifier_activation="relu", classifier_hidden_size=10,
                        classifier_dual_input=True)
    model = MegaForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path / "pair")
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "pair").eval()
    assert type(loaded) is MegaForSequenceClassification and loaded.config.classifier_hidden_size == 10
    ids, mask = padded_batch((6, 4), 6)
    kwargs = dict(attention_mask=mask, pair_input_ids=ids.flip(0), pair_attention_mask=mask.flip(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, **kwargs).logits, model(ids, **kwargs).logits)
    image_config = lra_config(input_type="real_numbers", pad_token_id=None)
    MegaForImageClassification(image_config).save_pretrained(tmp_path / "image")
    image = transformers.AutoModelForImageClassification.from_pretrained(tmp_path / "image")
    assert type(image) is MegaForImageClassification
    from mega_plugin.core.config import MegaCoreConfig
    from mega_plugin.formats.hf import hf_config_dict

    written = hf_config_dict(MegaCoreConfig(), architectures=["MegaModel"])  # what converters write
    for field in ("input_type", "classifier_style", "classifier_pooling", "classifier_dual_input", "add_final_norm"):
        assert field not in written  # at their defaults: the reference's config.json layout


def test_text_classification_pipeline_runs_the_lra_head(tmp_path: Path) -> None:
    from _support.tiny_tokenizer import vocab_size, write_tiny_tokenizer

    write_tiny_tokenizer(tmp_path)
    config = lra_config(vocab_size=vocab_size(), max_positions=128, num_labels=2)
    MegaForSequenceClassification(config).save_pretrained(tmp_path)
    classify = transformers.pipeline("text-classification", model=str(tmp_path), tokenizer=str(tmp_path))
    results = classify(["the cat", "a much longer sentence about the cat"])
    assert [set(r) for r in results] == [{"label", "score"}] * 2
    model = classify.model.eval()
    encoded = classify.tokenizer(["the cat", "a much longer sentence about the cat"], padding=True, return_tensors="pt")
    with torch.no_grad():
        probabilities = model(**encoded).logits.softmax(-1).max(-1).values
    torch.testing.assert_close(torch.tensor([r["score"] for r in results]), probabilities, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "field,value,allowed",
    [
        ("classifier_style", "mlp", "hf, lra"),
        ("classifier_pooling", "max", "first, mean"),
        ("classifier_activation", "swish", "silu, relu"),
        ("input_type", "pixels", "tokens, real_numbers"),
        ("classifier_layers", -1, "non-negative integer"),
        ("classifier_hidden_size", 0, "positive integer"),
        ("classifier_dual_input", "yes", "true or false"),
    ],
)
def test_bad_fields_are_named_with_their_allowed_values(field: str, value: Any, allowed: str) -> None:
    with pytest.raises(ValueError, match=field) as error:
        lra_config(**{field: value}).to_core()
    assert allowed in str(error.value)


def test_misuse_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="needs classifier_style='lra'"):
        MegaConfig(**TINY, classifier_pooling="mean").to_core()
    with pytest.raises(ValueError, match="input_type='real_numbers'"):
        MegaForImageClassification(lra_config())
    pair_model = MegaForSequenceClassification(lra_config(classifier_dual_input=True))
    ids, mask = padded_batch((4,), 4)
    with pytest.raises(ValueError, match="pair_input_ids"):
        pair_model(ids, attention_mask=mask)
    with pytest.raises(ValueError, match="one sequence"):
        MegaForSequenceClassification(lra_config())(ids, pair_input_ids=ids)
    with pytest.raises(ValueError, match="input_values"):
        MegaForSequenceClassification(lra_config())(ids, input_values=torch.randn(1, 4))
    image = MegaForImageClassification(lra_config(input_type="real_numbers", pad_token_id=None))
    with pytest.raises(ValueError, match="channels"):
        image(pixel_values=torch.randn(1, 3, 2, 2))
    with pytest.raises(TypeError, match="floating-point"):
        image.mega(input_values=torch.ones(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="not input_ids"):
        image.mega(input_ids=ids)


def test_language_model_heads_refuse_real_number_input() -> None:
    from mega_plugin.adapters.hf import MegaForCausalLM, MegaForMaskedLM, MegaForTokenClassification

    config = lra_config(input_type="real_numbers", pad_token_id=None)
    for head in (MegaForCausalLM, MegaForMaskedLM):
        with pytest.raises(ValueError, match="needs input_type='tokens'"):
            head(config)
    tokens = MegaForTokenClassification(config).eval()  # per-position labels of real-number sequences work
    assert tokens(input_values=torch.randn(2, 5)).logits.shape == (2, 5, 3)


def test_embedding_dropout_drops_in_training_only() -> None:
    config = lra_config(embedding_dropout_prob=0.5)
    model = MegaForSequenceClassification(config)
    ids, _ = padded_batch((8, 8), 8)
    layer = model.mega.embedding_layer
    table_rows = layer.word_embeddings(ids)
    with torch.no_grad():
        torch.testing.assert_close(layer.eval()(ids), table_rows)  # eval: the rows as they are
        dropped = layer.train()(ids)
    kept = dropped != 0
    assert 0.3 < kept.float().mean() < 0.7  # about half the entries dropped ...
    torch.testing.assert_close(dropped[kept], 2 * table_rows[kept])  # ... the rest scaled by 1 / (1 - p)
    with pytest.raises(ValueError, match="embedding_dropout_prob must be a probability"):
        lra_config(embedding_dropout_prob=1.5).to_core()


@pytest.mark.parametrize("norm", ("layernorm", "scalenorm", "batchnorm"))
def test_normalize_embeddings_normalises_the_rows_before_the_first_layer(norm: str) -> None:
    config = lra_config(normalize_embeddings=True, normalization_type=norm)
    model = MegaForSequenceClassification(config).eval()
    layer = model.mega.embedding_layer
    ids, _ = padded_batch((6, 6), 6)
    rows = layer.word_embeddings(ids)  # (B, L, D)
    with torch.no_grad():
        if norm == "layernorm":
            expected = F.layer_norm(rows, (rows.shape[-1],), layer.embedding_norm.norm.weight, layer.embedding_norm.norm.bias)
        elif norm == "scalenorm":
            expected = layer.embedding_norm.norm.scalar * rows / rows.pow(2).mean(-1, keepdim=True).add(1e-5).sqrt()
        else:
            bn = layer.embedding_norm.norm
            expected = (rows - bn.running_mean) / (bn.running_var + 1e-5).sqrt() * bn.weight + bn.bias
        torch.testing.assert_close(layer(ids), expected)
    assert "mega.embedding_layer.embedding_norm.norm." + ("weight" if norm != "scalenorm" else "scalar") in model.state_dict()
