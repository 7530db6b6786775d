"""ServerApp: FedAvg over every node, starting from a zero model."""

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from sklearnapp.task import get_model, get_model_params

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
    model = get_model(cfg["penalty"], cfg["local-epochs"])
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(get_model_params(model)),
        num_rounds=cfg["num-server-rounds"],
    )
    final = result.evaluate_metrics_clientapp.get(cfg["num-server-rounds"])
    print(f"final evaluate metrics: {final}")
