#!/usr/bin/python3
"""Turns one results JSON of bench.py into the summary, the ratios, the target checks, a PNG
chart (gnuplot) and docs/benchmarks.md. Standard library only.

  report.py bench/results/DATE.json [--docs docs/benchmarks.md]

bench.py calls analyse() and render() at the end of a run; running this by hand re-renders
an earlier run (the chart is redrawn next to the JSON).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Workload groups: a group's CPU/op is the ops-weighted mean of its tests' figures;
# its ops/s is total operations over total time; its p50/p99 are the worse of its tests.
GROUPS = [
    ("p1", "GET+SET, -P 1 -c 50, 3 B", ["p1-set", "p1-get"]),
    ("p16", "GET+SET, -P 16 -c 50, 3 B", ["p16-set", "p16-get"]),
    ("d1k", "GET+SET, -P 1 -c 50, 1 KiB", ["d1k-set", "d1k-get"]),
    ("d100k", "GET+SET, -P 1 -c 50, 100 KiB", ["d100k-set", "d100k-get"]),
    ("k0", "GET on a new TLS connection per request (redis-benchmark -k 0)", ["k0-get"]),
    ("hs-full", "full TLS handshake + PING per connection (loadgen)", ["hs-full"]),
    ("hs-resume", "resumed TLS session (ticket) + PING per connection (loadgen)",
     ["hs-resume"]),
]
GROUP_SHORT = {"p1": "-P 1", "p16": "-P 16", "d1k": "1 KiB", "d100k": "100 KiB",
               "k0": "-k 0", "hs-full": "full hs", "hs-resume": "resumed hs"}
REFERENCES = ["haproxy", "hitch", "stunnel", "native", "plaintext"]
SUBJECT = "redoubt"
MEM_TARGET_KIB = 16
# Hand-written log of what each optimisation bought; copied into docs/benchmarks.md.
OPTIMISATIONS_MD = os.path.join(HERE, "optimisations.md")


# --- analysis ---------------------------------------------------------------------------------

def not_run(w):
    """A workload none of whose repetitions ran (time budget, or an earlier hang)."""
    return bool(w.get("skipped")) or w.get("repetitions") == 0


def group_figures(setup, members):
    ws = setup.get("workloads", {})
    rows = [ws.get(m) for m in members]
    if not rows or any(r is None or not r.get("ops") or r.get("ops_per_s") is None
                       for r in rows):
        return None
    if any(r.get("cpu_us_per_op") is None for r in rows):
        return None
    ops = sum(r["ops"] for r in rows)
    return {
        "ops": ops,
        "ops_per_s": ops / sum(r["ops"] / r["ops_per_s"] for r in rows),
        # Each test's figure is the median of its repetitions; the group weighs them by ops.
        "cpu_us_per_op": sum(r["cpu_us_per_op"] * r["ops"] for r in rows) / ops,
        "p50_ms": max(r["p50_ms"] for r in rows),
        "p99_ms": max(r["p99_ms"] for r in rows),
        "ok": all(r.get("ok") for r in rows),
        "failed": sum(r.get("failed", 0) for r in rows),
    }


def memory_figure(setup):
    steps = (setup.get("memory") or {}).get("steps") or []
    out = {}
    for s in steps:
        if "rss_per_conn_kib" in s:
            out[s["target"]] = s["rss_per_conn_kib"]
    return out


def analyse(results):
    """Adds results["summary"]: per-setup group figures, per-family bests, ratios, targets."""
    setups = results.get("setups", {})
    summary = {"groups": {}, "memory": {}, "best": {}, "ratios": {}, "targets": {},
               "failures": [], "not_run": []}
    for name, s in setups.items():
        if s.get("status") not in ("ok", "died"):
            continue
        summary["groups"][name] = {g: group_figures(s, m) for g, _, m in GROUPS}
        summary["memory"][name] = memory_figure(s)
        for wid, w in s.get("workloads", {}).items():
            if not_run(w):
                summary["not_run"].append({"setup": name, "workload": wid,
                                           "problems": w.get("problems")})
            elif not w.get("ok"):
                summary["failures"].append({"setup": name, "workload": wid,
                                            "failed": w.get("failed"),
                                            "problems": w.get("problems")})
        if s.get("memory") and not s["memory"].get("ok"):
            summary["failures"].append({"setup": name, "workload": "memory",
                                        "problems": s["memory"].get("problems")})

    families = {}
    for name, s in setups.items():
        if name in summary["groups"]:
            families.setdefault(s["family"], []).append(name)

    # Best variant of a family, per group: the lowest server CPU per operation.
    for fam, names in families.items():
        best = {}
        for g, _, _ in GROUPS:
            cands = [(summary["groups"][n][g]["cpu_us_per_op"], n) for n in names
                     if summary["groups"][n].get(g)]
            if cands:
                cpu, n = min(cands)
                best[g] = dict(summary["groups"][n][g], setup=n)
        mem = {}
        for step in results.get("memory_steps", []):
            cands = [(summary["memory"][n][step], n) for n in names
                     if step in summary["memory"].get(n, {})]
            if cands:
                v, n = min(cands)
                mem[step] = {"kib_per_conn": v, "setup": n}
        best["memory"] = mem
        summary["best"][fam] = best

    subj = summary["best"].get(SUBJECT)
    if subj:
        for ref in REFERENCES:
            rb = summary["best"].get(ref)
            if not rb:
                continue
            r = {}
            for g, _, _ in GROUPS:
                if subj.get(g) and rb.get(g):
                    r[g] = {"cpu": subj[g]["cpu_us_per_op"] / rb[g]["cpu_us_per_op"],
                            "ops_per_s": subj[g]["ops_per_s"] / rb[g]["ops_per_s"],
                            "p50": subj[g]["p50_ms"] / rb[g]["p50_ms"]}
            for step, v in subj.get("memory", {}).items():
                if step in rb.get("memory", {}) and rb["memory"][step]["kib_per_conn"] > 0:
                    r["memory@%d" % step] = (v["kib_per_conn"]
                                             / rb["memory"][step]["kib_per_conn"])
            summary["ratios"][ref] = r

    for name in families.get(SUBJECT, []):
        summary["targets"][name] = check_targets(results, summary, name)
    results["summary"] = summary
    return summary


def check_targets(results, summary, name):
    g = summary["groups"][name]
    hp = summary["best"].get("haproxy", {})
    out = []

    def target(text, ok, detail):
        out.append({"target": text, "pass": ok, "detail": detail})

    for grp in ("p1", "p16"):
        if g.get(grp) and hp.get(grp):
            a, b = g[grp]["cpu_us_per_op"], hp[grp]["cpu_us_per_op"]
            target("CPU/op at %s <= 0.8 x HAProxy best" % GROUP_SHORT[grp], a <= 0.8 * b,
                   "%.2f vs %.2f us (x%.2f)" % (a, b, a / b))
        else:
            target("CPU/op at %s <= 0.8 x HAProxy best" % GROUP_SHORT[grp], None, "not measured")
    if g.get("p1") and hp.get("p1"):
        a, b = g["p1"]["p50_ms"], hp["p1"]["p50_ms"]
        target("p50 at -P 1 <= HAProxy's", a <= b, "%.3f vs %.3f ms" % (a, b))
    else:
        target("p50 at -P 1 <= HAProxy's", None, "not measured")
    if g.get("hs-full") and hp.get("hs-full"):
        a, b = g["hs-full"]["cpu_us_per_op"], hp["hs-full"]["cpu_us_per_op"]
        target("CPU per full handshake <= 0.8 x HAProxy's", a <= 0.8 * b,
               "%.0f vs %.0f us (x%.2f)" % (a, b, a / b))
    else:
        target("CPU per full handshake <= 0.8 x HAProxy's", None, "not measured")
    if g.get("hs-full") and g.get("hs-resume"):
        a, b = g["hs-resume"]["cpu_us_per_op"], g["hs-full"]["cpu_us_per_op"]
        target("CPU per resumed handshake <= 0.5 x full", a <= 0.5 * b,
               "%.0f vs %.0f us (x%.2f)" % (a, b, a / b))
    else:
        target("CPU per resumed handshake <= 0.5 x full", None, "not measured")
    mem = summary["memory"].get(name, {})
    if mem:
        step = max(mem)
        target("<= %d KiB per idle connection" % MEM_TARGET_KIB, mem[step] <= MEM_TARGET_KIB,
               "%.1f KiB at %d connections" % (mem[step], step))
    else:
        target("<= %d KiB per idle connection" % MEM_TARGET_KIB, None, "not measured")
    s = results["setups"][name]
    bad = [w for w, r in s.get("workloads", {}).items() if not r.get("ok") and not not_run(r)]
    unrun = [w for w, r in s.get("workloads", {}).items() if not_run(r)]
    nfail = sum(r.get("failed", 0) or 0 for r in s.get("workloads", {}).values())
    detail = ("all %d workloads clean" % (len(s.get("workloads", {})) - len(unrun)) if not bad
              else "%d failed requests; problems in %s" % (nfail, ", ".join(bad)))
    if unrun:
        detail += "; not run: %s" % ", ".join(unrun)
    target("no failed request", not bad and nfail == 0, detail)
    return out


# --- rendering --------------------------------------------------------------------------------

def f(v, d=1):
    if v is None:
        return "–"
    if isinstance(v, float) and abs(v) >= 1000 and d <= 1:
        return "{:,.0f}".format(v)
    return "%.*f" % (d, v)


def setup_order(results):
    return [n for n in results["setups"]]


def chart(results, png):
    """2x2 bar charts with gnuplot: CPU/op at -P 1 and -P 16, CPU per handshake, memory."""
    if not shutil.which("gnuplot"):
        return "gnuplot not installed"
    summ = results["summary"]
    names = [n for n in setup_order(results) if n in summ["groups"]]
    if not names:
        return "nothing measured"
    tmp = tempfile.mkdtemp(prefix="bench-chart.")
    try:
        def val(n, g):
            x = summ["groups"][n].get(g)
            return "%.3f" % x["cpu_us_per_op"] if x else "-"
        mem_step = max(results.get("memory_steps") or [0])
        rows = []
        for n in names:
            m = summ["memory"].get(n, {}).get(mem_step)
            rows.append([n, val(n, "p1"), val(n, "p16"), val(n, "hs-full"),
                         val(n, "hs-resume"), "%.2f" % m if m is not None else "-"])
        # gnuplot cannot draw a histogram without a single value: a column measured
        # nowhere is drawn as zeros (its panel title says so).
        empty = set()
        for col in range(1, 6):
            if all(r[col] == "-" for r in rows):
                empty.add(col)
                for r in rows:
                    r[col] = "0"
        with open(os.path.join(tmp, "d.dat"), "w") as d:
            d.write("setup p1 p16 hsfull hsresume mem\n")
            for r in rows:
                d.write(" ".join(r) + "\n")
        nm = {c: (" - not measured" if c in empty else "") for c in range(1, 6)}
        script = """
