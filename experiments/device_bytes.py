"""Bytes each device moved per round, by its LoRA rank, from a run's or a sweep's files.

Each round record holds every device's own bytes (``comm_by_device``: up, down, its
backbone LoRA's each way, and its LoRA rank as the server learnt it from its
updates). Rounds after the first only: in round 1 the server has not heard from a
device yet and sends it the run's rank.

Usage::

    python -m experiments.device_bytes outputs/ranks [--out bytes.md]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from common.atomic import write_text
from experiments.report_sources import read_source

KEYS = ("lora_up", "lora_down", "up", "down")


def bytes_by_rank(source: Path) -> dict[int, dict[str, float]]:
    """Rank -> mean bytes per device per round of each of :data:`KEYS`, and ``devices``.

    Raises
    ------
    FileNotFoundError
        When ``source`` holds no finished run.
    """
    samples: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    devices: dict[int, set[tuple[str, int]]] = defaultdict(set)
    for group in read_source(source).values():
        for runs in group.values():
            for run in runs:
                for record in run.rounds[1:]:
                    for entry in (record.get("comm_by_device") or {}).values():
                        if "lora_rank" not in entry:
                            continue  # a device the server had not heard from
                        rank = int(entry["lora_rank"])
                        devices[rank].add((str(run.folder), entry.get("partition_id", -1)))
                        for key in KEYS:
                            samples[rank][key].append(float(entry[key]))
    return {
        rank: {"devices": len(devices[rank]), **{k: float(np.mean(v)) for k, v in by.items()}}
        for rank, by in sorted(samples.items())
    }


def table(by_rank: dict[int, dict[str, float]]) -> str:
    """A markdown table: per rank, devices and kB per device per round (and vs the top rank)."""
    top = by_rank[max(by_rank)]["lora_up"] if by_rank else 1.0
    head = ("LoRA rank", "devices", "LoRA up kB", "LoRA down kB", "all up kB", "all down kB")
    lines = ["| " + " | ".join(head) + " | LoRA up / top rank |", "|---" * 7 + "|"]
    for rank, row in by_rank.items():
        kb = [f"{row[k] / 1e3:.1f}" for k in KEYS]
        lines.append(
            f"| {rank} | {row['devices']} | " + " | ".join(kb) + f" | {row['lora_up'] / top:.3f} |"
        )
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """The command line's arguments (``tests/test_docs_commands.py`` checks the docs' uses)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path, help="a run folder or a sweep folder")
    p.add_argument("--out", type=Path, help="write the table here (markdown)")
    return p


def main(argv: list[str] | None = None) -> None:
    """Print (and with ``--out`` write) the table."""
    args = build_parser().parse_args(argv)
    text = table(bytes_by_rank(args.source))
    if args.out:
        write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
