"""A Flower Grid that runs the ClientApp in this process: experiments and tests, no Ray."""

from __future__ import annotations

from collections.abc import Iterable


class InProcessGrid:
    """A Flower ``Grid`` that calls the ClientApp in-process (no Ray, no network).

    ``flwr.supercore.task_identity.TaskIdentity`` is private API that Flower 1.42
    requires before a ``Message`` can be built outside a Flower process.
    """

    def __init__(self, client_app, run_config: dict, num_nodes: int, node_configs=None):
        from flwr.app import Context, RecordDict
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
        self.client_app = client_app
        self.nodes = list(range(101, 101 + num_nodes))
        configs = node_configs or [
            {"partition-id": i, "num-partitions": num_nodes} for i in range(num_nodes)
        ]
        self.contexts = {
            n: Context(1, n, cfg, RecordDict(), dict(run_config))
            for n, cfg in zip(self.nodes, configs)
        }
        self.intercept = None  # optional callable(reply) -> reply, to tamper in tests

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def send_and_receive(self, messages, *, timeout=None):
        from flwr.app import Error, Message

        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            try:
                reply = self.client_app(msg, self.contexts[node])
            except Exception as err:  # a ClientApp failure becomes an error reply
                reply = Message(Error(code=2, reason=repr(err)), reply_to=msg)
            reply.metadata.__dict__["_src_node_id"] = node
            if self.intercept is not None:
                reply = self.intercept(reply)
            replies.append(reply)
        return replies
