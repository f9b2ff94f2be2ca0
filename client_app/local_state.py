"""Where a device keeps its private state between messages, and across a resumed run.

``context.state`` persists across messages of a run on one node, also in
deployment, where each message runs in a fresh process. The state is also written
to a file keyed by run name and partition, so that it survives a SuperNode
restart or a resumed run (which gets a new run id and, in simulation, new node
ids): under the node config's ``state-dir`` when it names one, else, for a run
with a ``run-name``, under the cache directory. The file is read only when
``context.state`` is empty and the round is not the first (a run that starts
afresh never inherits an earlier run's state).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from flwr.app import Context

from common.cache import cache_root
from common.model.state import load_state, save_state
from common.settings import RunSettings
from common.state import State
from proto.records import from_record, to_record

KEY = "mlecs-device"


class DeviceStateError(RuntimeError):
    """A saved device state that cannot be read."""


def state_file(context: Context, settings: RunSettings, partition_id: int) -> Path | None:
    """The device's state file, or None when the run keeps no file."""
    state_dir = context.node_config.get("state-dir")
    name = settings.run_name or f"run-{context.run_id}"
    if not state_dir:
        if not settings.run_name:
            return None
        # Runs of the same name in other output folders must not share a file.
        out = str(Path(settings.output_dir).expanduser().resolve())
        name = f"{name}-{hashlib.sha256(out.encode()).hexdigest()[:8]}"
        state_dir = cache_root(settings) / "device-state"
    return Path(str(state_dir)).expanduser() / name / f"partition-{partition_id}.npz"


def read_device_state(
    context: Context, settings: RunSettings, partition_id: int, server_round: int
) -> State | None:
    """The device's saved state, or None on its first round.

    Raises
    ------
    DeviceStateError
        When the state file exists but cannot be read (the message names it).
    """
    if KEY in context.state.array_records:
        return from_record(context.state.array_records[KEY])
    path = state_file(context, settings, partition_id)
    if server_round <= 1 or path is None or not path.exists():
        return None
    try:
        return load_state(path)
    except Exception as err:  # a truncated or foreign file: say which, never half-load it
        raise DeviceStateError(
            f"device state {path} is unreadable ({err!r}); delete it to start this device afresh"
        ) from None


def write_device_state(
    context: Context, settings: RunSettings, partition_id: int, state: State
) -> None:
    """Keep ``state`` in ``context.state`` and in the device's state file (if any).

    :func:`read_device_state` reads it back; loading it into a model is
    :func:`common.model.state.load_local_state`'s job.
    """
    context.state[KEY] = to_record(state)
    path = state_file(context, settings, partition_id)
    if path is not None:
        save_state(path, state)
