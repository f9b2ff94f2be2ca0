"""ClientApp: thin handlers that hand a message's content to the device's round.

The learning work is in :mod:`client_app.handlers`; on a node whose config sets
``warm-worker=true`` it runs in the node's long-lived worker
(:mod:`client_app.worker`), so this process imports neither torch nor the models.
"""

from __future__ import annotations

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from client_app import worker

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local AMT / fine-tuning; reply with the shared-state delta, z^c and scores."""
    return Message(_handle("train", msg.content, context), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the personal model (global shared + private state) on the test split."""
    return Message(_handle("evaluate", msg.content, context), reply_to=msg)


def _handle(kind: str, content: RecordDict, context: Context) -> RecordDict:
    if worker.enabled(context.node_config):
        reply = worker.handle(kind, content, context)
        if reply is not None:
            return reply
    from client_app import handlers  # torch, transformers, peft: only when needed here

    run = handlers.run_train if kind == "train" else handlers.run_evaluate
    return run(content, context)
