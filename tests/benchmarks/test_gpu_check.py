"""The GPU check runs (on the CPU here, fp32 against fp64) and its parity check can fail."""

from __future__ import annotations

import dataclasses

import pytest

from mega_plugin.benchmarks import gpu_check
from mega_plugin.core.backbone import MegaBackbone


def test_every_option_combination_is_in_the_parity_grid() -> None:
    cases = gpu_check.parity_cases()
    assert len(cases) == 3 * 2 * 2 * 3 * 2 * 2
    assert {c.attention for c in cases} == set(gpu_check.ATTENTION)
    assert {c.padded for c in cases} == {False, True}


def test_dry_run_on_the_cpu_passes_parity_and_autocast(tmp_path, capsys) -> None:
    report = tmp_path / "gpu-check.md"
    code = gpu_check.main(["--device", "cpu", "--skip-bench", "--limit-cases", "24", "--output", str(report)])
    text = report.read_text()
    assert code == 0, text
    assert "24 configurations" in text and "0 above 0.0001" in text
    assert "bfloat16: ok" in text and "float16: ok" in text


def test_a_wrong_device_model_fails_parity(monkeypatch: pytest.MonkeyPatch) -> None:
    def wrong_activation(config):  # the device model computes another function
        return MegaBackbone(dataclasses.replace(config, attention_activation="laplace"))

    monkeypatch.setattr(gpu_check, "build_ours", wrong_activation)
    case = gpu_check.ParityCase("softmax", None, "rotary", "layernorm", "causal", True)
    assert gpu_check.parity_error(case, gpu_check.torch.device("cpu")) > 1e-3  # 25x the tolerance


@pytest.mark.hf
def test_the_benchmark_rows_have_ours_and_the_llama() -> None:
    rows = gpu_check.benchmark_rows(gpu_check.torch.device("cpu"), length=64, chunk=32, batch=1, repeats=1)
    assert [row.split(" | ")[0:2] for row in rows[:4]] == [["| ours", "forward"], ["| ours", "train"], ["| llama", "forward"], ["| llama", "train"]]
    assert "GEMM" in rows[-1]
