"""A missing, corrupt or foreign data dir stops the node at start with a sentence that says
what is wrong, instead of starting empty and losing data."""

import re
import shutil
import subprocess

import util
from conftest import runnel_bin


def start_expecting_failure(node) -> str:
    """Runs the node's command line; it must exit non-zero within 20 s. Returns stderr."""
    r = subprocess.run(node.args(), capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
    assert r.returncode != 0, "node started on a bad data dir"
    return r.stderr.decode(errors="replace")


def test_corrupt_meta_properties_is_refused(node, topic):
    util.produce_ok(node.bootstrap, topic, [(None, b"keep me")])
    node.stop()
    meta = node.data_dir / "meta.properties"
    original = meta.read_bytes()
    assert b"node.id=1" in original, original
    # A node id that is not a number: the file is damaged, not merely different.
    meta.write_bytes(original.replace(b"node.id=1", b"node.id=\x00\xff1garbage"))
    err = start_expecting_failure(node)
    assert "meta.properties" in err, err
    # Restoring the file brings everything back.
    meta.write_bytes(original)
    node.start()
    assert [c.value for c in util.consume(node.bootstrap, topic, expected=1)] == [b"keep me"]


def test_missing_controller_state_with_logs_is_refused(node, topic):
    util.produce_ok(node.bootstrap, topic, [(None, b"keep me")])
    node.stop()
    controller = node.data_dir / "controller"
    assert controller.is_dir(), f"no controller state under {node.data_dir}"
    shutil.rmtree(controller)
    err = start_expecting_failure(node)
    assert "controller" in err and re.search(r"refus|will not start|cannot start|missing", err, re.I), err
    assert (node.data_dir / f"{topic}-0").is_dir(), "partition data must be left alone"


def test_data_dir_of_another_node_is_refused(node):
    node.stop()
    node.node_id = 2
    err = start_expecting_failure(node)
    assert re.search(r"node(\.id| id)?\s*[=:]?\s*1\b", err, re.I), err


def test_data_dir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "not-a-dir"
    path.write_text("x")
    r = subprocess.run(
        [str(runnel_bin()), "node", "--data-dir", str(path), "--kafka-listen", "127.0.0.1:0",
         "--http-listen", "127.0.0.1:0", "--rpc-listen", "127.0.0.1:0"],
        capture_output=True, timeout=20, stdin=subprocess.DEVNULL,
    )
    assert r.returncode != 0
    assert "cannot" in r.stderr.decode() and str(path) in r.stderr.decode(), r.stderr.decode()


def test_unknown_broker_config_is_refused(tmp_path):
    r = subprocess.run(
        [str(runnel_bin()), "node", "--data-dir", str(tmp_path / "d"), "--kafka-listen", "127.0.0.1:0",
         "--http-listen", "127.0.0.1:0", "--config", "log.retention.hourz=1"],
        capture_output=True, timeout=20, stdin=subprocess.DEVNULL,
    )
    assert r.returncode != 0
    assert "unknown broker config 'log.retention.hourz'" in r.stderr.decode(), r.stderr.decode()
