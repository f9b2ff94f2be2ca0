"""Communication ledger: bytes per device per round, by kind, in both directions."""

from __future__ import annotations

from collections import defaultdict

from flwr.app import RecordDict

from common.state import ENC_LORA, LORA, PROMPT
from proto.records import ANCHORS, ARRAYS, REPS, array_bytes, small_bytes

KINDS = (
    "lora_down",
    "prompt_down",
    "encoder_down",
    "reps_down",
    "lora_up",
    "prompt_up",
    "encoder_up",
    "reps_up",
    "manifests",
    "metrics",
)


class Ledger:
    """Accumulates payload bytes per device for the current round."""

    def __init__(self) -> None:
        self.round: dict[int, dict[str, int]] = defaultdict(lambda: dict.fromkeys(KINDS, 0))

    def reset(self) -> None:
        """Start a new round."""
        self.round.clear()

    def add_down(self, node: int, content: RecordDict) -> None:
        """Count a server -> device message."""
        row = self.round[node]
        row["lora_down"] += array_bytes(content, ARRAYS, LORA)
        row["prompt_down"] += array_bytes(content, ARRAYS, PROMPT)
        row["encoder_down"] += array_bytes(content, ARRAYS, ENC_LORA)
        row["reps_down"] += array_bytes(content, ANCHORS)
        row["manifests"] += small_bytes(content, manifests=True)
        row["metrics"] += small_bytes(content, manifests=False)

    def add_up(self, node: int, content: RecordDict) -> None:
        """Count a device -> server message."""
        row = self.round[node]
        row["lora_up"] += array_bytes(content, ARRAYS, LORA)
        row["prompt_up"] += array_bytes(content, ARRAYS, PROMPT)
        row["encoder_up"] += array_bytes(content, ARRAYS, ENC_LORA)
        row["reps_up"] += array_bytes(content, REPS)
        row["manifests"] += small_bytes(content, manifests=True)
        row["metrics"] += small_bytes(content, manifests=False)

    def by_device(
        self, partitions: dict[int, int], ranks: dict[int, int | None], run_rank: int | None
    ) -> dict[str, dict[str, int]]:
        """Node id -> that device's bytes this round: up, down, and its backbone LoRA's each way.

        ``partitions`` maps node ids to partition ids and ``ranks`` to a LoRA rank
        below the run's ``run_rank`` (None: the run's); both are added where known.
        """
        out: dict[str, dict[str, int]] = {}
        for node, row in sorted(self.round.items()):
            up, down = _totals(row)
            entry = {
                "up": up,
                "down": down,
                "lora_up": row["lora_up"],
                "lora_down": row["lora_down"],
            }
            if node in partitions:
                entry["partition_id"] = partitions[node]
            if node in ranks and run_rank is not None:
                entry["lora_rank"] = ranks[node] or run_rank
            out[str(node)] = entry
        return out

    def summary(self, edge_param_bytes: int) -> dict[str, float]:
        """Mean bytes per device this round, by kind, and the ratio to the model.

        ``ratio`` is (bytes up + bytes down per device) / edge model parameter bytes.
        """
        nodes = list(self.round.values())
        if not nodes:
            return {}
        mean = {k: sum(n[k] for n in nodes) / len(nodes) for k in KINDS}
        up, down = _totals(mean)
        return {
            **{f"bytes_{k}": v for k, v in mean.items()},
            "bytes_up_per_client_round": up,
            "bytes_down_per_client_round": down,
            "edge_model_param_bytes": edge_param_bytes,
            "ratio": (up + down) / edge_param_bytes if edge_param_bytes else float("nan"),
        }


def _totals(row: dict[str, float]) -> tuple[float, float]:
    """Bytes up and down of a ledger row (one device's, or the mean of all)."""
    up = sum(row[f"{k}_up"] for k in ("lora", "prompt", "encoder", "reps"))
    down = sum(row[f"{k}_down"] for k in ("lora", "prompt", "encoder", "reps"))
    # Metrics and manifests flow both ways; they are counted once, on the upload side.
    return up + row["metrics"] + row["manifests"], down
