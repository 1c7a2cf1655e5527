"""Suite-wide settings."""

from __future__ import annotations

import torch

# Tiny models on a 2-core machine: one intra-op thread avoids oversubscription (measured up to 15x
# slower with 2 threads while Flower processes run beside the tests) and keeps timings steady.
torch.set_num_threads(1)
