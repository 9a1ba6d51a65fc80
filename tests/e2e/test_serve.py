"""ptune serve: the real server (uvicorn on a loopback port) spoken to over HTTP with httpx.
Answers equal ``ptune predict``'s and the library's; bad requests get one-line 4xx answers;
overload answers 503; checkpoints added to the folder are served without a restart."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import pair
from ptune import EncoderConfig, PromptConfig, PTunedModel, save_checkpoint
from ptune.cli import main
from ptune.serve import ServeConfig, Service, running
from ptune.worker import WorkerProcess

SENT = {"pos": "great", "neg": "terrible"}
PROMPTS = {  # eight prompts of one base: templates, encoders, answer kinds and fields differ
    "p-lstm": PromptConfig(template="[P*3] {text} [P*2] [MASK]", verbalizer=SENT),
    "p-left": PromptConfig(template="{text} Answer: [P*2] [MASK]", verbalizer=SENT, padding_side="left",
                           encoder=EncoderConfig(type="mlp")),
    "p-words": PromptConfig(template="[P*2] {text} [MASK]", verbalizer={"pos": ["great", "wonderful"], "neg": "awful"},
                            encoder=EncoderConfig(type="none")),
    "manual": PromptConfig(template="{text} is it good ? [MASK]", verbalizer={"pos": "yes", "neg": "no"}),
    "multi": PromptConfig(template="Question : {text} [P] [MASK] .", length_norm="mean",
                          verbalizer={"pos": "wonderful dialogue", "neg": "awful plot"}),
    "pair": PromptConfig(template="{premise} [P] {hypothesis} [MASK]",
                         verbalizer={"entailment": "yes", "not_entailment": "no"}),
    "choices": PromptConfig(template="{text} [P*2] Answer: [MASK] .", candidates_field="choices"),
    "three": PromptConfig(template="[P*4] {text} [MASK]", verbalizer={"a": "the", "b": "cat", "c": "dog"}),
}
TEXTS = ["the movie was great .", "boring plot and awful dialogue , bad film .", "the cat sat on the mat",
         "a wonderful story with brilliant acting and good music .", "Paris is the capital of France"]


def _input(name: str, i: int) -> dict:
    text = TEXTS[i % len(TEXTS)]
    if name == "pair":
        return {"premise": text, "hypothesis": TEXTS[(i + 2) % len(TEXTS)]}
    if name == "choices":
        return {"text": text, "choices": ["great", "the film was terrible", "music"][: 1 + i % 3]}
    return {"text": text}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A saved tiny GPT-2 base, a folder with the eight prompts' checkpoints, and a prompt of
    another base."""
    root = tmp_path_factory.mktemp("serve")
    lm, tok = pair("gpt2", hidden=64, init_range=0.2, dropout=0.0)
    lm.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    for seed, (name, cfg) in enumerate(PROMPTS.items()):
        save_checkpoint(PTunedModel(lm, tok, cfg, base_model=str(root / "base"), seed=seed), root / "prompts" / name)
    other, _ = pair("gpt2", seed=5, hidden=64, init_range=0.2, dropout=0.0)
    save_checkpoint(PTunedModel(other, tok, PROMPTS["p-lstm"], seed=0), root / "other-base")
    return root


@pytest.fixture(scope="module")
def server(world):
    service = Service.start(str(world / "base"), str(world / "prompts"),
                            ServeConfig(max_batch=32, batch_window_ms=20, rescan_s=0))
    with running(service) as url:
        yield service, url
    service.close()


