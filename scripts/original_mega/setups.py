"""The README setups of facebookresearch/mega, scaled down: architecture arguments and inputs.

Each setup keeps its README command's architecture arguments (arch name, activations, norm
type, pre-norm, final norm, rotary/simple bias, adaptive input/softmax, sharing) and shrinks
the sizes: hidden 16, value/FFN width 32, z 8, EMA 4, 2 layers, small vocab, small chunks
(lengths that are not chunk multiples where the original pads). Sizes are passed as the
same command-line flags the README uses, parsed by the ORIGINAL ``add_args``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TINY_LM = ["--decoder-embed-dim", "16", "--decoder-hidden-dim", "32", "--decoder-ffn-embed-dim", "32",
           "--decoder-z-dim", "8", "--decoder-layers", "2"]
TINY_LRA = ["--encoder-layers", "2", "--n-dim", "4", "--encoder-embed-dim", "16", "--encoder-hidden-dim", "32",
            "--encoder-ffn-embed-dim", "32", "--z-dim", "8"]
COMMON_LRA = ["--activation-fn", "silu", "--sen-rep-type", "mp", "--dropout", "0.1", "--attention-dropout", "0.0",
              "--act-dropout", "0.0"]


@dataclass(frozen=True)
class Setup:
    name: str
    kind: str
    """'lm', 'lra_text', 'lra_retrieval', 'lra_image', 'sc' or 'mt'."""
    model: str
    """The original's registered model name (``mega_lm``, ``lra``, ``sc_raw``, ``mega``)."""
    arch: str
    """The README's ``-a`` architecture."""
    argv: list[str]
    """The README command's architecture flags, sizes scaled down."""
    vocab: int = 0
    """Dictionary size (0: real-valued inputs)."""
    length: int = 10
    extra: dict = field(default_factory=dict)
    """Task-level values fairseq puts into ``args`` (``max_target_positions``, ``tokens_per_sample``, ...)."""
    readme: str = ""


