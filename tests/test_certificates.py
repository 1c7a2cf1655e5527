"""Development certificates and SuperNode keys: chain, names, key formats Flower reads, file safety."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key
from flwr.cli.supernode.register import try_load_public_key
from flwr.supercore.primitives.asymmetric import public_key_to_bytes
from flwr.supernode.cli.flower_supernode import _try_setup_client_authentication

from simulations.certificates import (
    CertificateError,
    DevCertificates,
    check_hosts,
    generate,
    main,
    write_node_key,
)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCertificates:
    return generate(tmp_path_factory.mktemp("certs"), nodes=2, hosts=["10.1.2.3", "Server.LAN"])


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_server_certificate_is_issued_by_the_ca_for_server_auth(certs: DevCertificates) -> None:
    ca, server = _cert(certs.ca_cert), _cert(certs.server_cert)
    server.verify_directly_issued_by(ca)  # raises on a bad signature or issuer
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usage
    assert isinstance(server.public_key(), ec.EllipticCurvePublicKey)
    assert server.public_key().curve.name == "secp384r1"
    # Another CA's certificate does not verify.
    other = generate(certs.out.parent / "other", nodes=0)
    with pytest.raises(InvalidSignature):
        server.verify_directly_issued_by(_cert(other.ca_cert))


def test_subject_alternative_names(certs: DevCertificates) -> None:
    san = _cert(certs.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("127.0.0.1"),
    }
    assert set(san.get_values_for_type(x509.DNSName)) == {"server.lan", "localhost"}
    assert DevCertificates.load(certs.out).hosts == ("10.1.2.3", "127.0.0.1", "server.lan", "localhost")


def _handshake(certs: DevCertificates, server_hostname: str) -> bytes:
    """A real TLS connection on 127.0.0.1: server with the generated cert, client trusting only the CA."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certs.server_cert, certs.server_key)
    client_ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            conn, _ = listener.accept()
            with contextlib.suppress(OSError), server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(tls.recv(5))

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(listener.getsockname(), timeout=10) as raw,
                client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
            ):
                tls.sendall(b"hello")
                return tls.recv(5)
        finally:
            thread.join(10)


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", "10.1.2.3", "server.lan"])
def test_a_client_trusting_the_ca_completes_a_tls_handshake(certs: DevCertificates, name: str) -> None:
    assert _handshake(certs, name) == b"hello"


def test_a_name_the_certificate_does_not_carry_is_refused(certs: DevCertificates) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(certs, "evil.example")


def test_node_keys_are_p384_openssh_pairs_that_flower_accepts(certs: DevCertificates) -> None:
    assert len(certs.nodes) == 2
    for node in certs.nodes:
        private = load_ssh_private_key(node.private_key.read_bytes(), None)
        public = load_ssh_public_key(node.public_key.read_bytes())
        assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
        assert public_key_to_bytes(private.public_key()) == public_key_to_bytes(public)
        # The functions flwr itself uses for `flwr supernode register` and `flower-supernode`.
        assert try_load_public_key(node.public_key) == public_key_to_bytes(public)
        args = argparse.Namespace(
            auth_supernode_private_key=str(node.private_key), auth_supernode_public_key=None
        )
        loaded = _try_setup_client_authentication(args)
        assert loaded is not None and public_key_to_bytes(loaded[1]) == public_key_to_bytes(public)
    first, second = (n.public_key.read_bytes() for n in certs.nodes)
    assert first != second


def test_private_keys_are_0600_and_public_files_are_not_secret(certs: DevCertificates) -> None:
    private = [certs.ca_key, certs.server_key, *(n.private_key for n in certs.nodes)]
    public = [certs.ca_cert, certs.server_cert, *(n.public_key for n in certs.nodes)]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in public:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_refuses_to_overwrite_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = generate(tmp_path, nodes=1)
    before = first.ca_cert.read_bytes()
    with pytest.raises(CertificateError, match="refusing to overwrite .*ca.crt"):
        generate(tmp_path, nodes=1)
    assert first.ca_cert.read_bytes() == before
    assert main(["--out", str(tmp_path), "--nodes", "1"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--nodes", "3", "--force"]) == 0
    assert first.ca_cert.read_bytes() != before
    assert len(DevCertificates.load(tmp_path).nodes) == 3
    with pytest.raises(CertificateError, match="refusing"):
        write_node_key(tmp_path / "node-0")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nodes": -1}, "nodes must be an integer >= 0"),
        ({"nodes": 1.5}, "nodes must be an integer"),
        ({"nodes": 1, "hosts": ["bad host!"]}, "neither an IP address nor a valid DNS name"),
        ({"nodes": 1, "hosts": "127.0.0.1"}, "sequence of names"),
        ({"nodes": 1, "days": 0}, "days must be"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_error(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(CertificateError, match=message):
        generate(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_out_must_be_a_folder_and_load_names_missing_files(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(CertificateError, match="not a folder"):
        generate(tmp_path / "file", nodes=1)
    with pytest.raises(CertificateError, match="lacks .*ca.crt.*simulations.certificates"):
        DevCertificates.load(tmp_path / "empty")


def test_hosts_are_normalised_and_deduplicated() -> None:
    assert check_hosts(["127.0.0.1", "LOCALHOST", "::1"]) == ("127.0.0.1", "localhost", "::1")
