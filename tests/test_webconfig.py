import base64
import http.client
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import bcrypt
import pytest

from exporter.web import auth, webconfig
from exporter.web.auth import BasicAuth
from exporter.web.webconfig import WebConfig, WebConfigError, load_web_config
from tests.support.loopback import basic

BAD = Path(__file__).parent / "fixtures" / "bad-web-configs"
WAIT = 30.0  # seconds before a test gives up on a thread (a limit, never a pause)
HASH = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4))
ALLOWED = (
    "Strict-Transport-Security, X-Content-Type-Options, X-Frame-Options, X-XSS-Protection, Content-Security-Policy"
)
NOT_BCRYPT = "not a bcrypt hash: use e.g. htpasswd -nBC 10 '' | tr -d ':\\n'"
MISSING = "No such file or directory"
EXPECTED = {  # fixture -> every error it should report, in order
    "bad-ciphers-and-curves.yaml": [
        "tls_server_config.cipher_suites.1: unknown cipher suite 'TLS_RSA_WITH_RC4_128_SHA': use a Go crypto/tls name",
        "tls_server_config.curve_preferences.1: Input should be 'CurveP256', 'CurveP384', 'CurveP521' or 'X25519'",
    ],
    "bad-client-auth-type.yaml": [
        "tls_server_config.client_auth_type: Input should be 'NoClientCert', 'RequestClientCert', "
        "'RequireAnyClientCert', 'VerifyClientCertIfGiven' or 'RequireAndVerifyClientCert'"
    ],
    "bad-headers.yaml": [
        f"http_server_config.headers: header '' cannot be set; allowed: {ALLOWED}",
        "http_server_config.headers.Content-Security-Policy: should be one line",
        f"http_server_config.headers.Server: header 'Server' cannot be set; allowed: {ALLOWED}",
        "http_server_config.headers.X-Frame-Options: should be 'deny' or 'sameorigin' (or empty), got 'allow'",
    ],
    "bad-tls-versions.yaml": ["tls_server_config.max_version: TLS12 is below min_version TLS13"],
    "ca-without-client-auth.yaml": [
        "tls_server_config.client_auth_type: should not be NoClientCert when client_ca_file is set"
    ],
    "cert-without-key.yaml": ["tls_server_config.key_file: missing: cert_file needs key_file"],
    "client-auth-without-cert.yaml": [
        "tls_server_config.cert_file: missing: client certificates need TLS (cert_file and key_file)"
    ],
    "duplicate-key.yaml": ["line 3, column 3: invalid YAML: duplicate key 'alice'"],
    "invalid-yaml.yaml": [
        "line 3, column 1: invalid YAML: found unexpected end of stream "
        "(while scanning a quoted scalar at line 2, column 10)"
    ],
    "key-without-cert.yaml": ["tls_server_config.cert_file: missing: key_file needs cert_file"],
    "many-errors.yaml": [
        f"basic_auth_users.alice: {NOT_BCRYPT}",
        f"http_server_config.headers.X-Powered-By: header 'X-Powered-By' cannot be set; allowed: {ALLOWED}",
        "metrics_path: unknown key",
        f"tls_server_config.cert_file: cannot read {BAD}/missing/server.pem: {MISSING}",
        f"tls_server_config.key_file: cannot read {BAD}/missing/server.key: {MISSING}",
    ],
    "missing-files.yaml": [
        f"tls_server_config.cert_file: cannot read {BAD}/missing/server.pem: {MISSING}",
        f"tls_server_config.client_ca_file: cannot read /nonexistent/ca.pem: {MISSING}",
        f"tls_server_config.key_file: cannot read {BAD}/missing/server.key: {MISSING}",
    ],
    "not-a-mapping.yaml": ["top level: should be a mapping, got a list"],
    "not-bcrypt.yaml": [
        f"basic_auth_users.alice: {NOT_BCRYPT}",
        f"basic_auth_users.bob: {NOT_BCRYPT}",
        f"basic_auth_users.carol: {NOT_BCRYPT}",
        "basic_auth_users.dave:ops: a user name cannot contain ':'",
    ],
    "unknown-keys.yaml": ["rate_limit: unknown key", "tls_server_config.client_allowed_sans: unknown key"],
    "unknown-tls-version.yaml": ["tls_server_config.min_version: Input should be 'TLS10', 'TLS11', 'TLS12' or 'TLS13'"],
    "verify-without-ca.yaml": [
        "tls_server_config.client_ca_file: missing: client_auth_type VerifyClientCertIfGiven needs the CA of "
        "client certificates"
    ],
    "wrong-types.yaml": [
        "basic_auth_users.alice: Input should be a valid string",
        "http_server_config: Input should be a mapping",
        "tls_server_config.cert_file: Input should be a valid string",
        "tls_server_config.cipher_suites: Input should be a valid list",
        "tls_server_config.key_file: String should have at least 1 character",
        "tls_server_config.min_version: Input should be 'TLS10', 'TLS11', 'TLS12' or 'TLS13'",
        "tls_server_config.prefer_server_cipher_suites: Input should be a valid boolean, unable to interpret input",
    ],
}


