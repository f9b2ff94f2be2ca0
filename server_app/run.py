"""One run on the server: cloud model, strategy, per-round records and checkpoints."""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from logging import INFO

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid

from common.model.factory import reference_edge_model
from common.model.state import initial_global_state
from common.run_config import flatten
from common.settings import RunSettings
from proto.records import from_record, to_record
from server_app.checkpoint import (
    CHECKPOINT,
    Checkpoint,
    check_resumable,
    load_checkpoint,
    save_checkpoint,
)
from server_app.cloud import Cloud
from server_app.recorder import (
    Recorder,
    check_run_folder,
    round_line,
    round_record,
    run_folder,
)
from server_app.round_result import RoundResult
from server_app.strategy import MlEcsStrategy

_NO_CONSENSUS = (np.zeros(0, np.int64), np.zeros((0, 0), np.float32))


class ServerRun:
    """Everything the ServerApp holds for one run (no Flower runtime needed).

    Raises
    ------
    server_app.recorder.RunRefused
        Before any work (no data loaded, nothing written) when the run folder
        holds another run, or a resumed run has no rounds left.
    """

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.run_dir = run_folder(settings)
        check_run_folder(settings, self.run_dir)
        self.cloud = Cloud(settings)  # loads the data: fails early on bad input
        edge = reference_edge_model(settings)
        self.edge_param_bytes = sum(p.numel() for p in edge.parameters()) * 4
        self.initial_state = initial_global_state(settings, edge)
        del edge
        self.strategy = MlEcsStrategy(settings, self.cloud, self.edge_param_bytes)
        self._config = json.loads(json.dumps(flatten(settings)))
        done = self._resume() if settings.resume else 0
        self.recorder = Recorder(settings, keep_rounds=done, run_dir=self.run_dir)
        # The communication of the rounds before a resume counts in the summary too.
        self.comm: list[dict[str, float]] = [
            r["comm"] for r in self.recorder.history if r.get("comm")
        ]
        self.results: list[RoundResult] = []  # one per round of this start
        self.global_arrays = ArrayRecord()  # the global shared state after the last round

    def _resume(self) -> int:
        """Restore the last checkpoint of this run directory; return its round."""
        run_dir = self.run_dir
        if not (run_dir / CHECKPOINT).exists():
            log(INFO, "resume: no checkpoint in %s, starting at round 1", run_dir)
            return 0
        ckpt = load_checkpoint(run_dir)
        check_resumable(ckpt, flatten(self.settings), self.initial_state)
        self.initial_state = ckpt.global_state
        self.cloud.load_state(ckpt.cloud_state)
        self.cloud.load_global(ckpt.global_state)
        self.strategy.restore(ckpt.strategy)
        log(INFO, "resume: %s from round %s", run_dir, ckpt.server_round)
        return ckpt.server_round

    def run(self, grid: Grid) -> dict:
        """Run every remaining round on ``grid``, then write the summary; return it."""
        s = self.settings
        if self.strategy.round_number(0) == 0:
            # Round 0: the cloud first tunes on its public data (every method alike),
            # so its first SE-CCL anchors are not those of an untrained model.
            log(INFO, "round 0: cloud %s", self.cloud.step(*_NO_CONSENSUS, 0))
        with _quiet_flower():
            self.strategy.start(
                grid=grid,
                initial_arrays=to_record(self.initial_state),
                num_rounds=s.num_server_rounds - self.strategy.round_number(0),
                timeout=s.strategy.round_timeout,
                train_config=ConfigRecord({}),
                evaluate_config=ConfigRecord({}),
                evaluate_fn=self.end_round,
            )
        return self.finish()

    def end_round(self, flower_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """``evaluate_fn`` of the strategy: server evaluation, record, checkpoint."""
        if flower_round == 0:
            return None
        server = self.cloud.evaluate()
        result = self.strategy.finish_round()
        self.results.append(result)
        self.global_arrays = arrays
        self.comm.append(result.comm)
        record = round_record(result, server)
        self.recorder.record_round(record)
        ckpt = Checkpoint(
            from_record(arrays), self.cloud.state(), self.strategy.snapshot(), self._config
        )
        save_checkpoint(self.recorder.dir, ckpt)
        line = round_line(result.server_round, self.settings.num_server_rounds, record)
        if result.repeated_notes:
            line += f" | notes: {result.repeated_notes} repeated"
        log(INFO, line)
        return MetricRecord({k: float(v) for k, v in server.items()})

    def finish(self) -> dict:
        """Write summary.json (with the communication totals) and the plot."""
        comm = {}
        if self.comm:
            keys = self.comm[-1].keys()
            comm = {k: sum(c.get(k, 0.0) for c in self.comm) / len(self.comm) for k in keys}
            comm["edge_model_params"] = self.edge_param_bytes // 4
        return self.recorder.finish({"comm": comm})


# Flower's ``Strategy.start`` logs these (message templates) for every round; the
# ServerApp's own round line says the same in one line.
_FLOWER_CHATTER = frozenset(
    {
        "",
        "Starting %s strategy:",
        "Initial global evaluation results: %s",
        "[ROUND %s/%s]",
        "Global evaluation",
    }
)


class _QuietFlower(logging.Filter):
    """Drops Flower's per-round chatter and, from ``Final results:`` on, its result dump.

    Only INFO records with Flower's own message templates (or its tab-indented
    tree lines) are dropped; warnings, errors and the ServerApp's lines all pass.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dumping = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != INFO:
            return True
        template = str(record.msg)
        self.dumping = self.dumping or template == "Final results:"
        chatter = template in _FLOWER_CHATTER or template.startswith("\t")
        return not (self.dumping or chatter)


@contextmanager
def _quiet_flower():
    """Leave out Flower's per-round lines and the metric dump its ``start()`` logs last.

    The dump runs to hundreds of lines and each round to six; the rounds are in
    ``rounds.jsonl`` and ``summary.json``, and the ServerApp logs one line per
    round and a one-line summary instead.
    """
    flwr_logger = logging.getLogger("flwr")
    quiet = _QuietFlower()
    flwr_logger.addFilter(quiet)
    try:
        yield
    finally:
        flwr_logger.removeFilter(quiet)
