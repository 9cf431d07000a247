"""Benchmark driver: the seed's workload in Python, written to docs/python-benchmarks.md.

Starts `kpush dev` (its own process), then runs bench/client.py once per
(repetition, C, client) in a fresh process, interleaving clients, and takes
medians over repetitions. Then a fault run: the broker is frozen (SIGSTOP)
for 5 s in the middle of a 12 s run at C=1000; records are read back to
count what each client lost or dropped silently.

    python python/bench/run.py [--reps 3] [--seconds 3] [--cs 1,100,1000,10000]
    python python/bench/run.py --quick          # ≤ 10 minutes: 1 repetition, 2 s runs
    python python/bench/run.py --clients kpush@/path/to/old/python,kpush,aiokafka   # two builds, one run
    python python/bench/run.py --cs 1,100 --clients kpush,go --reps 5 --no-fault   # kpush.aio against the Go API
    python python/bench/run.py --real           # real Kafka: go run ./cmd/kafkalocal (Java 17+)
    python python/bench/run.py --render --json python/bench/results.json   # rewrite the report from saved runs
    KPUSH_KAFKA_SEEDS=host:9092 python python/bench/run.py   # a running broker (or --bootstrap)

Broker: `kpush dev` (kfake) by default; `--real` starts one real Apache
Kafka node with the repository's cmd/kafkalocal (jars from Maven Central,
KRaft, 127.0.0.1) and freezes its JVM for the fault run; `--bootstrap` or
KPUSH_KAFKA_SEEDS uses a broker that is already running: its topics get a
unique suffix and are created with kafka-python's admin client, and the
fault run is skipped (the broker is not ours to freeze). `--quick` writes
to a temporary report unless --out is given, so docs/python-benchmarks.md
keeps the full run's numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
CLIENTS = ["kpush", "aiokafka", "confluent-aio", "confluent-recipe", "aiokafka-queue"]
#: The Go API itself (`kpush bench -b`: C goroutines each awaiting Send), a
#: peer for kpush.aio's C=1 latency target; not in the default clients.
GO_CLIENT = "go"
KPUSH_BIN = ""  # the kpush CLI, built by main()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(binary: str, topics: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = [binary, "dev", "-port", str(port)]
    for t in topics:
        args += ["-topic", t]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    if not line.startswith("bootstrap:"):
        p.kill()
        raise SystemExit(f"kpush dev failed: {line!r}")
    return p, f"127.0.0.1:{port}"


def start_real(tmp: str) -> tuple[subprocess.Popen, str]:
    """One real Kafka node via cmd/kafkalocal; returns (process, bootstrap)."""
    binary = os.path.join(tmp, "kafkalocal")
    subprocess.run(["go", "build", "-o", binary, "./cmd/kafkalocal"], cwd=REPO, check=True)
    p = subprocess.Popen([binary, "-nodes", "1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 300
    line = ""
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line or line.startswith("bootstrap:"):
            break
    if not line.startswith("bootstrap:"):
        p.kill()
        raise SystemExit(f"kafkalocal failed to start (needs Java 17+, Maven the first time): {line!r}")
    return p, line.split(":", 1)[1].strip()


def descendants(pid: int) -> list[int]:
    """pid and every process below it (from /proc): kafkalocal's JVMs."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def freeze(broker: subprocess.Popen, sig: int) -> None:
    for pid in descendants(broker.pid):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def create_topics(bootstrap: str, topics: list[str]) -> None:
    """Create name:partitions topics on an external broker (kafka-python)."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        for t in topics:
            name, n = t.split(":")
            try:
                admin.create_topics([NewTopic(name, int(n), 1)])
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def run_client(client: str, bootstrap: str, c: int, seconds: float, topic: str = "bench", seq: bool = False,
               during=None) -> dict:
    # "kpush@DIR" runs the kpush package found in DIR (e.g. another build,
    # to compare two versions in one interleaved run).
    name, _, path = client.partition("@")
    if name == GO_CLIENT:
        return run_go(client, bootstrap, c, seconds, topic)
    env = dict(os.environ, PYTHONPATH=path) if path else None
    cmd = [sys.executable, os.path.join(HERE, "client.py"), "--client", name, "--bootstrap", bootstrap,
           "--c", str(c), "--seconds", str(seconds), "--topic", topic] + (["--seq"] if seq else [])
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if during:
        threading.Thread(target=during, daemon=True).start()
    try:
        out, err = p.communicate(timeout=seconds + 120)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return {"client": client, "c": c, "failed": "timeout"}
    if p.returncode != 0 or not out.strip():
        return {"client": client, "c": c, "failed": err.strip().splitlines()[-1] if err.strip() else f"exit {p.returncode}"}
    r = json.loads(out.strip().splitlines()[-1])
    r["client"] = client
    r["load1_after"] = os.getloadavg()[0]  # how busy the machine was during this run (it included)
    return r


def run_go(client: str, bootstrap: str, c: int, seconds: float, topic: str) -> dict:
    """One run of the Go API (`kpush bench`, its own process, the same broker
    and workload: C goroutines each sending one 100-byte record and waiting,
    acks=all), as a client.py result."""
    cmd = [KPUSH_BIN, "bench", "-b", bootstrap, "-t", topic, "-c", str(c), "-d", f"{seconds:g}s", "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    if p.returncode != 0:
        return {"client": client, "c": c, "failed": (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]}
    r = json.loads(p.stdout)[0]
    return {"client": client, "c": c, "acked": r["records"], "errors": r["failed"], "lost": 0,
            "records_per_s": r["records_per_sec"], "cpu_us_per_record": r["cpu_us_per_record"],
            "p50_ms": r["p50_us"] / 1e3, "p99_ms": r["p99_us"] / 1e3, "load1_after": os.getloadavg()[0]}


#: The benchmark's own processes (one client, the broker) keep about this
#: many CPUs busy, so they add about this much to the 1-minute load.
OWN_LOAD = 2.0


def machine_state(load_before, load_after, run_loads, cpus):
    """How the machine was during the run, from the load averages the run
    recorded: "quiet" when nothing but the benchmark ran (the 1-minute load
    before ≤ 0.5 and, during the runs, never more than the benchmark's own
    OWN_LOAD + 0.5), else "shared". Returns (word, sentence)."""
    peak = max(run_loads) if run_loads else None
    quiet = load_before is not None and load_before[0] <= 0.5 and peak is not None and peak <= OWN_LOAD + 0.5
    desc = (f"{cpus} CPUs; 1/5/15-minute load average before the run "
            f"{', '.join(f'{x:.2f}' for x in load_before) if load_before else 'not recorded'}, "
            f"after it {', '.join(f'{x:.2f}' for x in load_after) if load_after else 'not recorded'}; "
            f"1-minute load after each run: median {fmt(median(run_loads), 2)}, max {fmt(peak, 2)} "
            f"(the benchmark itself adds about {OWN_LOAD:g})")
    if quiet:
        return "quiet", f"The machine was **quiet** (nothing else running): {desc}."
    return "shared", (f"The machine was **shared** (other jobs running; absolute numbers are noisy, compare clients "
                      f"within this run, not across runs): {desc}.")



def read_back(bootstrap: str, topic: str) -> list[bytes]:
    import kafka

    cons = kafka.KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        parts = [kafka.TopicPartition(topic, p) for p in sorted(cons.partitions_for_topic(topic) or [])]
        ends = cons.end_offsets(parts)
        total = sum(ends.values())
        cons.assign(parts)
        cons.seek_to_beginning(*parts)
        out: list[bytes] = []
        deadline = time.monotonic() + 120
        while len(out) < total and time.monotonic() < deadline:
            for recs in cons.poll(timeout_ms=500).values():
                out.extend(r.value for r in recs)
        return out
    finally:
        cons.close()


def fault_topic(client: str) -> str:
    """The fault run's topic for a client ("kpush@/some/dir" → "fault-kpush-some-dir")."""
    return "fault-" + re.sub(r"[^A-Za-z0-9._-]+", "-", client).strip("-")