def _predict_cli(checkpoint: Path, inputs: list[dict], tmp: Path, capsys) -> list[dict]:
    data = tmp / f"{checkpoint.name}.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in inputs))
    assert main(["predict", "--checkpoint", str(checkpoint), "--data", str(data)]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.fixture(scope="module")
def process_server(world):
    """The service in a worker process of its own, as ``ptune serve`` runs it."""
    service = WorkerProcess.start(str(world / "base"), str(world / "prompts"),
                                  ServeConfig(max_batch=32, batch_window_ms=20, rescan_s=0))
    try:
        with running(service) as url:
            yield service, url
    finally:
        service.close()


@pytest.mark.parametrize("where", ["thread", "process"])
def test_200_concurrent_requests_over_8_prompts_equal_ptune_predict(where, request, world, tmp_path, capsys):
    service, url = request.getfixturevalue("server" if where == "thread" else "process_server")
    names = list(PROMPTS)
    requests = [(names[i % 8], [_input(names[i % 8], i)] + ([_input(names[i % 8], i + 1)] if i % 5 == 0 else []))
                for i in range(200)]

    async def send_all():
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=200)) as client:
            return await asyncio.gather(*(client.post("/v1/predict", json={"prompt": n, "inputs": xs})
                                          for n, xs in requests))

    before = service.health()
    answers = asyncio.run(send_all())
    assert [a.status_code for a in answers] == [200] * 200, answers[0].text
    want = {n: iter(_predict_cli(world / "prompts" / n, [x for m, xs in requests if m == n for x in xs],
                                 tmp_path, capsys)) for n in names}
    for (name, xs), answer in zip(requests, answers):
        body = answer.json()
        assert body["prompt"] == name and len(body["predictions"]) == len(xs)
        for got in body["predictions"]:
            ref = next(want[name])
            assert got["label"] == ref["label"] and got.get("index") == ref.get("index")
            a = got["scores"].values() if isinstance(got["scores"], dict) else got["scores"]
            b = ref["scores"].values() if isinstance(ref["scores"], dict) else ref["scores"]
            assert max(abs(x - y) for x, y in zip(a, b)) <= 2e-6  # both rounded to 6 decimals
    assert all(next(it, None) is None for it in want.values())  # none lost, none extra
    after = service.health()
    assert after["batches"] - before["batches"] < 100 and after["max_prompts"] >= 4  # shared passes across prompts


def test_the_worker_process_answers_errors_and_the_prompt_list_as_in_process(server, process_server):
    bodies = [{"prompt": "manual", "inputs": [{"text": "fine"}, {"txt": "x"}]},  # 422 from the worker
              {"prompt": "nope", "inputs": [{"text": "x"}]},  # 404
              {"prompt": "three", "inputs": [{"text": t} for t in TEXTS]}]
    for body in bodies:
        a, b = (httpx.post(url + "/v1/predict", json=body, timeout=30) for _, url in (server, process_server))
        assert (a.status_code, a.json()) == (b.status_code, b.json())
    a, b = (httpx.get(url + "/v1/prompts", timeout=30).json() for _, url in (server, process_server))
    assert a == b and len(a["prompts"]) == len(PROMPTS)
    health = httpx.get(process_server[1] + "/health", timeout=30).json()
    assert health["status"] == "ok" and health["prompts"] == len(PROMPTS) and health["waiting"] == 0


def test_answers_that_come_after_the_timeout_do_not_break_the_worker_process(world):
    service = WorkerProcess.start(str(world / "base"), str(world / "prompts"), ServeConfig(rescan_s=0, timeout_s=1e-4))
    try:
        with running(service) as url:
            body = {"prompt": "manual", "inputs": [{"text": "fine"}]}
            codes = [httpx.post(url + "/v1/predict", json=body, timeout=30).status_code for _ in range(5)]
            assert set(codes) <= {200, 503} and 503 in codes
            for _ in range(200):  # the late answers arrive and are dropped
                if service.health()["waiting"] == 0:
                    break
                time.sleep(0.02)
            assert service.health()["waiting"] == 0 and service._reader.is_alive()
    finally:
        service.close()


