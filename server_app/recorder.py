"""Run outputs: resolved config, one JSON line per round, summary and a plot."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from common.atomic import PRIVATE, PRIVATE_DIR, atomic_write, private_dir, write_text
from common.learning.metrics import BERTSCORE_NAME
from common.reproducibility import environment
from common.run_config import flatten
from common.settings import ConfigError, RunSettings
from server_app.checkpoint import checkpoint_round
from server_app.round_result import RoundResult

# Metrics that the summary's "final" block reports for both sides.
FINAL_KEYS = ("rouge_lsum", "bertscore_f1", "f1")
# Recorded only where an evaluation produced them (eval.decode = "both").
OPTIONAL_KEYS = ("rank_f1",)
ROUNDS, SUMMARY = "rounds.jsonl", "summary.json"


class RunRefused(ConfigError):
    """A run not started: it would overwrite another run's folder, or it has nothing left to do."""


def default_run_name(settings: RunSettings) -> str:
    """``<method>-<dataset>-s<seed>-<UTC time>`` unless ``run-name`` is set."""
    if settings.run_name:
        return settings.run_name
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{settings.method}-{settings.dataset}-s{settings.seed}-{stamp}"


def run_folder(settings: RunSettings) -> Path:
    """``<output-dir>/<run-name>/`` (the run name resolved once, see :func:`default_run_name`)."""
    return Path(settings.output_dir).expanduser() / default_run_name(settings)


def check_run_folder(settings: RunSettings, run_dir: Path) -> None:
    """Refuse, before any work, a run that would overwrite a run or that has nothing to do.

    Raises
    ------
    RunRefused
        Without ``resume``: ``run_dir`` already holds a run. With ``resume``: its
        checkpoint already covers ``num-server-rounds`` and its summary is written
        (a run stopped between its last checkpoint and its summary is finished
        by the resume). The one-line message names the folder and what to do.
    """
    if not settings.resume:
        if (run_dir / ROUNDS).exists():
            raise RunRefused(
                f"run folder {run_dir} already holds a run; choose another 'run-name' "
                "or continue it with resume=true"
            )
        return
    done = checkpoint_round(run_dir)
    if done is not None and done >= settings.num_server_rounds and (run_dir / SUMMARY).exists():
        raise RunRefused(
            f"run {run_dir.name!r} ({run_dir}) already finished its {done} rounds; "
            f"raise num-server-rounds above {done} to extend it (nothing was changed)"
        )


def _clean(value: Any) -> Any:
    # JSON has no NaN: write null instead of an invalid token.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def round_record(result: RoundResult, server: dict[str, float]) -> dict[str, Any]:
    """One line of ``rounds.jsonl``: client means, server metrics, comm, aggregation, devices."""
    clients = result.clients
    record: dict[str, Any] = {"round": result.server_round}
    for key in FINAL_KEYS:
        record[f"client_{key}"] = _mean([m.get(key) for m in clients.values()])
        record[f"server_{key}"] = server.get(key)
        if result.clients_global:
            vals = [m.get(key) for m in result.clients_global.values()]
            record[f"client_global_{key}"] = _mean(vals)
    for key in OPTIONAL_KEYS:
        if any(key in m for m in clients.values()):
            record[f"client_{key}"] = _mean([m.get(key) for m in clients.values()])
        if key in server:
            record[f"server_{key}"] = server[key]
    record.update(
        seconds=result.seconds,
        comm=result.comm,
        comm_by_device=result.comm_by_device,
        aggregation=result.aggregation(),
        clients={str(n): m for n, m in clients.items()},
        clients_global={str(n): m for n, m in result.clients_global.items()},
        training={str(n): m for n, m in result.training.items()},
    )
    return record


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


