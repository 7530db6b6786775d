"""ServerApp: FedAvg from Flower's message API over every node."""

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from numpyapp.task import initial_arrays

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    num_nodes = len(list(grid.get_node_ids()))
    strategy = FedAvg(
        fraction_train=cfg["fraction-train"],
        fraction_evaluate=cfg["fraction-evaluate"],
        min_available_nodes=num_nodes,
    )
    arrays = ArrayRecord(initial_arrays(cfg["num-arrays"], cfg["total-params"]))
    result = strategy.start(
        grid=grid, initial_arrays=arrays, num_rounds=cfg["num-server-rounds"]
    )
    final = result.evaluate_metrics_clientapp.get(cfg["num-server-rounds"])
    print(f"final evaluate metrics: {final}")
