"""What one server round produced: the typed result the recorder and the log consume."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RoundResult:
    """One round, as the strategy saw it.

    Attributes
    ----------
    server_round : int
        The round number, counted from the start of the run (resumes included).
    seconds : float
        Wall time from sending the train instructions to the end of the round.
    accepted : int
        Training replies aggregated.
    rejected : dict of int to str
        Node id -> why its training reply was rejected.
    missing : list of int
        Nodes sent a train instruction that did not answer within the timeout.
    weights : dict of str to float
        Node id -> final aggregation weight (after MMA damping).
    cloud : dict of str to float
        Losses of the cloud model's training step.
    clients : dict of int to dict
        Node id -> that device's scores of its personal model after training (from
        its train reply; ``partition_id`` added).
    clients_global : dict of int to dict
        Node id -> scores from a separate evaluation of the aggregated global
        state with the device's own parts (``strategy.evaluate-every`` rounds).
    training : dict of int to dict
        Node id -> what that device reported of its training: per stage the steps,
        each loss term and each term's gradient share.
    comm : dict of str to float
        The communication ledger's summary (bytes per device by kind, ratio).
    comm_by_device : dict of str to dict
        Node id -> that device's own bytes (up, down, backbone LoRA each way).
    privacy : dict of str to float
        Central DP of the shared update: devices clipped, noise std, cumulative epsilon.
    repeated_notes : int
        Per-node notes of this round not logged again (logged in an earlier round).
    """

    server_round: int
    seconds: float = 0.0
    accepted: int = 0
    rejected: dict[int, str] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    cloud: dict[str, float] = field(default_factory=dict)
    clients: dict[int, dict[str, float]] = field(default_factory=dict)
    clients_global: dict[int, dict[str, float]] = field(default_factory=dict)
    training: dict[int, dict[str, float]] = field(default_factory=dict)
    comm: dict[str, float] = field(default_factory=dict)
    comm_by_device: dict[str, dict[str, int]] = field(default_factory=dict)
    privacy: dict[str, float] = field(default_factory=dict)
    repeated_notes: int = 0

    def aggregation(self) -> dict[str, object]:
        """The ``aggregation`` block of a round record."""
        out: dict[str, object] = {"accepted": self.accepted, "rejected": len(self.rejected)}
        if self.missing:
            out["missing"] = list(self.missing)
        if self.weights:
            out["weights"] = dict(self.weights)
        out.update(self.cloud)
        out.update(self.privacy)
        return out
