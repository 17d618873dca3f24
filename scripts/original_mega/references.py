"""Reference inputs and the ORIGINAL model's outputs for each kind of setup (all float32)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from setups import Setup

PAD, EOS, FIRST_WORD = 1, 2, 4
Refs = tuple[dict[str, Tensor], dict[str, str], dict[str, Tensor], dict[str, float]]


def _tokens(generator: torch.Generator, vocab: int, batch: int, length: int) -> Tensor:
    return torch.randint(FIRST_WORD, vocab, (batch, length), generator=generator)


def make_inputs(setup: Setup) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(7)
    n = setup.length
    if setup.kind == "lm":
        return {"tokens": _tokens(generator, setup.vocab, 2, n)}
    if setup.kind in ("lra_text", "lra_retrieval"):
        inputs = {}
        for suffix, short in (("", 3), ("1", 5)) if setup.kind == "lra_retrieval" else (("", 3),):
            tokens = _tokens(generator, setup.vocab, 2, n)
            tokens[1, n - short:] = PAD  # right padding, as the original LRA task's RightPadDataset
            inputs[f"src_tokens{suffix}"] = tokens
            inputs[f"src_lengths{suffix}"] = torch.tensor([n, n - short])
        return inputs
    if setup.kind in ("lra_image", "sc"):
        mean, std = setup.extra.get("pixel_normalization", (0.0, 1.0))
        raw = torch.rand(2, n, generator=generator)
        return {"src_tokens": (raw - mean) / std, "src_lengths": torch.tensor([n, n])}
    if setup.kind == "mt":
        src = _tokens(generator, setup.vocab, 2, n)
        src[:, -1] = EOS
        src[1, :2] = PAD  # fairseq translation: left-padded source (left_pad_source=True)
        target = _tokens(generator, setup.vocab, 2, n - 1)
        target[:, -1] = EOS
        target[1, -2:] = PAD  # right-padded target
        target[1, -3] = EOS
        prev = torch.full_like(target, PAD)
        prev[:, 0] = EOS  # prev_output_tokens: </s> then the target shifted right
        prev[:, 1:] = target[:, :-1]
        prev[1, -2:] = PAD
        return {"src_tokens": src, "src_lengths": torch.tensor([n, n - 2]), "prev_output_tokens": prev}
    raise ValueError(setup.kind)


@torch.no_grad()
def lm_references(model: nn.Module, tokens: Tensor) -> Refs:
    decoder = model.decoder
    features = decoder(tokens, features_only=True)[0]
    log_probs = decoder.get_normalized_probs(decoder(tokens), log_probs=True)
    state: dict = {}
    steps = []
    for t in range(tokens.shape[1]):
        out = decoder(tokens[:, t:t + 1], incremental_state=state)
        steps.append(decoder.get_normalized_probs(out, log_probs=True))
    incremental = torch.cat(steps, dim=1)
    tensors = {"features": features, "log_probs": log_probs, "incremental_log_probs": incremental}
    meaning = {
        "features": "decoder features (after the final norm) for input 'tokens': (batch, length, hidden)",
        "log_probs": "normalized log-probs of the next token (adaptive softmax where the setup has one): (batch, length, vocab)",
        "incremental_log_probs": "the same, fed one token at a time with the original incremental state: (batch, length, vocab)",
    }
    checks = {"incremental_vs_full_max_abs": (incremental - log_probs).abs().max().item()}
    return tensors, meaning, {}, checks


@torch.no_grad()
def lra_references(setup: Setup, model: nn.Module, inputs: dict[str, Tensor]) -> Refs:
    sample = {"net_input": {"src_tokens": inputs["src_tokens"], "src_lengths": inputs["src_lengths"]}}
    if "src_tokens1" in inputs:
        sample["net_input1"] = {"src_tokens": inputs["src_tokens1"], "src_lengths": inputs["src_lengths1"]}
    logits = model(sample)["encoder_out"]
    states, pooled = model.encoder(inputs["src_tokens"], inputs["src_lengths"])
    hidden = states[-1].transpose(0, 1)[:, : inputs["src_tokens"].shape[1]]
    tensors = {"logits": logits, "pooled": pooled, "hidden": hidden}
    meaning = {
        "logits": "classifier logits (the original LRAModel/SCRawModel forward): (batch, classes)",
        "pooled": "sentence representation of input 'src_tokens' ('mp': sum over positions / src_lengths): (batch, hidden)",
        "hidden": "last encoder states (after the final norm, pads zeroed) for 'src_tokens', cut to its length: (batch, length, hidden)",
    }
    if "src_tokens1" in inputs:
        tensors["pooled1"] = model.encoder(inputs["src_tokens1"], inputs["src_lengths1"])[1]
        meaning["pooled1"] = "sentence representation of the second input 'src_tokens1': (batch, hidden)"
        meaning["logits"] += "; classifier input is cat(pooled1, pooled)"
    return tensors, meaning, {}, {}


@torch.no_grad()
def mt_references(model: nn.Module, inputs: dict[str, Tensor], *, max_len: int = 8) -> Refs:
    src, lengths, prev = inputs["src_tokens"], inputs["src_lengths"], inputs["prev_output_tokens"]
    encoder_out = model.encoder(src, src_lengths=lengths)
    net_output = model.decoder(prev, encoder_out=encoder_out)
    log_probs = model.get_normalized_probs(net_output, log_probs=True)
    features = model.decoder(prev, encoder_out=encoder_out, features_only=True)[0]
    # the original's incremental decoding, teacher-forced on prev_output_tokens (row 0 has no pads)
    state: dict = {}
    steps = []
    for t in range(prev.shape[1]):
        out = model.decoder(prev[:, : t + 1], encoder_out=encoder_out, incremental_state=state)
        steps.append(model.get_normalized_probs(out, log_probs=True))
    incremental = torch.cat(steps, dim=1)
    # greedy search with the incremental state: start from </s>, pad never chosen, stop after max_len steps
    state = {}
    tokens = torch.full((src.shape[0], 1), EOS, dtype=torch.long)
    greedy_scores = []
    for _ in range(max_len):
        out = model.decoder(tokens, encoder_out=encoder_out, incremental_state=state)
        step = model.get_normalized_probs(out, log_probs=True)[:, -1]
        step[:, :FIRST_WORD] = float("-inf")  # specials (<s>, <pad>, </s>, <unk>) never chosen
        best = step.argmax(dim=-1, keepdim=True)
        greedy_scores.append(step.gather(1, best))
        tokens = torch.cat([tokens, best], dim=1)
    beam_tokens, beam_scores = beam_search(model, src, lengths, beam=3, steps=max_len - 2)
    mask = encoder_out.encoder_padding_mask
    tensors = {
        "encoder_out": encoder_out.encoder_out.transpose(0, 1),
        "encoder_padding_mask": mask if mask is not None else torch.zeros_like(src, dtype=torch.bool),
        "decoder_features": features,
        "log_probs": log_probs,
        "incremental_log_probs": incremental,
        "greedy_tokens": tokens,
        "greedy_scores": torch.cat(greedy_scores, dim=1),
        "beam_tokens": beam_tokens,
        "beam_scores": beam_scores,
    }
    meaning = {
        "encoder_out": "encoder output for the left-padded 'src_tokens' (pads are whatever the original leaves there): (batch, src_len, hidden)",
        "encoder_padding_mask": "True at source pads: (batch, src_len)",
        "decoder_features": "decoder features (teacher forcing on 'prev_output_tokens'): (batch, tgt_len, hidden)",
        "log_probs": "teacher-forced normalized log-probs: (batch, tgt_len, vocab)",
        "incremental_log_probs": "the same through the original incremental state (prefix fed step by step; compare where prev_output_tokens is not pad): (batch, tgt_len, vocab)",
        "greedy_tokens": f"greedy decoding with the incremental state from </s> (id {EOS}), the special ids < {FIRST_WORD} never chosen, {max_len} steps, no early stop: (batch, 1 + {max_len})",
        "greedy_scores": "log-prob of each chosen greedy token: (batch, steps)",
        "beam_tokens": "fixed-length beam search (beam 3, no eos finalisation, no length penalty, special ids < 4 never chosen) through the "
                       "original's reorder_encoder_out / reorder_incremental_state: beams sorted best first: (batch, 3, 1 + steps)",
        "beam_scores": "summed log-prob of each beam: (batch, 3)",
    }
    keep = prev.ne(PAD)
    checks = {"incremental_vs_full_max_abs_non_pad": (incremental - log_probs)[keep].abs().max().item()}
    return tensors, meaning, {}, checks


@torch.no_grad()
def beam_search(model: nn.Module, src: Tensor, lengths: Tensor, *, beam: int, steps: int) -> tuple[Tensor, Tensor]:
    """A plain beam search on the original's incremental state (exercises its reordering).

    Rows are (sentence, beam) flattened; every step keeps the ``beam`` best (score + log-prob)
    over beam x vocab (torch.topk order), then reorders the encoder output and the state.
    """
    batch = src.shape[0]
    expand = torch.arange(batch).repeat_interleave(beam)
    encoder_out = model.encoder.reorder_encoder_out(model.encoder(src, src_lengths=lengths), expand)
    state: dict = {}
    tokens = torch.full((batch * beam, 1), EOS, dtype=torch.long)
    scores = torch.zeros(batch, beam)
    scores[:, 1:] = float("-inf")  # all beams start equal: keep one
    for _ in range(steps):
        out = model.decoder(tokens, encoder_out=encoder_out, incremental_state=state)
        step = model.get_normalized_probs(out, log_probs=True)[:, -1]
        step[:, :FIRST_WORD] = float("-inf")  # specials (<s>, <pad>, </s>, <unk>) never chosen
        vocab = step.shape[-1]
        candidates = (scores.reshape(-1, 1) + step).reshape(batch, beam * vocab)
        scores, flat = candidates.topk(beam, dim=1)
        order = (torch.arange(batch).unsqueeze(1) * beam + flat // vocab).reshape(-1)
        model.decoder.reorder_incremental_state_scripting(state, order)
        tokens = torch.cat([tokens[order], (flat % vocab).reshape(-1, 1)], dim=1)
    return tokens.reshape(batch, beam, -1), scores


def compute_references(setup: Setup, model: nn.Module, *, inputs: dict[str, Tensor] | None) -> tuple[dict[str, Tensor], dict[str, str], dict[str, Tensor], dict[str, float]]:
    """(reference tensors incl. inputs, their meanings, the inputs, generator self-checks)."""
    inputs = inputs if inputs is not None else make_inputs(setup)
    if setup.kind == "lm":
        tensors, meaning, _, checks = lm_references(model, inputs["tokens"])
    elif setup.kind == "mt":
        tensors, meaning, _, checks = mt_references(model, inputs)
    else:
        tensors, meaning, _, checks = lra_references(setup, model, inputs)
    input_meaning = {
        "tokens": "input token ids (no pads), length not a chunk multiple: (batch, length)",
        "src_tokens": "input (token ids right-padded with 1 / normalized real values) : (batch, length)",
        "src_lengths": "non-pad lengths of 'src_tokens': (batch,)",
        "src_tokens1": "second input of the dual-input retrieval task: (batch, length)",
        "src_lengths1": "non-pad lengths of 'src_tokens1': (batch,)",
        "prev_output_tokens": "decoder input: </s> then the target shifted right, right-padded with 1: (batch, tgt_len)",
    }
    if setup.kind == "mt":
        input_meaning["src_tokens"] = "source token ids, LEFT-padded with 1 (fairseq translation), ending in </s>: (batch, src_len)"
    for key, value in inputs.items():
        tensors[f"input.{key}"] = value
        meaning[f"input.{key}"] = input_meaning[key]
    return tensors, meaning, inputs, checks