def test_a_worker_process_that_dies_fails_requests_with_503_not_a_hang(world):
    service = WorkerProcess.start(str(world / "base"), str(world / "prompts"), ServeConfig(rescan_s=0))
    try:
        with running(service) as url:
            body = {"prompt": "manual", "inputs": [{"text": "fine"}]}
            assert httpx.post(url + "/v1/predict", json=body, timeout=30).status_code == 200
            service.process.kill()
            service.process.join(10)
            for _ in range(200):  # the reader notices the closed pipe
                r = httpx.post(url + "/v1/predict", json=body, timeout=30)
                if r.status_code == 503:
                    break
                time.sleep(0.02)
            assert r.status_code == 503 and "the model worker stopped" in r.json()["error"]
            assert r.headers["retry-after"] == "1"
    finally:
        service.close()


@pytest.mark.parametrize("body,status,message", [
    (b'{"prompt": "manual", "inputs": [', 400, "malformed JSON"),
    (b'\xff\xfe', 400, "malformed JSON"),
    (b"[" * 100000 + b"]" * 100000, 400, "malformed JSON"),
    (b'[1, 2]', 400, "the body must be a JSON object"),
    (b'{"inputs": [{"text": "x"}]}', 400, "missing field 'prompt'"),
    (b'{"prompt": "manual"}', 400, "missing field 'inputs'"),
    (b'{"prompt": "manual", "inputs": [], "x": 1}', 400, "unknown field 'x'"),
    (b'{"prompt": 3, "inputs": [{"text": "x"}]}', 400, "field 'prompt'"),
    (b'{"prompt": "manual", "inputs": "x"}', 400, "field 'inputs'"),
    (b'{"prompt": "manual", "inputs": [3]}', 400, "inputs[0]: expected an object"),
    (b'{"prompt": "nope", "inputs": [{"text": "x"}]}', 404, "unknown prompt 'nope'"),
    (b'{"prompt": "manual", "inputs": [{"txt": "x"}]}', 422, "inputs[0]"),
    (b'{"prompt": "choices", "inputs": [{"text": "x", "choices": []}]}', 422, "choices"),
    (json.dumps({"prompt": "manual", "inputs": [{"text": "x"}] * 65}).encode(), 413, "65 inputs exceed"),
    (json.dumps({"prompt": "manual", "inputs": [{"text": "x" * 4001}]}).encode(), 413,
     "inputs[0]: 4005 characters exceed"),
    (b'{"prompt": "manual", "inputs": [{"text": "' + b"x" * 3_000_000 + b'"}]}', 413, "request body"),
])
def test_bad_predict_requests_get_one_line_4xx(server, body, status, message):
    _, url = server
    r = httpx.post(url + "/v1/predict", content=body, timeout=30)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error and "\n" not in error
    assert httpx.get(url + "/health", timeout=10).json()["status"] == "ok"


def test_a_bad_request_fails_alone_in_a_batch_of_its_prompt(server):
    """Requests of one prompt are tokenized together; one with a bad input gets its 422 and
    the others of the same batch their answers, equal to each asked alone."""
    service, url = server
    from ptune.batcher import Job

    good = [Job(("predict", "manual", [{"text": t}]), 1) for t in TEXTS[:3]]
    bad = Job(("predict", "manual", [{"text": "fine"}, {"txt": "x"}]), 2)
    service.batcher.submit(("prompts",)).result(timeout=30)  # the worker is idle: run the batch here
    service._run([good[0], bad, *good[1:]])
    with pytest.raises(Exception, match=r"inputs\[1\]") as e:
        bad.future.result(timeout=0)
    assert e.value.status == 422
    for job, text in zip(good, TEXTS):
        alone = httpx.post(url + "/v1/predict", json={"prompt": "manual", "inputs": [{"text": text}]}, timeout=30)
        assert job.future.result(timeout=0) == alone.json()


@pytest.mark.parametrize("extra,status,message", [
    ({"max_new_tokens": 1000}, 413, "max_new_tokens 1000 exceeds"),
    ({"temperature": 0.5}, 400, "temperature: applies to sampling only"),
    ({"max_new_tokens": "many"}, 400, "max_new_tokens"),
    ({"stop": [1]}, 400, "stop"),
])
def test_bad_generate_requests(server, extra, status, message):
    _, url = server
    r = httpx.post(url + "/v1/generate", json={"prompt": "p-lstm", "inputs": [{"text": "x"}], **extra}, timeout=30)
    assert r.status_code == status and message in r.json()["error"]


