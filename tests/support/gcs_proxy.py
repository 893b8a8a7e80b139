"""TensorFlow's own gs:// file system, pointed at the local storage emulator: an HTTPS proxy on loopback that
terminates TLS with a test CA's certificate for Google's storage hosts and passes the requests on, unchanged, to
gcp-storage-emulator.

TensorFlow 2.21's Cloud Storage client is libcurl with fixed endpoints (https://www.googleapis.com/storage/v1/,
.../upload/storage/v1/, https://storage.googleapis.com/BUCKET/OBJECT for reads); it honours https_proxy, takes
its TLS roots from CURL_CA_BUNDLE and a bearer token from GOOGLE_AUTH_TOKEN_FOR_TESTING. So the trainer's gs://
code runs as shipped: only the far end of the connection is the emulator. `faults` injects HTTP errors (503, 429)
into the next N requests whose path matches, as Cloud Storage would answer them.
"""

import contextlib
import datetime
import os
import socket
import ssl
import threading

HOSTS = ("storage.googleapis.com", "www.googleapis.com")


def make_ca(folder):
    """(ca.pem, server cert+key .pem) for HOSTS, in `folder`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fmnist-trainer test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTS[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in HOSTS]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, server_path = os.path.join(folder, "ca.pem"), os.path.join(folder, "server.pem")
    with open(ca_path, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(server_path, "wb") as f:
        f.write(leaf.public_bytes(serialization.Encoding.PEM))
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return ca_path, server_path


class Proxy:
    """The CONNECT proxy (see the module docstring); `environ()` is what a process needs to use it."""

    def __init__(self, emulator, folder):
        self.emulator = emulator.split("//", 1)[-1]  # host:port of gcp-storage-emulator
        self.ca, server = make_ca(folder)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(server)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.faults = []   # [(path part, status, count left)]
        self.requests = []  # "METHOD path" of every request seen
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="gcs-proxy")

    def environ(self):
        proxy = f"http://127.0.0.1:{self.port}"
        return {"https_proxy": proxy, "HTTPS_PROXY": proxy, "no_proxy": "127.0.0.1,localhost",
                "NO_PROXY": "127.0.0.1,localhost", "CURL_CA_BUNDLE": self.ca,
                "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token", "STORAGE_EMULATOR_HOST": f"http://{self.emulator}",
                "GCS_RETRY_CONFIG_INIT_DELAY_TIME_US": "1000", "GCS_RETRY_CONFIG_MAX_DELAY_TIME_US": "20000"}

    def fail(self, path_part, status=503, count=1):
        """The next `count` requests whose request line contains `path_part` get `status`."""
        with self._lock:
            self.faults.append([path_part, status, count])

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.listener.close()

    def _serve(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client):
        with contextlib.closing(client):
            head = _read_head(client)
            if not head.startswith(b"CONNECT "):
                client.sendall(b"HTTP/1.1 405 Only CONNECT\r\nContent-Length: 0\r\n\r\n")
                return
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            try:
                tls = self.context.wrap_socket(client, server_side=True)
            except (ssl.SSLError, OSError):
                return
            with contextlib.closing(tls):
                self._requests(tls)

    def _requests(self, tls):
        """One request at a time over the TLS connection, each on a fresh connection to the emulator (so that a
        fault can answer instead of it)."""
        while True:
            head = _read_head(tls)
            if not head:
                return
            line, *fields = head.decode("latin-1").rstrip("\r\n").split("\r\n")
            headers = [(k.strip(), v.strip()) for k, _, v in (f.partition(":") for f in fields)]
            named = {k.lower(): v for k, v in headers}
            if named.get("transfer-encoding", "").lower() == "chunked":  # wins over Content-Length (RFC 9112)
                body = _read_chunked(tls)
            else:
                body = _read_exact(tls, int(named.get("content-length", 0)))
            kept = [(k, v) for k, v in headers
                    if k.lower() not in ("transfer-encoding", "content-length", "expect", "connection")]
            head = "\r\n".join([line, *(f"{k}: {v}" for k, v in kept), f"Content-Length: {len(body)}",
                                 "Connection: close", "", ""]).encode("latin-1")
            with self._lock:
                self.requests.append(line)
                fault = next((f for f in self.faults if f[0] in line and f[2] > 0), None)
                if fault:
                    fault[2] -= 1
            if fault:
                tls.sendall(f"HTTP/1.1 {fault[1]} Injected\r\nContent-Type: application/json\r\nContent-Length: 2"
                            "\r\n\r\n{}".encode())
                continue
            with socket.create_connection(tuple(self.emulator.rsplit(":", 1)), timeout=30) as upstream:
                upstream.sendall(head + body)
                response = _read_response(upstream, line.startswith("HEAD "))
            tls.sendall(response or b"HTTP/1.1 502 No answer\r\nContent-Length: 0\r\n\r\n")


def _read_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)
        if not chunk:
            return b""
        data += chunk
    return data


def _read_exact(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(min(65536, count - len(data)))
        if not chunk:
            break
        data += chunk
    return data


def _read_chunked(sock):
    body = b""
    while True:
        size_line = b""
        while not size_line.endswith(b"\r\n"):
            size_line += sock.recv(1)
        size = int(size_line.split(b";")[0], 16)
        body += _read_exact(sock, size)
        _read_exact(sock, 2)
        if size == 0:
            return body


def _read_response(sock, head_only):
    """A whole HTTP response from the emulator (Content-Length, or to the end of the connection). The emulator
    builds an upload session's Location from the plain-HTTP request it saw: Cloud Storage's is https."""
    head = _read_head(sock).replace(b"\r\nLocation: http://", b"\r\nLocation: https://")
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (h.decode(errors="replace").partition(":") for h in head.split(b"\r\n")[1:] if h)}
    if head_only:
        return head
    if "content-length" in headers:
        return head + _read_exact(sock, int(headers["content-length"]))
    rest = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    head = head.replace(b"\r\n\r\n", f"\r\nContent-Length: {len(rest)}\r\n\r\n".encode(), 1)
    return head + rest


def _patched_emulator():
    """gcp-storage-emulator 2026.7.19 drops the connection on an upload of an empty object (its request data is
    None, and `len(None)` raises), which TensorFlow makes for every folder (`makedirs` uploads "name/"): read
    an empty upload as b""."""
    from gcp_storage_emulator import server
    if getattr(server, "_fmnist_patched", False):
        return server
    original = server._read_data

    def read_data(request_handler, query):
        data = original(request_handler, query)
        return b"" if data is None and request_handler.command in ("POST", "PUT") else data
    server._read_data, server._fmnist_patched = read_data, True
    return server


@contextlib.contextmanager
def tensorflow_gcs(folder, bucket="runs"):
    """The emulator (a thread of this process) behind the proxy; yields the Proxy (`environ()` for a trainer)."""
    server = _patched_emulator().create_server("127.0.0.1", 0, in_memory=True, default_bucket=bucket)
    server.start()
    proxy = None
    try:
        host, port = server._api._httpd.server_address
        proxy = Proxy(f"http://{host}:{port}", folder).start()
        yield proxy
    finally:
        if proxy is not None:
            proxy.stop()
        server.stop()
