"""Transport dtypes: float16 and int8 (per-tensor scale) payloads round-trip within their step."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import RecordDict

from proto.records import SCALE, dequantize, get_payload, put_payload, quantize


def _state():
    rng = np.random.default_rng(0)
    return {
        "lora/a": rng.normal(size=(8, 16)).astype(np.float32),
        "prompt/lora_B": np.zeros((4, 2), np.float32),
        "ids": np.arange(5, dtype=np.int64),
    }


def test_int8_round_trip_is_within_half_a_step_and_keeps_ids():
    state = _state()
    q = quantize(state)
    assert q["lora/a"].dtype == np.int8 and q["ids"].dtype == np.int64
    back = dequantize(q)
    assert set(back) == set(state) and all(not k.endswith(SCALE) for k in back)
    step = np.abs(state["lora/a"]).max() / 127
    assert np.abs(back["lora/a"] - state["lora/a"]).max() <= step / 2 + 1e-7
    np.testing.assert_array_equal(back["prompt/lora_B"], 0.0)
    np.testing.assert_array_equal(back["ids"], state["ids"])


@pytest.mark.parametrize(
    ("dtype", "bytes_per_float"), [("float32", 4), ("float16", 2), ("int8", 1)]
)
def test_payloads_travel_in_the_transport_dtype_and_arrive_as_float32(dtype, bytes_per_float):
    content = RecordDict()
    state = {k: v for k, v in _state().items() if k != "ids"}
    put_payload(content, "arrays", state, "SHARED_DELTA", dtype, partition_id=0)
    sent = sum(len(a.data) for k, a in content["arrays"].items() if not k.endswith(SCALE))
    assert sent <= sum(v.size for v in state.values()) * bytes_per_float + 2 * 128
    arrays, problems = get_payload(content, "arrays", "SHARED_DELTA")
    assert problems == [] and set(arrays) == set(state)
    assert all(v.dtype in (np.float32, np.float16) for v in arrays.values())


def test_a_scale_without_its_tensor_is_a_problem():
    content = RecordDict()
    bad = {"lora/a": np.ones(3, np.float32), "lora/b" + SCALE: np.asarray(2.0, np.float32)}
    put_payload(content, "arrays", bad, "SHARED_DELTA", partition_id=0)
    _, problems = get_payload(content, "arrays", "SHARED_DELTA")
    assert any("without an int8 tensor" in p for p in problems)
