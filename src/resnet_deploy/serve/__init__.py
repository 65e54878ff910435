"""Serving at scale: a Triton model repository from a workspace, a local tritonserver, and the served model's
parity and load test.

repository.py    `resnet-export triton`: one model per artifact (config.pbtxt, the file, labels, README), written
                 into a temp folder and moved into place
triton_model.py  the Python-backend model (`--backend python`): runs any artifact through `runtimes.create`
server.py        the tritonserver of the nvidia-pytriton wheel: install it, start it on loopback, stop it clean
client.py        tritonclient's asyncio clients (an optional extra, imported only inside functions): the served
                 model's description, its logits, a load level; a server's faults as one-line errors
bench.py         `resnet-bench triton`: parity against PyTorch and latency per concurrency level, as judged rows

Nothing here imports tritonclient at module level: it is the `triton` extra, and the CLIs import without it.
"""
