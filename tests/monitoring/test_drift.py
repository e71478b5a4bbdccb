"""``monitoring.drift`` without Triton: the PSI, every exit code, and both data sources (stubbed)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import urllib.parse

import pytest

from commands.main import main
from monitoring import drift
from tests.monitoring.conftest import CLASSES, ROOT, metrics_text
from tests.serving.conftest import free_ports

UNIFORM = dict.fromkeys(CLASSES, 0.1)


def test_psi_is_zero_on_the_reference_and_grows_with_the_shift():
    assert drift.psi(dict.fromkeys(CLASSES, 30), UNIFORM) == pytest.approx(0.0, abs=1e-12)
    mild = {c: 12 if i < 5 else 8 for i, c in enumerate(CLASSES)}
    assert drift.psi(mild, UNIFORM) == pytest.approx(5 * 0.02 * (math.log(1.2) - math.log(0.8)))
    skewed = {"cat": 90, **{c: 1 for c in CLASSES if c != "cat"}}
    assert drift.psi(skewed, UNIFORM) == pytest.approx(3.6407550969, rel=1e-9)  # as in drift.test.yml
    only_cat = drift.psi({"cat": 50}, UNIFORM)  # nine empty classes: large, finite thanks to epsilon
    assert math.isfinite(only_cat) and only_cat > 5
    assert drift.chi_square_p(dict.fromkeys(CLASSES, 30), UNIFORM) == pytest.approx(1.0)
    assert drift.chi_square_p(skewed, UNIFORM) < 1e-6


def test_reference_from_meta_json_and_its_failures(tmp_path, reference_file):
    assert drift.load_reference(reference_file) == pytest.approx(UNIFORM)
    bare = tmp_path / "bare.json"  # no "classes": CIFAR-10 order
    bare.write_text(json.dumps({"val_class_distribution": [0.05] * 2 + [0.1125] * 8}))
    assert drift.load_reference(bare)["airplane"] == pytest.approx(0.05)
    bad = {
        "missing.json": None,
        "text.json": "not json {",
        "nokey.json": json.dumps({"classes": list(CLASSES)}),
        "length.json": json.dumps({"classes": ["a", "b"], "val_class_distribution": [0.5, 0.25, 0.25]}),
        "negative.json": json.dumps({"val_class_distribution": {"a": -0.5, "b": 1.5}}),
        "sum.json": json.dumps({"val_class_distribution": {"a": 5, "b": 5}}),
        "strings.json": json.dumps({"val_class_distribution": {"a": "x", "b": 1}}),
    }
    for name, text in bad.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(drift.BadReference) as info:
            drift.load_reference(path)
        assert info.value.exit_code == 2 and "\n" not in str(info.value)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    """``cifar10 monitor drift ARGV`` in-process: exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as exc:
        main(["monitor", "drift", *argv])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_balanced_counts_pass_and_skewed_counts_fail(http_stub, reference_file, capsys):
    balanced = http_stub(lambda path: (200, "text/plain", metrics_text(dict.fromkeys(CLASSES, 30))))
    code, out, _ = _run(capsys, "--metrics-url", f"{balanced}/metrics", "--reference", str(reference_file))
    assert code == 0 and "wrn_fp32 v1: 300 predictions, PSI 0.0000" in out and "-> ok" in out

    skewed = http_stub(lambda path: (200, "text/plain", metrics_text({"cat": 250, "dog": 10})))
    args = ["--metrics-url", f"{skewed}/metrics", "--reference", str(reference_file), "--json"]
    code, out, _ = _run(capsys, *args)
    report = json.loads(out)
    (result,) = report["results"]
    assert code == 1 and report["drift"] and result["drift"]
    assert result["psi"] > 0.2 and result["predictions"] == 260 and result["chi_square_p"] < 1e-6
    assert result["classes"]["cat"] == {"reference": pytest.approx(0.1), "count": 250}
    # a higher threshold accepts the same counts; a filter that matches nothing has nothing to judge
    assert _run(capsys, *args, "--threshold", "1000")[0] == 0
    code, _, err = _run(capsys, *args, "--version", "7")
    assert code == 7 and err.startswith("error: too few predictions")


def test_too_few_predictions_exit_4(http_stub, reference_file, capsys):
    url = http_stub(lambda path: (200, "text/plain", metrics_text({"cat": 20})))
    code, _, err = _run(capsys, "--metrics-url", f"{url}/metrics", "--reference", str(reference_file))
    assert code == 7 and "need 200" in err and "wrn_fp32 v1: 20" in err
    empty = http_stub(lambda path: (200, "text/plain", metrics_text({})))
    code, _, err = _run(capsys, "--metrics-url", f"{empty}/metrics", "--reference", str(reference_file))
    assert code == 7
    args = ["--metrics-url", f"{url}/metrics", "--reference", str(reference_file), "--min-count", "10"]
    assert _run(capsys, *args)[0] == 1


