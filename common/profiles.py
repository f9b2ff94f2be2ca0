"""Device profiles: what one kind of edge box runs (``conf/profiles/<name>.toml``).

A profile names a kind of box (a 2 GB single-board computer, a phone, a Jetson)
and the run-config keys its device uses instead of the run's: batch size, local
steps, torch threads, which encoders of the run's families it builds and the
rank of its shared LoRA adapters. A SuperNode takes one with ``--profile`` (node
config ``profile``); a simulation assigns them by ``profile-mix``. Only
device-local keys may differ, within the run's bounds: a profile may narrow an
encoder family to some of the run's encoders but never add one (the cloud keeps
adapters only for the run's families), and may lower the LoRA rank but never
raise it above the run's ``lora.rank`` (the federation's rank; see
``common.lora_ranks`` for how ranks meet). The box's memory is recorded, and a
device whose process peaks above :data:`MEMORY_WARN_SHARE` of it says so.
"""

from __future__ import annotations

import re
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.lora_ranks import device_alpha
from common.run_config import ConfigError, read_toml

PROFILE_DIR = Path(__file__).resolve().parents[1] / "conf" / "profiles"
ENCODER_KEYS = ("model.sensor-encoders", "model.image-encoders", "model.text-encoders")
RANK_KEY = "lora.rank"
DEVICE_KEYS = ("train.batch-size", "train.steps", "threads", *ENCODER_KEYS, RANK_KEY)
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

    A profile's ``lora.rank`` comes with the alpha that keeps the run's
    ``alpha / rank`` (``common.lora_ranks.device_alpha``); under the run's
    ``lora.hold-rest`` the device keeps the run's rank and alpha and the profile's
    rank is how many of the first components it trains (``lora.trained-rank``); with
    ``lora.profile-ranks = false`` it is ignored and the device keeps the run's rank.

    Parameters
    ----------
    defaults : dict
        The run's value of each encoder key, ``lora.rank``, ``lora.alpha``,
        ``lora.profile-ranks`` and ``lora.hold-rest`` when ``run_config`` leaves it out.

    Raises
    ------
    ConfigError
        When the profile asks for an encoder outside the run's family, or a
        LoRA rank above the run's.
    """
    run = {**defaults, **run_config}
    for key in ENCODER_KEYS:
        if key in profile.overrides:
            family = _names(run[key])
            extra = [e for e in _names(profile.overrides[key]) if e not in family]
            if extra:
                raise ConfigError(
                    f"profile {profile.name!r} asks for {key} {extra}, outside the run's "
                    f"family {family}: a profile may only narrow it"
                )
    overrides = dict(profile.overrides)
    rank = overrides.pop(RANK_KEY, None)
    if rank is not None and run["lora.profile-ranks"]:
        check_rank(profile, int(run[RANK_KEY]))
        if run.get("lora.hold-rest", False):
            # The box holds the run's rank and trains (and uploads) its first components.
            overrides["lora.trained-rank"] = int(rank)
        else:
            alpha = device_alpha(float(run["lora.alpha"]), int(rank), int(run[RANK_KEY]))
            overrides.update({RANK_KEY: int(rank), "lora.alpha": alpha})
    # The mix has done its work: the device's settings are its own profile's, and the
    # other profiles' ranks are no longer checked against this device's rank.
    return {**run_config, **overrides, "profile-mix": ""}


def check_rank(profile: Profile, run_rank: int) -> None:
    """Raise :class:`ConfigError` if ``profile`` sets a LoRA rank above ``run_rank`` or below 1."""
    rank = profile.overrides.get(RANK_KEY)
    if rank is not None and not (isinstance(rank, int) and 1 <= rank <= run_rank):
        raise ConfigError(
            f"profile {profile.name!r} sets lora.rank = {rank!r}: a profile may lower the "
            f"run's lora.rank ({run_rank}) to a whole number >= 1, never raise it"
        )


def parse_mix(mix: str, folder: Path = PROFILE_DIR, run_rank: int | None = None) -> list[str]:
    """``"sbc-2gb:2,jetson-orin:1"`` -> the cycle ``[sbc-2gb, sbc-2gb, jetson-orin]``.

    Raises
    ------
    ConfigError
        On a malformed entry, a weight below 1, an unknown profile or (given
        ``run_rank``) a profile's LoRA rank above it.
    """
    cycle: list[str] = []
    for entry in (e.strip() for e in mix.split(",") if e.strip()):
        name, _, weight = entry.partition(":")
        if not weight.strip().isdigit() or int(weight) < 1:
            raise ConfigError(f"profile-mix entry {entry!r}: expected NAME:WEIGHT, WEIGHT >= 1")
        profile = load_profile(name.strip(), folder)  # fail before any work on a bad name
        if run_rank is not None:
            check_rank(profile, run_rank)
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
