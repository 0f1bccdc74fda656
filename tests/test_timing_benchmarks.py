"""benchmarks/timing.py's clocks and load record, and every timing benchmark run in a tiny configuration, so that
their code keeps working (not their numbers) and the docs' renderer reads what they write."""

import json
import os
import subprocess
import sys
import time

import pytest

from benchmarks import docs_blocks, timing
from tests.conftest import ROOT
from tests.helpers import subprocess_env, train_in_process

SPIN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {seconds}: pass"


def test_cpu_time_counts_work_not_waiting():
    with timing.timed() as asleep:
        time.sleep(0.3)
    with timing.timed() as busy:
        exec(SPIN.format(seconds=0.3))
    assert asleep.wall >= 0.3 and asleep.cpu < 0.1, asleep
    assert busy.cpu >= 0.29 and busy.wall >= 0.29, busy


def test_cpu_time_includes_the_children_waited_for():
    with timing.timed() as t:
        subprocess.run([sys.executable, "-c", SPIN.format(seconds=0.4)], check=True)
    assert t.cpu >= 0.39, t


def test_ratio_is_of_medians_with_the_range_of_round_ratios():
    r = timing.ratio([2.0, 4.0, 9.0], [1.0, 2.0, 3.0])
    assert r == {"ratio": 4.0 / 2.0, "min": 2.0, "max": 3.0}
    assert timing.spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "values": [3.0, 1.0, 2.0]}


def test_the_machine_watch_names_other_busy_processes_but_not_its_own_children():
    spin = SPIN.format(seconds=20)
    child = subprocess.Popen([sys.executable, "-c", spin])
    # an outsider: started by a child that exits at once, so it is no descendant of this process
    starter = (
        "import subprocess, sys\n"
        "quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        f"print(subprocess.Popen([sys.executable, '-c', {spin!r}], **quiet).pid)"
    )
    outsider = int(subprocess.run([sys.executable, "-c", starter], capture_output=True, text=True).stdout)
    try:
        time.sleep(0.5)
        busy = [p["pid"] for p in timing.busy_processes(sample_seconds=0.5)]
        assert child.pid not in busy and outsider in busy, busy
        record = timing.MachineWatch().finish()
        assert not record["quiet"] and any(f"pid {outsider} " in reason for reason in record["not_quiet"]), record
        assert "**not quiet**" in docs_blocks.conditions({"command": "x", "tensorflow": "2", "machine_load": record})
    finally:
        child.kill()
        os.kill(outsider, 9)


def _run(script: str, *flags: str) -> None:
    command = [sys.executable, os.path.join(ROOT, "benchmarks", script), *flags]
    done = subprocess.run(command, env=subprocess_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _check(path, block: str) -> dict:
    results = json.load(open(path))
    load = results["machine_load"]
    assert set(load) >= {"quiet", "start", "end", "not_quiet"} and len(load["start"]["load_average"]) == 3
    rendered = docs_blocks.render(block, results)
    assert "Measured by `python " in rendered and rendered.count("\n| ") >= 1 or block == "ivis-speed"
    return results


def test_keras_distillation_and_iep_step_time_report_cpu_time_ratios(tmp_path):
    _run("keras_distillation.py", "--steps=1", "--rounds=2", "--batch_size=4", f"--output={tmp_path}/k.json")
    results = _check(tmp_path / "k.json", "keras-distillation")
    for row in results["results"]:
        cpu = [row[f"{side}_cpu_seconds_per_step"]["median"] for side in ("keras", "iep")]
        assert row["keras_over_iep_cpu"]["ratio"] == pytest.approx(cpu[0] / cpu[1])
        assert len(row["iep_wall_seconds_per_step"]["values"]) == 2
    _run("iep_step_time.py", "--pairs=resnet8:resnet8", "--classes=100", "--batch_size=4", "--steps=2", "--warmup=1",
         f"--output={tmp_path}/i.json")  # fmt: skip
    row = _check(tmp_path / "i.json", "iep-step-time")["results"][0]
    assert row["iep_over_plain_cpu"]["min"] <= row["iep_over_plain_cpu"]["ratio"] <= row["iep_over_plain_cpu"]["max"]


def test_step_speed_and_loop_throughput_report_both_clocks(tmp_path, cifar10_dir):
    _run("step_speed.py", "--pair=resnet8:resnet8", "--classes=100", "--batch_size=4", "--modes=function",
         "--precisions=float32", "--methods=plain,rkd", "--steps=2", "--warmup=1", f"--data_dir={cifar10_dir}",
         f"--output={tmp_path}/s.json")  # fmt: skip
    rows = _check(tmp_path / "s.json", "step-speed")["results"]
    assert [r["input"] for r in rows] == ["synthetic", "synthetic", "real_data", "in_memory", "pipeline_alone"]
    _run("loop_throughput.py", "--archs=resnet8", "--batch_size=4", "--steps=2", "--warmup=1", "--repeats=2",
         f"--output={tmp_path}/l.json")  # fmt: skip
    row = _check(tmp_path / "l.json", "loop-throughput")["results"][0]
    assert len(row["ours_images_per_cpu_second"]["values"]) == 2


def test_run_overhead_ivis_and_export_formats_run(tmp_path, cifar10_dir):
    _run("run_overhead.py", "--epochs=1", "--rate=0.01", "--eval_every=1", f"--data_dir={cifar10_dir}",
         f"--output={tmp_path}/o.json")  # fmt: skip
    row = _check(tmp_path / "o.json", "run-overhead")["results"][0]
    assert row["cpu_seconds"] > row["train_seconds"] / 4 and row["wall_seconds"] > row["train_seconds"]
    _run("ivis_speed.py", "--points=200", "--dims=4", "--held_out=20", "--repeats=1", f"--out={tmp_path}/v.json")
    _check(tmp_path / "v.json", "ivis-speed")
    run = tmp_path / "run"
    train_in_process(run, "--arch=resnet8", "--epochs=1")
    _run("export_formats.py", f"--run_dir={run}", f"--out={tmp_path}/exported", "--latency_runs=3", "--limit=32",
         "--nodocs", f"--results={tmp_path}/e.json")  # fmt: skip
    rows = _check(tmp_path / "e.json", "export-formats")["results"]
    assert [r["format"] for r in rows] == ["savedmodel", "keras", "tflite", "tflite_int8"]
