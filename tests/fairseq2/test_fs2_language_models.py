"""fairseq2's ``MegaCausalLM`` with the original LMs' options: final norm, adaptive input, adaptive softmax.

The HF ``MegaForCausalLM`` of the same weights is the comparison (itself checked against the
original code in tests/converters/test_original_lm.py, where the fairseq2 model is compared with
the original directly): log-probs, the loss, incremental decoding, export back to HF, the
``wikitext103`` / ``enwik8`` archs, and ``load_model`` of a converted original checkpoint by its
card in a fresh process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from fs2_helpers import require_fairseq2

require_fairseq2()
pytestmark = pytest.mark.fairseq2

TOLERANCE = 1e-5
BASE = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, intermediate_size=24, shared_representation_size=8,
            ema_projection_size=4, nffn_hidden_size=20, max_positions=32, bidirectional=False, is_decoder=True,
            dropout_prob=0.0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            nffn_activation_dropout_prob=0.0, add_lm_hidden_dense_layer=False, tie_word_embeddings=False)
VARIANTS = {
    "adaptive-tied": dict(adaptive_input_cutoffs=[10, 30], adaptive_softmax_cutoffs=[10, 30], adaptive_input_factor=2,
                          adaptive_softmax_factor=2, tie_adaptive_weights=True, tie_adaptive_proj=True,
                          add_final_norm=True, final_norm_affine=False, scale_embeddings=True,
                          use_chunking=True, chunk_size=4),
    "softmax-untied": dict(adaptive_softmax_cutoffs=[20], add_final_norm=True, normalization_type="layernorm"),
    "final-norm-tied-table": dict(add_final_norm=True, scale_embeddings=True, tie_word_embeddings=True,
                                  use_chunking=True, chunk_size=4),
}


def pair(name: str) -> tuple[Any, Any, Any]:
    """(HF model, fairseq2 model, fairseq2 config) holding the same random weights."""
    from mega_plugin.adapters.fairseq2.config import MegaLMConfig
    from mega_plugin.adapters.fairseq2.factory import create_mega_model
    from mega_plugin.adapters.fairseq2.interop import convert_mega_state_dict
    from mega_plugin.adapters.hf import MegaConfig, MegaForCausalLM

    torch.manual_seed(0)
    hf_config = MegaConfig(**{**BASE, **VARIANTS[name]})
    hf = MegaForCausalLM(hf_config)
    with torch.no_grad():
        for parameter in hf.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    config = MegaLMConfig.from_hf_config(hf_config.to_dict())
    fs2 = create_mega_model(config)
    state = {k: v for k, v in hf.state_dict().items()}
    fs2.load_state_dict(convert_mega_state_dict(state, config), strict=True)
    return hf.eval(), fs2.eval(), config


def ids(length: int = 9) -> torch.Tensor:
    return torch.randint(2, 60, (2, length), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("name", VARIANTS)
def test_log_probs_loss_and_decoding_equal_hf(name: str) -> None:
    from fairseq2.nn import BatchLayout, IncrementalStateBag

    hf, fs2, _ = pair(name)
    tokens = ids()
    with torch.no_grad():
        expected = hf(tokens).logits.log_softmax(-1)
        logits = fs2(tokens, BatchLayout.of(tokens))
        torch.testing.assert_close(logits.log_softmax(-1), expected, atol=TOLERANCE, rtol=TOLERANCE)
        seqs, targets = tokens[:, :-1], tokens[:, 1:]
        loss = fs2(seqs, BatchLayout.of(seqs), targets, reduction="mean")
        reference = -expected[:, :-1].gather(-1, targets[..., None]).mean()
        torch.testing.assert_close(loss, reference, atol=TOLERANCE, rtol=TOLERANCE)
        bag, steps = IncrementalStateBag(tokens.shape[1] + 1), []
        for position in range(tokens.shape[1]):
            step = tokens[:, position : position + 1]
            steps.append(fs2(step, BatchLayout.of(step), state_bag=bag))
            bag.increment_step_nr(1)
    torch.testing.assert_close(torch.cat(steps, 1).log_softmax(-1), expected, atol=TOLERANCE, rtol=TOLERANCE)


@pytest.mark.parametrize("name", VARIANTS)
def test_export_to_hf_restores_every_key(name: str) -> None:
    from mega_plugin.adapters.fairseq2.interop import to_hf_state_dict

    hf, fs2, config = pair(name)
    exported = to_hf_state_dict(fs2.state_dict(), config)
    expected = hf.state_dict()
    if config.tie_embeddings:
        expected.pop("lm_head.weight", None)
    assert set(exported) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(exported[key], tensor), key


def test_the_paper_archs_are_the_original_setups() -> None:
    from mega_plugin.adapters.fairseq2.archs import preset_archs

    archs = preset_archs()
    wt103, enwik8 = archs["wikitext103"](), archs["enwik8"]()
    assert wt103.adaptive_input_cutoffs == [20000, 60000] == wt103.adaptive_softmax_cutoffs
    assert wt103.tie_adaptive_weights and wt103.tie_adaptive_proj and wt103.adaptive_softmax_dropout_prob == 0.2
    assert not wt103.tie_embeddings and not wt103.add_lm_hidden_dense_layer
    for arch in (wt103, enwik8):
        assert arch.add_final_norm and not arch.final_norm_affine and arch.scale_embeddings
        assert arch.normalize_before_mega and arch.truncation == 8192
    assert enwik8.tie_embeddings and enwik8.adaptive_softmax_cutoffs is None
    wt103.to_core()
    enwik8.to_core()


def test_tie_embeddings_with_adaptive_tables_is_refused_naming_the_fields() -> None:
    from mega_plugin.adapters.fairseq2.config import MegaLMConfig

    config = MegaLMConfig(**{**{k: v for k, v in BASE.items() if k not in (
        "bidirectional", "is_decoder", "add_lm_hidden_dense_layer", "tie_word_embeddings")},
        "adaptive_softmax_cutoffs": [20], "tie_embeddings": True})
    with pytest.raises(ValueError, match="tie_embeddings=True .* adaptive_softmax_cutoffs"):
        config.to_core()


@pytest.mark.slow
def test_load_model_finds_a_converted_original_wt103(tmp_path: Path) -> None:
    """A fresh process: FAIRSEQ2_USER_ASSET_DIR at the converter's output, load_model by card name."""
    from _support.original_fixtures import load_fixture
    from mega_plugin.cli import main

    fixture = load_fixture("lm_wt103")
    out = tmp_path / "wt103_card"
    argv = ["convert", "--from", "fairseq-mega", str(fixture.checkpoint_path()), "--to", "fairseq2", str(out),
            "--name", "wt103_card_test"]
    assert main(argv) == 0
    reference = fixture.reference()
    torch.save(reference["input.tokens"], tmp_path / "tokens.pt")
    script = (
        "import sys, torch\n"
        "from fairseq2.models import load_model\n"
        "from fairseq2.nn import BatchLayout\n"
        "m = load_model('wt103_card_test', device=torch.device('cpu'), dtype=torch.float32).eval()\n"
        f"t = torch.load({str(tmp_path / 'tokens.pt')!r})\n"
        "with torch.no_grad():\n"
        f"    torch.save(m(t, BatchLayout.of(t)).log_softmax(-1), {str(tmp_path / 'out.pt')!r})\n"
    )
    env = {**os.environ, "FAIRSEQ2_USER_ASSET_DIR": str(out), "FAIRSEQ2_EXTENSION_TRACE": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    tolerance = fixture.tolerance()
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), reference["log_probs"], **tolerance)
