"""Flower ServerApp for fedforget: strategy, round loop, server-side evaluation, run records."""
