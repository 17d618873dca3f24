import json, sys, torch, tempfile
sys.path.insert(0, "tests")
from pathlib import Path
from converters.test_original_lra import _real_mask, LRA_SETUPS
from _support.original_fixtures import load_fixture
from mega_plugin.cli import main
from fairseq2.nn import BatchLayout
from safetensors.torch import load_file
from mega_plugin.adapters.fairseq2.classifier_config import MegaClassifierConfig
from mega_plugin.adapters.fairseq2.classifier_model import create_mega_classifier_model, convert_mega_classifier_state_dict
import io, contextlib
for name in LRA_SETUPS:
    d = Path(tempfile.mkdtemp()) / name
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        rc = main(["convert", "--from", "fairseq-mega", str(load_fixture(name).checkpoint_path()), "--to", "fairseq2", str(d), "--trust-checkpoint"])
    assert rc == 0, name
    cfg = MegaClassifierConfig.from_hf_config(json.loads((d / "config.json").read_text()))
    m = create_mega_classifier_model(cfg).eval()
    m.load_state_dict(convert_mega_classifier_state_dict(load_file(str(d / "model.safetensors")), cfg))
    ref = load_fixture(name).reference()
    t, l = ref["input.src_tokens"], ref["input.src_lengths"]
    extra = {}
    if "input.src_tokens1" in ref:
        extra = dict(pair_seqs=ref["input.src_tokens1"], pair_layout=BatchLayout.of(ref["input.src_tokens1"], seq_lens=ref["input.src_lengths1"].tolist()))
    with torch.no_grad():
        logits = m(t, BatchLayout.of(t, seq_lens=l.tolist()), **extra)
    print(name, (logits - ref["logits"]).abs().max().item(), sorted(p.name for p in d.iterdir()))
