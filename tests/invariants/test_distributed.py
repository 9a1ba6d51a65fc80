"""Two processes under Accelerate make the same updates as one with the same global batch, and
resume exactly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HERE = Path(__file__).parent


def _free_port() -> int:
    """A port nobody listens on now (a fixed one collides with a previous run's socket)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", TRANSFORMERS_VERBOSITY="error")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parents[1] / "src"), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.slow  # starts three runs, two of them with two processes
def test_two_processes_match_one(tmp_path):
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the accelerate command is not installed")
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    subprocess.run([sys.executable, str(HERE / "dist_train.py"), str(one)], check=True, env=_env(), timeout=300)
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           str(HERE / "dist_train.py"), str(two), str(tmp_path / "run")]
    proc = subprocess.run(cmd, env=_env(), timeout=300, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from safetensors import safe_open

    worlds = [safe_open(str(f), "pt").metadata()["world"] for f in (one, two)]
    assert worlds == ["1", "2"]
    a, b = load_file(str(one)), load_file(str(two))
    resumed = {k[len("resumed."):]: b.pop(k) for k in list(b) if k.startswith("resumed.")}
    assert a.keys() == b.keys()
    trained = [k for k in a if not k.startswith("initial.")]
    assert resumed.keys() == set(trained)
    for k in trained:  # two processes, interrupted after step 3 and resumed: bit-identical to uninterrupted
        assert torch.equal(resumed[k], b[k]), k
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in (tmp_path / "run" / "last" / "accelerate").iterdir()}
    assert any(not torch.allclose(a[k], a[f"initial.{k}"]) for k in trained)  # training moved the weights
    for k in trained:
        # all-reduce sums in another order; Adam magnifies float noise in near-zero gradients,
        # so compare against the size of the update (~2.5e-2 here)
        moved = float((a[k] - a[f"initial.{k}"]).abs().max())
        assert float((a[k] - b[k]).abs().max()) <= 1e-2 * moved, k


def _files(root: Path) -> dict[str, bytes]:
    """Every result file under ``root`` (checkpoints: their names only; LAMA's results.json
    without the seconds each unit took)."""
    import json

    files = {str(p.relative_to(root)): (b"" if "checkpoint" in str(p) else p.read_bytes())
             for p in sorted(root.rglob("*")) if p.is_file()}
    if "relations" in json.loads(files["results.json"]):
        results = json.loads(files["results.json"])
        for entry in results["relations"].values():
            assert set(entry.pop("seconds")) == set(entry["methods"])
        files["results.json"] = json.dumps(results).encode()
    return files


def _harness_setup(tmp_path: Path) -> tuple[str, list[str]]:
    """The accelerate command and dist_harness.py's model and data arguments (a tiny BERT
    for SuperGLUE, the shipped world's GPT for LAMA); skips without FewGLUE or accelerate."""
    sys.path.insert(0, str(HERE))
    from conftest import SHARED_DATA

    from ptune.tiny import tiny_model, train_tokenizer
    from ptune.world import shipped_world_dir

    fewglue = SHARED_DATA / "fewglue"
    if not (fewglue / "RTE" / "train.jsonl").is_file():
        pytest.skip(f"FewGLUE not found at {fewglue}")
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the accelerate command is not installed")
    corpus = [line[:2000] for t in ("RTE", "BoolQ", "COPA") for line in (fewglue / t / "train.jsonl").read_text().splitlines()]
    tok = train_tokenizer("bert", corpus, vocab_size=600, extra_tokens=["Yes", "No", "Maybe"])
    tiny_model("bert", tok, seed=0, positions=512).save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    world = shipped_world_dir()
    return accelerate, [str(world / "gpt"), str(world / "lama"), str(tmp_path / "bert"), str(fewglue)]


def _one_process(out: Path, args: list[str], mode: str = "units") -> None:
    from dist_harness import run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the launched processes (OMP_NUM_THREADS=1): the same float sums
    try:
        run(str(out), *args, mode)
    finally:
        torch.set_num_threads(threads)


