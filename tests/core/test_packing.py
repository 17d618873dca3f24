"""core/packing.py: documents of a packed batch as padded rows and back (HF and fairseq2 share it)."""

from __future__ import annotations

import torch

from mega_plugin.core.packing import document_rows, is_packed, rows_from_position_ids


def test_rows_from_position_ids_find_every_document() -> None:
    positions = torch.tensor([[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]])  # documents 3+2 and 2+3, flattened
    rows = rows_from_position_ids(positions)
    assert rows.valid.sum(-1).tolist() == [3, 2, 2, 3]
    assert rows.index[rows.valid].tolist() == list(range(10))


def test_unpack_then_pack_restores_every_token() -> None:
    flat = torch.randn(9, 4)
    rows = document_rows(torch.tensor([0, 4, 5]), torch.tensor([4, 1, 4]), total=9)
    unpacked = rows.unpack(flat)  # (3, 4, 4)
    assert unpacked.shape == (3, 4, 4)
    assert torch.equal(unpacked[1, 0], flat[4])
    assert torch.equal(rows.pack(unpacked, 9), flat)


def test_is_packed_counts_restarts_between_real_tokens_only() -> None:
    assert is_packed(torch.tensor([[0, 1, 0, 1]]))
    assert not is_packed(torch.tensor([[0, 1, 2, 3]]))
    left_padded = torch.tensor([[1, 1, 0, 1]])
    assert is_packed(left_padded)
    assert not is_packed(left_padded, torch.tensor([[0, 0, 1, 1]]))
