"""Making the Kubernetes API's certificates with `cryptography`, in a process of its own.

`python -m podhost.apiserver.certmaker PARENT_PID DIRECTORY HOST...` (run by podhost.apiserver.certs,
only when something must be made or renewed): once imported, the library's native code stays resident
(~11 MiB) for the rest of the importing process's life, and the daemon lives for months. The child dies
with its parent (PR_SET_PDEATHSIG), so a daemon killed meanwhile leaves nothing running.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from podhost import linux
from podhost.apiserver.certs import (
    ADMIN_GROUP,
    CA_DAYS,
    LEAF_DAYS,
    RENEW_BEFORE,
    USER,
    Credentials,
    write_private,
)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str, organization: str = "") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    *,
    server: bool,
    hosts: tuple[str, ...] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A serving (`server`, with `hosts` as DNS names or IP addresses) or client certificate."""
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _fresh(cert: x509.Certificate | None, key_path: Path) -> bool:
    if cert is None or not key_path.exists():
        return False
    return cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > RENEW_BEFORE


def renew(creds: Credentials, hosts: tuple[str, ...]) -> datetime.datetime:
    """Make what is missing, unreadable or about to expire; a new CA means new leaves too (a leaf must be
    signed by the CA the kubeconfig names). Returns when the first of the three needs renewing."""
    ca_cert = _load_cert(creds.ca_cert)
    renewed_ca = False
    if ca_cert is None or not _fresh(ca_cert, creds.ca_key):
        ca_cert, ca_key = make_ca("podhost-ca")
        write_private(creds.ca_key, _key_pem(ca_key))
        write_private(creds.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
        renewed_ca = True
    else:
        loaded = serialization.load_pem_private_key(creds.ca_key.read_bytes(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        ca_key = loaded
    server = _load_cert(creds.server_cert)
    wanted_hosts = set(hosts)
    if server is not None:
        try:
            san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            have = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
            have |= set(san.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            have = set()
        if not wanted_hosts <= have:
            server = None
    if renewed_ca or not _fresh(server, creds.server_key):
        cert, key = make_leaf(ca_cert, ca_key, _name("podhost-apiserver"), server=True, hosts=hosts)
        write_private(creds.server_key, _key_pem(key))
        write_private(creds.server_cert, cert.public_bytes(serialization.Encoding.PEM))
    if renewed_ca or not _fresh(_load_cert(creds.client_cert), creds.client_key):
        cert, key = make_leaf(ca_cert, ca_key, _name(USER, ADMIN_GROUP), server=False)
        write_private(creds.client_key, _key_pem(key))
        write_private(creds.client_cert, cert.public_bytes(serialization.Encoding.PEM))
    certs = [_load_cert(path) for path in (creds.ca_cert, creds.server_cert, creds.client_cert)]
    return min(c.not_valid_after_utc for c in certs if c is not None) - RENEW_BEFORE


def main(argv: list[str]) -> int:
    """Renew DIRECTORY's credentials for HOSTs; print when the first needs renewing (a Unix time)."""
    parent, directory, *hosts = argv
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(parent):  # the parent died before the line above: nobody wants the result
        return 1
    print(renew(Credentials(Path(directory)), tuple(hosts)).timestamp())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