def _launch(accelerate: str, out: Path, args: list[str], mode: str = "units") -> subprocess.CompletedProcess:
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()), str(HERE / "dist_harness.py"),
           str(out), *args, mode]
    proc = subprocess.run(cmd, env=_env(), timeout=600, capture_output=True, text=True)
    assert proc.returncode == 0, "\n".join(x for x in proc.stderr.splitlines() if "rank1" not in x)[-3000:]
    return proc


@pytest.mark.slow  # a one-process run and a two-process launch of both harnesses
def test_harnesses_on_two_processes_write_what_one_writes(tmp_path):
    """``ptune probe`` and ``ptune superglue --task all`` split their units over 2 processes
    (gloo): the same files, byte for byte, as one process; a resumed 2-process run skips the
    units the folder records as finished."""
    import json

    accelerate, args = _harness_setup(tmp_path)
    _one_process(tmp_path / "one", args)
    one = {k: _files(tmp_path / "one" / k) for k in ("probe", "superglue")}
    # the 2-process run resumes a folder where some units are finished
    two = tmp_path / "two"
    probe = json.loads((tmp_path / "one" / "probe" / "results.json").read_text())
    for rel in ("P20", "P36"):
        del probe["relations"][rel]["methods"]["ptuning"]
    (two / "probe").mkdir(parents=True)
    (two / "probe" / "results.json").write_text(json.dumps(probe))
    shutil.copytree(tmp_path / "one" / "superglue" / "runs" / "CB", two / "superglue" / "runs" / "CB",
                    ignore=shutil.ignore_patterns("checkpoint"))
    proc = _launch(accelerate, two, args)
    assert proc.stdout.count("| RTE |") == 1  # rank 0 alone prints the tables
    # units finished before were not run again (their checkpoints were not copied)
    assert not (two / "probe" / "checkpoints" / "P19" / "ptuning").exists()
    assert (two / "probe" / "checkpoints" / "P20" / "ptuning" / "prompt.safetensors").is_file()
    assert not (two / "superglue" / "runs" / "CB" / "seed1" / "checkpoint").exists()
    for name in ("probe", "superglue"):
        got = _files(two / name)
        if name == "probe":  # P19's checkpoint came with the finished units in the 1-process folder
            got.update({k: v for k, v in one[name].items() if k.startswith("checkpoints/P19/ptuning")})
        else:
            got.update({k: v for k, v in one[name].items() if k.startswith("runs/CB/seed1/checkpoint")})
        assert got.keys() == one[name].keys()
        for k in got:
            assert got[k] == one[name][k], f"{name}/{k} differs"


def _close(a, b, path: str = "") -> None:
    """``a`` equals ``b``, floats within 1e-4 (gradients summed over 2 processes in another order)."""
    if isinstance(a, float) or isinstance(b, float):
        assert abs(a - b) <= 1e-4, f"{path}: {a} != {b}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.mark.slow  # a one-process run and a two-process launch of both harnesses
def test_large_units_train_data_parallel_with_the_results_of_one_process(tmp_path):
    """A LAMA relation and a SuperGLUE task whose training sets count as large
    (``--data-parallel-from``) train over both processes (each takes half of every batch):
    their records say so, rank 0 alone writes their files, and the numbers are the
    one-process run's (floats within 1e-4)."""
    import json

    accelerate, args = _harness_setup(tmp_path)
    _one_process(tmp_path / "one", args, "data-parallel")
    _launch(accelerate, tmp_path / "two", args, "data-parallel")
    one, two = ({k: json.loads((root / k / "results.json").read_text()) for k in ("probe", "superglue")}
                for root in (tmp_path / "one", tmp_path / "two"))
    lama = [two["probe"]["relations"]["P19"]["methods"]["ptuning"]]
    runs = [two["superglue"]["tasks"]["RTE"]["runs"]["1"]]
    assert [r.pop("processes") for r in lama + runs] == [2, 2]  # trained over both processes
    assert "processes" not in one["probe"]["relations"]["P19"]["methods"]["ptuning"]
    assert lama[0]["steps"] > 1 and 0 < lama[0]["test"]["p@1"]  # it trained and found facts
    for entry in (one["probe"], two["probe"]):
        entry["relations"]["P19"].pop("seconds")
    runs += [json.loads((tmp_path / "two" / "superglue" / "runs" / "RTE" / "seed1" / "result.json").read_text())]
    runs[1].pop("processes")
    assert runs[1] == runs[0]  # the unit's own file, written once by rank 0
    _close(one, two)
    for name in ("probe/checkpoints/P19/ptuning/prompt.safetensors", "superglue/runs/RTE/seed1/checkpoint",
                 "superglue/predictions/RTE.jsonl"):
        assert (tmp_path / "two" / name).exists(), name


