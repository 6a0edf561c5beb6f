"""Real Kafka (KRaft, one node) and PostgreSQL servers for tests and demos, no Docker.

Kafka runs from jars that Maven resolves into ``deploy/local/kafka/libs``; PostgreSQL
from the distribution's ``initdb``/``pg_ctl``. Every server binds 127.0.0.1 only, lives
in its own temp directory, and is stopped by its PID. Linux only (liveness is read from
``/proc``).
"""

from __future__ import annotations

import base64
import glob
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

import psycopg
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from psycopg import sql

from deploy.local.tls import make_ca, make_pkcs12_keystore, make_server_certificate

KAFKA_DIR = Path(__file__).resolve().parent / "kafka"
KAFKA_LIBS = KAFKA_DIR / "libs"
_LIBS_STAMP = KAFKA_LIBS / ".pom.sha256"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _free_ports(count: int) -> list[int]:
    """``count`` different ports that were free a moment ago."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie counts as dead (nobody may ever reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _terminate(pid: int, sig: signal.Signals, grace: float) -> None:
    """Send ``sig`` to ``pid``; SIGKILL it if it still runs after ``grace`` seconds."""
    for send, wait in ((sig, grace), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, send)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.05)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def ensure_kafka_jars() -> Path:
    """Make sure the broker's classpath is in ``KAFKA_LIBS`` and return that folder.

    A stamp holding the pom's hash makes repeat calls free. Otherwise the folder is
    rebuilt (stale jars of another Kafka version would poison the classpath), offline
    first so a warm ``~/.m2`` needs no network, from Maven Central only if that fails.
    """
    digest = hashlib.sha256((KAFKA_DIR / "pom.xml").read_bytes()).hexdigest()
    if _LIBS_STAMP.is_file() and _LIBS_STAMP.read_text() == digest:
        return KAFKA_LIBS
    shutil.rmtree(KAFKA_LIBS, ignore_errors=True)
    mvn = ["mvn", "-B", "-q", "-f", str(KAFKA_DIR / "pom.xml")]
    goal = "dependency:copy-dependencies"
    for offline in (["-o"], []):
        done = subprocess.run([*mvn, *offline, goal], check=False, capture_output=True, text=True)
        if done.returncode == 0:
            break
    else:
        raise RuntimeError(f"mvn {goal} failed:\n{done.stdout}{done.stderr}")
    _LIBS_STAMP.write_text(digest)
    return KAFKA_LIBS


def _kafka_cluster_id() -> str:
    """A Kafka ``Uuid`` string like ``StorageTool random-uuid`` prints, without a JVM.

    Kafka re-draws ids that start with '-' because they read as a command-line flag.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class LocalServer:
    """A server started on this machine for FLEAD's tests and local stack, in a folder of its own.

    ``start()`` launches it (``_launch``), stopping whatever it started when the launch fails;
    ``stop()`` SIGTERMs its process (SIGKILL after 30 s) and removes its folder, and may be
    called again. Use as a context manager, or call ``start()`` and ``stop()``.
    """

    def __init__(self, start_timeout: float) -> None:
        self.start_timeout = start_timeout
        self.pid: int | None = None
        self.log_path: Path | None = None
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        try:
            self._launch()
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self._proc is not None:
            _terminate(self._proc.pid, signal.SIGTERM, 30)
            self._proc.wait()
            self._proc = None
        self.pid = None
        self._remove_folder()

    def _remove_folder(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class KafkaServer(LocalServer):
    """A single-node Kafka broker+controller (KRaft) in a temp directory.

    ``tls_password``: clients connect over SASL_SSL only, as SCRAM-SHA-512 user ``flead``
    with this password, to a certificate of a throw-away CA (``ca_cert``, made with
    ``deploy/local/tls.py``); the broker's own listeners (controller, inter-broker) stay
    plaintext on 127.0.0.1. Without it, one PLAINTEXT listener serves everyone.
    ``client_config`` holds the librdkafka settings a client needs beyond
    ``bootstrap.servers`` (empty without TLS), ``flead_kafka_config`` the same as
    ``FLEAD_KAFKA_CONFIG``.
    """

    USER = "flead"

    def __init__(self, start_timeout: float = 60.0, tls_password: str | None = None) -> None:
        super().__init__(start_timeout)
        self.tls_password = tls_password
        self.bootstrap = ""
        self._broker_command: list[str] = []
        self._broker_port = 0
        self.ca_cert: Path | None = None
        self.client_config: dict[str, str] = {}

    @property
    def flead_kafka_config(self) -> str:
        """``client_config`` in the form of ``FLEAD_KAFKA_CONFIG``: ``key=value`` pairs separated by ``;``."""
        return ";".join(f"{key}={value}" for key, value in self.client_config.items())

    def admin_config(self) -> dict[str, str]:
        """Everything a librdkafka client needs to reach this broker."""
        return {"bootstrap.servers": self.bootstrap, **self.client_config}

    def _launch(self) -> None:
        """Format fresh storage, launch the broker, wait until it answers metadata."""
        libs = ensure_kafka_jars()
        self._tmp = Path(tempfile.mkdtemp(prefix="flead-kafka-"))
        config = self._tmp / "server.properties"
        scram: list[str] = []
        if self.tls_password is None:
            broker_port, controller_port = _free_ports(2)
            self.bootstrap = f"127.0.0.1:{broker_port}"
            listeners = _plaintext_listeners(broker_port, controller_port)
        else:
            broker_port, inter_broker_port, controller_port = _free_ports(3)
            self.bootstrap = f"127.0.0.1:{broker_port}"
            listeners = self._sasl_ssl_listeners(broker_port, inter_broker_port, controller_port)
            scram = ["--add-scram", f"SCRAM-SHA-512=[name={self.USER},password={self.tls_password}]"]
        config.write_text(_server_properties(listeners, self._tmp / "data"))
        java = [
            "java",
            "-Xms128m",
            "-Xmx512m",
            f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
        ]
        storage = ["kafka.tools.StorageTool", "format", "--standalone"]
        fmt = [*java, *storage, "-t", _kafka_cluster_id(), "-c", str(config), *scram]
        done = subprocess.run(fmt, check=False, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"Kafka storage format failed:\n{done.stdout}{done.stderr}")
        self.log_path = self._tmp / "kafka.log"
        self._broker_command = [*java, "kafka.Kafka", str(config)]
        self._broker_port = broker_port
        self._start_broker()

    def _start_broker(self) -> None:
        assert self.log_path is not None
        with self.log_path.open("ab") as log:
            # Own session: a Ctrl-C in the terminal must not race the orderly stop().
            self._proc = subprocess.Popen(
                self._broker_command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pid = self._proc.pid
        self._wait_ready(self._proc, self._broker_port, self.log_path)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop the broker as an operator would (SIGTERM: it shuts down in order), keep it down
        ``down_seconds``, and start it again on the same ports and data."""
        assert self._proc is not None, "the broker is not running"
        _terminate(self._proc.pid, signal.SIGTERM, 30)
        self._proc.wait()
        time.sleep(down_seconds)
        self._start_broker()

    def _sasl_ssl_listeners(self, broker_port: int, inter_broker_port: int, controller_port: int) -> str:
        """The listeners of a TLS broker; makes its CA, certificate and keystore, and ``client_config``."""
        assert self._tmp is not None and self.tls_password is not None
        folder = self._tmp / "tls"
        folder.mkdir()
        ca = make_ca(folder)
        keystore_password = secrets.token_hex(16)
        keystore = make_pkcs12_keystore(make_server_certificate(ca, folder), folder / "server.p12", keystore_password)
        self.ca_cert = ca.cert
        self.client_config = {
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": self.USER,
            "sasl.password": self.tls_password,
            "ssl.ca.location": str(ca.cert),
        }
        return f"""\
listeners=SASL_SSL://127.0.0.1:{broker_port},BROKER://127.0.0.1:{inter_broker_port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=SASL_SSL://127.0.0.1:{broker_port},BROKER://127.0.0.1:{inter_broker_port}
controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=BROKER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,BROKER:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location={keystore}
ssl.keystore.password={keystore_password}
ssl.key.password={keystore_password}
"""

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        """Wait for the port, then for a metadata answer: an open port is not enough."""
        deadline = time.monotonic() + self.start_timeout
        admin: AdminClient | None = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                # Made once the port is open: librdkafka logs every refused connect.
                admin = admin or AdminClient(self.admin_config())
                admin.list_topics(timeout=max(0.5, min(5.0, deadline - time.monotonic())))
                return
            except (OSError, KafkaException):
                time.sleep(0.2)
        state = "exited" if proc.poll() is not None else f"not ready after {self.start_timeout} s"
        raise RuntimeError(f"Kafka at {self.bootstrap} {state}:\n{_tail(log_path)}")

    def create_topic(self, name: str, partitions: int = 1, config: dict[str, str] | None = None) -> None:
        """Create ``name`` (with the topic ``config``) and wait until every partition has a leader."""
        admin = AdminClient(self.admin_config())
        futures = admin.create_topics([NewTopic(name, num_partitions=partitions, config=config or {})])
        futures[name].result(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            topic = admin.list_topics(topic=name, timeout=5).topics[name]
            leaders = [p.leader for p in topic.partitions.values()]
            if topic.error is None and len(leaders) == partitions and min(leaders) >= 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"topic {name!r} has no leaders after 30 s")


def _plaintext_listeners(broker_port: int, controller_port: int) -> str:
    return f"""\
controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{broker_port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
"""


def _server_properties(listeners: str, log_dir: Path) -> str:
    return f"""\
process.roles=broker,controller
node.id=1
{listeners}log.dirs={log_dir}
auto.create.topics.enable=true
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
"""


def pg_bin_dir() -> Path:
    """Newest ``/usr/lib/postgresql/<major>/bin`` (Debian), else pg_ctl's PATH dir."""
    dirs = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda d: int(Path(d).parent.name) if Path(d).parent.name.isdigit() else -1,
    )
    if dirs:
        return Path(dirs[-1])
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        raise FileNotFoundError("no PostgreSQL server binaries (apt-get install -y postgresql)")
    return Path(pg_ctl).parent


class PostgresServer(LocalServer):
    """A throw-away PostgreSQL cluster on 127.0.0.1 with superuser and db ``flead``.

    initdb/pg_ctl refuse to run as root, so as root they run as the ``postgres`` system
    user in a temp dir owned by it; as any other user they run as that user.
    ``preload``: libraries for ``shared_preload_libraries`` (``"timescaledb"``: TimescaleDB
    can be created; it must be installed, see ``deploy/local/timescaledb.py``).
    ``tls_password``: TCP connections must use TLS (``ssl=on``, a certificate of a throw-away
    CA, ``ca_cert``) and log in with a password (scram-sha-256): role ``flead`` has this one,
    and ``url`` checks the server as ``sslmode=verify-full`` does. Without it, 127.0.0.1
    connects without a password or TLS.
    """

    def __init__(self, start_timeout: float = 60.0, preload: str = "", tls_password: str | None = None) -> None:
        super().__init__(start_timeout)
        self.preload = preload
        self.tls_password = tls_password
        self.port = 0
        self.url = ""
        self.ca_cert: Path | None = None
        self._bin = pg_bin_dir()
        self._as_owner = [_runuser(), "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def _data(self) -> Path:
        assert self._tmp is not None
        return self._tmp / "data"

    def _launch(self) -> None:
        """Create a new cluster, start it, and create role and database ``flead``."""
        self._tmp = Path(tempfile.mkdtemp(prefix="flead-pg-", dir="/tmp"))
        if self._as_owner:
            owner = pwd.getpwnam("postgres")
            os.chown(self._tmp, owner.pw_uid, owner.pw_gid)
        self.log_path = self._tmp / "postgres.log"
        initdb = ["-D", str(self._data), "-A", "trust", "-U", "postgres", "--no-sync"]
        self._run("initdb", *initdb, "-E", "UTF8", "--locale=C")
        if self.tls_password is None:
            # Only the private socket dir and 127.0.0.1 may connect, without a password.
            (self._data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        else:
            self._require_tls()
        self.port = free_port()
        self.start_again()
        admin_host = "127.0.0.1" if self.tls_password is None else str(self._tmp)  # TLS: the private socket
        admin_dsn = f"host={admin_host} port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            if self.tls_password is None:
                conn.execute("CREATE ROLE flead LOGIN SUPERUSER")
            else:
                password = sql.Literal(self.tls_password)
                conn.execute(sql.SQL("CREATE ROLE flead LOGIN SUPERUSER PASSWORD {}").format(password))
            conn.execute("CREATE DATABASE flead OWNER flead")
        if self.tls_password is None:
            self.url = f"postgresql://flead@127.0.0.1:{self.port}/flead"
        else:
            login = f"flead:{quote(self.tls_password, safe='')}"
            self.url = (
                f"postgresql://{login}@127.0.0.1:{self.port}/flead?sslmode=verify-full&sslrootcert={self.ca_cert}"
            )

    def _require_tls(self) -> None:
        """TLS on with a throw-away CA's certificate; over TCP only TLS and a password (scram-sha-256)."""
        folder = self._tmp / "tls"
        folder.mkdir()
        ca = make_ca(folder)
        server = make_server_certificate(ca, folder)
        if self._as_owner:  # the server must own its key (mode 0600) and read its certificate
            owner = pwd.getpwnam("postgres")
            for path in (folder, server.cert, server.key):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self.ca_cert = ca.cert
        with (self._data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"ssl = on\nssl_cert_file = '{server.cert}'\nssl_key_file = '{server.key}'\n"
                "password_encryption = 'scram-sha-256'\n"
            )
        (self._data / "pg_hba.conf").write_text("local all all trust\nhostssl all flead 127.0.0.1/32 scram-sha-256\n")

    def start_again(self) -> None:
        """(Re)start the postmaster on the same data directory and port."""
        listen = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self._tmp}"
        preload = f" -c shared_preload_libraries={self.preload}" if self.preload else ""
        if "timescaledb" in self.preload:
            preload += " -c timescaledb.telemetry_level=off"
        options = ["-o", f"{listen} -c fsync=off{preload}", "-l", str(self.log_path)]
        wait = ["-w", "-t", str(int(self.start_timeout))]
        self._run("pg_ctl", "start", "-D", str(self._data), *options, *wait)
        self.pid = int((self._data / "postmaster.pid").read_text().split("\n", 1)[0])

    def stop_server(self) -> None:
        """Stop the postmaster but keep its data, for ``start_again()`` to resume."""
        if self.pid is None:
            return
        pg_ctl = [*self._as_owner, str(self._bin / "pg_ctl")]
        stop = ["stop", "-D", str(self._data), "-m", "fast", "-w", "-t", "30"]
        stopped = subprocess.run([*pg_ctl, *stop], check=False, capture_output=True)
        if stopped.returncode != 0 or _alive(self.pid):
            _terminate(self.pid, signal.SIGQUIT, 10)  # SIGQUIT: immediate shutdown
        self.pid = None

    def stop(self) -> None:
        """Stop the server and delete its data. Idempotent."""
        self.stop_server()
        self._remove_folder()

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [*self._as_owner, str(self._bin / program), *args],
            check=False,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            log = _tail(self.log_path) if self.log_path else ""
            raise RuntimeError(f"{program} failed:\n{done.stdout}{done.stderr}\n{log}")


def _runuser() -> str:
    """runuser lives in an sbin folder, which a minimal PATH (CI, cron) may lack."""
    found = shutil.which("runuser") or next(
        (path for path in ("/usr/sbin/runuser", "/sbin/runuser") if Path(path).exists()), None
    )
    if found is None:
        raise RuntimeError("runuser not found: PostgreSQL's initdb/pg_ctl must run as the postgres user")
    return found
