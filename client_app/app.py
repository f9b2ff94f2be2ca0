"""ClientApp: thin handlers translating Flower messages to a Device round."""

from __future__ import annotations

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from client_app.device import Device, DeviceIdentity, GlobalPayload
from client_app.local_state import load_local_state, save_local_state
from common.records import (
    ANCHORS,
    ARRAYS,
    COUNT_PREFIX,
    DEVICE,
    METRICS,
    NUM_EXAMPLES,
    REPS,
    as_float32,
    device_record,
    get_payload,
    metric_record,
    put_payload,
)
from common.settings import RunSettings

app = ClientApp()


def _open_device(msg: Message, context: Context) -> tuple[Device, GlobalPayload]:
    settings = RunSettings.from_run_config(context.run_config)
    # Validate everything received against its manifest before touching the model.
    state, problems = get_payload(msg.content, ARRAYS, "GLOBAL_STATE")
    anchors: dict = {}
    if ANCHORS in msg.content.array_records:
        anchors, more = get_payload(msg.content, ANCHORS, "ANCHORS")
        problems += more
    if problems:
        raise ValueError("rejected server payload: " + "; ".join(problems))
    device = Device(settings, identity_from_node_config(context.node_config))
    payload = GlobalPayload(
        state=as_float32(state),
        anchor_ids=anchors.get("ids", np.zeros(0, np.int64)),
        anchors=anchors.get("z", np.zeros((0, 0), np.float32)).astype(np.float32),
    )
    device.restore(load_local_state(context), payload)
    return device, payload


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local AMT / fine-tuning; reply with the shared-state delta and z^c."""
    # Load settings, data, model and this device's persisted state
    device, payload = _open_device(msg, context)
    # Train
    update = device.train(payload, int(msg.content["config"]["server-round"]))
    save_local_state(context, device.local_state())
    # Reply: shared delta, representations of public ids, metrics, device manifest
    metrics = {NUM_EXAMPLES: update.num_examples, **update.metrics}
    metrics.update({COUNT_PREFIX + m: c for m, c in update.modality_counts.items()})
    dtype, ident = device.settings.transport.dtype, device.ident
    manifest = {
        "modalities": update.modalities,
        "counts": update.modality_counts,
        "partition_id": ident.partition_id,
    }
    content = RecordDict(
        {
            METRICS: metric_record(metrics),
            DEVICE: device_record(update.modalities, ident.partition_id),
        }
    )
    put_payload(content, ARRAYS, update.delta, "SHARED_DELTA", dtype, **manifest)
    if len(update.rep_ids):
        reps = {"ids": update.rep_ids.astype(np.int64), "z": update.reps}
        put_payload(content, REPS, reps, "REPRESENTATIONS", dtype, **manifest)
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the personal model (global shared + private state) on the test split."""
    device, _ = _open_device(msg, context)
    result = device.evaluate()
    metrics = {NUM_EXAMPLES: int(result.pop("num_examples")), **result}
    metrics["partition_id"] = device.ident.partition_id
    content = RecordDict(
        {
            METRICS: metric_record(metrics),
            DEVICE: device_record(device.data.modalities, device.ident.partition_id),
        }
    )
    return Message(content, reply_to=msg)


def identity_from_node_config(node_config: dict) -> DeviceIdentity:
    """Partition and optional modality set from the node config.

    Simulation injects ``partition-id`` and ``num-partitions``; on an edge box
    ``flower-supernode --node-config`` may also give ``modalities="acc,gyro"``.
    """
    try:
        pid, n = int(node_config["partition-id"]), int(node_config["num-partitions"])
    except KeyError as err:
        raise ValueError(
            f"node config lacks {err}; pass --node-config 'partition-id=.. num-partitions=..'"
        ) from None
    mods = node_config.get("modalities")
    held = tuple(m.strip() for m in str(mods).split(",") if m.strip()) if mods else None
    return DeviceIdentity(pid, n, held)
