"""The message types and record keys of fedforget's wire protocol (one copy, both apps import it).

A message's ``message_type`` names what the ClientApp does; its ``content`` is a ``RecordDict``
whose records are named by the keys below. What each reply must hold, and how the server decodes
it, is in :mod:`protocol.replies`.

========================  ==========================================  =====================================
message type              in (server -> device)                       out (device -> server)
========================  ==========================================  =====================================
``train``                 ``arrays``, ``config``                      ``arrays``, ``metrics``
``train.unlearn``         ``arrays``, ``config``,                     ``mask``, ``metrics``, ``info``
                          ``steer-reference`` (never the judge)
``query.requests``        ``config``                                  ``requests``, ``ids``
``query.judge``           ``model``, ``judge``, ``judge-config``,     ``calibration``, ``forget``,
                          ``config``                                  ``metrics``
``query.receipt``         ``config``, ``receipt``                     ``done``
========================  ==========================================  =====================================
"""

from __future__ import annotations

# ---------------------------------------------------------------------------- message types
TRAIN = "train"
UNLEARN = "train.unlearn"
QUERY_REQUESTS = "query.requests"
QUERY_JUDGE = "query.judge"
QUERY_RECEIPT = "query.receipt"

# The ClientApp registers its handlers by the part after the dot (``@app.query("requests")``).
UNLEARN_ACTION = "unlearn"
REQUESTS_ACTION = "requests"
JUDGE_ACTION = "judge"
RECEIPT_ACTION = "receipt"

# ---------------------------------------------------------------------------- record keys
CONFIG = "config"
ARRAYS = "arrays"
METRICS = "metrics"
MODEL = "model"
JUDGE = "judge"
JUDGE_CONFIG = "judge-config"
CALIBRATION = "calibration"
FORGET = "forget"
MASK = "mask"
INFO = "info"
REQUESTS = "requests"
IDS = "ids"
RECEIPT = "receipt"
DONE = "done"
STEER_REFERENCE = "steer-reference"
"""``train.unlearn``: never-seen samples the server lends the device to steer by
(:func:`fedforget.steer.steer_reference`, :func:`protocol.codec.samples_to_record`); absent when
``steer-reference-samples`` is 0."""

# ---------------------------------------------------------------------------- keys inside records
PARTITION_ID = "partition-id"
NUM_EXAMPLES = "num-examples"
TRAIN_LOSS = "train-loss"
CLIENT_SECONDS = "client-seconds"
REQUEST_IDS = "request-ids"
GRAINS = "grains"
STATES = "states"
NUM_FORGET = "num-forget"
CALIBRATION_SAMPLES = "calibration-samples"
JUDGE_METRICS = ("forget-accuracy", "retain-accuracy", "reference-accuracy")
"""The aggregate numbers every ``query.judge`` reply carries (besides ``num-forget``; NaN allowed)."""

REQUEST_STATES = ("pending", "completed", "rejected")
"""The states a device reports for a request (``fedforget.request_store.STATES``)."""
