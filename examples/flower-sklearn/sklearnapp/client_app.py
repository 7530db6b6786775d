"""ClientApp: trains the logistic regression on the node's partition, evaluates on its
held-out part."""

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from sklearnapp.task import evaluate as evaluate_model
from sklearnapp.task import fit, get_model, get_model_params, load_data, set_model_params

app = ClientApp()


def _setup(msg: Message, context: Context):
    partition_id = context.node_config["partition-id"]
    num_partitions = context.node_config["num-partitions"]
    X_train, X_test, y_train, y_test = load_data(partition_id, num_partitions)
    model = get_model(context.run_config["penalty"], context.run_config["local-epochs"])
    set_model_params(model, msg.content["arrays"].to_numpy_ndarrays())
    return model, X_train, X_test, y_train, y_test


@app.train()
def train(msg: Message, context: Context):
    model, X_train, _, y_train, _ = _setup(msg, context)
    fit(model, X_train, y_train)
    loss, _ = evaluate_model(model, X_train, y_train)
    content = RecordDict(
        {
            "arrays": ArrayRecord(get_model_params(model)),
            "metrics": MetricRecord({"train_loss": loss, "num-examples": len(X_train)}),
        }
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context):
    model, _, X_test, _, y_test = _setup(msg, context)
    loss, accuracy = evaluate_model(model, X_test, y_test)
    metrics = MetricRecord(
        {"test_loss": loss, "accuracy": accuracy, "num-examples": len(X_test)}
    )
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
