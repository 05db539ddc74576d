"""redis-benchmark over redoubt: a sanity run (correctness and completion, not timing)."""
import re

from helpers.procs import run


def test_redis_benchmark_set_get(stack):
    before = stack.redis.info("stats")["total_commands_processed"]
    res = run(["redis-benchmark", "--tls", "--cacert", stack.certs.ca_crt, "-h", "127.0.0.1",
               "-p", str(stack.port), "-n", "100000", "-c", "50", "-t", "set,get", "-q"],
              timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert not re.search(r"error|ERR|refused|reset|timeout", out, re.I), out
    for test in ("SET", "GET"):
        assert re.search(rf"^{test}: [\d.]+ requests per second", out, re.M), out
    after = stack.redis.info("stats")["total_commands_processed"]
    # Every request reached redis-server (plus the benchmark's CONFIG GETs and ours).
    assert after - before >= 200000, f"only {after - before} commands reached the backend"
    stack.redoubt.check_alive()
    assert len(stack.redoubt.worker_pids()) == 2
