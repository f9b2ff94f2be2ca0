"""Where a device keeps its private state between messages.

``context.state`` persists across messages of a run on one node, also in
deployment, where each message runs in a fresh process. When the node config
names a ``state-dir``, the state is also written there, so it survives a
SuperNode restart or a resumed run; it is read from there when ``context.state`` is
empty.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context

from common.model.state import load_state, save_state
from common.state import State
from proto.records import from_record, to_record

KEY = "mlecs-device"


def _state_file(context: Context) -> Path | None:
    state_dir = context.node_config.get("state-dir")
    if not state_dir:
        return None
    # Keyed by run name when there is one, so a resumed run (new run id) finds it.
    name = context.run_config.get("run-name") or f"run-{context.run_id}"
    return Path(str(state_dir)).expanduser() / str(name) / "device-state.npz"


def load_local_state(context: Context) -> State | None:
    """The device's saved state, or None on its first round."""
    if KEY in context.state.array_records:
        return from_record(context.state.array_records[KEY])
    path = _state_file(context)
    if path is not None and path.exists():
        return load_state(path)
    return None


def save_local_state(context: Context, state: State) -> None:
    """Keep ``state`` in ``context.state`` (and in ``state-dir`` when given)."""
    context.state[KEY] = to_record(state)
    path = _state_file(context)
    if path is not None:
        save_state(path, state)
