"""Device profiles: what one kind of edge box runs (``conf/profiles/<name>.toml``).

A profile names a kind of box (a 2 GB single-board computer, a phone, a Jetson)
and the run-config keys its device uses instead of the run's: batch size, local
steps, torch threads and which encoders of the run's families it builds. A
SuperNode takes one with ``--profile`` (node config ``profile``); a simulation
assigns them by ``profile-mix``. Only device-local keys may differ: everything
the devices exchange keeps the run's shape, so a profile may narrow an encoder
family to some of the run's encoders but never add one (the cloud keeps
adapters only for the run's families). The box's memory is recorded, and a
device whose process peaks above :data:`MEMORY_WARN_SHARE` of it says so.
"""

from __future__ import annotations

import re
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.run_config import ConfigError, read_toml

PROFILE_DIR = Path(__file__).resolve().parents[1] / "conf" / "profiles"
ENCODER_KEYS = ("model.sensor-encoders", "model.image-encoders", "model.text-encoders")
DEVICE_KEYS = ("train.batch-size", "train.steps", "threads", *ENCODER_KEYS)
MEMORY_WARN_SHARE = 0.75
NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class Profile:
    """One kind of edge box: its memory and the device-local keys it overrides."""

    name: str
    description: str
    memory_gib: float
    overrides: dict[str, Any] = field(default_factory=dict)


def profile_names(folder: Path = PROFILE_DIR) -> list[str]:
    """The profiles in ``folder``, by name."""
    return sorted(p.stem for p in folder.glob("*.toml"))


def load_profile(name: str, folder: Path = PROFILE_DIR) -> Profile:
    """The profile ``name`` from ``folder``.

    Raises
    ------
    ConfigError
        On an unknown name (listing the known ones), a key that is not
        device-local, or a missing or impossible memory size.
    """
    path = folder / f"{name}.toml"
    if not NAME.match(name) or not path.is_file():
        raise ConfigError(f"unknown device profile {name!r}; known: {profile_names(folder)}")
    data = read_toml(path)
    head, overrides = data.get("profile", {}), data.get("overrides", {})
    unknown = sorted(set(overrides) - set(DEVICE_KEYS))
    if unknown:
        raise ConfigError(
            f"profile {name!r} sets {unknown}: a profile may set only {list(DEVICE_KEYS)}"
        )
    memory = head.get("memory-gib")
    if not isinstance(memory, (int, float)) or memory <= 0:
        raise ConfigError(f"profile {name!r} needs [profile] memory-gib > 0 (the box's memory)")
    return Profile(name, str(head.get("description", "")), float(memory), dict(overrides))


def device_run_config(run_config: dict, profile: Profile, defaults: dict) -> dict:
    """``run_config`` as this profile's device uses it.

    Parameters
    ----------
    defaults : dict
        The run's value of each encoder key when ``run_config`` leaves it out.

    Raises
    ------
    ConfigError
        When the profile asks for an encoder outside the run's family.
    """
    for key in ENCODER_KEYS:
        if key in profile.overrides:
            family = _names(run_config.get(key, defaults[key]))
            extra = [e for e in _names(profile.overrides[key]) if e not in family]
            if extra:
                raise ConfigError(
                    f"profile {profile.name!r} asks for {key} {extra}, outside the run's "
                    f"family {family}: a profile may only narrow it"
                )
    return {**run_config, **profile.overrides}


def parse_mix(mix: str, folder: Path = PROFILE_DIR) -> list[str]:
    """``"sbc-2gb:2,jetson-orin:1"`` -> the cycle ``[sbc-2gb, sbc-2gb, jetson-orin]``.

    Raises
    ------
    ConfigError
        On a malformed entry, a weight below 1 or an unknown profile.
    """
    cycle: list[str] = []
    for entry in (e.strip() for e in mix.split(",") if e.strip()):
        name, _, weight = entry.partition(":")
        if not weight.strip().isdigit() or int(weight) < 1:
            raise ConfigError(f"profile-mix entry {entry!r}: expected NAME:WEIGHT, WEIGHT >= 1")
        load_profile(name.strip(), folder)  # fail before any work on a bad name
        cycle += [name.strip()] * int(weight)
    return cycle


def mixed_profile(mix: str, partition_id: int) -> str | None:
    """The profile ``profile-mix`` gives device ``partition_id`` (None without a mix)."""
    cycle = parse_mix(mix)
    return cycle[partition_id % len(cycle)] if cycle else None


def memory_note(profile: Profile) -> str | None:
    """A warning when this process's peak memory passed its share of the box's memory."""
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    if peak_gib <= MEMORY_WARN_SHARE * profile.memory_gib:
        return None
    return (
        f"device profile {profile.name!r}: this process peaked at {peak_gib:.2f} GiB, over "
        f"{MEMORY_WARN_SHARE:.0%} of the box's {profile.memory_gib:g} GiB"
    )


def _names(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(x).strip() for x in items if str(x).strip()]
