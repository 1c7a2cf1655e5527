"""The command line: ``fedforget withdraw`` and ``fedforget status`` (device), ``fedforget verify``.

    fedforget withdraw --store dev0.sqlite --partition-id 0 --config runs/<id>/config.json --ids 12,40,77
    fedforget withdraw --store dev0.sqlite --partition-id 0 --set dataset=letter num-clients=5 --class 3
    fedforget withdraw --store dev0.sqlite --partition-id 0 --config cfg.json --all
    fedforget withdraw --store dev0.sqlite --partition-id 0 --data mine.csv --ids 3   # client-data=own
    fedforget status   --store dev0.sqlite
    fedforget verify   runs/<id>
    fedforget rebind   --ledger server/ledger.sqlite --run-id <id> --partition 0 [--node 4711]

``withdraw`` writes the request to the device's durable store (SQLite) and tombstones the samples at
once (they are never trained on again), then prints the request id; the server learns of the request
the next time it asks (every round) and runs the unlearning rounds. ``status`` lists every request
with its state and, once completed, its receipt. The run config (``--config`` JSON, e.g. a run
record's ``config.json``, and/or ``--set key=value``) tells the device which samples are its own;
with neither, ``withdraw`` uses the run config the device's ClientApp kept in the store when it
took part in a run (and refuses if it never did).
``verify`` recomputes the model hashes of every receipt in a run record from the checkpoints the
receipts name, and exits 1 with one ``mismatch:`` line per hash that does not match.
``rebind`` (the server operator's) re-binds a partition of a run to a replaced device: to ``--node``,
or, without it, to the next node that claims the partition (``server/ledger.py``, partition binding).
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedforget.config import ConfigError, RunConfig
from fedforget.request_store import RequestError, RequestStore, StoreError

NO_RUN_CONFIG = "no run config: pass --config or --set, or let the device join a run first"


def _config(args: argparse.Namespace, store: RequestStore | None = None) -> RunConfig:
    """``--config`` and ``--set``; with neither, the run config the device kept from its run."""
    if not args.config and not args.set:
        kept = store.run_config() if store is not None else None
        if kept is None:
            raise ConfigError(NO_RUN_CONFIG)
        print(
            f"using the run config of run {kept.get('run-id') or '?'} that this device took part in "
            f"(kept in {store.path if store is not None else ''})",
            file=sys.stderr,
        )
        return RunConfig.from_mapping(kept)
    values: dict[str, Any] = {}
    if args.config:
        doc = json.loads(Path(args.config).read_text())
        doc.pop("environment", None)
        values.update(doc)
    for item in args.set or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            values[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            values[key.strip()] = raw
    return RunConfig.from_mapping(values)


def _parse_ids(text: str) -> np.ndarray:
    """Comma-separated ids of ASCII digits only: a withdrawal cannot be undone, so ``1_0`` or ``١٦``
    (which Python's ``int`` reads as 10 and 16) are refused rather than guessed."""
    parts = [part for part in text.replace(" ", "").split(",") if part]
    if not parts:
        raise RequestError(f"empty request: --ids {text!r} names no sample")
    bad = [part for part in parts if not (part.isascii() and part.isdigit())]
    if bad:
        shown = f" ({', '.join(repr(b) for b in bad[:3])})" if bad else ""
        raise RequestError(f"--ids expects comma-separated integers of digits 0-9, got {text!r}{shown}")
    ids = [int(part) for part in parts]
    if any(i < 0 or i >= 2**63 for i in ids):
        raise RequestError(f"--ids: global ids are integers in [0, 2**63), got {text!r}")
    return np.asarray(ids, dtype=np.int64)


def withdraw(args: argparse.Namespace) -> int:
    from fedforget.client_data import ClientData, OwnData

    given = bool(args.config or args.set)
    if not given and not Path(args.store).exists():  # nothing to take the run config from
        raise ConfigError(f"{NO_RUN_CONFIG} ({args.store} does not exist)")
    # without --config / --set the store must already hold a run's config: never create one then
    store = RequestStore(args.store, create=given)
    config = _config(args, store)
    kept_partition = store.partition_id()
    if kept_partition is not None and kept_partition != args.partition_id:
        raise RequestError(
            f"{store.path} is the store of partition {kept_partition} (its node config), "
            f"not of --partition-id {args.partition_id}"
        )
    if args.data:  # a device that holds its own file (client-data = own): its own ids
        own = OwnData(args.data, args.holdout_fraction, args.seed)
        data = ClientData.from_file(own, args.partition_id)
    elif config.client_data == "own":
        raise RequestError("the run has client-data=own: name this device's data file with --data")
    else:
        data = ClientData.for_partition(config, args.partition_id)
    live = data.without(store.tombstoned())
    if args.ids is not None:
        grain, arg, ids = "samples", None, _parse_ids(args.ids)
    elif args.class_label is not None:
        grain, arg = "class", float(args.class_label)
        ids = live.train_ids[live.y_train == args.class_label]
        if ids.size == 0:
            raise RequestError(
                f"this device holds no (not yet withdrawn) samples of class {args.class_label}"
            )
    else:
        grain, arg, ids = "client", None, live.train_ids
        if ids.size == 0:
            raise RequestError("this device holds no samples that are not already withdrawn")
    if args.request_id:
        known = {r.request_id: r for r in store.all()}
        if args.request_id in known:
            old = known[args.request_id]
            raise RequestError(
                f"duplicate request: {args.request_id!r} is already stored "
                f"({old.state}, {len(old.ids)} samples); nothing changed"
            )
    stored = store.add(grain, ids, owned_ids=data.train_ids, arg=arg, request_id=args.request_id)
    print(stored.request_id)
    print(
        f"stored in {store.path}: {grain} withdrawal of {len(stored.ids)} samples, state {stored.state}",
        file=sys.stderr,
    )
    return 0


def status(args: argparse.Namespace) -> int:
    store = RequestStore(args.store, create=False)  # a typo must not create folders and a database
    requests = store.all()
    if args.json:
        print(json.dumps([{**r.summary(), "receipt": r.receipt} for r in requests], indent=1))
        return 0
    if not requests:
        print(f"no withdrawal requests in {store.path}")
        return 0
    print(f"{'request':<24} {'grain':<8} {'samples':>7} {'state':<10} updated")
    for r in requests:
        print(f"{r.request_id:<24} {r.grain:<8} {len(r.ids):>7} {r.state:<10} {r.updated}")
        if r.receipt and r.receipt.get("note"):
            print(f"    receipt: {r.detail}: {r.receipt['note']}")
        elif r.receipt:
            fr = r.receipt.get("fr")
            print(
                f"    receipt: FR {fr if fr is None else round(fr, 3)}, test accuracy "
                f"{r.receipt.get('test-accuracy-before')} -> {r.receipt.get('test-accuracy-after')}, "
                f"model {str(r.receipt.get('model-hash-before'))[:12]} -> "
                f"{str(r.receipt.get('model-hash-after'))[:12]}"
            )
    return 0


def verify(args: argparse.Namespace) -> int:
    """Recompute every receipt's model hashes from the run record's checkpoints (fedforget/verify.py)."""
    from fedforget.verify import verify_record

    checked, problems = verify_record(args.run_dir)
    for problem in problems:
        print(f"mismatch: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"ok: {checked} model hashes in the receipts of {args.run_dir} match their checkpoints")
    return 0


def rebind(args: argparse.Namespace) -> int:
    """Re-bind a partition in the server's ledger (the ledger is server state, read only here)."""
    from server.ledger import Ledger  # SQLite only, no Flower

    path = Path(args.ledger)
    if not path.is_file():
        raise ValueError(f"no ledger at {path}")
    ledger = Ledger(path, args.run_id)
    was = ledger.bound_node(args.partition)
    ledger.rebind(args.partition, node=args.node, detail="fedforget rebind")
    target = f"node {args.node}" if args.node is not None else "the next node that claims it"
    print(f"partition {args.partition} of run {args.run_id}: bound to {target} (was: {was})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedforget", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    w = commands.add_parser("withdraw", help="withdraw samples of this device (durable, tombstoned at once)")
    w.add_argument("--store", required=True, help="the device's request store (SQLite file)")
    w.add_argument("--partition-id", type=int, required=True, help="this device's partition id")
    w.add_argument("--config", help="run config JSON (e.g. a run record's config.json)")
    w.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="run-config values")
    w.add_argument("--request-id", help="an explicit request id (default: generated)")
    w.add_argument("--data", help="this device's own data file (client-data=own; its node config 'data')")
    w.add_argument("--holdout-fraction", type=float, default=0.2, help="with --data: as in the node config")
    w.add_argument("--seed", type=int, default=0, help="with --data: as in the node config")
    what = w.add_mutually_exclusive_group(required=True)
    what.add_argument("--ids", help="comma-separated global ids")
    what.add_argument("--class", dest="class_label", type=int, help="all of this device's samples of a class")
    what.add_argument("--all", action="store_true", help="all of this device's samples")
    w.set_defaults(handler=withdraw)
    s = commands.add_parser("status", help="list this device's requests and receipts")
    s.add_argument("--store", required=True)
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=status)
    v = commands.add_parser("verify", help="recompute every receipt's model hashes from a run record")
    v.add_argument("run_dir", metavar="RUN_DIR", help="the run record (runs/<run-id>)")
    v.set_defaults(handler=verify)
    b = commands.add_parser("rebind", help="re-bind a partition to a replaced device (server operator)")
    b.add_argument("--ledger", required=True, help="the server's ledger (SQLite file)")
    b.add_argument("--run-id", required=True, help="the run whose partition is re-bound")
    b.add_argument("--partition", type=int, required=True)
    b.add_argument("--node", type=int, help="the new node id (default: the next node that claims it)")
    b.set_defaults(handler=rebind)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (RequestError, StoreError, ConfigError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