def test_window_judges_only_the_change(http_stub, reference_file, capsys):
    """Before: 1000 skewed predictions; during the window: 100 balanced ones -> no drift."""
    pages = iter([{"cat": 1000}, {"cat": 1010, **{c: 10 for c in CLASSES if c != "cat"}}])
    url = http_stub(lambda path: (200, "text/plain", metrics_text(next(pages))))
    args = ["--metrics-url", f"{url}/metrics", "--reference", str(reference_file), "--window", "0.1"]
    code, out, _ = _run(capsys, *args, "--min-count", "50")
    assert code == 0 and "100 predictions, PSI 0.0000" in out
    assert drift.delta({("m", "1"): {"cat": 50}}, {("m", "1"): {"cat": 5}}) == {("m", "1"): {"cat": 5}}


def test_unknown_class_is_a_reference_error(http_stub, tmp_path, capsys):
    ref = tmp_path / "meta.json"
    ref.write_text(json.dumps({"classes": ["cat", "dog"], "val_class_distribution": [0.5, 0.5]}))
    url = http_stub(lambda path: (200, "text/plain", metrics_text({"cat": 300})))
    code, _, err = _run(capsys, "--metrics-url", f"{url}/metrics", "--reference", str(ref))
    assert code == 2 and "reference lacks" in err


def test_prometheus_source(http_stub, reference_file, capsys):
    seen: list[str] = []

    def api(path: str) -> tuple[int, str, str]:
        seen.append(urllib.parse.unquote_plus(path))
        labels = [{"model": "wrn_fp32", "version": "2", "class": c} for c in CLASSES]
        result = [{"metric": m, "value": [0, "250" if m["class"] == "cat" else "5"]} for m in labels]
        return 200, "application/json", json.dumps({"status": "success", "data": {"result": result}})

    url = http_stub(api)
    code, out, _ = _run(capsys, "--prometheus", url, "--range", "15m", "--reference", str(reference_file))
    assert code == 1 and "wrn_fp32 v2: 295 predictions" in out and "DRIFT" in out
    assert "sum by (model, version, class) (increase(predicted_class_total[15m]))" in seen[0]

    failing = http_stub(lambda path: (400, "application/json", '{"status":"error","error":"bad_data"}'))
    code, _, err = _run(capsys, "--prometheus", failing, "--reference", str(reference_file))
    assert code == 3 and "HTTP 400: bad_data" in err and len(err.splitlines()) == 1
    garbage = http_stub(lambda path: (200, "application/json", '{"status":"success","data":{}}'))
    code, _, err = _run(capsys, "--prometheus", garbage, "--reference", str(reference_file))
    assert code == 3 and "unexpected answer from Prometheus" in err


def test_not_a_metrics_page_is_a_source_error(http_stub, reference_file, capsys):
    url = http_stub(lambda path: (200, "text/html", "<html>{not metrics</html>\n"))
    code, _, err = _run(capsys, "--metrics-url", url, "--reference", str(reference_file))
    assert code == 3 and err.startswith("error:")


def test_standalone_command_gives_one_line_errors(reference_file, tmp_path):
    """``cifar10 monitor drift`` as a user runs it: exit codes 3 and 2, no traceback."""
    (port,) = free_ports(1)  # nothing listens there
    cases = [
        (["--metrics-url", f"http://127.0.0.1:{port}/metrics", "--reference", str(reference_file)], 3,
         f"error: cannot reach http://127.0.0.1:{port}/metrics"),
        (["--prometheus", f"http://127.0.0.1:{port}", "--reference", str(reference_file)], 3,
         f"error: cannot reach http://127.0.0.1:{port}/api/v1/query"),
        (["--reference", str(tmp_path / "nope.json")], 2, "error: reference file not found"),
    ]  # fmt: skip
    for argv, code, message in cases:
        command = [sys.executable, "-m", "commands", "monitor", "drift", *argv]
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == code, proc.stderr
        assert proc.stderr.startswith(message) and len(proc.stderr.strip().splitlines()) == 1
        assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_client_group_has_the_same_drift_subcommand():
    from commands.client_group import client
    from commands.monitor_group import monitor

    command = client.get_command(None, "drift")
    assert command is monitor.get_command(None, "drift")
    ctx = command.make_context("drift", ["--threshold", "0.5", "--prometheus", "http://p:9090"])
    assert ctx.params["threshold"] == 0.5 and ctx.params["prometheus"] == "http://p:9090"
    with pytest.raises(SystemExit) as exc:  # one source or the other
        main(["client", "drift", "--prometheus", "http://p:9090", "--metrics-url", "http://t:8002/metrics"])
    assert exc.value.code == 2
