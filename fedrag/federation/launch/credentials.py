"""Credentials for a secure deployment, made on the spot: a CA, a SuperLink certificate
for the given hosts, and EC P-384 SuperNode key pairs in OpenSSH format (what Flower's
SuperNode authentication reads). Private keys are written owner-only (0600).

`cryptography` comes with Flower. For production, a site may prefer certificates
from its own CA; these are for loopback runs and for getting started (docs/federation.md)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def make_tls(out: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), days: int = 30):
    """`ca.crt`, `server.pem` and `server.key` in `out` for a SuperLink reachable
    as any of `hosts` (IP addresses or DNS names); returns their absolute paths (Flower
    resolves relative ones against each process's own working directory)."""
    from fedrag.federation.launch.deployment import Certs

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("fedrag test CA"))
        .issuer_name(_name("fedrag test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP384R1())
    san = x509.SubjectAlternativeName([_alt_name(h) for h in hosts])
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(san, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (out / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (out / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(out / "server.key", _pem_key(key))
    return Certs(ca=out / "ca.crt", cert=out / "server.pem", key=out / "server.key")


def _alt_name(host: str):
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_supernode_keys(out: Path, n: int) -> list[tuple[Path, Path]]:
    """`site{i}_key` (private, 0600) and `site{i}_key.pub` for `n` SuperNodes (absolute paths)."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(n):
        key = ec.generate_private_key(ec.SECP384R1())
        private, public = out / f"site{i}_key", out / f"site{i}_key.pub"
        _write_private(
            private,
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()),
        )
        public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
        pairs.append((private, public))
    return pairs
