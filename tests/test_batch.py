"""`model-verify batch`: the matrix, the cells' folders, the per-host limit, resuming, and one real
batch (two containers on the private Docker daemon, the CPU engine) killed and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from conftest import (
    CPU_ENV,
    DEMO_ENGINE_ARGS,
    REPO,
    assert_demo_report_on_this_machine,
    processes_with_env,
    wait_until,
)
from test_docker import dockerd  # noqa: F401  the private daemon fixture (one implementation)

from modelverify_kernel.__main__ import main
from modelverify_kernel.batch import Batch
from modelverify_kernel.errors import UserError
from modelverify_kernel.matrix import Cell, host_key, load_matrix, model_slug

MATRIX = """\
parameters:
  env: {VLLM_CPU_KVCACHE_SPACE: "1"}
  max_model_len: 512
models:
  - /data/models/Qwen3-0.6B
  - model_path: Qwen/Qwen3-0.6B
    name: qwen-hub
    parameters: {trust_remote_code: true}
targets:
  - name: gpu-a
    container: vllm-flagos
    docker_host: ssh://me@gpu1
    parameters: {env: {EXTRA: "x"}, target_python: /opt/venv/bin/python}
  - name: gpu-a-tcp
    container: other
    docker_host: tcp://gpu1:2375
  - name: here
    local: true
cells:
  - {model: qwen-hub, target: here, skip: true}
  - {model: Qwen3-0.6B, target: gpu-a, parameters: {env: {VLLM_CPU_KVCACHE_SPACE: "2"}, tp_size: 2}}
