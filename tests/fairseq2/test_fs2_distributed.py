"""fairseq2 data parallelism on two CPU processes (gloo gangs): DDP, FSDP2 and FSDP1 train like one process.

One ``torchrun --nproc-per-node 2`` launch runs ``fs2_dp_worker_script.py`` for every mode
(``to_ddp``; ``to_fsdp`` v2 and v1 through the family's ``fsdp_applier`` at ``layer`` granularity)
and case (chunked attention on packed batches, global attention on padded batches). This
process trains the same hub-built, seeded model on the combined batches with the mean loss; the
final parameters of both ranks must equal it, and under FSDP every MEGA block must be its own
unit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from fs2_helpers import build_model, require_fairseq2

import fs2_dp_worker_script as worker  # this folder is on sys.path (as for fs2_helpers); the name is unique
from _support import torchrun as launcher

require_fairseq2()
pytestmark = pytest.mark.fairseq2

HERE = Path(__file__).resolve().parent
WORKER_SCRIPT = HERE / "fs2_dp_worker_script.py"
WORLD_SIZE = 2
RELATIVE_TOLERANCE = 1e-5
ABSOLUTE_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def dp_out_dir(fs2_assets: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # fs2_assets: the ranks inherit FAIRSEQ2_USER_ASSET_DIR and FAIRSEQ2_EXTENSION_TRACE from it.
    out_dir = tmp_path_factory.mktemp("fs2_dp")
    result = launcher.launch(
        WORKER_SCRIPT, [str(out_dir)], log_dir=tmp_path_factory.mktemp("fs2_dp_logs"), nproc_per_node=WORLD_SIZE
    )
    if result.returncode != 0:
        errors = "\n".join(f"{p.name}: {p.read_text()}" for p in sorted(out_dir.glob(f"*{worker.FAILURE_SUFFIX}")))
        pytest.fail(f"the fairseq2 data-parallel ranks failed:\n{errors}\n{result.report()}", pytrace=False)
    yield out_dir


@pytest.fixture(scope="module")
def single_process(fs2_assets: Any) -> dict[str, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
    return {case: worker.train_single_process(case) for case in worker.CASES}


def _rank_result(out_dir: Path, mode: str, case: str, rank: int) -> dict[str, Any]:
    path = out_dir / f"{mode}-{case}.rank{rank}.pt"
    assert path.is_file(), f"rank {rank} wrote no result for {mode} {case} ({path})"
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("case", list(worker.CASES))
@pytest.mark.parametrize("mode", list(worker.MODES))
def test_data_parallel_on_two_ranks_equals_one_process(
    mode: str, case: str, dp_out_dir: Path, single_process: dict[str, Any]
) -> None:
    initial, expected = single_process[case]
    moved = max(float((expected[name] - initial[name]).abs().max()) for name in expected)
    assert moved > 100 * ABSOLUTE_TOLERANCE, f"training barely moved the parameters ({moved:.2e}): the test is vacuous"
    for rank in range(WORLD_SIZE):
        launcher.assert_parameters_close(
            _rank_result(dp_out_dir, mode, case, rank)["parameters"],
            expected,
            f"{mode} {case}, rank {rank}",
            rtol=RELATIVE_TOLERANCE,
            atol=ABSOLUTE_TOLERANCE,
        )


@pytest.mark.parametrize("mode", ["fsdp2", "fsdp1"])
def test_fsdp_makes_every_mega_block_its_own_unit(mode: str, dp_out_dir: Path) -> None:
    layers = int(worker.CASES["chunked-packed"]["num_hidden_layers"])
    expected = ["", *(f"decoder.layers.{i}" for i in range(layers))]  # the root holds embeddings and head
    for rank in range(WORLD_SIZE):
        assert _rank_result(dp_out_dir, mode, "chunked-packed", rank)["fsdp_units"] == expected


def test_shards_hold_different_target_counts(fs2_assets: Any) -> None:
    # normalize_grads matters only if the ranks' target counts differ; keep the batches that way.
    for case in worker.CASES:
        counts = [
            worker.step_batch(case, 0, rank=rank, world_size=WORLD_SIZE).as_auto_regressive()[1].num_target_elements
            for rank in range(WORLD_SIZE)
        ]
        assert len(set(counts)) == WORLD_SIZE, f"{case}: every shard has the same number of targets: {counts}"


def test_fsdp_applier_lets_fsdp2_see_block_outputs(fs2_assets: Any, tiny_config: Any) -> None:
    # FSDP2 hooks a unit's backward through the tensors tree_flatten finds in its output; a MEGA
    # block returns a BlockResult dataclass, which the core registers as a pytree node.
    from torch.utils._pytree import tree_flatten

    from mega_plugin.adapters.fairseq2.training_hooks import apply_fsdp_to_mega_lm

    model = build_model(tiny_config)
    apply_fsdp_to_mega_lm(model, "layer", lambda module, reshard_after_forward=None: module)
    block = model.decoder.layers[0]
    result = block(torch.randn(2, 5, tiny_config.hidden_size), causal=True)
    leaves, _ = tree_flatten(result)
    assert any(leaf is result.hidden for leaf in leaves), f"tree_flatten sees no tensor of the block output: {leaves}"