SETUPS: tuple[Setup, ...] = (
    Setup(
        "lm_wt103", "lm", "mega_lm", "mega_lm_adaptive_big",
        TINY_LM + ["--activation-fn", "silu", "--attention-activation-fn", "softmax", "--decoder-n-dim", "4",
                   "--decoder-chunk-size", "4", "--normalize-before", "--no-affine-final-norm",
                   "--normalization-type", "layernorm", "--truncation-length", "64", "--rel-pos-bias", "rotary",
                   "--dropout", "0.3", "--attention-dropout", "0.1", "--hidden-dropout", "0.1",
                   "--adaptive-input-cutoff", "12,24", "--adaptive-softmax-cutoff", "12,24"],
        vocab=40, extra={"max_target_positions": 64, "tokens_per_sample": 64, "task": "language_modeling",
                         "criterion": "adaptive_loss"},
        readme="examples/mega/README.lm.md (wikitext-103; --max-target-positions 8096, chunk 1024, truncation 8192, cutoffs 20000,60000)",
    ),
    Setup(
        "lm_enwik8", "lm", "mega_lm", "mega_lm_enwik8_base",
        TINY_LM + ["--activation-fn", "silu", "--attention-activation-fn", "softmax", "--decoder-n-dim", "4",
                   "--decoder-chunk-size", "4", "--normalize-before", "--no-affine-final-norm",
                   "--normalization-type", "layernorm", "--truncation-length", "64", "--rel-pos-bias", "rotary",
                   "--share-decoder-input-output-embed", "--dropout", "0.1", "--attention-dropout", "0.0",
                   "--hidden-dropout", "0.0"],
        vocab=36, extra={"max_target_positions": 64, "tokens_per_sample": 64, "task": "language_modeling",
                         "criterion": "cross_entropy"},
        readme="examples/mega/README.lm.md (enwik8; --max-target-positions 10384, chunk 2048)",
    ),
    Setup(
        "lra_listops", "lra_text", "lra", "mega_lra_listop",
        TINY_LRA + COMMON_LRA + ["--input-type", "text", "--chunk-size", "4", "--attention-activation-fn", "softmax",
                                 "--norm-type", "layernorm", "--max-positions", "32", "--sentence-class-num", "10"],
        vocab=24, extra={"classifier_out_dim": 32, "task": "lra-text"}, readme="examples/mega/README.lra.md (ListOps; CHUNK a free choice)",
    ),
    Setup(
        "lra_text", "lra_text", "lra", "mega_lra_imdb",
        TINY_LRA + COMMON_LRA + ["--input-type", "text", "--chunk-size", "-1", "--attention-activation-fn", "softmax",
                                 "--norm-type", "scalenorm", "--max-positions", "32"],
        vocab=30, extra={"classifier_out_dim": 32, "task": "lra-text"}, readme="examples/mega/README.lra.md (Text/IMDB)",
    ),
    Setup(
        "lra_retrieval", "lra_retrieval", "lra", "mega_lra_aan",
        TINY_LRA + COMMON_LRA + ["--input-type", "text", "--chunk-size", "4", "--attention-activation-fn", "softmax",
                                 "--norm-type", "scalenorm", "--max-positions", "32"],
        vocab=28, extra={"classifier_out_dim": 32, "task": "lra-text"}, readme="examples/mega/README.lra.md (Retrieval/AAN, two inputs)",
    ),
    Setup(
        "lra_image", "lra_image", "lra", "mega_lra_cifar10",
        TINY_LRA + COMMON_LRA + ["--input-type", "image", "--chunk-size", "8",
                                 "--attention-activation-fn", "laplace", "--norm-type", "batchnorm",
                                 "--encoder-normalize-before", "--max-positions", "16"],
        length=16, extra={"classifier_out_dim": 32, "task": "lra-image", "pixel_normalization": [0.48, 0.24]}, readme="examples/mega/README.lra.md (Image/CIFAR-10)",
    ),
    Setup(
        "lra_pathfinder", "lra_image", "lra", "mega_lra_pf32",
        TINY_LRA + COMMON_LRA + ["--input-type", "image", "--chunk-size", "8",
                                 "--attention-activation-fn", "laplace", "--norm-type", "batchnorm",
                                 "--encoder-normalize-before", "--max-positions", "16"],
        length=16, extra={"classifier_out_dim": 32, "task": "lra-image", "pixel_normalization": [0.5, 0.5]}, readme="examples/mega/README.lra.md (Pathfinder)",
    ),
    Setup(
        "lra_pathx", "lra_image", "lra", "mega_lra_pf128",
        TINY_LRA + COMMON_LRA + ["--input-type", "image", "--chunk-size", "8",
                                 "--attention-activation-fn", "laplace", "--norm-type", "syncbatchnorm",
                                 "--encoder-normalize-before", "--max-positions", "16"],
        length=16, extra={"classifier_out_dim": 32, "task": "lra-image", "pixel_normalization": [0.5, 0.5]}, readme="examples/mega/README.lra.md (Path-X)",
    ),
    Setup(
        "mt_wmt16", "mt", "mega", "mega_wmt_en_de",
        ["--encoder-layers", "2", "--decoder-layers", "2", "--activation-fn", "silu",
         "--attention-activation-fn", "softmax", "--encoder-n-dim", "4", "--encoder-chunk-size", "-1",
         "--normalization-type", "layernorm", "--share-all-embeddings",
         "--dropout", "0.15", "--attention-dropout", "0.1", "--hidden-dropout", "0.1", "--activation-dropout", "0.1",
         "--encoder-embed-dim", "16", "--encoder-hidden-dim", "32", "--encoder-ffn-embed-dim", "32",
         "--encoder-z-dim", "8"],
        vocab=32, length=7,
        extra={"max_source_positions": 16, "max_target_positions": 16, "task": "translation", "source_lang": "en",
               "target_lang": "de", "left_pad_source": True, "left_pad_target": False,
               "criterion": "label_smoothed_cross_entropy"},
        readme="examples/mega/README.mt.md (WMT'16 en-de, joined dictionary). The README's --truncation-length 0 is left out: at this commit MultiHeadEMA.kernel takes min(truncation, length) = 0 and the bidirectional encoder fails in F.pad (narrow(): length must be non-negative); the arch default 1024 (longer than every input: no truncation) is used instead",
    ),
    Setup(
        "sc_raw", "sc", "sc_raw", "mega_sc_raw_base",
        ["--encoder-normalize-before", "--sentence-class-num", "10", "--max-positions", "16",
         "--encoder-layers", "2", "--n-dim", "4", "--encoder-embed-dim", "16", "--encoder-hidden-dim", "32",
         "--encoder-ffn-embed-dim", "32", "--z-dim", "8", "--chunk-size", "8", "--truncation-length", "16",
         "--dropout", "0.0", "--attention-dropout", "0.0", "--act-dropout", "0.0"],
        length=16, extra={"task": "speech_commands", "sc_dropped_rate": 0.0},
        readme="examples/mega/README.sc.md (raw Speech Commands, mega_sc_raw_base)",
    ),
)
