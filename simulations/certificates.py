"""Development certificates and SuperNode keys for a TLS + node-authenticated Flower deployment.

    python -m simulations.certificates --out certs --nodes 3
    python -m simulations.certificates --out certs --nodes 2 --host 192.168.1.10 --host server.lan

writes into ``--out``:

==========================  ===================================================================
``ca.crt`` / ``ca.key``     a self-signed development CA (ECDSA P-384); ``ca.crt`` goes to every
                            device (``flower-supernode --root-certificates``) and to the
                            ``flwr`` CLI connection (``root-certificates``)
``server.crt`` /            the SuperLink's certificate, signed by the CA, valid for TLS server
``server.key``              authentication with subjectAltNames for every ``--host`` plus
                            ``127.0.0.1`` and ``localhost`` (``flower-superlink --ssl-certfile
                            --ssl-keyfile``; ``--ssl-ca-certfile ca.crt``)
``node-<i>`` /              SuperNode ``i``'s authentication key pair: ECDSA P-384 in OpenSSH
``node-<i>.pub``            format, the format ``flower-supernode --auth-supernode-private-key``
                            and ``flwr supernode register`` read
==========================  ===================================================================

Private keys (``ca.key``, ``server.key``, ``node-<i>``) are created with mode 0600. Existing files
are never overwritten unless ``force=True`` (``--force``). These are for development and tests: on
real devices keep the CA key off the server, and generate each device's key on the device (see
``docs/deployment.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import ipaddress
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("127.0.0.1", "localhost")
CURVE = ec.SECP384R1
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


class CertificateError(ValueError):
    """Bad input for :func:`generate` (node count, host names, an output folder in the way)."""


@dataclasses.dataclass(frozen=True)
class NodeKey:
    """One SuperNode's authentication key pair (OpenSSH format)."""

    private_key: Path
    public_key: Path


@dataclasses.dataclass(frozen=True)
class DevCertificates:
    """Paths of everything :func:`generate` wrote."""

    out: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    nodes: tuple[NodeKey, ...]
    hosts: tuple[str, ...]

    @classmethod
    def load(cls, out: Path | str) -> DevCertificates:
        """The files of an existing ``--out`` folder; raises :class:`CertificateError` if any is missing."""
        folder = Path(out).expanduser().resolve()
        paths = _layout(folder, _count_nodes(folder))
        missing = [str(p) for p in _all_paths(paths) if not p.is_file()]
        if missing:
            raise CertificateError(
                f"{folder} lacks {', '.join(missing)}; create it with "
                f"'python -m simulations.certificates --out {out} --nodes N'"
            )
        cert = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts = tuple(str(v) for v in san.get_values_for_type(x509.IPAddress)) + tuple(
            san.get_values_for_type(x509.DNSName)
        )
        return dataclasses.replace(paths, hosts=hosts)


def _layout(out: Path, nodes: int, hosts: tuple[str, ...] = ()) -> DevCertificates:
    return DevCertificates(
        out=out,
        ca_cert=out / "ca.crt",
        ca_key=out / "ca.key",
        server_cert=out / "server.crt",
        server_key=out / "server.key",
        nodes=tuple(NodeKey(out / f"node-{i}", out / f"node-{i}.pub") for i in range(nodes)),
        hosts=hosts,
    )


def _all_paths(paths: DevCertificates) -> list[Path]:
    files = [paths.ca_cert, paths.ca_key, paths.server_cert, paths.server_key]
    for node in paths.nodes:
        files += [node.private_key, node.public_key]
    return files


def _count_nodes(folder: Path) -> int:
    count = 0
    while (folder / f"node-{count}").exists():
        count += 1
    return count


def check_hosts(hosts: Sequence[str]) -> tuple[str, ...]:
    """``hosts`` plus 127.0.0.1 and localhost, deduplicated; each an IP address or a DNS name."""
    if isinstance(hosts, str):
        raise CertificateError(f"hosts must be a sequence of names, got the string {hosts!r}")
    out: list[str] = []
    for host in [*hosts, *DEFAULT_HOSTS]:
        host = str(host).strip()
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            if not _HOSTNAME.match(host):
                raise CertificateError(
                    f"host {host!r} is neither an IP address nor a valid DNS name "
                    "(letters, digits, '-' and '.', e.g. 'server.lan' or '192.168.1.10')"
                ) from None
            host = host.lower()
        if host not in out:
            out.append(host)
    return tuple(out)


