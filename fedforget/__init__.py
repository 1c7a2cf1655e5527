"""fedforget: federated machine unlearning (Forsaken) on PyTorch; Flower glue lives outside this package."""

__version__ = "0.1.0"
