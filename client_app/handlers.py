"""What a ClientApp message does, on Flower records (no ``Message``): train or evaluate.

Called by the ClientApp's handlers in their own process, or by a node's warm
worker (:mod:`client_app.worker`), which keeps the imports and the built device
between messages.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from flwr.app import Context, RecordDict

from client_app.device import Device, DeviceIdentity
from client_app.local_state import read_device_state, write_device_state
from common.exchange import GlobalPayload
from common.profiles import Profile, device_run_config, load_profile, memory_note, mixed_profile
from common.reproducibility import pin
from common.settings import RunSettings
from proto.messages import evaluate_reply, read_instruction, train_reply

# Devices built in this process, reused for their next message (simulation and a
# warm worker run many messages per process).
_DEVICES: OrderedDict[tuple, Device] = OrderedDict()
_MAX_DEVICES = 128
_WARNED: set[str] = set()  # profiles whose memory warning this process has given
log = logging.getLogger("mlecs.client")


def run_train(content: RecordDict, context: Context) -> RecordDict:
    """Local AMT / fine-tuning; the reply: shared-state delta, z^c, personal scores."""
    # Load settings, data, model and this device's persisted state
    device, payload = _open_device(content, context)
    # Train, keep the private state, score the personal model, reply with the update
    update = device.train(payload, payload.server_round)
    write_device_state(context, device.settings, device.ident.partition_id, device.local_state())
    update.evaluation = device.evaluate()
    _check_memory(context)
    return train_reply(update, device.settings.transport.dtype)


def run_evaluate(content: RecordDict, context: Context) -> RecordDict:
    """Evaluate the personal model (global shared + private state) on the test split."""
    device, _ = _open_device(content, context)
    result = device.evaluate()
    num_examples = int(result.pop("num_examples"))
    return evaluate_reply(result, num_examples)


def _open_device(content: RecordDict, context: Context) -> tuple[Device, GlobalPayload]:
    settings, _ = device_settings(context.run_config, context.node_config)
    pin(settings)
    # Validate everything received against its manifest before touching the model.
    payload = read_instruction(content)
    ident = identity_from_node_config(context.node_config)
    local = read_device_state(context, settings, ident.partition_id, payload.server_round)
    device = _device(settings, ident, reuse=local is not None)
    device.restore(local, payload)
    return device, payload


def _device(settings: RunSettings, ident: DeviceIdentity, reuse: bool) -> Device:
    """The device for ``ident``, built once per process and reset from its state afterwards.

    A device is reused only when it has saved state to restore, which overwrites
    everything that trains (encoders, connector, adapters, optimiser); its first
    message always builds it afresh.
    """
    key = (settings, ident)
    device = _DEVICES.get(key) if reuse else None
    if device is None:
        _DEVICES.pop(key, None)
        while len(_DEVICES) >= _MAX_DEVICES:  # free the oldest before building: a lower peak
            _DEVICES.popitem(last=False)
        device = Device(settings, ident)
        _DEVICES[key] = device
    _DEVICES.move_to_end(key)
    return device


def device_settings(run_config: dict, node_config: dict) -> tuple[RunSettings, Profile | None]:
    """The settings this device runs, and its profile (``common.profiles``).

    The node config's ``profile`` (a SuperNode's ``--profile``) wins; else the
    run's ``profile-mix`` gives one by partition id (all of it but its ``threads``);
    else the run's keys as they are.
    """
    settings = RunSettings.from_run_config(run_config)
    pid = int(node_config.get("partition-id", 0))
    name = node_config.get("profile") or mixed_profile(settings.profile_mix, pid)
    if not name:
        return settings, None
    profile = load_profile(str(name))
    m, lora = settings.model, settings.lora
    defaults = {
        "model.sensor-encoders": m.sensor_encoders,
        "model.image-encoders": m.image_encoders,
        "model.text-encoders": m.text_encoders,
        "lora.rank": lora.rank,
        "lora.alpha": lora.alpha,
        "lora.profile-ranks": lora.profile_ranks,
        "lora.hold-rest": lora.hold_rest,
    }
    own = device_run_config(run_config, profile, defaults)
    if not node_config.get("profile"):
        # A box of a simulation's mix runs on the simulating machine, many to a
        # process: its threads are the run's, not the box's cores (6 on 2 cores stall).
        own["threads"] = settings.threads
    return RunSettings.from_run_config(own), profile


def _check_memory(context: Context) -> None:
    """Warn once per process when a box's profile says its memory is nearly used.

    Only a SuperNode's own profile counts: in a simulation one process serves many
    devices, so its peak says nothing about one box.
    """
    name = context.node_config.get("profile")
    if not name or name in _WARNED:
        return
    note = memory_note(load_profile(str(name)))
    if note:
        _WARNED.add(str(name))
        log.warning(note)


def keep_devices(limit: int) -> None:
    """Keep at most ``limit`` built devices in this process from now on.

    A simulation process serves many devices of one run (the default, 128); a
    node's warm worker serves one device, run after run, and keeps only the
    current run's, so a box's memory does not grow with the runs it has served.
    """
    global _MAX_DEVICES
    _MAX_DEVICES = max(1, limit)
    while len(_DEVICES) > _MAX_DEVICES:
        _DEVICES.popitem(last=False)


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
