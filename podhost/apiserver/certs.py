"""The instance's credentials for its Kubernetes API: a CA, a serving certificate, a client certificate.

Made on the daemon's first start with `cryptography` (no openssl subprocess) and kept under
`<state_dir>/kube-api/`, every file mode 0600: whoever can read them is the cluster's administrator, as
with kube-apiserver's `/etc/kubernetes/pki`. They are reused on later starts, so a kubeconfig copied
elsewhere keeps working; a leaf certificate close to expiry is remade from the same CA.

Keys are ECDSA P-256: made in milliseconds (RSA-2048 takes ~100 ms each) and accepted by Go's TLS, which
is what kubectl uses. The client certificate names `podhost-admin` in group `system:masters`, the
kubeadm admin's shape; the server authorizes any certificate its CA signed.

`<state_dir>/kubeconfig` (cluster, user and context `podhost`, credentials embedded) is rewritten on each
start, since the port may change when it is chosen freely.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CONTEXT = "podhost"
USER = "podhost-admin"
ADMIN_GROUP = "system:masters"
CA_DAYS = 3650
LEAF_DAYS = 365
#: A leaf certificate with less than this left is made again at start.
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class Credentials:
    """Paths of the PEM files of one instance (all 0600)."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.crt"

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, readable by its owner only from the first byte on."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


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


def ensure_credentials(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Credentials:
    """The instance's credentials, made where missing, unreadable or about to expire. A new CA means
    new leaves too: a leaf must be signed by the CA the kubeconfig names."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    creds = Credentials(directory)
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
    return creds


def kubeconfig(creds: Credentials, server_url: str) -> dict[str, object]:
    """A kubeconfig with the credentials embedded (one file to copy), context `podhost`."""

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {"server": server_url, "certificate-authority-data": b64(creds.ca_cert)},
            }
        ],
        "users": [
            {
                "name": USER,
                "user": {
                    "client-certificate-data": b64(creds.client_cert),
                    "client-key-data": b64(creds.client_key),
                },
            }
        ],
        "contexts": [
            {"name": CONTEXT, "context": {"cluster": CONTEXT, "user": USER, "namespace": "default"}}
        ],
        "current-context": CONTEXT,
    }


def write_kubeconfig(path: Path, config: dict[str, object]) -> None:
    write_private(path, yaml.safe_dump(config, sort_keys=False).encode())


def port_in_kubeconfig(path: Path) -> int:
    """The port the instance's previous kubeconfig names (0 if none): a freely chosen port is kept
    across restarts when it is still free, so copies of the kubeconfig stay valid."""
    try:
        doc = yaml.safe_load(path.read_text())
        server = str(doc["clusters"][0]["cluster"]["server"])
        return int(server.rsplit(":", 1)[1].rstrip("/"))
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError, ValueError):
        return 0
