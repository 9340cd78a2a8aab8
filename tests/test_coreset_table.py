"""The Parquet table a run records of each selection: its columns, their types, and where it lands."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from distributed_adcs.coreset.table import coreset_table, write_coreset, write_selection
from distributed_adcs.data.types import ImageSet
from distributed_adcs.engine.job import Selection


def test_one_row_per_pick_with_the_schema_users_read():
    table = coreset_table(torch.tensor([7, 3, 11]), torch.tensor([0.5, 2.0, 1.25], dtype=torch.float64),
                          torch.tensor([1, 0, 9]), epoch=4)
    assert table.schema == pa.schema([("index", pa.int64()), ("weight", pa.float32()), ("label", pa.int64()),
                                      ("epoch", pa.int64())])
    assert table.to_pydict() == {"index": [7, 3, 11], "weight": [0.5, 2.0, 1.25], "label": [1, 0, 9],
                                 "epoch": [4, 4, 4]}


def test_extra_columns_follow_the_fixed_ones():
    table = coreset_table(torch.tensor([2, 5]), torch.ones(2), torch.tensor([3, 3]), epoch=0,
                          extra={"shard": torch.tensor([1, 0], dtype=torch.int32)})
    assert table.column_names == ["index", "weight", "label", "epoch", "shard"]
    assert table.column("shard").type == pa.int32() and table.column("shard").to_pylist() == [1, 0]


def test_a_selection_is_written_by_global_index_into_a_new_directory(tmp_path):
    # positions index the train split held here; the table records each pick's global index
    train = ImageSet(images=torch.zeros(5, 1, 2, 2, dtype=torch.uint8), labels=torch.tensor([0, 1, 2, 3, 4]),
                     indices=torch.tensor([100, 101, 102, 103, 104]))
    selection = Selection(epoch=2, positions=torch.tensor([4, 1]), weights=torch.tensor([3.0, 2.0]),
                          extra={"shard": torch.tensor([1, 0])})
    path = write_selection(tmp_path / "runs" / "coresets" / "epoch_0002.parquet", train, selection)
    assert path == tmp_path / "runs" / "coresets" / "epoch_0002.parquet"
    assert pq.read_table(path).to_pydict() == {"index": [104, 101], "weight": [3.0, 2.0], "label": [4, 1],
                                               "epoch": [2, 2], "shard": [1, 0]}
    again = write_coreset(tmp_path / "runs" / "coresets" / "other.parquet", pq.read_table(path))  # directory exists
    assert pq.read_table(again).equals(pq.read_table(path))
