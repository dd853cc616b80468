"""Layer 3, training: the loop (`fit`, `evaluate`, `predict`), its callbacks, optimizers
and checkpoints. Imports only from the layers below."""
