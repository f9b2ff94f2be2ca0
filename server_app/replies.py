"""One round's train replies: whom each answers for, and whether it is accepted."""

from __future__ import annotations

from dataclasses import dataclass, field
from logging import WARNING

import numpy as np
from flwr.app import Message
from flwr.common import log

from common.exchange import DeviceUpdate
from common.lora_ranks import pad_ranks, state_rank
from common.settings import RunSettings
from common.state import State
from proto.messages import PayloadError, read_train_reply
from server_app.contribution import Contribution, check_contribution
from server_app.round_result import RoundResult


@dataclass
class RoundWork:
    """What one round holds between its hooks (dropped when the next round starts)."""

    result: RoundResult
    started: float
    reference: State = field(default_factory=dict)  # numpy view of this round's arrays
    token: str = ""  # the round's token; a train reply must echo it
    sent: list[Message] = field(default_factory=list)  # this round's train instructions

    def sender(self, reply: Message) -> int:
        """The node a reply answers for: the SuperLink (node 1) sends a dead node's error."""
        for msg in self.sent:
            if (
                msg.metadata.message_id
                and msg.metadata.message_id == reply.metadata.reply_to_message_id
            ):
                return msg.metadata.dst_node_id
        return reply.metadata.src_node_id

    def missing(self, replies: list[Message]) -> list[int]:
        """The nodes sent a train instruction that ``replies`` do not answer for, sorted."""
        answered = {self.sender(r) for r in replies}
        return sorted({m.metadata.dst_node_id for m in self.sent} - answered)


def check_reply(
    work: RoundWork,
    reply: Message,
    settings: RunSettings,
    all_modalities: tuple[str, ...],
    public_ids: set[int] | None,
    known_ids: dict[int, np.ndarray],
) -> tuple[Contribution, DeviceUpdate] | str:
    """A train reply's contribution and update, or why the reply is rejected.

    Parameters
    ----------
    work : RoundWork
        The round the reply should answer: its token and the state it was sent.
    all_modalities : tuple of str
        The task's modalities.
    public_ids : set of int, optional
        Valid public sample ids for representations (None = not checked).
    known_ids : dict of int to numpy.ndarray
        Partition -> the public ids of that device's earlier replies: a device
        must keep sending representations for the same share.
    """
    if reply.has_error():
        return f"error reply: {reply.error.reason[:200]}"
    try:
        update = read_train_reply(reply.content)
    except PayloadError as err:
        return str(err)
    if update.round_token != work.token:
        return f"reply belongs to another round or run (token {update.round_token!r})"
    contrib = Contribution.from_update(work.sender(reply), update)
    problems = check_contribution(
        contrib,
        work.reference,
        all_modalities,
        settings.model.fused_dim,
        public_ids,
        settings.mma.max_update_bytes,
    )
    known = known_ids.get(update.partition_id)
    if (
        known is not None
        and len(contrib.rep_ids)
        and not np.array_equal(np.sort(contrib.rep_ids), np.sort(known))
    ):
        problems.append("representations for public ids outside the device's share")
    return "; ".join(problems) if problems else (_padded(contrib, work.reference), update)


def _padded(contrib: Contribution, reference: State) -> Contribution:
    """A device of a lower LoRA rank: its delta zero-padded to the run's rank, its rank kept."""
    contrib.delta, rank = pad_ranks(contrib.delta, reference)
    contrib.rank = rank if rank != state_rank(reference) else None
    return contrib


def enough(accepted: list[Contribution], min_nodes: int, n: int) -> list[Contribution]:
    """``accepted``, or none when fewer than ``min_nodes`` (round ``n`` skips aggregation)."""
    if len(accepted) >= min_nodes:
        return accepted
    log(
        WARNING,
        "round %s: aggregation skipped: %d updates accepted (strategy.min-nodes = %d)",
        n,
        len(accepted),
        min_nodes,
    )
    return []