def test_generate_equals_the_library(server, world):
    service, url = server
    inputs = [{"text": t} for t in TEXTS[:3]]

    async def send():
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/generate", json={
                "prompt": "p-lstm", "inputs": [x], "max_new_tokens": 4, "stop": ["."]}) for x in inputs))

    answers = asyncio.run(send())
    model = service.bank["p-lstm"]
    want = model.generate_text(inputs, max_new_tokens=4, stop=(".",))
    assert [a.json()["outputs"][0]["text"] for a in answers] == [w["text"] for w in want]
    assert [a.json()["outputs"][0]["finish_reason"] for a in answers] == [w["finish_reason"] for w in want]


def test_generate_requests_of_several_prompts_share_calls_and_equal_each_prompt_alone(server):
    service, url = server
    names = ["p-lstm", "p-left", "manual", "three"]
    requests = [(names[i % 4], {"text": TEXTS[i % len(TEXTS)]}) for i in range(12)]

    async def send():
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/generate", json={
                "prompt": n, "inputs": [x], "max_new_tokens": 5}) for n, x in requests))

    before = service.health()
    answers = asyncio.run(send())
    after = service.health()
    assert [a.status_code for a in answers] == [200] * 12
    for name in names:
        mine = [x for n, x in requests if n == name]
        want = service.bank[name].generate_text(mine, max_new_tokens=5)
        got = [a.json()["outputs"][0] for (n, _), a in zip(requests, answers) if n == name]
        assert [g["text"] for g in got] == [w["text"] for w in want], name
    assert after["generate_rows"] - before["generate_rows"] == 12
    assert after["generate_batches"] - before["generate_batches"] < 12 and after["max_generate_prompts"] >= 2


def test_prompts_and_health(server):
    _, url = server
    listed = httpx.get(url + "/v1/prompts", timeout=10).json()
    assert [p["name"] for p in listed["prompts"]] == sorted(PROMPTS) and listed["kind"] == "causal"
    pair_prompt = next(p for p in listed["prompts"] if p["name"] == "pair")
    assert pair_prompt["fields"] == ["premise", "hypothesis"] and pair_prompt["labels"] == ["entailment",
                                                                                             "not_entailment"]
    health = httpx.get(url + "/health", timeout=10).json()
    assert health["status"] == "ok" and health["prompts"] == 8


def test_overload_answers_503_with_retry_after(world):
    service = Service.start(str(world / "base"), str(world / "prompts"),
                            ServeConfig(max_batch=1, max_queue=2, rescan_s=0))
    gate, entered = threading.Event(), threading.Event()
    run = service.batcher.run
    service.batcher.run = lambda jobs: (entered.set(), gate.wait(30), run(jobs))  # the worker holds the first request
    body = {"prompt": "manual", "inputs": [{"text": "fine"}]}

    async def flood(url):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            first = asyncio.ensure_future(client.post("/v1/predict", json=body))
            while not entered.is_set():
                await asyncio.sleep(0.01)
            rest = [asyncio.ensure_future(client.post("/v1/predict", json=body)) for _ in range(6)]
            while sum(f.done() for f in rest) < 4:  # two wait in the queue, four are turned away
                await asyncio.sleep(0.01)
            gate.set()
            return await asyncio.gather(first, *rest)

    try:
        with running(service) as url:
            answers = asyncio.run(flood(url))
    finally:
        gate.set()
        service.close()
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 3 + [503] * 4
    busy = next(a for a in answers if a.status_code == 503)
    assert busy.headers["retry-after"] == "1" and "overloaded" in busy.json()["error"]


