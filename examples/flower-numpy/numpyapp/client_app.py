"""ClientApp: each node adds seeded noise to the model (train) and reports its distance
to the node's own target (evaluate)."""

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from numpyapp.task import rng

app = ClientApp()


@app.train()
def train(msg: Message, context: Context):
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    partition_id = context.node_config["partition-id"]
    server_round = msg.content["config"]["server-round"]
    noise = context.run_config["noise"]
    draws = rng(partition_id, server_round)
    updated = [a + draws.normal(0.0, noise, a.shape).astype(np.float32) for a in arrays]
    loss = float(np.mean([np.mean(np.abs(u - a)) for u, a in zip(updated, arrays)]))
    metrics = MetricRecord({"train_loss": loss, "num-examples": 1})
    content = RecordDict({"arrays": ArrayRecord(updated), "metrics": metrics})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context):
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    mean_abs = float(np.mean(np.concatenate([np.abs(a) for a in arrays])))
    metrics = MetricRecord({"mean_abs": mean_abs, "num-examples": 1})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
