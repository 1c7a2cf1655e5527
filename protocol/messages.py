"""The message types and record keys of fedforget's wire protocol (one copy, both apps import it).

A message's ``message_type`` names what the ClientApp does; its ``content`` is a ``RecordDict``
whose records are named by the keys below. What each reply must hold, and how the server decodes
it, is in :mod:`protocol.replies`.

========================  ==========================================  =====================================
message type              in (server -> device)                       out (device -> server)
========================  ==========================================  =====================================
``train``                 ``arrays``, ``config``                      ``arrays``, ``metrics``
``train.unlearn``         ``arrays``, ``oracle``, ``oracle-config``,  ``mask``, ``metrics``, ``info``
                          ``config``
``query.requests``        ``config``                                  ``requests``, ``ids``
``query.membership``      ``model``, ``oracle``, ``oracle-config``,   ``decisions``, ``metrics``
                          ``config``
``query.receipt``         ``config``, ``receipt``                     ``done``
========================  ==========================================  =====================================
"""

from __future__ import annotations

# ---------------------------------------------------------------------------- message types
TRAIN = "train"
UNLEARN = "train.unlearn"
QUERY_REQUESTS = "query.requests"
QUERY_MEMBERSHIP = "query.membership"
QUERY_RECEIPT = "query.receipt"

# The ClientApp registers its handlers by the part after the dot (``@app.query("requests")``).
UNLEARN_ACTION = "unlearn"
REQUESTS_ACTION = "requests"
MEMBERSHIP_ACTION = "membership"
RECEIPT_ACTION = "receipt"

# ---------------------------------------------------------------------------- record keys
CONFIG = "config"
ARRAYS = "arrays"
METRICS = "metrics"
MODEL = "model"
ORACLE = "oracle"
ORACLE_CONFIG = "oracle-config"
MASK = "mask"
INFO = "info"
REQUESTS = "requests"
IDS = "ids"
DECISIONS = "decisions"
RECEIPT = "receipt"
DONE = "done"

# ---------------------------------------------------------------------------- keys inside records
PARTITION_ID = "partition-id"
NUM_EXAMPLES = "num-examples"
TRAIN_LOSS = "train-loss"
CLIENT_SECONDS = "client-seconds"
REQUEST_IDS = "request-ids"
GRAINS = "grains"
STATES = "states"
MEMBER = "member"
NUM_FORGET = "num-forget"
MEMBERSHIP_METRICS = ("forget-accuracy", "retain-accuracy", "reference-accuracy", "attack-auc")
"""The aggregate numbers every ``query.membership`` reply carries (besides ``num-forget``)."""

REQUEST_STATES = ("pending", "completed", "rejected")
"""The states a device reports for a request (``fedforget.request_store.STATES``)."""