def test_checkpoints_added_to_the_folder_are_served_without_restart(world, tmp_path):
    folder = tmp_path / "prompts"
    shutil.copytree(world / "prompts" / "manual", folder / "manual")
    service = Service.start(str(world / "base"), str(folder), ServeConfig(rescan_s=0))
    try:
        with running(service) as url:
            body = {"prompt": "three", "inputs": [{"text": "the cat"}]}
            assert httpx.post(url + "/v1/predict", json=body, timeout=30).status_code == 404
            shutil.copytree(world / "prompts" / "three", folder / "three")
            service.registry._last = float("-inf")  # no wait for the refresh interval
            r = httpx.post(url + "/v1/predict", json=body, timeout=30)
            assert r.status_code == 200 and r.json()["predictions"][0]["label"] in ("a", "b", "c")
            shutil.copytree(world / "other-base", folder / "stranger")
            listed = httpx.get(url + "/v1/prompts", timeout=10).json()
            assert [p["name"] for p in listed["prompts"]] == ["manual", "three"]
            assert "another base model" in listed["refused"][0]["reason"]
            r = httpx.post(url + "/v1/predict", json={"prompt": "stranger", "inputs": [{"text": "x"}]}, timeout=30)
            assert r.status_code == 404 and "another base model" in r.json()["error"]
            shutil.rmtree(folder / "manual")
            shutil.rmtree(folder / "three")  # written again: another prompt under the same name
            shutil.copytree(world / "prompts" / "p-lstm", folder / "three")
            listed = httpx.get(url + "/v1/prompts", timeout=10).json()
            assert [(p["name"], p["template"]) for p in listed["prompts"]] == [("three", PROMPTS["p-lstm"].template)]
            r = httpx.post(url + "/v1/predict", json=body, timeout=30)
            assert r.json()["predictions"][0]["label"] in ("pos", "neg")
    finally:
        service.close()


def test_the_serve_command(world, capsys, monkeypatch):
    """``ptune serve`` (in-process, on a thread): it says where it listens, answers, and stops."""
    import uvicorn

    servers = []
    init = uvicorn.Server.__init__
    monkeypatch.setattr(uvicorn.Server, "__init__", lambda self, config: (servers.append(self), init(self, config))[1])
    codes = []
    args = ["serve", "--base", str(world / "base"), "--prompts", f"sent={world / 'prompts' / 'manual'}", "--port", "0"]
    thread = threading.Thread(target=lambda: codes.append(main(args)))
    thread.start()
    try:
        err = ""
        for _ in range(3000):
            err += capsys.readouterr().err
            if "ptune serve: " in err and "\n" in err.split("ptune serve: ", 1)[1] or not thread.is_alive():
                break
            time.sleep(0.01)
        line = next(x for x in err.splitlines() if x.startswith("ptune serve: "))
        assert line.startswith("ptune serve: 1 prompt(s) (sent)"), line
        url = line.rsplit(" at ", 1)[1].strip()
        r = httpx.post(url + "/v1/predict", json={"prompt": "sent", "inputs": [{"text": "fine"}]}, timeout=30)
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] in ("pos", "neg")
    finally:
        for server in servers:
            server.should_exit = True
        thread.join(30)
    assert codes == [0]
    assert main(["serve", "--base", str(world / "base"), "--prompts", str(world / "nowhere")]) == 2
    assert "--prompts: " in capsys.readouterr().err


def test_the_folder_is_rescanned_periodically(world, tmp_path):
    folder = tmp_path / "prompts"
    folder.mkdir()
    service = Service.start(str(world / "base"), str(folder), ServeConfig(rescan_s=0.2))
    try:
        with running(service) as url:
            assert httpx.get(url + "/health", timeout=10).json()["prompts"] == 0
            shutil.copytree(world / "prompts" / "manual", folder / "manual")
            for _ in range(100):  # /health does not look at the folder itself
                if httpx.get(url + "/health", timeout=10).json()["prompts"] == 1:
                    break
                time.sleep(0.05)
            assert httpx.get(url + "/health", timeout=10).json()["prompts"] == 1
    finally:
        service.close()
