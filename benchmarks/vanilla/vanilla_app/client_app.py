"""Quickstart-style ClientApp: one SuperNode is one client (its partition-id)."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from vanilla_app import task

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    workload = str(context.run_config["workload"])
    model = task.model_for(workload)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    metrics = task.train(model, workload, int(context.node_config["partition-id"]),
                         int(msg.content["config"]["server-round"]))
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                          "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)
