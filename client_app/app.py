"""ClientApp: thin handlers translating Flower messages to a Device round."""

from __future__ import annotations

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
    device_record,
    from_record,
    metric_record,
    reps_from,
    reps_record,
    to_record,
)
from common.settings import RunSettings

app = ClientApp()


def _open_device(msg: Message, context: Context) -> tuple[Device, GlobalPayload]:
    settings = RunSettings.from_run_config(context.run_config)
    device = Device(settings, identity_from_node_config(context.node_config))
    anchor_ids, anchors = reps_from(msg.content, ANCHORS)
    state = from_record(msg.content.array_records[ARRAYS]) if ARRAYS in msg.content else {}
    payload = GlobalPayload(state=state, anchor_ids=anchor_ids, anchors=anchors)
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
    content = RecordDict(
        {
            ARRAYS: to_record(update.delta),
            METRICS: metric_record(metrics),
            DEVICE: device_record(update.modalities, device.ident.partition_id),
        }
    )
    if len(update.rep_ids):
        content[REPS] = reps_record(update.rep_ids, update.reps)
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