def _write(path: Path, data: bytes, private: bool) -> None:
    """Write ``data``; private keys are created 0600 (never readable by others, even briefly)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600 if private else 0o644)  # umask may have narrowed the public files


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedforget development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


def generate(
    out: Path | str,
    nodes: int,
    hosts: Sequence[str] = (),
    *,
    force: bool = False,
    days: int = 365,
) -> DevCertificates:
    """Write a development CA, a SuperLink certificate + key and ``nodes`` SuperNode key pairs.

    The server certificate is signed by the CA (ECDSA P-384 / SHA-384), carries
    ``subjectAltName`` = ``hosts`` + 127.0.0.1 + localhost and ``extendedKeyUsage`` = serverAuth,
    and is valid for ``days`` days. Node keys are ECDSA P-384 in OpenSSH format. Raises
    :class:`CertificateError` for ``nodes < 0``, ``days < 1``, a bad host, ``out`` being a file, or
    (unless ``force``) any of the files already existing. Returns the paths written.
    """
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 0:
        raise CertificateError(f"nodes must be an integer >= 0, got {nodes!r}")
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise CertificateError(f"days must be an integer >= 1, got {days!r}")
    checked_hosts = check_hosts(hosts)
    folder = Path(out).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise CertificateError(f"{folder} exists and is not a folder")
    paths = _layout(folder, nodes, checked_hosts)
    existing = [str(p) for p in _all_paths(paths) if p.exists()]
    if existing and not force:
        raise CertificateError(
            f"refusing to overwrite {', '.join(existing)} (pass --force / force=True to replace them)"
        )
    folder.mkdir(parents=True, exist_ok=True)

    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    until = now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(CURVE())
    ca_name = _name("fedforget development CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(CURVE())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(checked_hosts[0]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(checked_hosts), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    _write(paths.ca_key, _pem_key(ca_key), private=True)
    _write(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), private=False)
    _write(paths.server_key, _pem_key(server_key), private=True)
    _write(paths.server_cert, server_cert.public_bytes(serialization.Encoding.PEM), private=False)
    for i, node in enumerate(paths.nodes):
        write_node_key(node.private_key, comment=f"fedforget-node-{i}", force=True)
    return paths


def write_node_key(private_key: Path | str, comment: str = "", *, force: bool = False) -> NodeKey:
    """Write one SuperNode key pair: ``private_key`` (OpenSSH, 0600) and ``private_key + '.pub'``.

    Run this on the device itself for real deployments: the private key then never leaves it.
    Raises :class:`CertificateError` if either file exists (unless ``force``).
    """
    path = Path(private_key).expanduser()
    pub_path = path.with_name(path.name + ".pub")
    existing = [str(p) for p in (path, pub_path) if p.exists()]
    if existing and not force:
        raise CertificateError(f"refusing to overwrite {', '.join(existing)} (pass force=True)")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(CURVE())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    if comment:
        public += b" " + comment.encode()
    _write(path, private, private=True)
    _write(pub_path, public + b"\n", private=False)
    return NodeKey(path, pub_path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulations.certificates",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, type=Path, help="folder to write into")
    parser.add_argument("--nodes", required=True, type=int, help="number of SuperNode key pairs")
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        help="an address devices use to reach the SuperLink (repeatable); 127.0.0.1 and localhost are "
        "always included",
    )
    parser.add_argument("--days", type=int, default=365, help="certificate validity (default 365)")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    args = parser.parse_args(argv)
    try:
        paths = generate(args.out, args.nodes, args.host, force=args.force, days=args.days)
    except (CertificateError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"CA certificate      {paths.ca_cert}")
    print(f"CA key (keep safe)  {paths.ca_key}")
    print(f"SuperLink cert/key  {paths.server_cert} {paths.server_key}  (hosts: {', '.join(paths.hosts)})")
    for node in paths.nodes:
        print(f"SuperNode key       {node.private_key} {node.public_key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