"""


def write(tmp_path: Path, text: str, name: str = "matrix.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_matrix_cells_and_their_parameters(tmp_path):
    cells = {c.id: c for c in load_matrix(write(tmp_path, MATRIX), tmp_path / "out")}
    assert sorted(cells) == [
        "Qwen3-0.6B__gpu-a",
        "Qwen3-0.6B__gpu-a-tcp",
        "Qwen3-0.6B__here",
        "qwen-hub__gpu-a",
        "qwen-hub__gpu-a-tcp",
    ]  # the skipped cell is not there
    c = cells["Qwen3-0.6B__gpu-a"]
    assert dict(c.parameters) == {
        "env": {"VLLM_CPU_KVCACHE_SPACE": "2", "EXTRA": "x"},
        "max_model_len": 512,
        "tp_size": 2,
        "target_python": "/opt/venv/bin/python",
        "model_path": "/data/models/Qwen3-0.6B",
        "container": "vllm-flagos",
        "docker_host": "ssh://me@gpu1",
        "target_label": "gpu-a",
        "output_dir": str((tmp_path / "out" / "Qwen3-0.6B__gpu-a").resolve()),
    }
    hub = cells["qwen-hub__gpu-a-tcp"].parameters
    assert (hub["model_path"], hub["trust_remote_code"], hub["env"]) == (
        "Qwen/Qwen3-0.6B",
        True,
        {"VLLM_CPU_KVCACHE_SPACE": "1"},
    )
    assert cells["Qwen3-0.6B__here"].parameters["container"] is None
    # ssh:// and tcp:// to gpu1 are one machine; the local target is this machine
    assert {c.id: c.host for c in cells.values()} == {
        "Qwen3-0.6B__gpu-a": "gpu1",
        "Qwen3-0.6B__gpu-a-tcp": "gpu1",
        "Qwen3-0.6B__here": "local",
        "qwen-hub__gpu-a": "gpu1",
        "qwen-hub__gpu-a-tcp": "gpu1",
    }


def test_json_matrix_is_read_the_same(tmp_path):
    import yaml

    as_json = write(tmp_path, json.dumps(yaml.safe_load(MATRIX)), "matrix.json")
    assert load_matrix(as_json, tmp_path) == load_matrix(write(tmp_path, MATRIX), tmp_path)


def test_slugs_and_hosts():
    assert model_slug("/data/models/Qwen3-0.6B/") == "Qwen3-0.6B"
    assert model_slug("Qwen/Qwen3-0.6B") == "Qwen--Qwen3-0.6B"
    assert model_slug("./models/my model") == "my-model"
    assert host_key({"local": True}) == host_key({"container": "c"}) == "local"
    assert host_key({"container": "c", "docker_host": "unix:///run/other.sock"}) == "local"
    assert host_key({"container": "c", "docker_host": "ssh://me@gpu1:22"}) == "gpu1"
    assert (
        host_key({"container": "c", "docker_host": "tcp://gpu1:2375", "host": "rack-3"}) == "rack-3"
    )


BAD = {
    "unknown key": (
        "targets:\n  - {name: a, contaner: c}\nmodels: [/m]\n",
        r"^Matrix \S+: targets\[0\] \(a\) has the unknown key 'contaner' \(did you mean container\?\); "
        r"the keys are container, docker_host, host, local, name, parameters\.$",
    ),
    "no model_path": (
        "models:\n  - {name: x}\ntargets: [{name: a, local: true}]\n",
        r"models\[0\] \(x\) .*model_path",
    ),
    "no targets": ("models: [/m]\n", r"^Matrix \S+: the top level lacks targets; add it\.$"),
    "neither container nor local": (
        "models: [/m]\ntargets: [{name: a}]\n",
        r"targets\[0\] \(a\) needs either container: NAME .* or local: true",
    ),
    "bad name": (
        "models: [/m]\ntargets: [{name: 'a b', local: true}]\n",
        r"targets\[0\] \(a b\)\.name .*letters",
    ),
    "unknown parameter": (
        "models: [/m]\ntargets: [{name: a, local: true, parameters: {tpsize: 2}}]\n",
        r"targets\[0\] \(a\)\.parameters has 'tpsize', which is no parameter \(did you mean tp_size\?\)",
    ),
    "set by the batch": (
        "parameters: {output_dir: /x}\nmodels: [/m]\ntargets: [{name: a, local: true}]\n",
        r"^Matrix \S+: parameters sets output_dir, which the batch sets",
    ),
    "bad value": (
        "models: [/m]\ntargets: [{name: a, local: true}]\ncells: [{model: m, target: a, parameters: {tp_size: x}}]\n",
        r"cell m × a: Parameter tp_size must be an integer, got 'x'; for example tp_size: 8\.$",
    ),
    "bad docker_host": (
        "models: [/m]\ntargets: [{name: a, container: c, docker_host: /var/run/docker.sock}]\n",
        r"cell m × a: Parameter docker_host must be a unix://",
    ),
    "unknown cell model": (
        "models: [/m]\ntargets: [{name: a, local: true}]\ncells: [{model: n, target: a}]\n",
        r"cells\[0\] names the model 'n', which is not in models; use one of m\.$",
    ),
    "same folder": (
        "models: [/a/m, /b/m]\ntargets: [{name: a, local: true}]\n",
        r"models\[1\] \(/b/m\) gets the name m, like an earlier model; give each a distinct name",
    ),
    "not yaml": ("models: [/m\n", r"^Matrix \S+ is not YAML \(.* at line \d+\); fix the file\.$"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_matrix_is_one_sentence_and_runs_nothing(tmp_path, capsys, case):
    text, message = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(UserError, match=message) as exc:
        load_matrix(path, tmp_path / "out")
    assert "\n" not in str(exc.value) and str(exc.value).endswith(".")
    assert main(["batch", str(path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: {exc.value}\n"
    assert not (tmp_path / "out").exists()


def test_dry_run_lists_the_cells_and_runs_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["batch", str(write(tmp_path, MATRIX)), "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == sorted(
        c.id for c in load_matrix(tmp_path / "matrix.yaml", out)
    )
    assert all("  runs  " in line for line in lines) and not out.exists()


# -- the runner, with an injected command ------------------------------------------------------

# A probe cell: appends "start HOST ID" to the event file, waits for the release file, appends
# "end HOST ID" (before it exits, so before the batch may start the next cell). Optionally writes
# a finished report.json or exits with a code.
PROBE = """\
import json, os, sys, time
events, release, host, cell, out, code = sys.argv[1:7]
def note(word):
    with open(events, "a") as f:
        f.write(f"{word} {host} {cell}\\n")
