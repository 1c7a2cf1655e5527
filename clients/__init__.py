"""Flower ClientApp for fedforget (thin glue over the ``fedforget`` library)."""
