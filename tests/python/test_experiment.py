"""`runnel experiment replication` end to end: a tiny bounded matrix on its own local cluster
writes a well-formed table, Markdown and CSV, and leaves no node behind."""

from __future__ import annotations

import csv
import json
import os
import subprocess

from conftest import _die_with_parent, runnel_bin

# Four cells of a 2 s steady run and a ~4.5 s fault run each take about 30 s on 2 cores.
RUN_TIMEOUT_S = 100
CELLS = {("1", "1"), ("1", "all"), ("3", "1"), ("3", "all")}
CSV_COLUMNS = [
    "rf", "acks", "min_insync_replicas", "records", "seconds", "records_per_s", "mb_per_s",
    "p50_ms", "p99_ms", "errors", "fault_killed_node", "fault_sent", "fault_acked",
    "fault_found", "fault_lost_acked", "fault_errors",
]


def run_experiment(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNEL_")}
    env["TMPDIR"] = str(tmp_path)  # the nodes' data dirs go there, so we can check cleanup
    proc = subprocess.run(
        [str(runnel_bin()), "experiment", "replication", "--duration", "2", "--out-dir", "out",
         *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, cwd=tmp_path,
        timeout=RUN_TIMEOUT_S, preexec_fn=_die_with_parent,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    # Every node was stopped and its data dir removed.
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("runnel-experiment-")]
    assert not processes_mentioning(str(tmp_path))
    return proc


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain `text`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def test_tiny_matrix_writes_table_markdown_and_csv(tmp_path):
    proc = run_experiment(tmp_path, "--rf", "1,3", "--acks", "1,all")

    # The table on stdout: a header and one line per cell.
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("RF  acks"))
    rows = [line.split() for line in lines[header + 1:header + 5]]
    assert {(r[0], r[1]) for r in rows} == CELLS
    assert all(len(r) == 14 for r in rows), rows
    # Progress went to stderr while it ran: one steady and one fault line per cell.
    assert proc.stderr.count(": steady: ") == 4
    assert proc.stderr.count(": fault: ") == 4

    md = (tmp_path / "out" / "replication.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 4
    assert table[0].startswith("| RF | acks | min ISR |")
    assert set(table[1].replace("|", "").split()) <= {"---", "---:"}
    assert all(line.count("|") == 15 for line in table)

    with open(tmp_path / "out" / "replication.csv", newline="") as f:
        records = list(csv.DictReader(f))
    assert list(records[0].keys()) == CSV_COLUMNS
    assert {(r["rf"], r["acks"]) for r in records} == CELLS
    for r in records:
        assert int(r["records"]) > 0, r
        assert float(r["records_per_s"]) > 0, r
        assert float(r["p99_ms"]) >= float(r["p50_ms"]) > 0, r
        assert r["min_insync_replicas"] == ("1" if r["rf"] == "1" else "2")
        # The fault run killed a node and read the partition back.
        assert r["fault_killed_node"] in {"1", "2", "3"}, r
        assert 0 <= int(r["fault_lost_acked"]) <= int(r["fault_acked"]), r


def test_json_without_faults(tmp_path):
    proc = run_experiment(tmp_path, "--no-fault", "--json", "--rf", "1", "--acks", "0")
    report = json.loads(proc.stdout)
    assert report["settings"]["fault_runs"] is False
    [row] = report["rows"]
    assert (row["rf"], row["acks"], row["fault"]) == (1, "0", None)
    # acks=0 gets no answers, so it has throughput but no latency.
    assert row["clean"]["records"] > 0
    assert row["clean"]["p50_ms"] is None and row["clean"]["p99_ms"] is None
