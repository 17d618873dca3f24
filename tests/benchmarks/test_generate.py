"""The generate() benchmark times real greedy decoding of our HF model, the equal Llama and
the floor model, excludes the prompt, and reports failures in the table."""

from __future__ import annotations

import pytest

from mega_plugin.benchmarks import generate
from mega_plugin.benchmarks.generate import GenerateResult, format_generate_table, run_generate_benchmark

pytestmark = pytest.mark.hf


def test_every_generator_decodes_and_the_table_has_the_ratio() -> None:
    results = run_generate_benchmark(prompts=(8,), new_tokens=3, repeats=1)
    assert [r.implementation for r in results] == ["ours", "llama", "floor", "static", "static-compiled"]
    assert all(r.error is None and r.tokens_per_second and r.tokens_per_second > 0 for r in results)
    table = format_generate_table(results)
    assert table.splitlines()[2].startswith("| 8 | 1 |") and table.splitlines()[2].count("x |") == 2


def test_generate_decodes_exactly_the_requested_tokens_once_per_timed_run(monkeypatch: pytest.MonkeyPatch) -> None:
    model = generate.build_generator("ours", max_length=16)
    lengths: list[int] = []
    original = model.generate

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        lengths.append(out.shape[1])
        return out

    monkeypatch.setattr(model, "generate", recording)
    assert generate.decode_rate(model, prompt=5, batch=2, new_tokens=4, repeats=2) > 0
    assert lengths == [5 + 4] * 3  # a warm-up and two timed runs, each the full decoding


def test_the_static_decoder_is_timed_over_its_steps_only(monkeypatch: pytest.MonkeyPatch) -> None:
    decoder = generate.build_generator("static", max_length=16)
    calls: list[str] = []
    for name in ("prefill", "step"):
        original = getattr(decoder, name)
        monkeypatch.setattr(decoder, name, lambda *a, _o=original, _n=name, **k: calls.append(_n) or _o(*a, **k))
    assert generate.decode_rate(decoder, prompt=5, batch=2, new_tokens=4, repeats=1) > 0
    assert calls == (["prefill"] + ["step"] * 3) * 2  # a warm-up and one timed run


def test_a_streamer_that_misses_tokens_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    model = generate.build_generator("ours", max_length=16)
    monkeypatch.setattr(generate.StepClock, "put", lambda self, value: None)
    with pytest.raises(RuntimeError, match="reported -1 new tokens, expected 3"):
        generate.decode_rate(model, prompt=5, batch=1, new_tokens=3, repeats=1)


def test_bad_arguments_name_themselves() -> None:
    with pytest.raises(ValueError, match="implementation='gpt'"):
        generate.build_generator("gpt", max_length=8)
    model = generate.build_generator("floor", max_length=8)
    with pytest.raises(ValueError, match="new_tokens=1"):
        generate.decode_rate(model, prompt=4, batch=1, new_tokens=1, repeats=1)


def test_a_failed_case_is_shown_not_dropped() -> None:
    failed = GenerateResult("ours", 8, 1, 3, None, error="RuntimeError: boom")
    table = format_generate_table([failed, GenerateResult("llama", 8, 1, 3, 100.0)])
    assert "RuntimeError: boom" in table and "| 100 |" in table


def test_the_weight_read_bound_is_batch_times_bandwidth_over_the_weight_bytes() -> None:
    ours = GenerateResult("ours", 8, 4, 3, 50.0, weight_bytes=2_000_000)
    table = format_generate_table([ours], bandwidth=10.0)
    header, _, row = table.splitlines()
    assert "10.0 GB/s" in header and header.count("|") == row.count("|")
    assert row.endswith("| 20000 |")  # 4 x 10e9 B/s / 2e6 B


def test_weight_bytes_counts_tied_tables_once() -> None:
    model = generate.build_generator("ours", max_length=16)
    distinct = {p.data_ptr(): p.numel() for p in model.parameters()}
    assert generate.weight_bytes(model) == 4 * sum(distinct.values())