def error_text(path: Path) -> str:
    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)
    return str(caught.value)


def write(folder: Path, text: str) -> Path:
    path = folder / "web.yml"
    path.write_text(text)
    return path


def test_every_bad_web_config_fixture_has_an_expected_message():
    assert sorted(path.name for path in BAD.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_bad_web_config_is_rejected_with_all_its_errors(name):
    expected = [f"{BAD / name}: invalid web configuration", *(f"  {error}" for error in EXPECTED[name])]
    assert error_text(BAD / name) == "\n".join(expected)


def test_a_missing_web_config_file_is_an_error(tmp_path):
    path = tmp_path / "web.yml"
    assert error_text(path) == f"{path}: invalid web configuration\n  top level: cannot read the file: {MISSING}"


@pytest.mark.parametrize("text", ["", "tls_server_config:\nhttp_server_config:\n  headers:\nbasic_auth_users:\n"])
def test_an_empty_web_config_means_plain_http_without_authentication(tmp_path, text):
    assert load_web_config(write(tmp_path, text)) == WebConfig(tls=None, users={}, headers={})


def test_every_mapped_cipher_suite_is_known_to_openssl():
    for name in webconfig._CIPHERS.values():
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(name)  # raises SSLError when OpenSSL does not know it


def tls_config(pki: Path, extra: str = "") -> WebConfig:
    return load_web_config(write(pki, f"tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n{extra}"))


def test_a_full_web_config_loads_with_paths_relative_to_its_folder(pki):
    config = tls_config(
        pki,
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  min_version: TLS13\n"
        "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n"
        "  prefer_server_cipher_suites: false\n  curve_preferences: [X25519]\n"
        "http_server_config:\n  http2: false\n  headers: {X-Frame-Options: deny, Content-Security-Policy: ''}\n"
        f"basic_auth_users:\n  alice: {HASH.decode()}\n",
    )

    assert (config.users, config.headers) == ({"alice": HASH}, {"X-Frame-Options": "deny"})
    assert config.tls is not None
    assert (config.tls.minimum_version, config.tls.maximum_version) == (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3)
    assert config.tls.verify_mode == ssl.CERT_REQUIRED
    assert ssl.OP_CIPHER_SERVER_PREFERENCE not in config.tls.options
    tls12 = [cipher["name"] for cipher in config.tls.get_ciphers() if cipher["protocol"] == "TLSv1.2"]
    assert tls12 == ["ECDHE-ECDSA-AES128-GCM-SHA256"]


@pytest.mark.parametrize(
    ("client_auth", "mode"),
    [
        ("NoClientCert", ssl.CERT_NONE),
        ("RequestClientCert", ssl.CERT_NONE),
        ("RequireAnyClientCert", ssl.CERT_REQUIRED),
        ("VerifyClientCertIfGiven", ssl.CERT_OPTIONAL),
        ("RequireAndVerifyClientCert", ssl.CERT_REQUIRED),
    ],
)
def test_client_auth_types_map_to_python_verify_modes(pki, tmp_path, client_auth, mode):
    ca = "" if client_auth == "NoClientCert" else f"  client_ca_file: {pki / 'ca.pem'}\n"
    files = f"  cert_file: {pki / 'server.pem'}\n  key_file: {pki / 'server.key'}\n"  # absolute paths
    config = load_web_config(write(tmp_path, f"tls_server_config:\n{files}  client_auth_type: {client_auth}\n{ca}"))
    assert config.tls is not None
    assert config.tls.verify_mode == mode


@pytest.mark.parametrize(
    ("files", "error"),
    [
        (
            "cert_file: server.pem\n  key_file: client.key",
            "key_file: {pki}/client.key does not match the certificate in {pki}/server.pem",
        ),
        ("cert_file: server.key\n  key_file: server.key", "cert_file: no PEM certificate in {pki}/server.key"),
        ("cert_file: server.pem\n  key_file: ca.pem", "key_file: no unencrypted PEM private key in {pki}/ca.pem"),
        (
            "cert_file: server.pem\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n"
            "  client_ca_file: ca.key",
            "client_ca_file: no PEM certificate in {pki}/ca.key",
        ),
    ],
)
def test_unusable_certificate_files_are_errors_with_their_paths(pki, files, error):
    path = write(pki, f"tls_server_config:\n  {files}\n")
    expected = f"{path}: invalid web configuration\n  tls_server_config.{error.format(pki=pki)}"
    assert error_text(path) == expected


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serving(config: WebConfig) -> Iterator[int]:
    """An HTTPS server on a free loopback port, its socket wrapped by `config.tls`; yields the port."""
    assert config.tls is not None
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    server.socket = config.tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def client(pki: Path, with_cert: bool = False, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki / "ca.pem")
    if with_cert:
        context.load_cert_chain(pki / "client.pem", pki / "client.key")
    if max_version is not None:
        context.maximum_version = max_version
    return context


def get(port: int, context: ssl.SSLContext) -> tuple[int, str | None]:
    """(HTTP status, TLS version) of `GET /`."""
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        connection.request("GET", "/")
        assert isinstance(connection.sock, ssl.SSLSocket)
        version = connection.sock.version()
        return connection.getresponse().status, version
    finally:
        connection.close()


def refusal(port: int, context: ssl.SSLContext) -> str | None:
    """The reason the server refuses this client, from the handshake or (TLS 1.3 client certs) the first read."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.recv(1)
        except ssl.SSLError as e:
            return str(e.reason)
    return None


def test_an_https_client_trusting_the_ca_gets_a_response(pki):
    with serving(tls_config(pki)) as port:
        assert get(port, client(pki)) == (200, "TLSv1.3")
        assert get(port, client(pki, max_version=ssl.TLSVersion.TLSv1_2)) == (200, "TLSv1.2")


def test_require_and_verify_client_cert_lets_in_only_clients_with_a_certificate(pki):
    config = tls_config(pki, "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n")
    with serving(config) as port:
        assert refusal(port, client(pki)) == "TLSV13_ALERT_CERTIFICATE_REQUIRED"
        assert get(port, client(pki, with_cert=True)) == (200, "TLSv1.3")


def test_min_version_tls13_refuses_a_client_capped_at_tls12(pki):
    with serving(tls_config(pki, "  min_version: TLS13\n")) as port:
        assert refusal(port, client(pki, max_version=ssl.TLSVersion.TLSv1_2)) == "TLSV1_ALERT_PROTOCOL_VERSION"
        assert get(port, client(pki)) == (200, "TLSv1.3")


@pytest.mark.parametrize(
    ("authorization", "expected"),
    [
        (basic("alice", "secret"), True),
        ("bAsIc " + base64.b64encode(b"alice:secret").decode(), True),
        (basic("alice", "wrong"), False),
        (basic("mallory", "secret"), False),
        ("Basic not base64!", False),
        ("Basic " + base64.b64encode(b"alice-secret").decode(), False),
        ("Bearer " + base64.b64encode(b"alice:secret").decode(), False),
        ("", False),
        (None, False),
    ],
)
def test_authorized_lets_in_only_a_configured_user_with_the_right_password(authorization, expected):
    assert WebConfig(users={"alice": HASH}).authorized(authorization) is expected


def test_without_users_every_request_is_authorized():
    assert [WebConfig().authorized(header) for header in (None, "", basic("anyone", "x"))] == [True, True, True]


@pytest.fixture
def checks(monkeypatch) -> list[tuple[bytes, bytes]]:
    """Every (password, hash) given to bcrypt.checkpw."""
    calls: list[tuple[bytes, bytes]] = []
    checkpw = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append((password, hashed))
        return checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    return calls


def test_a_second_check_of_the_same_good_credentials_does_not_call_bcrypt_again(checks):
    config = WebConfig(users={"alice": HASH})
    assert [config.authorized(basic("alice", "secret")) for _ in range(3)] == [True, True, True]
    assert checks == [(b"secret", HASH)]


def test_wrong_passwords_are_checked_every_time(checks):
    config = WebConfig(users={"alice": HASH})
    assert [config.authorized(basic("alice", "wrong")) for _ in range(2)] == [False, False]
    assert checks == [(b"wrong", HASH), (b"wrong", HASH)]


def test_an_unknown_user_waits_as_long_as_a_wrong_password_without_a_bcrypt_check(checks):
    waits: list[int] = []
    assert BasicAuth(users={"alice": HASH}, decoy=waits.append).authorized(basic("mallory", "secret")) is False
    assert (waits, checks) == ([4], [])  # the cost of the configured hashes; no CPU spent on a made-up name


def test_the_decoy_wait_is_one_wrong_password_check_at_that_cost_measured_once(checks):
    auth._measured.cache_clear()
    assert auth.decoy_seconds(4) == auth.decoy_seconds(4) > 0
    assert [(password, hashed[:7]) for password, hashed in checks] == [(b"not the decoy password", b"$2b$04$")]


@pytest.fixture
def held(monkeypatch) -> Iterator[threading.Event]:
    """bcrypt.checkpw blocks on the password "guess" until the event is set; set once it is entered."""
    entered, release = threading.Event(), threading.Event()
    checkpw = bcrypt.checkpw

    def holding(password: bytes, hashed: bytes) -> bool:
        if password == b"guess":
            entered.set()
            release.wait(WAIT)
        return checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", holding)
    yield entered
    release.set()


def authorize_in_thread(config: WebConfig | BasicAuth, header: str) -> list[bool]:
    """What `authorized` answered, or nothing when it did not answer within WAIT (a limit, not a pause)."""
    answers: list[bool] = []
    thread = threading.Thread(target=lambda: answers.append(config.authorized(header)), daemon=True)
    thread.start()
    thread.join(WAIT)
    return answers


def test_a_login_is_not_held_up_while_a_guess_for_another_user_is_checked(held):
    config = WebConfig(users={"alice": HASH, "bob": HASH})
    guessing = threading.Thread(target=config.authorized, args=(basic("alice", "guess"),), daemon=True)
    guessing.start()
    assert held.wait(WAIT)
    assert authorize_in_thread(config, basic("bob", "secret")) == [True]


def test_an_unknown_user_is_not_held_up_while_a_guess_for_a_known_one_is_checked(held):
    config = BasicAuth(users={"alice": HASH}, decoy=lambda cost: None)
    guessing = threading.Thread(target=config.authorized, args=(basic("alice", "guess"),), daemon=True)
    guessing.start()
    assert held.wait(WAIT)
    assert authorize_in_thread(config, basic("mallory", "secret")) == [False]


def test_good_credentials_seen_before_are_let_in_while_a_guess_for_the_same_user_is_checked(held):
    config = WebConfig(users={"alice": HASH})
    assert config.authorized(basic("alice", "secret"))
    guessing = threading.Thread(target=config.authorized, args=(basic("alice", "guess"),), daemon=True)
    guessing.start()
    assert held.wait(WAIT)
    assert authorize_in_thread(config, basic("alice", "secret")) == [True]


def test_no_user_lock_outlives_the_checks_that_needed_it():
    config = BasicAuth(users={"alice": HASH}, decoy=lambda cost: None)
    for user in ("alice", "mallory", "alice"):
        config.authorized(basic(user, "wrong"))
    assert config._names == {}


def test_the_cache_of_good_credentials_is_bounded(checks, monkeypatch):
    monkeypatch.setattr(auth, "_CACHE_SIZE", 2)
    config = WebConfig(users={"alice": HASH, "bob": HASH, "carol": HASH})
    for user in ["alice", "bob", "carol", "alice"]:  # carol pushes alice out
        assert config.authorized(basic(user, "secret"))
    assert [password for password, _ in checks] == [b"secret"] * 4


def test_passwords_longer_than_72_bytes_are_compared_on_their_first_72_like_go_bcrypt():
    config = WebConfig(users={"alice": bcrypt.hashpw(b"a" * 72, bcrypt.gensalt(rounds=4))})
    assert config.authorized(basic("alice", "a" * 100)) is True
