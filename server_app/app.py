"""ServerApp: parse settings, run the strategy, record every round."""

from __future__ import annotations

import time
from logging import INFO
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from common.records import to_record
from common.settings import RunSettings
from server_app.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from server_app.cloud import Cloud, initial_global_state, reference_edge_model
from server_app.ledger import Ledger
from server_app.recorder import FINAL_KEYS, Recorder
from server_app.strategy import MlEcsStrategy

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``num-server-rounds`` rounds of the configured method."""
    # Parse and validate everything before any training: bad config fails here.
    settings = RunSettings.from_run_config(context.run_config)
    run = ServerRun(settings)
    summary = run.run(grid)
    log(INFO, "results in %s (final %s)", run.recorder.dir, summary["final"])


class ServerRun:
    """Everything the ServerApp holds for one run (no Flower runtime needed)."""

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.cloud = Cloud(settings)  # loads the data: fails early on bad input
        edge = reference_edge_model(settings)
        self.edge_param_bytes = sum(p.numel() for p in edge.parameters()) * 4
        self.initial_state = initial_global_state(settings, edge)
        del edge
        self.ledger = Ledger()
        self.strategy = MlEcsStrategy(settings, self.cloud, self.ledger)
        done = self._resume() if settings.resume else 0
        self.recorder = Recorder(settings, keep_rounds=done)
        self.strategy.global_state = dict(self.initial_state)
        self.comm: list[dict[str, float]] = []

    def _resume(self) -> int:
        """Restore the last checkpoint of this run directory; return its round."""
        run_dir = Path(self.settings.output_dir).expanduser() / self.settings.run_name
        if not (run_dir / CHECKPOINT).exists():
            log(INFO, "resume: no checkpoint in %s, starting at round 1", run_dir)
            return 0
        meta, global_state, cloud_state, anchor_ids, anchors = load_checkpoint(run_dir)
        self.initial_state = global_state
        self.cloud.load_state(cloud_state)
        self.cloud.load_global(global_state)
        st = self.strategy
        st.anchor_ids, st.anchors = anchor_ids, anchors
        st.node_public_ids = {
            int(k): np.array(v, np.int64) for k, v in meta["node_public_ids"].items()
        }
        st.round_offset = int(meta["round"])
        log(INFO, "resume: %s from round %s", run_dir, st.round_offset)
        return st.round_offset

    def run(self, grid: Grid) -> dict:
        """Run every round on ``grid``, then write the summary; return it."""
        s = self.settings
        self.strategy.start(
            grid=grid,
            initial_arrays=to_record(self.initial_state, s.transport.dtype),
            num_rounds=s.num_server_rounds - self.strategy.round_offset,
            timeout=s.strategy.round_timeout,
            train_config=ConfigRecord({}),
            evaluate_config=ConfigRecord({}),
            evaluate_fn=self.end_round,
        )
        return self.finish()

    def end_round(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """``evaluate_fn`` of the strategy: server evaluation, record, checkpoint."""
        if server_round == 0:
            return None
        s, st = self.settings, self.strategy
        server_round += st.round_offset
        server = self.cloud.evaluate()
        comm = self.ledger.summary(self.edge_param_bytes)
        self.ledger.reset()
        self.comm.append(comm)
        clients = st.client_metrics
        record: dict[str, object] = {"round": server_round}
        for key in FINAL_KEYS:
            vals = [m[key] for m in clients.values() if key in m]
            record[f"client_{key}"] = sum(vals) / len(vals) if vals else None
            record[f"server_{key}"] = server.get(key)
        record.update(
            seconds=round(time.time() - st.round_started, 2),
            comm=comm,
            aggregation=st.round_info,
            clients={str(n): m for n, m in clients.items()},
        )
        self.recorder.record_round(record)
        save_checkpoint(self.recorder.dir, server_round, st, self.cloud)
        log(INFO, round_line(server_round, s.num_server_rounds, record))
        return MetricRecord({k: float(v) for k, v in server.items()})

    def finish(self) -> dict:
        """Write summary.json (with the communication totals) and the plot."""
        comm = {}
        if self.comm:
            keys = self.comm[-1].keys()
            comm = {k: sum(c.get(k, 0.0) for c in self.comm) / len(self.comm) for k in keys}
            comm["edge_model_params"] = self.edge_param_bytes // 4
        return self.recorder.finish({"comm": comm})


def _fmt(value: object) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def round_line(server_round: int, total: int, r: dict) -> str:
    """One concise log line per round."""
    comm = r["comm"] or {}
    agg = r["aggregation"] or {}
    return (
        f"round {server_round}/{total}: client rougeLsum {_fmt(r['client_rouge_lsum'])} "
        f"bertscore {_fmt(r['client_bertscore_f1'])} f1 {_fmt(r['client_f1'])} | "
        f"server rougeLsum {_fmt(r['server_rouge_lsum'])} f1 {_fmt(r['server_f1'])} | "
        f"up {comm.get('bytes_up_per_client_round', 0) / 1e3:.1f} kB "
        f"down {comm.get('bytes_down_per_client_round', 0) / 1e3:.1f} kB per device | "
        f"{agg.get('accepted', 0)} accepted, {agg.get('rejected', 0)} rejected | "
        f"{r['seconds']:.1f}s"
    )
