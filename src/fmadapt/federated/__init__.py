"""Federated adaptation on Flower: the training data split among clients that keep it (partition.py), the
client's training of the trainable part (client.py, a Flower ClientApp), the server's screening and aggregation
and the run in Flower's simulation engine (server.py, a ServerApp), and their options (config.py). The fit
pipeline reaches it through the strategy "federated" (adapt/federated.py); `fmadapt federate` is its command."""
