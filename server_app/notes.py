"""The per-node notes of a run (clipped updates, damped representations), logged once.

A device that is clipped or damped tends to be so every round. Each distinct
note is logged the first time, with its node; later ones of the same kind (the
same text up to its numbers) are only counted, and the round's one line says
how many repeated.
"""

from __future__ import annotations

import re
from logging import INFO

from flwr.common import log

_NUMBER = re.compile(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?")


class NodeNotes:
    """Log each distinct note of a node once per run; count the repeats per round."""

    def __init__(self) -> None:
        self._seen: set[tuple[int, str]] = set()
        self.repeated = 0  # notes of the current round not logged again

    def start_round(self) -> None:
        """Count the repeats of a new round from zero."""
        self.repeated = 0

    def note(self, server_round: int, node: int, text: str) -> None:
        """Log ``text`` for ``node`` unless a note of its kind was logged before."""
        kind = (node, _NUMBER.sub("#", text))
        if kind in self._seen:
            self.repeated += 1
            return
        self._seen.add(kind)
        log(INFO, "round %s: node %s: %s (logged once per run)", server_round, node, text)
