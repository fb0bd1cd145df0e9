"""A development PKI for bridge links: one deployment CA, one certificate per cluster.

Every bridge link is mutual TLS. Both ends hold a certificate issued by the deployment's
CA; the common name (CN) is the cluster's name, which is also a DNS name in the
subjectAltName (beside the hosts the cluster listens on), so a dialling cluster checks
it reached the peer it meant (``server_name``) and the listening side learns who called.

:func:`create_dev_pki` writes such a PKI into a directory::

    ca.pem   ca.key                      the CA (reused when present)
    <cluster>.pem  <cluster>.key         one pair per cluster (EC P-256)

Key files are mode 0600. This is for development and tests; production deployments
bring certificates from their own CA in the same shape (see :class:`TlsFiles`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aqe.errors import BridgeError

__all__ = [
    "CLUSTER_NAME_PATTERN",
    "TlsFiles",
    "check_cluster_name",
    "create_dev_pki",
    "peer_name",
]

CLUSTER_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
"""What a cluster name may contain: it becomes a file name, a DNS SAN and a CN."""

_CA_NAME = "aqe bridge development CA"
_RESERVED = frozenset({"ca"})  # ca.pem / ca.key belong to the CA
_BACKDATE = dt.timedelta(hours=1)  # tolerate clocks a little behind the issuer's


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files one cluster needs for its bridge links."""

    ca: Path
    """The deployment CA certificate (PEM): peers must chain to it."""
    cert: Path
    """This cluster's certificate (PEM): CN = cluster name, SAN = cluster name + hosts."""
    key: Path
    """Its private key (PEM, unencrypted PKCS#8)."""


def check_cluster_name(name: str) -> str:
    """``name`` if it is a usable cluster name.

    Raises:
        BridgeError: it is empty, has characters outside ``[A-Za-z0-9_-]`` or is ``ca``.
    """
    if not CLUSTER_NAME_PATTERN.fullmatch(name):
        raise BridgeError(
            f"cluster name {name!r} is not usable: only letters, digits, '_' and '-' allowed"
        )
    if name.lower() in _RESERVED:
        raise BridgeError(f"cluster name {name!r} is reserved (the CA's files are ca.pem/ca.key)")
    return name


def peer_name(cert: x509.Certificate) -> str:
    """The cluster name a certificate was issued to: its subject common name (CN).

    Raises:
        BridgeError: the certificate has no CN, or the CN is not a cluster name.
    """
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(values) != 1:
        raise BridgeError(
            f"certificate {cert.subject.rfc4514_string()!r} has {len(values)} common names, "
            "expected exactly one (the cluster name)"
        )
    value = values[0].value
    name = value.decode() if isinstance(value, bytes) else value
    return check_cluster_name(name)


def create_dev_pki(
    directory: Path,
    clusters: Sequence[str],
    *,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    days: int = 825,
    overwrite: bool = False,
) -> dict[str, TlsFiles]:
    """Write (or complete) a development PKI for ``clusters`` under ``directory``.

    The CA in ``ca.pem``/``ca.key`` is reused when both files exist (unless
    ``overwrite``), so clusters added later join the same deployment. A cluster's pair
    is reused when it exists, was issued by this CA, names the same hosts and is still
    valid; otherwise it is (re)issued. Certificates carry both the serverAuth and the
    clientAuth extended key usage: each cluster dials and listens.

    Args:
        directory: where the files go (created if missing).
        clusters: cluster names (``[A-Za-z0-9_-]+``), one certificate each.
        hosts: DNS names or IP addresses the clusters are reached at, added to every
            certificate's subjectAltName after the cluster name itself.
        days: validity of newly issued certificates.
        overwrite: issue a new CA (and new cluster certificates) even if files exist.

    Returns:
        Cluster name -> its :class:`TlsFiles`.

    Raises:
        BridgeError: a bad cluster name or host, a half-present or unreadable CA, or a
            file that cannot be written; the message names the file.
    """
    names = [check_cluster_name(name) for name in clusters]
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen:
            raise BridgeError(f"cluster {name!r} is listed twice")
        seen.add(name.lower())
    if days < 1:
        raise BridgeError(f"days must be at least 1, got {days}")
    sans = _host_names(hosts)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BridgeError(f"{directory}: cannot create the PKI directory: {exc}") from exc

    ca_cert_path, ca_key_path = directory / "ca.pem", directory / "ca.key"
    loaded = None if overwrite else _load_ca(ca_cert_path, ca_key_path)
    if loaded is None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _issue_ca(ca_key, days)
        _write_key(ca_key_path, ca_key)
        _write_cert(ca_cert_path, ca_cert)
    else:
        ca_cert, ca_key = loaded

    result: dict[str, TlsFiles] = {}
    for name in names:
        files = TlsFiles(
            ca=ca_cert_path, cert=directory / f"{name}.pem", key=directory / f"{name}.key"
        )
        if overwrite or loaded is None or not _reusable(files, ca_cert, name, sans):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _issue_leaf(name, sans, key, ca_cert, ca_key, days)
            _write_key(files.key, key)
            _write_cert(files.cert, cert)
        result[name] = files
    return result