note("start")
while release != "-" and not os.path.exists(release):
    time.sleep(0.02)
if out != "-":
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump({"finished_at": "now", "status": "PARTIAL", "diff_analysis": {"conclusion": "RUN_B_SKIPPED"}}, f)
note("end")
sys.exit(int(code))
"""


def cells(hosts: dict[str, int], out: Path) -> list[Cell]:
    return [
        Cell(f"m{i}", host, host, {"output_dir": str(out / f"m{i}__{host}")})
        for host, n in hosts.items()
        for i in range(n)
    ]


def probe(
    events: Path,
    release: Path | str = "-",
    report: bool = True,
    codes: dict[str, int] | None = None,
):
    def command(cell: Cell) -> list[str]:
        return [
            sys.executable,
            "-c",
            PROBE,
            str(events),
            str(release),
            cell.host,
            cell.id,
            cell.parameters["output_dir"] if report else "-",
            str((codes or {}).get(cell.id, 0)),
        ]

    return command


def concurrency(events: Path) -> dict[str, int]:
    """The most cells of each host that were between their start and end at one time."""
    now: dict[str, int] = {}
    most: dict[str, int] = {}
    for line in events.read_text().splitlines():
        word, host, _ = line.split()
        now[host] = now.get(host, 0) + (1 if word == "start" else -1)
        most[host] = max(most.get(host, 0), now[host])
    return most


@pytest.mark.process
@pytest.mark.parametrize("per_host", [1, 2])
def test_per_host_limit_and_hosts_in_parallel(tmp_path, per_host):
    out, events, release = tmp_path / "out", tmp_path / "events.txt", tmp_path / "release"
    batch = Batch(
        cells({"h1": 3, "h2": 3}, out),
        out,
        per_host=per_host,
        command=probe(events, release),
        echo=lambda line: None,
    )
    done = {}
    runner = threading.Thread(target=lambda: done.update(code=batch.run()))
    runner.start()

    def started() -> dict[str, int]:
        lines = events.read_text().splitlines() if events.exists() else []
        return {h: sum(line.startswith(f"start {h} ") for line in lines) for h in ("h1", "h2")}

    try:
        # both hosts fill their slots while no cell can end: the hosts run side by side
        wait_until(
            lambda: started() == {"h1": per_host, "h2": per_host},
            30,
            "per_host cells started on each host",
        )
        running = [
            r
            for r in json.loads((out / "batch.json").read_text())["cells"]
            if r["state"] == "running"
        ]
        assert len(running) == 2 * per_host
    finally:
        release.touch()  # pass or fail, every probe cell ends
        runner.join()
    assert done["code"] == 0
    assert concurrency(events) == {"h1": per_host, "h2": per_host}
    assert started() == {"h1": 3, "h2": 3}
    records = json.loads((out / "batch.json").read_text())["cells"]
    assert {r["state"] for r in records} == {"done"} and all(r["exit_code"] == 0 for r in records)


@pytest.mark.process
def test_resume_skips_finished_cells_and_sets_aside_the_rest(tmp_path, capsys):
    from modelverify_kernel.params import validate
    from modelverify_kernel.pipeline import Verification

    out, events = tmp_path / "out", tmp_path / "events.txt"
    todo = cells({"h": 3}, out)
    # first run: m0 ends with a report, m1 crashes (exit 3, no report), m2 was never reached before
    # its folder was left by a killed run that had recorded its state
    first = Batch(
        todo[:2],
        out,
        command=lambda cell: probe(events, report=cell.id == "m0__h", codes={"m1__h": 3})(cell),
        echo=print,
    )
    assert first.run() == 1
    lines = capsys.readouterr().out
    assert (
        "[1/2] m0 × h: done PARTIAL RUN_B_SKIPPED" in lines
        and "[2/2] m1 × h: failed: exit 3, no report" in lines
    )
    v = Verification.start(validate({"model_path": "/nowhere", "output_dir": str(out / "m2__h")}))
    v.close()
    assert (out / "m2__h" / "state.json").is_file() and not (out / "m2__h" / "report.json").exists()
    report_m0 = (out / "m0__h" / "report.json").read_bytes()

    # the same batch again, every cell ending with a report now
    events.unlink()
    again = Batch(todo, out, command=probe(events), echo=print)
    assert again.run() == 0
    lines = capsys.readouterr().out
    assert "[1/3] m0 × h: done PARTIAL RUN_B_SKIPPED, finished earlier: skipped" in lines
    assert "m1 × h: interrupted attempt kept in m1__h.interrupted-1 (no report rebuilt: " in lines
    assert (
        "m2 × h: interrupted attempt kept in m2__h.interrupted-1 (report rebuilt (INCOMPLETE)); runs again"
        in lines
    )
    ran = "start h m1__h end h m1__h start h m2__h end h m2__h"
    assert events.read_text().split() == ran.split()  # m0 did not run
    assert (out / "m0__h" / "report.json").read_bytes() == report_m0
    rebuilt = json.loads((out / "m2__h.interrupted-1" / "report.json").read_text())
    assert rebuilt["diff_analysis"]["conclusion"] == "INCOMPLETE"
    assert (
        out / "m1__h.interrupted-1" / "batch-cell.log"
    ).is_file()  # what the crashed cell printed
    records = {r["dir"]: r for r in json.loads((out / "batch.json").read_text())["cells"]}
    assert (
        records["m1__h"]["interrupted"] == ["m1__h.interrupted-1"]
        and records["m1__h"]["state"] == "done"
    )
    assert records["m0__h"]["exit_code"] is None  # not run this time


@pytest.mark.process
def test_resume_reruns_a_finished_cell_whose_parameters_changed(tmp_path, capsys):
    """A finished cell is skipped only while the matrix still gives it the parameters it ran with;
    changed, the finished run is kept aside and the cell runs again."""
    out, events = tmp_path / "out", tmp_path / "events.txt"
    first = cells({"h": 2}, out)
    assert Batch(first, out, command=probe(events), echo=print).run() == 0
    report_m0 = (out / "m0__h" / "report.json").read_bytes()
    events.unlink()
    capsys.readouterr()

    m0, m1 = first
    changed = [Cell(m0.model, m0.target, m0.host, {**m0.parameters, "max_tokens": 32}), m1]
    again = Batch(changed, out, command=probe(events), echo=print)
    assert again.run() == 0
    lines = capsys.readouterr().out
    assert (
        "[1/2] m0 × h: parameters changed since its finished run (max_tokens): "
        "that run kept in m0__h.superseded-1; runs again" in lines
    )
    assert "[2/2] m1 × h: done PARTIAL RUN_B_SKIPPED, finished earlier: skipped" in lines
    assert events.read_text().split() == ["start", "h", "m0__h", "end", "h", "m0__h"]
    assert (out / "m0__h.superseded-1" / "report.json").read_bytes() == report_m0
    records = {r["dir"]: r for r in json.loads((out / "batch.json").read_text())["cells"]}
    assert records["m0__h"]["parameters"]["max_tokens"] == 32
    assert records["m0__h"]["superseded"] == ["m0__h.superseded-1"]
    # the same matrix once more: nothing changed, nothing runs
    events.unlink()
    assert Batch(changed, out, command=probe(events), echo=print).run() == 0
    assert not events.exists()


def test_changed_parameters_name_what_changed_and_ignore_the_folder():
    from modelverify_kernel.batch import changed_parameters

    ran = {"output_dir": "/a/x", "env": {"A": "1"}, "max_tokens": 16}
    assert changed_parameters(ran, {**ran, "output_dir": "/b/x"}) == []
    assert changed_parameters(ran, {**ran, "env": {"A": "2"}, "tp_size": 2}) == ["env", "tp_size"]
    assert changed_parameters(ran, {"output_dir": "/a/x", "env": {"A": "1"}}) == ["max_tokens"]


def test_dry_run_says_a_changed_finished_cell_runs_again(tmp_path, capsys):
    out = tmp_path / "out"
    matrix = write(tmp_path, "models: [/m]\ntargets: [{name: a, local: true}]\n")
    (cell,) = load_matrix(matrix, out)
    folder = out / cell.id
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(
        json.dumps({"finished_at": "now", "diff_analysis": {"conclusion": "BOTH_PASS"}})
    )
    ran_with = {**cell.parameters, "max_tokens": 8}
    (out / "batch.json").write_text(
        json.dumps({"cells": [{"dir": cell.id, "parameters": ran_with}]})
    )
    assert main(["batch", str(matrix), "--out", str(out), "--dry-run"]) == 0
    assert (
        "  done, parameters changed (max_tokens): kept aside, then runs  "
        in capsys.readouterr().out
    )


@pytest.mark.process
def test_a_cell_runs_the_notebook_through_the_runner(tmp_path):
    """The real cell command (no injected one): the notebook runs through notebook_runner, as
    `model-verify run` runs it, and a model that is not there is a finished PRECHECK_FAILED."""
    missing = tmp_path / "no-model"
    matrix = write(tmp_path, f"models: ['{missing}']\ntargets: [{{name: here, local: true}}]\n")
    out = tmp_path / "out"
    (cell,) = load_matrix(matrix, out)
    assert Batch([cell], out, echo=lambda line: None).run() == 0
    report = json.loads((out / cell.id / "report.json").read_text())
    assert report["diff_analysis"]["conclusion"] == "PRECHECK_FAILED"
    assert (out / cell.id / "verify.ipynb").is_file()
    (record,) = json.loads((out / "batch.json").read_text())["cells"]
    assert record["exit_code"] == 0, (out / cell.id / "batch-cell.log").read_text()


@pytest.mark.process
def test_sigterm_stops_the_running_cells_and_the_rest_stays_pending(tmp_path, marker):
    out, events = tmp_path / "out", tmp_path / "events.txt"
    batch = Batch(
        cells({"h": 2}, out), out, command=probe(events, tmp_path / "never"), echo=lambda line: None
    )

    def kill_when_running() -> None:
        wait_until(
            lambda: events.exists() and events.read_text().startswith("start"),
            30,
            "the first cell to start",
        )
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=kill_when_running)
    killer.start()
    assert batch.run() == 1  # on the main thread: it handles the signal
    killer.join()
    assert processes_with_env(marker) == []
    records = [r["state"] for r in json.loads((out / "batch.json").read_text())["cells"]]
    assert records == ["killed", "pending"]
    assert not (out / "m1__h").exists()


def test_a_second_batch_in_the_same_out_is_refused(tmp_path, capsys):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".batch.lock", "a+") as held:  # as a running batch holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert (
            main(
                [
                    "batch",
                    str(write(tmp_path, "models: [/m]\ntargets: [{name: a, local: true}]\n")),
                    "--out",
                    str(out),
                ]
            )
            == 2
        )
    assert (
        capsys.readouterr().err
        == f"error: Another batch is running in {out}; wait for it to end or give another --out.\n"
    )
    assert sorted(p.name for p in out.iterdir()) == [".batch.lock"]  # nothing touched


# -- the real thing ---------------------------------------------------------------------------


def cell_states(out: Path) -> dict[str, str]:
    """Each cell's state in OUT/batch.json (empty while there is none to read)."""
    try:
        return {r["dir"]: r["state"] for r in json.loads((out / "batch.json").read_text())["cells"]}
    except (OSError, ValueError):
        return {}


