"""A redis-server behind a redoubt: configuration, start, clients."""
import os

from . import tlsclient
from .procs import free_port, run
from .servers import Redoubt, RedisServer, new_workdir

# Client identities issued from a CertSet's CA (name -> (CN, SANs)).
CLIENTS = {
    "app": ("app-cn.client.test",
            ["DNS:app.client.test", "IP:127.0.0.5", "URI:spiffe://redoubt.test/app"]),
    "cnonly": ("cn-only.client.test", []),
    "other": ("other-cn.client.test", ["DNS:other.client.test"]),
    "stranger": ("stranger.example", ["DNS:stranger.example", "IP:127.0.0.9",
                                      "URI:spiffe://elsewhere.test/x"]),
}


def client_cert(env, certs, name):
    """(crt, key) for a named client: CLIENTS from certs' CA, 'dev' = cert dev's client,
    'otherca' = the 'app' identity from a different CA."""
    if name == "dev":
        return certs.client_crt, certs.client_key
    if name == "otherca":
        cn, sans = CLIENTS["app"]
        return env.other_ca_issue("app", cn, sans)
    cn, sans = CLIENTS[name]
    return certs.issue(name, cn, sans)


def build_config(dir, certs, backend, port, *, workers=2, tls_mode="require", allow=(),
                 listener_extra=None, global_extra=None, identity_extra=None,
                 keyd_timeout="1s", log_level="info"):
    g = {
        "workers": str(workers),
        "user": "redoubt",
        "keyd-user": "redoubt-keyd",
        "control-socket": os.path.join(dir, "run", "control.sock"),
        "audit-log": os.path.join(dir, "audit", "audit.jsonl"),
        "log-level": log_level,
        "keyd-timeout": keyd_timeout,
    }
    g.update(global_extra or {})
    ident = {"cert": certs.node_crt, "key": certs.node_key, "ca": certs.ca_crt}
    ident.update(identity_extra or {})
    lst = {"listen": f"127.0.0.1:{port}", "backend": backend, "identity": "node",
           "tls-mode": tls_mode}
    lst.update(listener_extra or {})
    lines = ["[global]"] + [f"{k} = {v}" for k, v in g.items() if v is not None]
    lines += ["", "[identity node]"] + [f"{k} = {v}" for k, v in ident.items() if v is not None]
    lines += ["", "[listener clients]"] + [f"{k} = {v}" for k, v in lst.items() if v is not None]
    if allow:
        lines.append("allow = " + " ".join(allow))
    return "\n".join(lines) + "\n"


class Stack:
    def __init__(self, env, key_type="p256", tls_mode="require", allow=(), workers=2,
                 listener_extra=None, global_extra=None, keyd_timeout="1s",
                 probe_client="app", probe_version=None, redis_extra=(), identity_extra=None):
        self.env = env
        self.certs = env.certs(key_type)
        self.key_type = key_type
        self.tls_mode = tls_mode
        self.keyd_timeout = keyd_timeout
        self.dir = new_workdir(env.root, prefix=f"stack-{key_type}-")
        self.redis = RedisServer(self.dir, extra=redis_extra)
        self.port = free_port()
        self.config = build_config(self.dir, self.certs, f"unix:{self.redis.sock}", self.port,
                                   workers=workers, tls_mode=tls_mode, allow=allow,
                                   listener_extra=listener_extra, global_extra=global_extra,
                                   identity_extra=identity_extra, keyd_timeout=keyd_timeout)
        probe_ctx = self.ctx(probe_client, max_version=probe_version)
        self.redoubt = Redoubt(env.bin, self.dir, self.config, self.port, probe_ctx=probe_ctx,
                               workers=workers)

    def start(self):
        try:
            self.redis.start()
            self.redoubt.start()
        except BaseException:
            self.stop()         # never leave a half-started stack running
            raise
        return self

    def stop(self):
        try:
            self.redoubt.stop()
        finally:
            self.redis.stop()

    # --- clients ------------------------------------------------------------------------------

    def client_files(self, client):
        if client is None:
            return None, None
        if isinstance(client, tuple):
            return client
        return client_cert(self.env, self.certs, client)

    def ctx(self, client=None, min_version=None, max_version=None, check_hostname=True):
        crt, key = self.client_files(client)
        return tlsclient.client_context(self.certs.ca_crt, crt, key, min_version=min_version,
                                        max_version=max_version, check_hostname=check_hostname)

    def tls(self, client=None, timeout=5.0, **kw):
        return tlsclient.tls_connect(self.port, self.ctx(client, **kw), timeout=timeout)

    def resp(self, client=None, timeout=5.0, **kw):
        return tlsclient.Resp(self.tls(client, timeout=timeout, **kw))

    def redis_py(self, client=None, socket_timeout=30, **kw):
        """A redis.Redis through redoubt on one connection (so .connection._sock is the TLS
        socket)."""
        import redis
        crt, key = self.client_files(client)
        return redis.Redis(host="127.0.0.1", port=self.port, ssl=True,
                           ssl_ca_certs=self.certs.ca_crt, ssl_certfile=crt, ssl_keyfile=key,
                           ssl_cert_reqs="required", ssl_check_hostname=True,
                           socket_timeout=socket_timeout, socket_connect_timeout=10,
                           single_connection_client=True, **kw)

    def redis_cli_args(self, client=None):
        crt, key = self.client_files(client)
        args = ["redis-cli", "--tls", "--cacert", self.certs.ca_crt, "-h", "127.0.0.1",
                "-p", str(self.port)]
        if crt:
            args += ["--cert", crt, "--key", key]
        return args

    def redis_cli(self, *args, client=None, timeout=60, input=None):
        return run(self.redis_cli_args(client) + list(args), timeout=timeout, input=input)

    def direct(self, **kw):
        return self.redis.direct(**kw)
