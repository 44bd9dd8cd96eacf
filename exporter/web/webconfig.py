"""The exporter-toolkit web configuration file (`--web.config.file`): TLS, basic auth users and extra headers.

Validated like our own config (unknown keys are errors, every error listed at once) into a frozen `WebConfig`:
the TLS context is built here, the users are checked by `exporter.web.auth`.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from exporter.config import ConfigError
from exporter.configfile import Loader, validation_message, yaml_problem
from exporter.web.auth import BasicAuth, cost_of, decoy_seconds

Problem = tuple[tuple[int | str, ...], str]  # (location, message)
TLSName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
ClientAuth = Literal[
    "NoClientCert", "RequestClientCert", "RequireAnyClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"
]
_TLS = "tls_server_config"
_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,  # accepted, but OpenSSL's security level may still refuse TLS 1.0 and 1.1
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Go's client auth types on Python's ssl, which cannot ask for a client certificate without verifying it:
# - RequestClientCert (ask, never verify) -> CERT_NONE: we never read client certificates, so both let every client in;
# - RequireAnyClientCert (require any, never verify) -> CERT_REQUIRED against client_ca_file: stricter, fails closed;
# - VerifyClientCertIfGiven -> CERT_OPTIONAL, RequireAndVerifyClientCert -> CERT_REQUIRED, both against client_ca_file.
_VERIFY_MODES = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_NONE,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_NEEDS_CA = frozenset(mode for mode, verify in _VERIFY_MODES.items() if verify != ssl.CERT_NONE)
# cipher_suites takes Go's names (crypto/tls CipherSuites()); those for TLS 1.2 and below become the OpenSSL cipher
# list, in order. TLS 1.3 suites are accepted and ignored: neither Go nor Python's ssl lets them be chosen.
_CIPHERS = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}
_TLS13_SUITES = frozenset({"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"})
# curve_preferences is checked and ignored: Python's ssl can only pin one curve, not order a list.
Curve = Literal["CurveP256", "CurveP384", "CurveP521", "X25519"]
# Like exporter-toolkit, only these response headers can be set; an empty value leaves the header out.
_HEADERS: dict[str, tuple[str, ...]] = {  # name -> allowed values (empty: any)
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}")


class WebConfigError(ConfigError):
    """Invalid web configuration; `errors` holds every problem, each `"<dotted.path>: <message>"`."""

    what = "web configuration"


def _bcrypt_hash(value: str) -> str:
    if not _BCRYPT_HASH.fullmatch(value):
        raise PydanticCustomError("bcrypt", "not a bcrypt hash: use e.g. htpasswd -nBC 10 '' | tr -d ':\\n'")
    return value


def _cipher(name: str) -> str:
    if name not in _CIPHERS and name not in _TLS13_SUITES:
        raise PydanticCustomError(
            "cipher", "unknown cipher suite {name}: use a Go crypto/tls name", {"name": repr(name)}
        )
    return name


_Section = BeforeValidator(lambda value: {} if value is None else value)  # an empty section means the defaults
_FileName = Annotated[str, Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _TLSConfig(_Strict):
    cert_file: _FileName | None = None
    key_file: _FileName | None = None
    client_auth_type: ClientAuth = "NoClientCert"
    client_ca_file: _FileName | None = None
    min_version: TLSName = "TLS12"
    max_version: TLSName = "TLS13"
    cipher_suites: list[Annotated[str, AfterValidator(_cipher)]] = []
    prefer_server_cipher_suites: bool = True
    curve_preferences: list[Curve] = []


class _HTTPConfig(_Strict):
    http2: bool = True  # accepted for compatibility; we never speak HTTP/2
    headers: Annotated[dict[str, str], _Section] = {}


class _WebFile(_Strict):
    tls_server_config: Annotated[_TLSConfig, _Section] = Field(default_factory=_TLSConfig)
    http_server_config: Annotated[_HTTPConfig, _Section] = Field(default_factory=_HTTPConfig)
    basic_auth_users: Annotated[dict[str, Annotated[str, AfterValidator(_bcrypt_hash)]], _Section] = {}


@dataclass(frozen=True)
class WebConfig:
    tls: ssl.SSLContext | None = None  # None: plain HTTP
    users: Mapping[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash; empty: no authentication
    headers: Mapping[str, str] = field(default_factory=dict)  # extra response headers
    auth: BasicAuth = field(init=False, repr=False, compare=False)  # checks requests against `users`

    def __post_init__(self) -> None:
        object.__setattr__(self, "auth", BasicAuth(self.users))

    def authorized(self, authorization: str | None) -> bool:
        """Whether the raw `Authorization` header lets the request in (always, when no users are configured)."""
        return self.auth.authorized(authorization)


def _read(path: Path) -> dict[Any, Any]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)
    except (OSError, UnicodeDecodeError) as e:
        raise WebConfigError(
            str(path), [f"top level: cannot read the file: {getattr(e, 'strerror', None) or e}"]
        ) from None
    except yaml.YAMLError as e:
        raise WebConfigError(str(path), [yaml_problem(e)]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise WebConfigError(str(path), [f"top level: should be a mapping, got a {type(data).__name__}"])
    return data


def _tls_problems(tls: object) -> list[Problem]:
    """Settings that only make sense together; checked on the raw section so they show beside any other error."""
    if not isinstance(tls, dict):
        return []
    cert, key, ca, auth, low, high = (
        value if isinstance(value, str) else None
        for value in map(
            tls.get, ("cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version", "max_version")
        )
    )
    found: list[Problem] = []
    if cert and not key:
        found.append(((_TLS, "key_file"), "missing: cert_file needs key_file"))
    if key and not cert:
        found.append(((_TLS, "cert_file"), "missing: key_file needs cert_file"))
    if not cert and not key and (ca or auth not in (None, "NoClientCert")):
        found.append(((_TLS, "cert_file"), "missing: client certificates need TLS (cert_file and key_file)"))
    if auth in _NEEDS_CA and not ca:
        found.append(
            ((_TLS, "client_ca_file"), f"missing: client_auth_type {auth} needs the CA of client certificates")
        )
    if ca and auth in (None, "NoClientCert"):
        found.append(((_TLS, "client_auth_type"), "should not be NoClientCert when client_ca_file is set"))
    if low in _VERSIONS and high in _VERSIONS and _VERSIONS[low] > _VERSIONS[high]:
        found.append(((_TLS, "max_version"), f"{high} is below min_version {low}"))
    return found


def _header_problems(http: object) -> list[Problem]:
    headers = http.get("headers") if isinstance(http, dict) else None
    found: list[Problem] = []
    for name, value in headers.items() if isinstance(headers, dict) else ():
        at: tuple[int | str, ...] = ("http_server_config", "headers", *([str(name)] if name else []))
        allowed = _HEADERS.get(name)
        if allowed is None:
            found.append((at, f"header {name!r} cannot be set; allowed: {', '.join(_HEADERS)}"))
        elif isinstance(value, str) and value and allowed and value not in allowed:
            found.append((at, f"should be {' or '.join(map(repr, allowed))} (or empty), got {value!r}"))
        elif isinstance(value, str) and ("\r" in value or "\n" in value):
            found.append((at, "should be one line"))
    return found


def _user_problems(users: object) -> list[Problem]:
    names = [name for name in users if isinstance(name, str) and ":" in name] if isinstance(users, dict) else []
    return [(("basic_auth_users", name), "a user name cannot contain ':'") for name in names]


def _readable(base: Path, key: str, value: str | None, found: list[Problem]) -> Path | None:
    if value is None:
        return None
    path = base / Path(value).expanduser()  # relative to the config file's folder, as exporter-toolkit does
    try:
        path.read_bytes()
    except OSError as e:
        found.append(((_TLS, key), f"cannot read {path}: {e.strerror or e}"))
        return None
    return path


def _load_pair(context: ssl.SSLContext, cert: Path, key: Path) -> list[Problem]:
    try:
        context.load_cert_chain(cert, key, password=b"")  # an encrypted key fails, rather than prompting
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            return [((_TLS, "key_file"), f"{key} does not match the certificate in {cert}")]
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cert)
        except ssl.SSLError:
            return [((_TLS, "cert_file"), f"no PEM certificate in {cert}")]
        return [((_TLS, "key_file"), f"no unencrypted PEM private key in {key}")]
    return []


def _context(tls: _TLSConfig, base: Path) -> tuple[ssl.SSLContext | None, list[Problem]]:
    """The server's SSL context, or None for plain HTTP; with every file problem."""
    if tls.cert_file is None:
        return None, []
    found: list[Problem] = []
    cert, key, ca = (_readable(base, k, getattr(tls, k), found) for k in ("cert_file", "key_file", "client_ca_file"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version, context.maximum_version = _VERSIONS[tls.min_version], _VERSIONS[tls.max_version]
    context.verify_mode = _VERIFY_MODES[tls.client_auth_type]
    if cert and key:
        found += _load_pair(context, cert, key)
    if ca:
        try:
            context.load_verify_locations(ca)
        except ssl.SSLError:
            found.append(((_TLS, "client_ca_file"), f"no PEM certificate in {ca}"))
    if ciphers := [_CIPHERS[name] for name in tls.cipher_suites if name in _CIPHERS]:
        context.set_ciphers(":".join(ciphers))
    if not tls.prefer_server_cipher_suites:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    return (None if found else context), found


def load_web_config(path: Path) -> WebConfig:
    """Read and check a web configuration file; WebConfigError lists every problem, cert and key files included."""
    raw = _read(path)
    problems = _tls_problems(raw.get(_TLS)) + _header_problems(raw.get("http_server_config"))
    problems += _user_problems(raw.get("basic_auth_users"))
    parsed = None
    try:
        parsed = _WebFile.model_validate(raw)
    except ValidationError as e:
        problems += [(err["loc"], validation_message(err)) for err in e.errors()]
    context = None
    if not any(loc[:1] == (_TLS,) for loc, _ in problems):  # then the section is valid on its own: check its files
        context, more = _context(_TLSConfig.model_validate(raw.get(_TLS) or {}), path.parent)
        problems += more
    if problems or parsed is None:
        ordered = sorted(problems, key=lambda problem: tuple(map(str, problem[0])))
        raise WebConfigError(str(path), [f"{'.'.join(map(str, loc)) or 'top level'}: {m}" for loc, m in ordered])
    users = MappingProxyType({user: hashed.encode() for user, hashed in parsed.basic_auth_users.items()})
    if users:  # measured now, while nothing else runs, not by the first requests of a flood
        decoy_seconds(cost_of(users))
    return WebConfig(
        tls=context,
        users=users,
        headers=MappingProxyType({name: value for name, value in parsed.http_server_config.headers.items() if value}),
    )