@pytest.mark.slow  # one process, then a two-process launch
def test_fsdp_sharded_lm_trains_the_prompt_of_the_single_process_run(tmp_path):
    """torch's FSDP2 runs on CPU with gloo: the LM's layers sharded over 2 processes (the
    embeddings, head and prompt replicated) train the same prompt and give the same scores
    as one process, within float tolerance; a sharded run in a run folder, stopped and
    resumed, ends with the prompt of the run straight through, bit for bit."""
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the accelerate command is not installed")
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    subprocess.run([sys.executable, str(HERE / "dist_fsdp.py"), str(one)], check=True, env=_env(), timeout=300)
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()), str(HERE / "dist_fsdp.py"), str(two),
           str(tmp_path / "runs")]
    env = {**_env(), "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}
    proc = subprocess.run(cmd, env=env, timeout=300, capture_output=True, text=True)
    assert proc.returncode == 0, "\n".join(x for x in proc.stderr.splitlines() if "rank1" not in x)[-3000:]
    a, b = load_file(str(one)), load_file(str(two))
    whole = {k[len("run.whole."):]: b.pop(k) for k in list(b) if k.startswith("run.whole.")}
    resumed = {k[len("run.resumed."):]: b.pop(k) for k in list(b) if k.startswith("run.resumed.")}
    assert whole and whole.keys() == resumed.keys()
    for k in whole:  # a sharded run in a run folder, stopped after step 3 and resumed: bit-identical
        assert torch.equal(whole[k], resumed[k]), k
    assert (tmp_path / "runs" / "cut" / "best" / "prompt.safetensors").is_file()
    for family in ("gpt2", "bert"):
        assert not a[f"{family}.sharded"] and b[f"{family}.sharded"]  # one process whole, two processes sharded
        torch.testing.assert_close(a[f"{family}.scores"], b[f"{family}.scores"], rtol=1e-4, atol=1e-5)
        for k in [k for k in a if k.startswith(family) and ".initial." not in k and k.count(".") > 1]:
            # gathers and all-reduces sum in another order; Adam magnifies that noise in near-zero
            # gradients, so compare against the size of the update
            moved = float((a[k] - a[k.replace(family, family + ".initial", 1)]).abs().max())
            assert moved > 0 and float((a[k] - b[k]).abs().max()) <= 1e-2 * moved, k


@pytest.mark.slow  # a one-process demo and a two-process torchrun launch of it
def test_demo_under_torchrun_writes_what_one_process_writes(mini_world, tmp_path):
    """``ptune demo`` launched by torchrun (2 processes, gloo) splits its probes over them and
    writes the one-process run's results: the same numbers, byte for byte (seconds aside)."""
    import json

    from ptune.cli import main

    args = ["demo", "--world", str(mini_world), "--methods", "majority,manual,ptuning", "--epochs", "2",
            "--patience", "2"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the launched processes (OMP_NUM_THREADS=1): the same float sums
    try:
        assert main([*args, "--output", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "ptune.cli", *args, "--output", str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=_env(), timeout=600, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("Claims:") == 1 and proc.stderr.count("demo: the world in") == 1  # rank 0 alone says it

    def results(root: Path) -> dict:
        out = {}
        for which in ("gpt", "bert"):
            res = json.loads((root / which / "results.json").read_text())
            for entry in res["relations"].values():
                entry.pop("seconds")
            out[which] = res
        summary = json.loads((root / "summary.json").read_text())
        out["rows"], out["checks"] = summary["rows"], [w["checks"] for w in summary["worlds"]]
        return out

    one, two = results(tmp_path / "one"), results(tmp_path / "two")
    assert one["gpt"]["relations"] and one == two