def commit() -> str:
    """The repository's short commit hash, with "+dirty" when the tree has changes."""
    try:
        h = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        return (h or "unknown") + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main() -> None:
    # SIGTERM unwinds like Ctrl-C, so the broker is always stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--cs", default="1,100,1000,10000")
    ap.add_argument("--clients", default=",".join(CLIENTS))
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "python-benchmarks.md"))
    ap.add_argument("--json", default=os.path.join(HERE, "results.json"))
    ap.add_argument("--no-fault", action="store_true")
    ap.add_argument("--quick", action="store_true", help="≤ 10 minutes: 1 repetition of 2 s runs")
    ap.add_argument("--real", action="store_true", help="start real Kafka with cmd/kafkalocal")
    ap.add_argument("--bootstrap", default=os.environ.get("KPUSH_KAFKA_SEEDS", ""),
                    help="use this running broker (default $KPUSH_KAFKA_SEEDS)")
    ap.add_argument("--render", action="store_true",
                    help="no runs: rewrite --out (and its chart) from the runs saved in --json")
    args = ap.parse_args()
    # The command as the report quotes it: what reproduces the runs.
    args.command = " ".join(["python python/bench/run.py"] + [a for a in sys.argv[1:] if a != "--render"])
    if args.quick:
        args.reps, args.seconds = 1, 2.0
        if "--out" not in sys.argv:
            args.out = os.path.join(tempfile.mkdtemp(), "python-benchmarks-quick.md")
        if "--json" not in sys.argv:
            args.json = os.path.splitext(args.out)[0] + ".json"
    cs = [int(x) for x in args.cs.split(",")]
    clients = args.clients.split(",")
    if args.render:
        with open(args.json) as f:
            saved = json.load(f)
        args.seconds, args.reps = saved["seconds"], saved["reps"]
        args.command, args.commit = saved.get("command", args.command), saved.get("commit", "unknown")
        args.broker = saved.get("broker") or (
            "one real Apache Kafka node (cmd/kafkalocal, KRaft)" if args.real else "one `kpush dev` broker (kfake, 3 partitions)")
        write_report(args, saved["runs"], saved["fault"], cs, clients, saved["machine"])
        return
    args.commit = commit()
    load_before = os.getloadavg()
    tmp = tempfile.mkdtemp()
    global KPUSH_BIN
    KPUSH_BIN = os.path.join(tmp, "kpush")
    subprocess.run(["go", "build", "-o", KPUSH_BIN, "./cmd/kpush"], cwd=REPO, check=True)
    suffix = f"-{os.getpid()}" if args.bootstrap else ""
    topic = "bench" + suffix
    topics = [f"{topic}:3"] + [f"{fault_topic(c)}{suffix}:3" for c in clients]
    if args.bootstrap:
        broker, bootstrap, args.broker = None, args.bootstrap, f"the running broker at {args.bootstrap}"
        create_topics(bootstrap, topics)
        if not args.no_fault:
            print("fault run skipped: the broker is not ours to freeze", flush=True)
            args.no_fault = True
    elif args.real:
        broker, bootstrap = start_real(tmp)
        args.broker = "one real Apache Kafka node (cmd/kafkalocal, KRaft)"
        create_topics(bootstrap, topics)
    else:
        broker, bootstrap = start_broker(KPUSH_BIN, topics)
        args.broker = "one `kpush dev` broker (kfake, 3 partitions)"
    runs: list[dict] = []
    fault: list[dict] = []
    try:
        for rep in range(args.reps):
            for c in cs:
                order = clients[rep % len(clients):] + clients[:rep % len(clients)]  # interleave, rotate
                for client in order:
                    r = run_client(client, bootstrap, c, args.seconds, topic=topic)
                    r["rep"] = rep
                    runs.append(r)
                    print(json.dumps({k: v for k, v in r.items() if k != "acked_ids"}), flush=True)
        if not args.no_fault:
            for client in clients:
                if client == GO_CLIENT:
                    continue  # no --seq read-back for the Go API
                def outage():
                    time.sleep(3)
                    freeze(broker, signal.SIGSTOP)
                    time.sleep(5)
                    freeze(broker, signal.SIGCONT)

                r = run_client(client, bootstrap, 1000, 12, topic=f"{fault_topic(client)}{suffix}", seq=True, during=outage)
                if "failed" not in r:
                    logged = read_back(bootstrap, f"{fault_topic(client)}{suffix}")
                    ids = {int(v.rstrip(b".")) for v in logged if not v.startswith(b"-1")}
                    acked = set(r.pop("acked_ids"))
                    r["acked_not_in_log"] = len(acked - ids)
                    r["in_log"] = len(ids)
                    r["duplicates_in_log"] = len([v for v in logged if not v.startswith(b"-1")]) - len(ids)
                fault.append(r)
                print(json.dumps(r), flush=True)
    finally:
        if broker is not None:
            freeze(broker, signal.SIGCONT)
            broker.terminate()  # kafkalocal stops its JVMs and removes their data
            try:
                broker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                for pid in descendants(broker.pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
    machine = {"cpus": os.cpu_count(), "load_before": list(load_before), "load_after": list(os.getloadavg())}
    with open(args.json, "w") as f:
        json.dump({"runs": runs, "fault": fault, "seconds": args.seconds, "reps": args.reps, "machine": machine,
                   "command": args.command, "commit": args.commit, "broker": args.broker}, f, indent=1)
    write_report(args, runs, fault, cs, clients, machine)


def summarize(runs, cs, clients):
    table = {}
    for client in clients:
        for c in cs:
            rs = [r for r in runs if r["client"] == client and r["c"] == c and "failed" not in r]
            fails = [r["failed"] for r in runs if r["client"] == client and r["c"] == c and "failed" in r]
            table[(client, c)] = {
                "records_per_s": median([r["records_per_s"] for r in rs]),
                "cpu_us_per_record": median([r["cpu_us_per_record"] for r in rs]),
                "p50_ms": median([r["p50_ms"] for r in rs]),
                "p99_ms": median([r["p99_ms"] for r in rs]),
                "errors": sum(r["errors"] for r in rs),
                "lost": sum(r["lost"] for r in rs),
                "n": len(rs),
                "failed": fails,
            }
    return table


def fmt(v, d=1):
    return "—" if v is None else f"{v:,.{d}f}"


def write_report(args, runs, fault, cs, clients, machine):
    table = summarize(runs, cs, clients)
    _, state = machine_state(machine.get("load_before"), machine.get("load_after"), [r["load1_after"] for r in runs + fault if "load1_after" in r],
                             machine.get("cpus"))
    chart = os.path.splitext(args.out)[0] + ".svg"
    try:
        import matplotlib

        matplotlib.use("Agg")
        matplotlib.rcParams["svg.fonttype"] = "none"  # text as text: a small, diffable file
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for client in clients:
            xs = [c for c in cs if table[(client, c)]["records_per_s"]]
            axes[0].plot(xs, [table[(client, c)]["records_per_s"] for c in xs], marker="o", label=client)
            axes[1].plot(xs, [table[(client, c)]["cpu_us_per_record"] for c in xs], marker="o", label=client)
        for ax, title in zip(axes, ["records/s (higher is better)", "CPU µs per record (lower is better)"]):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("C (concurrent coroutines, each awaiting one record)")
            ax.set_title(title)
            ax.grid(True, which="both", alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(chart)
    except ImportError:
        chart = None
    lines = [
        "# Python benchmarks: the seed's workload",
        "",
        "C coroutines each `await` one 100-byte record at a time, acks=all, compression off,",
        f"{args.broker} in its own process, each client in a fresh",
        f"process{' (quick mode)' if args.quick else ''}. {args.seconds:g} s per run, {args.reps} repetitions with the clients interleaved",
        "(rotated each repetition); medians shown. CPU is the client process's rusage (user+system, all",
        "threads — the Go engine and librdkafka included) divided by acknowledged records.",
        "",
        f"Written by `{args.command}` (see its docstring) at commit {args.commit};"
        f" raw runs in `{os.path.relpath(args.json, REPO)}`.",
        state,
        "",
        "Clients, each at its defaults except what the workload needs:",
        "",
        "- **kpush**: `kpush.aio.Producer`, `await p.send(topic, value)` (defaults are acks=all already).",
        "- **aiokafka**: `AIOKafkaProducer(acks=\"all\")`, `await send_and_wait()`.",
        "- **confluent-aio**: `confluent_kafka.aio.AIOProducer({\"acks\": \"all\"})`, `await (await produce())`.",
        "- **confluent-recipe**: `confluent_kafka.Producer({\"acks\": \"all\"})`, a poll thread, futures resolved",
        "  with `call_soon_threadsafe` from the delivery callback.",
        "- **aiokafka-queue**: the seed's `asyncio.Queue(1000)` + one worker awaiting aiokafka `send_and_wait`",
        "  (acks=all); failures are logged and dropped.",
    ] + (["- **go**: not Python — the Go API itself (`kpush bench -b`: C goroutines each awaiting `Send`), the",
          "  reference for the C=1 latency target."] if GO_CLIENT in clients else []) + [
        "",
    ]
    if chart:
        lines += [f"![records/s and CPU per record]({os.path.basename(chart)})", ""]
    lines += ["The full runs: on the fake cluster [python-benchmarks.md](python-benchmarks.md) (`run.py`), on one real",
              "Kafka node [python-benchmarks-real.md](python-benchmarks-real.md) (`run.py --real --out",
              "docs/python-benchmarks-real.md --json python/bench/results-real.json`).", ""]
    lines += ["| client | C | records/s | CPU µs/record | p50 ms | p99 ms | errors | lost | runs |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cs:
        for client in clients:
            t = table[(client, c)]
            extra = f" (failed: {'; '.join(t['failed'])[:80]})" if t["failed"] else ""
            lines.append(f"| {client} | {c:,} | {fmt(t['records_per_s'], 0)} | {fmt(t['cpu_us_per_record'])} | "
                         f"{fmt(t['p50_ms'], 2)} | {fmt(t['p99_ms'], 2)} | {t['errors']} | {t['lost']} | {t['n']}{extra} |")
    lines.append("")
    k = table.get(("kpush", 10000))
    if k and k["records_per_s"]:
        lines += ["## Targets at C=10,000", ""]
        def ratio(client):
            o = table.get((client, 10000))
            return k["records_per_s"] / o["records_per_s"] if o and o["records_per_s"] else None
        best_conf = max([table[(x, 10000)]["records_per_s"] or 0 for x in ("confluent-aio", "confluent-recipe") if (x, 10000) in table] or [0])
        k100 = table.get(("kpush", 100))
        lines += [
            f"- kpush ÷ aiokafka records/s: {fmt(ratio('aiokafka'))}× (target ≥ 30×)",
            f"- kpush ÷ best confluent variant records/s: {fmt(k['records_per_s'] / best_conf if best_conf else None)}× (target ≥ 3×)",
            f"- kpush CPU per record: {fmt(k['cpu_us_per_record'])} µs (target ≤ 8 µs)",
            f"- kpush CPU per record C=10,000 ÷ C=100: {fmt(k['cpu_us_per_record'] / k100['cpu_us_per_record'] if k100 and k100['cpu_us_per_record'] else None, 2)} (target ≤ 1.3)",
            "",
        ]
    g1, k1 = table.get((GO_CLIENT, 1)), table.get(("kpush", 1))
    if g1 and k1 and g1["p50_ms"] and k1["p50_ms"]:
        lines += ["## Target at C=1", "",
                  f"- kpush.aio p50 ÷ the Go API's: {fmt(k1['p50_ms'] / g1['p50_ms'], 2)}× (target ≤ 1.2×)", ""]
    if fault:
        lines += [
            "## Fault run: broker unreachable for 5 s",
            "",
            "C=1000, 12 s; 3 s in, the broker process (for real Kafka its JVM) is frozen (SIGSTOP) for 5 s, then resumed: connections",
            "stay open but nothing answers. Values carry sequence numbers; afterwards the topic is read back",
            "(kafka-python). *acked, not in log* = lost; *no outcome* = the client never resolved the send",
            "within the run + 30 s grace; *errors* = sends that raised (the queue worker logs and drops them:",
            "its caller never learns).",
            "",
            "| client | acked | errors | no outcome | acked, not in log | in log | duplicates in log |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in fault:
            if "failed" in r:
                lines.append(f"| {r['client']} | failed: {r['failed'][:60]} | | | | | |")
            else:
                lines.append(f"| {r['client']} | {r['acked']:,} | {r['errors']} | {r['lost']} | {r['acked_not_in_log']} | {r['in_log']:,} | {r['duplicates_in_log']} |")
        lines.append("")
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