set terminal pngcairo size 1400,1000 font "DejaVu Sans,10"
set output '%(png)s'
set datafile missing '-'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set xtics rotate by -35 nomirror
set grid ytics
set yrange [0:*]
set key top left
set multiplot layout 2,2 title "redoubt benchmark %(date)s (%(mode)s) - server side pinned to CPU 0, client to CPU 1"
set title "server CPU per operation, GET+SET -P 1 -c 50 (us)%(n1)s"
plot '%(dat)s' using 2:xtic(1) title 'us/op' lc rgb '#4477aa'
set title "server CPU per operation, GET+SET -P 16 -c 50 (us)%(n2)s"
plot '%(dat)s' using 3:xtic(1) title 'us/op' lc rgb '#66ccee'
set title "server CPU per new TLS connection (us)%(n3)s"
plot '%(dat)s' using 4:xtic(1) title 'full handshake' lc rgb '#ee6677', '' using 5 title 'resumed (ticket)' lc rgb '#ccbb44'
set title "RSS per idle TLS connection at %(step)d connections (KiB)%(n5)s"
plot '%(dat)s' using 6:xtic(1) title 'KiB/conn' lc rgb '#228833'
unset multiplot
""" % {"png": png, "dat": os.path.join(tmp, "d.dat"), "date": results["date"],
       "mode": results["mode"], "step": mem_step,
       "n1": nm[1], "n2": nm[2], "n3": nm[3] if 4 in empty else "", "n5": nm[5]}
        with open(os.path.join(tmp, "plot.gp"), "w") as g:
            g.write(script)
        r = subprocess.run(["gnuplot", os.path.join(tmp, "plot.gp")], capture_output=True,
                           timeout=60)
        if r.returncode != 0:
            return "gnuplot failed: %s" % r.stderr.decode("utf-8", "replace")[-300:]
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ratio_lines(results):
    summ = results["summary"]
    if not summ["ratios"]:
        return ["redoubt was not measured in this run: no ratios."]
    cols = [g for g, _, _ in GROUPS]
    steps = results.get("memory_steps", [])
    lines = ["redoubt-best / reference-best (server CPU per operation; < 1 means redoubt "
             "uses less). Best = the variant (tcp/unix backend) with the lowest figure.", "",
             "| reference | " + " | ".join(GROUP_SHORT[g] for g in cols)
             + "".join(" | memory @%d" % s for s in steps) + " |",
             "|---|" + "---:|" * (len(cols) + len(steps))]
    for ref in REFERENCES:
        r = summ["ratios"].get(ref)
        if not r:
            continue
        best = summ["best"][ref]
        cells = []
        for g in cols:
            cells.append(("×%.2f" % r[g]["cpu"]) if g in r else "–")
        for s in steps:
            k = "memory@%d" % s
            cells.append(("×%.2f" % r[k]) if k in r else "–")
        label = ref + ("-best" if ref in ("haproxy", "hitch", "stunnel") else "")
        src = best.get("p1", {}).get("setup")
        lines.append("| %s%s | %s |" % (label, " (%s at -P 1)" % src if src and src != ref
                                         else "", " | ".join(cells)))
    lines.append("")
    lines.append("Throughput and latency, same comparison (ops/s ratio > 1 and p50 ratio < 1 "
                 "favour redoubt):")
    lines.append("")
    lines.append("| reference | " + " | ".join("%s ops/s, p50" % GROUP_SHORT[g]
                                                for g in ("p1", "p16", "d1k", "d100k")) + " |")
    lines.append("|---|" + "---:|" * 4)
    for ref in REFERENCES:
        r = summ["ratios"].get(ref)
        if not r:
            continue
        cells = []
        for g in ("p1", "p16", "d1k", "d100k"):
            cells.append("×%.2f, ×%.2f" % (r[g]["ops_per_s"], r[g]["p50"]) if g in r else "–")
        lines.append("| %s | %s |" % (ref, " | ".join(cells)))
    return lines


def target_lines(results):
    t = results["summary"]["targets"]
    if not t:
        return ["redoubt was not measured in this run: targets not checked."]
    lines = ["| setup | target | result | figures |", "|---|---|---|---|"]
    for name, items in t.items():
        for it in items:
            res = {True: "**pass**", False: "**MISS**", None: "not measured"}[it["pass"]]
            lines.append("| %s | %s | %s | %s |" % (name, it["target"], res, it["detail"]))
    return lines


def optimisation_lines():
    """bench/optimisations.md below its own title, its headings one level down."""
    try:
        with open(OPTIMISATIONS_MD) as fh:
            text = fh.read().splitlines()
    except OSError as e:
        return ["(bench/optimisations.md not readable: %s)" % e.strerror, ""]
    if text and text[0].startswith("# "):
        text = text[1:]
    L = ["## What each optimisation bought", "",
         "From [bench/optimisations.md](../bench/optimisations.md) (hand-written; the figures "
         "there come from the runs and profiles it names, not from the run above)."]
    L.extend("#" + ln if ln.startswith("## ") else ln for ln in text)
    if L[-1] != "":
        L.append("")
    return L


def markdown(results, png_rel):
    summ = results["summary"]
    setups = results["setups"]
    names = setup_order(results)
    v = results["versions"]
    h = results["host"]
    L = []
    L.append("# Benchmarks")
    L.append("")
    L.append("Generated by `make bench` (`bench/run.sh`) — do not edit by hand; every figure "
             "below comes from one run. Method, definitions and each server's configuration: "
             "[bench/README.md](../bench/README.md). Raw data: `bench/results/%s`."
             % os.path.basename(results.get("json_path", "")))
    L.append("")
    L.append("* Run: %s, %s mode (scale %.2f), %.0f s in total%s." % (
        results["date"], results["mode"], results["scale"], results.get("duration_s", 0),
        ", **interrupted**" if results.get("interrupted") else ""))
    L.append("* Host: %s, %s CPUs, %s GiB; load average %s at start, %s at end (the machine "
             "is shared: compare figures of one run, not across runs)." % (
                 h["cpu_model"], h["cpus"], h["mem_gib"], "/".join(h["loadavg_start"]),
                 "/".join(h.get("loadavg_end", []))))
    L.append("* Pinning: every server-side process on CPU %s, the load generator on CPU %s."
             % (results["pinning"]["server_cpu"], results["pinning"]["client_cpu"]))
    L.append("* Software: " + "; ".join("%s: %s" % (k, val) for k, val in v.items()) + ".")
    src = results.get("source") or {}
    if src.get("commit"):
        L.append("* redoubt source: commit `%s`%s." % (
            src["commit"], " plus uncommitted changes" if src.get("uncommitted_changes") else ""))
    L.append("* TLS: one P-256 ECDSA certificate for every setup; clients offer TLS 1.3 "
             "`TLS_AES_128_GCM_SHA256` only.")
    L.append("")
    L.append("## Setups")
    L.append("")
    L.append("| setup | what | negotiated | status |")
    L.append("|---|---|---|---|")
    for n in names:
        s = setups[n]
        tls = s.get("tls") or {}
        neg = ", ".join(x for x in (tls.get("protocol"), tls.get("cipher"), tls.get("group"))
                        if x) or ("plaintext" if s["family"] == "plaintext" else "–")
        st = s.get("status", "?")
        if st != "ok":
            st = "%s: %s" % (st, (s.get("reason") or "").splitlines()[0][:160]
                             if s.get("reason") else "")
        L.append("| %s | %s | %s | %s |" % (n, s.get("description", ""), neg, st))
    L.append("")
    L.append("## Summary: server CPU per operation (µs)")
    L.append("")
    L.append("Server CPU = CPU time (user + system) of every server-side process of the setup (the "
             "proxy and all its children, plus the redis-server behind it), read from "
             "/proc before and after the run, divided by the operations the backend executed "
             "(or the connections made, for the handshake rows). Lower is better; this figure "
             "stays meaningful when the client is the bottleneck.")
    L.append("")
    if png_rel:
        L.append("![server CPU per operation, per handshake, memory per connection](%s)"
                 % png_rel)
        L.append("")
    steps = results.get("memory_steps", [])
    L.append("| setup | " + " | ".join(GROUP_SHORT[g] for g, _, _ in GROUPS)
             + "".join(" | KiB/idle conn @%d" % s for s in steps) + " |")
    L.append("|---|" + "---:|" * (len(GROUPS) + len(steps)))
    for n in names:
        if n not in summ["groups"]:
            continue
        cells = []
        for g, _, _ in GROUPS:
            x = summ["groups"][n].get(g)
            d = 0 if g in ("k0", "hs-full", "hs-resume") else 2
            cells.append(f(x["cpu_us_per_op"], d) if x else "–")
        for s in steps:
            m = summ["memory"].get(n, {}).get(s)
            cells.append(f(m, 1) if m is not None else "–")
        L.append("| %s | %s |" % (n, " | ".join(cells)))
    L.append("")
    L.append("## Ratios: redoubt against each reference")
    L.append("")
    L.extend(ratio_lines(results))
    L.append("")
    L.append("## Targets (issue 10; checked, not enforced)")
    L.append("")
    L.extend(target_lines(results))
    L.append("")
    L.append("## Throughput and latency per workload")
    L.append("")
    L.append("ops/s and latency are what the client saw (redis-benchmark `--csv`, or the "
             "loadgen's own timing per connection); with the client on one core they are "
             "client-bound for the faster setups. Figures are medians over the rounds; "
             "`min–max` is the spread of server µs/op over the rounds. `(raw)` is server µs/op "
             "before subtracting the set-up of redis-benchmark's 50 connections (see "
             "bench/README.md). `vs plaintext` is server CPU/op over plaintext's.")
    wl = {w["id"]: w for w in results["workloads"]}
    for g, title, members in GROUPS:
        L.append("")
        reqs = ", ".join("%s: %s" % (m, "{:,}".format(wl[m]["requests"])) for m in members
                         if m in wl)
        L.append("### %s" % title)
        L.append("")
        L.append("Requests: %s." % reqs)
        L.append("")
        L.append("| setup | test | ops/s | p50 ms | p99 ms | server µs/op | (raw) | "
                 "min–max | vs plaintext | client CPU s | notes |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for n in names:
            s = setups[n]
            for m in members:
                r = s.get("workloads", {}).get(m)
                if r is None:
                    continue
                base = setups.get("plaintext", {}).get("workloads", {}).get(m, {})
                vs = (r["cpu_us_per_op"] / base["cpu_us_per_op"]
                      if r.get("cpu_us_per_op") and base.get("cpu_us_per_op") else None)
                notes = []
                if r.get("connections_per_request") is not None:
                    notes.append("%.2f backend connections/request"
                                 % r["connections_per_request"])
                if m == "hs-resume" and r.get("ops"):
                    notes.append("%d/%d resumed" % (r.get("reused", 0), r["ops"]))
                if not r.get("ok"):
                    notes.append("**FAILED**: " + "; ".join(r.get("problems", []))[:200])
                raw = r.get("cpu_us_per_op_raw")
                spread = ("%s–%s" % (f(r["cpu_us_per_op_min"], 2), f(r["cpu_us_per_op_max"], 2))
                          if r.get("cpu_us_per_op_min") is not None
                          and r.get("repetitions", 0) > 1 else "–")
                L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    n, m, f(r.get("ops_per_s"), 0), f(r.get("p50_ms"), 3),
                    f(r.get("p99_ms"), 3), f(r.get("cpu_us_per_op"), 2),
                    f(raw, 2) if raw is not None and raw != r.get("cpu_us_per_op") else "",
                    spread, ("×%.2f" % vs) if vs else "–", f(r.get("client_cpu_s"), 2),
                    "; ".join(notes)))
    L.append("")
    L.append("## Memory per idle TLS connection")
    L.append("")
    L.append("Sum of VmRSS (and of Pss) over the setup's server-side processes with N idle "
             "TLS connections open (each did one handshake and one PING), minus the same sum "
             "before they were opened, divided by N. Kernel socket buffers are not included. "
             "Idle means steady state: RSS is read once the processes stop giving memory "
             "back (redis-server shrinks each new client's 16 KiB reply buffer and frees its "
             "query buffer over ~10 s of idleness; see bench/README.md). `at first` is the "
             "figure 1 s after the last connection opened.")
    L.append("")
    L.append("| setup | idle RSS KiB | N | RSS KiB | KiB/conn (RSS) | KiB/conn (Pss) | "
             "KiB/conn at first | settled after s | processes |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in names:
        mem = setups[n].get("memory")
        if not mem:
            continue
        for st in mem.get("steps", []):
            L.append("| %s | %d | %d | %d | %s | %s | %s | %s | %d |" % (
                n, mem["idle"]["rss_kib"], st["connections"], st["rss_kib"],
                f(st.get("rss_per_conn_kib"), 1), f(st.get("pss_per_conn_kib"), 1),
                f(st.get("rss_per_conn_kib_first"), 1), f(st.get("settle_s"), 0),
                st["processes"]))
        if mem.get("problems"):
            L.append("| %s | **problems**: %s | | | | | | | |"
                     % (n, "; ".join(mem["problems"])))
    L.append("")
    fails = summ["failures"]
    L.append("## Failed or incomplete runs")
    L.append("")
    if not fails and not summ.get("not_run"):
        L.append("None: every request of every run completed (redis-benchmark exit status 0, "
                 "no error reply, the backend executed every request).")
    else:
        for x in fails:
            L.append("* %s / %s: %s" % (x["setup"], x["workload"],
                                        "; ".join(x.get("problems") or [])))
    for x in summ.get("not_run", []):
        L.append("* %s / %s not run: %s" % (x["setup"], x["workload"],
                                            "; ".join(x.get("problems") or [])))
    skipped = [(n, s.get("reason", "")) for n, s in setups.items()
               if s.get("status") == "skipped"]
    for n, why in skipped:
        lines = why.splitlines() if why else [""]
        L.append("* %s skipped: %s" % (n, lines[0]))
        if len(lines) > 1:
            L.append("")
            L.append("  ```")
            L.extend("  " + ln for ln in lines[1:12])
            L.append("  ```")
    L.append("")
    L.extend(optimisation_lines())
    return "\n".join(L)


def summary_text(results):
    """What the harness prints at the end of a run."""
    summ = results["summary"]
    out = ["", "== server CPU per operation (us); memory in KiB per idle TLS connection"]
    steps = results.get("memory_steps", [])
    head = "%-14s" % "setup" + "".join("%11s" % GROUP_SHORT[g] for g, _, _ in GROUPS) + \
        "".join("%11s" % ("mem@%d" % s) for s in steps)
    out.append(head)
    for n in setup_order(results):
        if n not in summ["groups"]:
            out.append("%-14s %s" % (n, results["setups"][n].get("status")))
            continue
        row = "%-14s" % n
        for g, _, _ in GROUPS:
            x = summ["groups"][n].get(g)
            row += "%11s" % (f(x["cpu_us_per_op"], 2) if x else "-")
        for s in steps:
            m = summ["memory"].get(n, {}).get(s)
            row += "%11s" % (f(m, 1) if m is not None else "-")
        out.append(row)
    out.append("")
    out.append("== ratios")
    out.extend(ratio_lines(results))
    out.append("")
    out.append("== targets")
    out.extend(target_lines(results))
    if summ["failures"]:
        out.append("")
        out.append("== FAILED runs")
        for x in summ["failures"]:
            out.append("%s / %s: %s" % (x["setup"], x["workload"],
                                        "; ".join(x.get("problems") or [])))
    if summ.get("not_run"):
        out.append("")
        out.append("== not run")
        for x in summ["not_run"]:
            out.append("%s / %s: %s" % (x["setup"], x["workload"],
                                        "; ".join(x.get("problems") or [])))
    return "\n".join(out)


def render(results, json_path, docs_path, print_summary=False):
    results["json_path"] = json_path
    png = os.path.splitext(json_path)[0] + ".png"
    err = chart(results, png)
    if err:
        print("[report] chart not drawn: %s" % err)
        png = None
    if docs_path:
        rel = os.path.relpath(png, os.path.dirname(docs_path)) if png else None
        with open(docs_path, "w") as fh:
            fh.write(markdown(results, rel))
        print("[report] wrote %s" % os.path.relpath(docs_path, ROOT))
    if png:
        print("[report] chart: %s" % os.path.relpath(png, ROOT))
    if print_summary:
        print(summary_text(results))


def main():
    ap = argparse.ArgumentParser(description="render a bench results JSON")
    ap.add_argument("json")
    ap.add_argument("--docs", help="write this Markdown file (e.g. docs/benchmarks.md)")
    args = ap.parse_args()
    with open(args.json) as fh:
        results = json.load(fh)
    # JSON keys are strings: memory steps back to ints.
    analyse(results)
    render(results, os.path.abspath(args.json), args.docs, print_summary=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
