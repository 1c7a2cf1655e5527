"""The fedforget ServerApp: resolve the run, write its record, run FedAvg rounds."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedforget.config import ConfigError, RunConfig
from fedforget.data import DataError
from fedforget.splits import SplitError
from server.audit import AuditedGrid
from server.loop import run_federated_training
from server.setup import check_federation_size, prepare_run

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point called by the SuperLink for every run."""
    try:
        check_federation_size(grid, RunConfig.from_mapping(context.run_config))
        run = prepare_run(context.run_config)
    except (ConfigError, DataError, SplitError) as error:
        print(f"[fedforget] error: {error}", flush=True)  # one line the user reads in the stream
        raise
    if run.config.log_messages:
        grid = AuditedGrid(grid, run.record.path / "messages")  # type: ignore[assignment]
    try:
        run_federated_training(grid, run)
    except BaseException as error:
        # Leave the reason in the record too, then let Flower mark the run as failed.
        run.record.append_metrics({"phase": "failed", "event": "run-failed", "error": repr(error)[:2000]})
        raise