def _mean(values: list[Any]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


class Recorder:
    """Writes ``<output-dir>/<run-name>/``: config.json, rounds.jsonl, summary.json, metrics.png.

    The run folder is private to its owner (0700, its files 0600): it holds the
    run's checkpoint and per-device results. ``run_dir`` defaults to
    :func:`run_folder`; :func:`check_run_folder` refuses it first.
    """

    def __init__(
        self, settings: RunSettings, keep_rounds: int = 0, run_dir: Path | None = None
    ) -> None:
        self.settings = settings
        self.dir = Path(run_dir) if run_dir is not None else run_folder(settings)
        self.rounds_path = self.dir / ROUNDS
        check_run_folder(settings, self.dir)
        # A new output folder is private too; an existing one is left as it is.
        self.dir.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        private_dir(self.dir)
        self.history: list[dict[str, Any]] = []
        if keep_rounds and self.rounds_path.exists():
            # Resuming: keep the rounds the checkpoint covers, drop any later ones.
            lines = [json.loads(x) for x in self.rounds_path.read_text().splitlines() if x]
            self.history = [r for r in lines if r["round"] <= keep_rounds]
        write_text(self.rounds_path, "".join(json.dumps(r) + "\n" for r in self.history), PRIVATE)
        self._writer = None  # TensorBoard writer, opened at the first round
        config = {"run_config": flatten(settings), "bertscore_model": BERTSCORE_NAME}
        write_text(self.dir / "config.json", json.dumps(config, indent=2), PRIVATE)

    def record_round(self, record: dict[str, Any]) -> None:
        """Append one round's record (must hold ``round``)."""
        record = _clean(record)
        self.history = [r for r in self.history if r["round"] != record["round"]] + [record]
        with self.rounds_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.settings.log.tensorboard:
            self._tensorboard(record)

    def _tensorboard(self, record: dict[str, Any]) -> None:
        """The round's scalars as TensorBoard events (``<run dir>/tensorboard``)."""
        if self._writer is None:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(logdir=str(self.dir / "tensorboard"))
        step = int(record["round"])
        for side in ("client", "server"):
            for key in FINAL_KEYS:
                value = record.get(f"{side}_{key}")
                if value is not None:
                    self._writer.add_scalar(f"{side}/{key}", value, step)
        for key in ("bytes_up_per_client_round", "bytes_down_per_client_round", "ratio"):
            value = (record.get("comm") or {}).get(key)
            if value is not None:
                self._writer.add_scalar(f"comm/{key}", value, step)
        for key, value in (record.get("aggregation") or {}).items():
            if isinstance(value, (int, float)):
                self._writer.add_scalar(f"aggregation/{key}", value, step)
        self._writer.add_scalar("seconds", record.get("seconds") or 0.0, step)
        self._writer.flush()

    def finish(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write ``summary.json`` and ``metrics.png``; return the summary."""
        last = self.history[-1] if self.history else {}
        final = {}
        for side in ("client", "server"):
            for key in FINAL_KEYS:
                final[f"{side}_{key}"] = last.get(f"{side}_{key}")
            for key in OPTIONAL_KEYS:
                if f"{side}_{key}" in last:
                    final[f"{side}_{key}"] = last[f"{side}_{key}"]
        tail_rounds = self.history[-self.settings.eval.tail_rounds :]
        tail = {k: _mean([r.get(k) for r in tail_rounds]) for k in final}
        summary = {
            "method": self.settings.method,
            "dataset": self.settings.dataset,
            "seed": self.settings.seed,
            "rounds": len([r for r in self.history if r["round"] > 0]),
            "bertscore_model": BERTSCORE_NAME,
            "final": final,
            "tail": tail,
            "tail_rounds": [r["round"] for r in tail_rounds],
            "first_round": {k: self.history[0].get(k) for k in final} if self.history else {},
            "environment": environment(),  # the server's: devices may run elsewhere
            **(extra or {}),
        }
        write_text(self.dir / SUMMARY, json.dumps(_clean(summary), indent=2), PRIVATE)
        self.plot()
        if self._writer is not None:
            self._writer.close()
        return summary

    def plot(self) -> None:
        """Metrics per round, client average and server, one panel per metric."""
        if not self.history:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(FINAL_KEYS), figsize=(4 * len(FINAL_KEYS), 3.2))
        rounds = [r["round"] for r in self.history]
        for ax, key in zip(axes, FINAL_KEYS):
            for side, style in (("client", "o-"), ("server", "s--")):
                ys = [r.get(f"{side}_{key}") for r in self.history]
                pts = [(x, y) for x, y in zip(rounds, ys) if y is not None]
                if pts:
                    ax.plot(*zip(*pts), style, label=side)
            name = f"BERTScore F1 ({BERTSCORE_NAME})" if key == "bertscore_f1" else key
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("round")
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8)
        fig.suptitle(
            f"{self.settings.method} on {self.settings.dataset} (seed {self.settings.seed})"
        )
        fig.tight_layout()
        atomic_write(self.dir / "metrics.png", lambda tmp: fig.savefig(tmp, dpi=100), PRIVATE)
        plt.close(fig)
