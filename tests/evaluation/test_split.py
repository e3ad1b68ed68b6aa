"""Split records: streamed digests and samples equal the whole-array ones; a row's hash is its content."""

from __future__ import annotations

import numpy as np
import torch

import crossctr.evaluation.split as split_mod
from crossctr.evaluation.split import _summary, digest, row_hashes, seen_rows, split_record


def test_streamed_digest_and_sample_match_whole_arrays(tiny_data, monkeypatch) -> None:
    whole = row_hashes(tiny_data.train)
    monkeypatch.setattr(split_mod, "_CHUNK", 7)  # many chunks, one ending mid-way
    assert np.array_equal(row_hashes(tiny_data.train), whole)
    d, kept = _summary(tiny_data.train, 4)
    assert d == digest(whole)
    assert np.array_equal(kept, np.unique(whole[whole % np.uint64(4) == 0]))


def test_hash_is_content_and_order_matters(tiny_data) -> None:
    part = tiny_data.test
    h = row_hashes(part)
    rev = part.select(torch.arange(len(part) - 1, -1, -1))
    assert np.array_equal(row_hashes(rev), h[::-1])  # same rows, same hashes
    assert digest(row_hashes(rev)) != digest(h)  # another order, another digest
    flipped = part.select(torch.arange(len(part)))
    flipped.label = 1 - flipped.label
    assert not np.any(row_hashes(flipped) == h)  # the label is part of the row


def test_record_counts_every_training_row_of_a_small_split(tiny_data) -> None:
    rec = split_record(tiny_data)
    sample = rec["seen_sample"]["train"]
    assert sample["every"] == 1  # under SAMPLE_ROWS rows: every row kept
    assert seen_rows(row_hashes(tiny_data.train), sample) == len(tiny_data.train)
    assert sum(rec["rows"]["test"].values()) == len(tiny_data.test)
