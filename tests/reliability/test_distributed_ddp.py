"""DDP and FSDP2 on two CPU processes (gloo) train a MEGA causal LM exactly like one process.

One ``torchrun --nproc-per-node 2`` launch trains every case of ``ddp_worker_script.CASES``
(chunked and unchunked attention, padded rows; FSDP2 with every block its own unit on the
chunked case) for a few SGD steps, each rank on half of every
batch; this process trains the same seeded model on the combined batches with the plain mean
loss. The final parameters of both ranks must equal the single-process ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

# A plain import: pytest puts this folder on sys.path, and no other test folder uses this name.
import ddp_worker_script as worker
import pytest
import torch

from _support import torchrun as launcher

pytest.importorskip("transformers")
pytestmark = pytest.mark.hf

HERE = Path(__file__).resolve().parent
WORKER_SCRIPT = HERE / "ddp_worker_script.py"
WORLD_SIZE = 2
RELATIVE_TOLERANCE = 1e-5
ABSOLUTE_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def ddp_out_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out_dir = tmp_path_factory.mktemp("ddp")
    result = launcher.launch(
        WORKER_SCRIPT, [str(out_dir)], log_dir=tmp_path_factory.mktemp("ddp_logs"), nproc_per_node=WORLD_SIZE
    )
    if result.returncode != 0:
        pytest.fail(f"the DDP ranks failed:\n{result.report()}", pytrace=False)
    yield out_dir


RUNS = [("ddp", case) for case in worker.CASES] + [("fsdp2", case) for case in worker.FSDP2_CASES]


@pytest.mark.parametrize(("wrapper", "case"), RUNS, ids=[f"{wrapper}-{case}" for wrapper, case in RUNS])
def test_two_ranks_equal_one_process_on_the_combined_batch(wrapper: str, case: str, ddp_out_dir: Path) -> None:
    initial, single = worker.train_single_process(case)
    moved = max(float((single[name] - initial[name]).abs().max()) for name in single)
    assert moved > 100 * ABSOLUTE_TOLERANCE, f"training barely moved the parameters ({moved:.2e}): the test is vacuous"
    for rank in range(WORLD_SIZE):
        path = ddp_out_dir / f"{case}.{wrapper}.rank{rank}.pt"
        assert path.is_file(), f"rank {rank} wrote no parameters for {wrapper} {case!r} ({path})"
        ranked = torch.load(path, weights_only=True)
        launcher.assert_parameters_close(
            ranked,
            single,
            f"{wrapper} {case}, rank {rank} vs one process",
            rtol=RELATIVE_TOLERANCE,
            atol=ABSOLUTE_TOLERANCE,
        )


def test_ranks_hold_different_token_counts() -> None:
    # The loss rescaling in the worker matters only if the shards' target counts differ; keep it so.
    counts = [
        int(worker.target_count(worker.shard(worker.step_batch(0), rank, WORLD_SIZE)[2]))
        for rank in range(WORLD_SIZE)
    ]
    assert len(set(counts)) == WORLD_SIZE, f"every shard has the same number of targets: {counts}"


def test_a_crashing_rank_fails_with_its_traceback(tmp_path: Path) -> None:
    result = launcher.launch(
        WORKER_SCRIPT,
        [str(tmp_path)],
        log_dir=tmp_path / "logs",
        nproc_per_node=WORLD_SIZE,
        env={worker.FAIL_RANK_VARIABLE: "1"},
    )
    assert result.returncode != 0, result.report()
    assert "rank 1 failed on purpose" in result.report()
