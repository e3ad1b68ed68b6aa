from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from crossctr.data.encoders import MISSING_ID, N_RESERVED, OOV_ID, CategoricalEncoder, FeatureEncoder, NumericBucketizer


def test_categorical_unseen_and_rare_values_map_to_oov() -> None:
    enc = CategoricalEncoder(min_count=2).fit(pa.array(["a", "a", "b", "b", "b", "c", None]))
    assert enc.vocab_ == ["b", "a"]  # most frequent first; "c" is rarer than min_count
    ids = enc.transform(pa.array(["a", "b", "c", "zzz", None]))
    assert ids.tolist() == [N_RESERVED + 1, N_RESERVED, OOV_ID, OOV_ID, MISSING_ID]
    assert enc.cardinality == N_RESERVED + 2


@settings(max_examples=50, deadline=None)
@given(
    train=st.lists(st.text(max_size=5), min_size=1, max_size=30),
    unseen=st.lists(st.text(min_size=1, max_size=6), max_size=10),
)
def test_any_unseen_value_gets_oov_and_seen_values_round_trip(train: list[str], unseen: list[str]) -> None:
    enc = CategoricalEncoder().fit(pa.array(train))
    new = [u for u in unseen if u not in set(train)]
    assert (enc.transform(pa.array(new, type=pa.string())) == OOV_ID).all()
    ids = enc.transform(pa.array(train))
    assert enc.decode(ids) == train  # encode then decode loses nothing for seen values


def test_numeric_buckets_are_quantiles_and_missing_has_its_own_id() -> None:
    x = np.arange(100, dtype=float)
    enc = NumericBucketizer(buckets=4).fit(pa.array(x))
    assert enc.boundaries_ == [24.75, 49.5, 74.25]
    ids = enc.transform(pa.array([0.0, 30.0, 60.0, 99.0, 1e9, -1e9, None], type=pa.float64()))
    assert ids.tolist() == [3, 4, 5, 6, 6, 3, MISSING_ID]


def test_feature_encoder_json_round_trip(tiny_data, tiny_table) -> None:
    from crossctr.data.io import validate_table

    enc = tiny_data.encoder
    again = FeatureEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert again.cardinalities == enc.cardinalities
    t = validate_table(tiny_table(200, seed=3), enc.schema, "t")
    assert (again.transform(t) == enc.transform(t)).all()


def test_encoders_are_fitted_on_train_rows_only() -> None:
    """A value that occurs only in validation/test rows is OOV: no leakage from held-out data."""
    from pathlib import Path

    from crossctr.data.dataset import prepare
    from crossctr.schema import DatasetSchema

    schema = DatasetSchema.model_validate(
        {
            "name": "leak",
            "path": "x",
            "label": "y",
            "domain": {"column": "d", "values": ["A", "B"]},
            "features": [{"name": "c", "kind": "categorical"}, {"name": "v", "kind": "numeric", "buckets": 2}],
            "split": {"kind": "column", "column": "split"},
        }
    )
    table = pa.table(
        {
            "d": ["A", "B", "A", "B", "A", "B"],
            "y": [0, 1, 1, 0, 1, 0],
            "c": ["x", "y", "x", "y", "only_test", "only_valid"],
            "v": [0.0, 1.0, 2.0, 3.0, 1000.0, -5.0],
            "split": ["train", "train", "train", "train", "test", "valid"],
        }
    )
    data = prepare(schema, Path("."), table)
    assert data.encoder.encoders_["c"].vocab_ == ["x", "y"]
    assert data.test.features[0, 0].item() == OOV_ID
    assert data.valid.features[0, 0].item() == OOV_ID
    assert max(data.encoder.encoders_["v"].boundaries_) <= 3.0  # quantiles ignore the test value 1000