def _kill_while_the_second_cell_runs(argv: list[str], env: dict, out: Path, tmp_path: Path) -> None:
    """Start the batch, SIGTERM it once the first cell is done and the second's first phase runs."""
    with open(tmp_path / "first.log", "wb") as log:
        batch = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        wait_until(
            lambda: (
                cell_states(out) == {"tiny__box0": "done", "tiny__box1": "running"}
                and (out / "tiny__box1" / "logs" / "run_a_offline.log").is_file()
                or batch.poll() is not None
            ),
            900,
            "the first cell done and the second's first phase started",
        )
        assert batch.poll() is None, (tmp_path / "first.log").read_text()
        batch.send_signal(signal.SIGTERM)
        assert batch.wait(120) == 1


def _assert_the_summary_is_its_folders_merged(out: Path, env: dict, tmp_path: Path) -> None:
    """The batch's summary is the summary of its cell folders merged afterwards, byte for byte."""
    names = ("summary.json", "index.html", "junit.xml")
    written = {n: (out / n).read_bytes() for n in names}
    assert [c["target"] for c in json.loads(written["summary.json"])["cells"]] == ["box0", "box1"]
    folders = [str(out / "tiny__box1"), str(out / "tiny__box0")]
    merged = subprocess.run(
        [sys.executable, "-m", "modelverify_kernel", "summarize", *folders, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert {n: (out / n).read_bytes() for n in names} == written


def _assert_resumed(resumed, out: Path, containers: list, first_report: bytes) -> None:
    """The re-run skipped the finished cell, kept the killed one's rebuilt report and ran it again."""
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "tiny × box0: done PARTIAL RUN_B_SKIPPED, finished earlier: skipped" in resumed.stdout
    kept = "interrupted attempt kept in tiny__box1.interrupted-1 (report rebuilt (INCOMPLETE))"
    assert f"tiny × box1: {kept}" in resumed.stdout
    assert (out / "tiny__box0" / "report.json").read_bytes() == first_report
    interrupted = json.loads((out / "tiny__box1.interrupted-1" / "report.json").read_text())
    assert interrupted["status"] == "FAIL"
    for i, c in enumerate(containers):
        cell_dir = out / f"tiny__box{i}"
        data = json.loads((cell_dir / "report.json").read_text())
        assert_demo_report_on_this_machine(data, cell_dir)
        assert data["parameters"]["target_label"] == f"box{i}"
        assert data["environment"]["target"]["container_name"] == c.name


@pytest.mark.engine
def test_a_killed_batch_resumes(dockerd, demo_model, tmp_path):
    """1 model × 2 containers on one daemon (one machine: they run one after the other). The batch
    is killed while the second cell runs; the re-run skips the first, keeps the second's partial
    report as its interrupted attempt and runs it again."""
    from test_docker import scan

    marker_name, marker_value = "MV_BATCH_MARKER", uuid.uuid4().hex
    containers = [
        dockerd.run_container(
            f"mv-batch-{i}-{uuid.uuid4().hex[:6]}", mounts=[str(demo_model.parent)]
        )
        for i in range(2)
    ]
    try:
        matrix = {
            "parameters": {
                "env": {**CPU_ENV, marker_name: marker_value},
                "extra_vllm_args": DEMO_ENGINE_ARGS,
                "max_model_len": 512,
                "target_python": sys.executable,
            },
            "models": [{"model_path": str(demo_model), "name": "tiny"}],
            "targets": [
                {"name": f"box{i}", "container": c.name, "docker_host": dockerd.host}
                for i, c in enumerate(containers)
            ],
        }
        path = write(tmp_path, json.dumps(matrix), "matrix.json")
        out = tmp_path / "out"
        argv = [sys.executable, "-m", "modelverify_kernel", "batch", str(path), "--out", str(out)]
        env = {**os.environ, "PYTHONPATH": str(REPO), marker_name: marker_value}
        _kill_while_the_second_cell_runs(argv, env, out, tmp_path)
        assert cell_states(out) == {"tiny__box0": "done", "tiny__box1": "killed"}
        first_report = (out / "tiny__box0" / "report.json").read_bytes()
        # nothing of the killed cell runs any more: on this machine, nor in its container
        assert processes_with_env(f"{marker_name}={marker_value}") == []
        wait_until(
            lambda: scan(containers[1], f"{marker_name}={marker_value}") == [],
            60,
            "the end of the killed cell's processes in its container",
        )

        resumed = subprocess.run(
            argv, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=900
        )
        _assert_resumed(resumed, out, containers, first_report)
        assert cell_states(out) == {"tiny__box0": "done", "tiny__box1": "done"}
        assert processes_with_env(f"{marker_name}={marker_value}") == []
        _assert_the_summary_is_its_folders_merged(out, env, tmp_path)
    finally:
        for c in containers:
            c.remove(force=True)
