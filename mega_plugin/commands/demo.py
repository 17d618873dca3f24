"""``mega-plugin demo``: the product end to end on an embedded default, in one command.

It builds a small MEGA through the Auto classes (an encoder for the five encoder heads, a chunked
causal decoder for ``MegaForCausalLM``), saves each with ``save_pretrained``, loads it back with
``from_pretrained``, runs it on a sentence and prints a short report: the loading report (missing
/ unexpected keys), how far the reloaded model's outputs are from the original's, and what each
head says. Weights are random (nothing is downloaded), so the encoder heads' predictions are
noise; the causal LM is then trained for a few seconds on the sentence and ``generate()``
continues the sentence's first bytes with the rest of it, through the streaming cache.

Text goes through a byte-level tokenizer (ids 0-2 are bos/pad/eos, 3-258 are the UTF-8 bytes), so
the demo needs no tokenizer files either.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

NAME = "demo"
HELP = "Build, save, reload and run every MEGA head on a sentence (random weights, no downloads)."

DEFAULT_TEXT: Final = "MEGA pairs a damped moving average with gated attention."
BOS, PAD, EOS = 0, 1, 2
BYTE_OFFSET: Final = 3
VOCAB_SIZE: Final = BYTE_OFFSET + 256

# The embedded default: a small model in the shape of mnaylor/mega-base-wikitext, byte vocabulary.
ENCODER: Final[dict[str, Any]] = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "nffn_hidden_size": 128,
    "shared_representation_size": 32,
    "ema_projection_size": 8,
    "bidirectional": True,
    "relative_positional_bias": "rotary",
    "normalization_type": "scalenorm",
    "max_positions": 1024,
    "pad_token_id": PAD,
    "bos_token_id": BOS,
    "eos_token_id": EOS,
}
# The decoder: causal EMA, chunked attention (chunk 16), so generation crosses chunk boundaries.
DECODER: Final[dict[str, Any]] = {
    **ENCODER,
    "bidirectional": False,
    "is_decoder": True,
    "use_chunking": True,
    "chunk_size": 16,
    # It is trained for a few steps on one sentence: dropout would only slow that down.
    "dropout_prob": 0.0,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "nffn_activation_dropout_prob": 0.0,
    # With the reference init (std 0.02) the tanh LM dense layer keeps a fresh model at the unigram
    # loss for hundreds of steps (the 4.57 reference behaves the same); without it, 60 steps suffice.
    "add_lm_hidden_dense_layer": False,
}


@dataclass(frozen=True)
class HeadDemo:
    """One row of the demo: which Auto class builds which head, from which config."""

    auto_name: str
    decoder: bool = False
    num_labels: int = 2


HEAD_DEMOS: Final = (
    HeadDemo("AutoModel"),
    HeadDemo("AutoModelForMaskedLM"),
    HeadDemo("AutoModelForSequenceClassification", num_labels=3),
    HeadDemo("AutoModelForMultipleChoice"),
    HeadDemo("AutoModelForTokenClassification", num_labels=4),
    HeadDemo("AutoModelForQuestionAnswering"),
    HeadDemo("AutoModelForCausalLM", decoder=True),
)


def encode(text: str) -> list[int]:
    """bos, the UTF-8 bytes shifted past the special ids, eos."""
    return [BOS] + [BYTE_OFFSET + byte for byte in text.encode("utf-8")] + [EOS]


def decode(ids: list[int]) -> str:
    """Inverse of :func:`encode` for the byte ids; special ids are dropped."""
    return bytes(i - BYTE_OFFSET for i in ids if BYTE_OFFSET <= i < VOCAB_SIZE).decode("utf-8", errors="replace")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text", default=DEFAULT_TEXT, help="the sentence every head reads")
    parser.add_argument("--output-dir", type=Path, default=None, help="keep the saved models here (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and of sampling")
    parser.add_argument("--train-steps", type=int, default=60, help="Adam steps of the causal LM on the sentence")
    parser.add_argument("--prompt-bytes", type=int, default=8, help="bytes of the sentence given as the prompt")


def run(args: argparse.Namespace) -> int:
    try:
        import torch
        import transformers
    except ImportError as error:
        raise SystemExit(f"mega-plugin demo needs transformers: pip install 'mega-plugin[hf]' ({error})") from None
    if not args.text:
        raise SystemExit("--text must not be empty")
    for flag, value, low in (("--train-steps", args.train_steps, 0), ("--prompt-bytes", args.prompt_bytes, 1)):
        if value < low:
            raise SystemExit(f"{flag} must be at least {low}, got {value}")
    import mega_plugin  # noqa: F401  (registers MEGA with the Auto classes)

    transformers.utils.logging.disable_progress_bar()

    torch.manual_seed(args.seed)
    print(f"mega-plugin {mega_plugin.__version__} demo: transformers {transformers.__version__}, torch {torch.__version__}")
    print(f"text: {args.text!r} ({len(encode(args.text))} byte tokens); weights are random, predictions are noise\n")
    with tempfile.TemporaryDirectory() as scratch:
        root = args.output_dir or Path(scratch)
        for demo in HEAD_DEMOS:
            print(_run_head(demo, args, root, transformers, torch))
        print(f"\nsaved models: {root}" if args.output_dir else "\nsaved models were written to a temporary directory")
    return 0


def _run_head(demo: HeadDemo, args: argparse.Namespace, root: Path, transformers: Any, torch: Any) -> str:
    values = dict(DECODER if demo.decoder else ENCODER, num_labels=demo.num_labels)
    config = transformers.AutoConfig.for_model("mega", **values)
    auto_class = getattr(transformers, demo.auto_name)
    model = auto_class.from_config(config).eval()
    directory = root / demo.auto_name
    started = time.perf_counter()
    model.save_pretrained(directory)
    reloaded, info = auto_class.from_pretrained(directory, output_loading_info=True)
    reloaded.eval()
    seconds = time.perf_counter() - started
    problems = sum(len(info[key]) for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    ids = torch.tensor([encode(args.text)])
    inputs = {"input_ids": ids.unsqueeze(1).expand(-1, 2, -1).contiguous()} if "MultipleChoice" in demo.auto_name else {"input_ids": ids}
    with torch.no_grad():
        before, after = model(**inputs), reloaded(**inputs)
    first = next(v for v in before.values() if isinstance(v, torch.Tensor))
    second = next(v for v in after.values() if isinstance(v, torch.Tensor))
    difference = (first - second).abs().max().item()
    size = sum(p.stat().st_size for p in directory.iterdir()) / 1024
    header = (
        f"{type(reloaded).__name__:<30} via {demo.auto_name:<35} saved+reloaded {size:4.0f} KiB "
        f"in {seconds:.2f}s; key problems: {problems}; output max diff after reload: {difference:.1e}"
    )
    return header + "\n    " + _describe(demo, reloaded, after, ids, args, torch)


def _describe(demo: HeadDemo, model: Any, outputs: Any, ids: Any, args: argparse.Namespace, torch: Any) -> str:
    name = demo.auto_name
    if name == "AutoModel":
        return f"last_hidden_state {tuple(outputs.last_hidden_state.shape)}, pooler_output {tuple(outputs.pooler_output.shape)}"
    if name == "AutoModelForMaskedLM":
        top = outputs.logits[0].argmax(-1).tolist()
        return f"logits {tuple(outputs.logits.shape)}; top predicted id at the first 12 positions: {top[:12]}"
    if name == "AutoModelForSequenceClassification":
        probabilities = outputs.logits.softmax(-1)[0]
        return "label probabilities: " + ", ".join(f"{p:.3f}" for p in probabilities.tolist())
    if name == "AutoModelForMultipleChoice":
        return "choice scores: " + ", ".join(f"{s:+.3f}" for s in outputs.logits[0].tolist())
    if name == "AutoModelForTokenClassification":
        labels = outputs.logits[0].argmax(-1).tolist()
        return f"label per token (first 16): {labels[:16]}"
    if name == "AutoModelForQuestionAnswering":
        start, end = int(outputs.start_logits[0].argmax()), int(outputs.end_logits[0].argmax())
        low, high = min(start, end), max(start, end)
        return f"answer span tokens [{low}, {high}]: {decode(ids[0, low : high + 1].tolist())!r}"
    return _train_and_generate(model, ids, args, torch)


def _train_and_generate(model: Any, ids: Any, args: argparse.Namespace, torch: Any) -> str:
    """Fit the sentence for a few Adam steps, then let greedy ``generate()`` continue its prefix."""
    torch.manual_seed(args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(args.train_steps):
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    prompt = ids[:, : 1 + args.prompt_bytes]
    with torch.no_grad():
        generated = model.generate(
            prompt, max_new_tokens=ids.shape[1] - prompt.shape[1], do_sample=False, pad_token_id=PAD, eos_token_id=EOS
        )
        cache = model(prompt, use_cache=True, return_dict=True).to_tuple()[-1]
    trained = f"loss {losses[0]:.2f} -> {losses[-1]:.2f} in {len(losses)} steps; " if losses else ""
    return (
        f"{trained}greedy generate() from {decode(prompt[0].tolist())!r}: {decode(generated[0].tolist())!r}\n"
        f"    streaming state after the prompt: {cache.size_bytes()} bytes (EMA state + keys/values of the current chunk)"
    )