# -- issuing ------------------------------------------------------------------------------

_San = x509.DNSName | x509.IPAddress


def _host_names(hosts: Sequence[str]) -> list[_San]:
    sans: list[_San] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not host or not re.fullmatch(r"[A-Za-z0-9_.*-]+", host):
                raise BridgeError(
                    f"host {host!r} is neither an IP address nor a DNS name"
                ) from None
            sans.append(x509.DNSName(host))
    return sans


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _issue_ca(key: ec.EllipticCurvePrivateKey, days: int) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _CA_NAME)])
    public = key.public_key()
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _issue_leaf(
    cluster: str,
    sans: Sequence[_San],
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    days: int,
) -> x509.Certificate:
    public = key.public_key()
    now = _now()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    alt_names: list[_San] = [x509.DNSName(cluster)]
    alt_names += [san for san in sans if san != x509.DNSName(cluster)]
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cluster)]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(_ec_public(ca_cert)),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def _ec_public(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise BridgeError(f"CA certificate {cert.subject.rfc4514_string()!r} has no EC key")
    return public


# -- files --------------------------------------------------------------------------------


def _load_ca(
    cert_path: Path, key_path: Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    has_cert, has_key = cert_path.exists(), key_path.exists()
    if not has_cert and not has_key:
        return None
    if not has_key:
        raise BridgeError(f"{key_path}: missing, but {cert_path.name} exists (pass overwrite=True)")
    if not has_cert:
        raise BridgeError(f"{cert_path}: missing, but {key_path.name} exists (pass overwrite=True)")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise BridgeError(f"{cert_path}: not a readable PEM certificate: {exc}") from exc
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise BridgeError(f"{key_path}: not a readable unencrypted PEM key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise BridgeError(f"{key_path}: expected an EC private key")
    if key.public_key() != _ec_public(cert):
        raise BridgeError(f"{key_path}: does not belong to the certificate in {cert_path.name}")
    if cert.not_valid_after_utc <= _now():
        raise BridgeError(f"{cert_path}: the CA expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    return cert, key


def _reusable(files: TlsFiles, ca_cert: x509.Certificate, name: str, sans: Sequence[_San]) -> bool:
    """Whether an existing pair was issued by ``ca_cert`` to ``name`` for the same hosts."""
    if not files.cert.exists() or not files.key.exists():
        return False
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        cert.verify_directly_issued_by(ca_cert)
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    wanted = {x509.DNSName(name), *sans}
    return (
        key.public_key() == cert.public_key()
        and _peer_name_or_none(cert) == name
        and set(alt) == wanted
        and cert.not_valid_after_utc > _now() + dt.timedelta(days=1)
    )


def _peer_name_or_none(cert: x509.Certificate) -> str | None:
    """:func:`peer_name`, or ``None`` where that raises."""
    try:
        return peer_name(cert)
    except BridgeError:
        return None


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomic(path, pem, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file created with ``mode``, so a key is never world-readable."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)  # O_CREAT's mode is masked by the umask; be exact
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BridgeError(f"{path}: cannot write: {exc}") from exc
