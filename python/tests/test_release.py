"""A round's replies are freed after aggregation only when nothing but Flower's
`Strategy.start` holds them."""

import threading
import weakref
import unittest

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from floret_bridge import server


class Sink:
    def write(self, tag, body=b""):
        pass


class FakeGrid(Grid):
    """Two nodes that return the model plus one. Before each train round it counts the
    previous round's replies still alive (it holds only weak references to them)."""

    def __init__(self):
        self.refs = []
        self.alive_at_next_round = []

    def set_run(self, run):
        pass

    @property
    def run(self):
        raise NotImplementedError

    def create_message(self, *args, **kwargs):
        raise NotImplementedError

    def get_node_ids(self):
        return [1, 2]

    def push_messages(self, messages):
        raise NotImplementedError

    def pull_messages(self, message_ids):
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        if self.refs and messages and messages[0].metadata.message_type == "train":
            self.alive_at_next_round.append(sum(r() is not None for r in self.refs[-1]))
        replies = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = f"m{m.metadata.dst_node_id}"
            if m.metadata.message_type != "train":
                continue
            arrays = [a + 1 for a in m.content["arrays"].to_numpy_ndarrays()]
            content = RecordDict(
                {"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"num-examples": 1})}
            )
            replies.append(Message(content, reply_to=m))
        if replies:
            self.refs.append([weakref.ref(r) for r in replies])
        return replies


class Keeper(FedAvg):
    """A strategy that keeps each round's reply list for itself."""

    kept = None

    def aggregate_train(self, server_round, replies):
        self.kept = replies
        return super().aggregate_train(server_round, replies)


class Release(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = 1
        TaskIdentity.node_id = 0
        server._hook_strategies(server.Rounds(Sink(), threading.RLock()))

    def run_two_rounds(self, strategy):
        grid = FakeGrid()
        initial = ArrayRecord([np.zeros(3, dtype=np.float32)])
        result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=2)
        np.testing.assert_array_equal(result.arrays.to_numpy_ndarrays()[0], [2, 2, 2])
        return grid.alive_at_next_round

    def test_a_rounds_replies_are_gone_when_the_next_round_starts(self):
        self.assertEqual(self.run_two_rounds(FedAvg(fraction_evaluate=0.0)), [0])

    def test_replies_a_strategy_keeps_are_left_alone(self):
        strategy = Keeper(fraction_evaluate=0.0)
        self.assertEqual(self.run_two_rounds(strategy), [2])
        self.assertEqual(len(strategy.kept), 2)


if __name__ == "__main__":
    unittest.main()
