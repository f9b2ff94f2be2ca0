"""ServerApp: parse settings, run the strategy, record every round."""

from __future__ import annotations

from logging import ERROR, INFO

from flwr.app import Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from common.reproducibility import pin
from common.settings import RunSettings
from server_app.recorder import RunRefused
from server_app.run import ServerRun

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``num-server-rounds`` rounds of the configured method.

    A run that is refused before any work (its folder holds another run, or a
    resumed run has no rounds left) ends with one ERROR line saying why and
    what to do, not with a traceback; nothing is written.
    """
    # Parse and validate everything before any training: bad config fails here.
    settings = RunSettings.from_run_config(context.run_config)
    pin(settings)
    try:
        run = ServerRun(settings)
    except RunRefused as refused:
        log(ERROR, "run refused: %s", refused)
        return
    summary = run.run(grid)
    log(INFO, "results in %s (final %s)", run.recorder.dir, summary["final"])
