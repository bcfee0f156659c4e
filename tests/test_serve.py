"""`zoetrope serve`: the studio's queue, its HTTP routes and bad input, the CLI entry point.

The real-browser test is tests/test_serve_browser.py. Everything here runs a tiny random pipeline
(tests/test_pipeline.py) behind a server on a free port of 127.0.0.1.
"""

import http.client
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_pipeline import PROMPT, tiny_pipeline  # noqa: E402

from zoetrope.cli import main  # noqa: E402
from zoetrope.serve import Studio, StudioServer  # noqa: E402


class Recorder:
    """Wraps a pipeline: records every DiT step as (prompt, step, total), and can hold a job at
    its first step until `release` is set, so tests can look at the queue while it runs."""

    def __init__(self, pipe, delay: float = 0.0, hold: bool = False):
        self.pipe, self.delay, self.steps = pipe, delay, []
        self.running, self.release = threading.Event(), threading.Event()
        if not hold:
            self.release.set()

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, prompt, callback, **kwargs):
        def record(info):
            self.steps.append((prompt, info.step, info.total))
            self.running.set()
            self.release.wait(30)
            time.sleep(self.delay)
            callback(info)
        return self.pipe(prompt, callback=record, **kwargs)


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def start(pipe, out: Path):
    """A studio writing to `out` and its server on a free port, serving on a thread."""
    studio = Studio(pipe, out)
    server = StudioServer(studio, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return studio, server


@pytest.fixture
def served(pipe, tmp_path):
    studio, server = start(pipe, tmp_path / "out")
    yield studio, server
    server.shutdown()
    server.server_close()
    studio.close(timeout=10)


def call(server, method: str, path: str, body=None, headers=None, raw: bytes | None = None):
    """One HTTP request; returns (status, parsed JSON or raw bytes)."""
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    connection.request(method, path, data,
                       {"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    if response.getheader("Content-Type") == "application/json":
        return response.status, json.loads(payload)
    return response.status, payload


def wait(server, job_id: str, seen: list | None = None, timeout: float = 60) -> dict:
    """Poll a job until it leaves the queue and the worker; every view goes into `seen`."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status, job = call(server, "GET", f"/api/jobs/{job_id}")
        assert status == 200
        if seen is not None:
            seen.append(job)
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s")


def watch(server, ids: list[str], timeout: float = 60) -> dict[str, list[dict]]:
    """Poll several jobs in turn until all have finished; returns every view of each."""
    seen = {job_id: [] for job_id in ids}
    end = time.monotonic() + timeout
    while any(v == [] or v[-1]["state"] in ("queued", "running") for v in seen.values()):
        assert time.monotonic() < end, f"jobs still running after {timeout} s"
        for job_id in ids:
            seen[job_id].append(call(server, "GET", f"/api/jobs/{job_id}")[1])
        time.sleep(0.01)
    return seen


def test_generates_a_clip_with_a_verdict(served):
    studio, server = served
    status, job = call(server, "POST", "/api/jobs", {"prompt": PROMPT, "seed": 1, "steps": 2})
    assert status == 202 and job["state"] == "queued"
    job = wait(server, job["id"])
    assert job["state"] == "done" and job["frames"] == 9 and job["step"] == job["total"] > 0
    assert job["verdict"]["prompt"] == PROMPT and job["verdict"]["size"] == [9, 16, 16]
    status, clip = call(server, "GET", f"/files/{job['files']['webm']}")
    assert status == 200 and clip[:4] == b"\x1a\x45\xdf\xa3"  # the EBML magic of WebM
    status, part = call(server, "GET", f"/files/{job['files']['webm']}",
                        headers={"Range": "bytes=0-9"})
    assert status == 206 and part == clip[:10]
    assert sorted(p.name for p in studio.out.iterdir()) == sorted(job["files"].values())


def test_the_models_own_guidance_leaves_it_its_motion_scale(pipe, tmp_path):
    asked = []

    class Spy(Recorder):
        def __call__(self, prompt, callback, **kwargs):
            asked.append(kwargs["guidance_scale"])
            return super().__call__(prompt, callback, **kwargs)

    studio, server = start(Spy(pipe), tmp_path / "out")
    for guidance in (3.0, 2.0):  # the tiny model's own scale, then another
        body = {"prompt": PROMPT, "steps": 2, "num_frames": 17, "guidance": guidance}
        assert wait(server, call(server, "POST", "/api/jobs", body)[1]["id"])["state"] == "done"
    server.shutdown()
    server.server_close()
    studio.close(timeout=10)
    assert asked == [None, 2.0]


def test_a_prompt_the_critic_cannot_read_gets_a_note(served):
    _, server = served
    status, job = call(server, "POST", "/api/jobs", {"prompt": "the sea", "steps": 1})
    job = wait(server, job["id"])
    assert job["state"] == "done" and job["verdict"] is None
    assert job["critic_note"].startswith("no verdict: cannot parse prompt")


@pytest.mark.parametrize("body, message", [
    ({"prompt": "   "}, "the prompt is empty"),
    ({"prompt": PROMPT, "height": 17}, "impossible size 9 frames of 17x16"),
    ({"prompt": PROMPT, "num_frames": 4}, "impossible size 4 frames"),
    ({"prompt": PROMPT, "width": 10**6}, "9 frames of 16x1000000 is too large"),
    ({"prompt": PROMPT, "steps": 0}, "steps must be between 1 and 500"),
    ({"prompt": PROMPT, "steps": 2.5}, "steps must be a whole number"),
    ({"prompt": PROMPT, "guidance": "lots"}, "guidance must be a number"),
    ({"prompt": PROMPT, "path": "/etc/passwd"}, "unknown setting 'path'"),
    (["a list"], "a request is a JSON object"),
])
def test_bad_requests_get_one_line_and_the_server_keeps_serving(served, body, message):
    studio, server = served
    status, answer = call(server, "POST", "/api/jobs", body)
    assert status == 400 and answer["error"].startswith(message), answer
    assert "\n" not in answer["error"] and studio.jobs() == []
    assert call(server, "GET", "/api/model")[0] == 200


def test_bad_bodies_and_paths_are_refused(served, tmp_path):
    studio, server = served
    (studio.out / "0123456789ab.webm").write_bytes(b"not the server's")  # a name it did not write
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    refused = [
        call(server, "POST", "/api/jobs", raw=b"{" * 20, headers={}),  # not JSON
        call(server, "POST", "/api/jobs", raw=b"x" * 20000),  # oversized (an upload, say)
        call(server, "POST", "/api/jobs", raw=b"{}", headers={"Content-Type": "video/mp4"}),
        call(server, "POST", "/api/upload", {"prompt": PROMPT}),
        call(server, "GET", "/files/0123456789ab.webm"),
        call(server, "GET", "/files/../secret.txt"),
        call(server, "GET", f"/files/{secret}"),
        call(server, "GET", "/static/../app.py"),
        call(server, "GET", "/api/jobs/../../model"),
        call(server, "DELETE", "/api/jobs/0123456789ab"),
    ]
    statuses = [status for status, _ in refused]
    assert statuses == [400, 413, 415, 404, 404, 404, 404, 404, 404, 404]
    assert all(isinstance(answer, dict) and answer["error"] for _, answer in refused)
    assert refused[1][1]["error"].startswith("the request is 20000 bytes; at most 16384")
    status, page = call(server, "GET", "/")
    assert status == 200 and b"zoetrope studio" in page
    assert sorted(p.name for p in studio.out.iterdir()) == ["0123456789ab.webm"]


def test_two_concurrent_requests_finish_in_order_with_their_progress(pipe, tmp_path):
    recorder = Recorder(pipe, delay=0.2)  # slow enough to see the second job wait
    studio, server = start(recorder, tmp_path / "out")
    barrier, ids = threading.Barrier(2), []

    def post(prompt):
        barrier.wait()
        ids.append(call(server, "POST", "/api/jobs", {"prompt": prompt, "steps": 3})[1]["id"])

    posts = [threading.Thread(target=post, args=(p,)) for p in (PROMPT, "a blue square moving up")]
    for thread in posts:
        thread.start()
    for thread in posts:
        thread.join()
    order = [job["id"] for job in reversed(studio.jobs())]  # submission order
    seen = watch(server, order)
    views = {job_id: seen[job_id][-1] for job_id in order}
    server.shutdown()
    server.server_close()
    studio.close(timeout=10)
    prompts = [views[job_id]["request"]["prompt"] for job_id in order]
    total = views[order[0]]["total"]
    assert sorted(ids) == sorted(order) and total > 0
    assert recorder.steps == [(p, step, total) for p in prompts for step in range(1, total + 1)]
    for job_id in order:
        assert views[job_id]["state"] == "done" and views[job_id]["step"] == total
        steps = [v["step"] for v in seen[job_id]]
        assert steps == sorted(steps)  # progress never goes back
    # the second waited at position 1 while the first ran
    assert seen[order[1]][0]["state"] == "queued" and seen[order[1]][0]["position"] == 1
    assert any(v["state"] == "running" and 0 < v["step"] < total for v in seen[order[0]])


def test_cancel_frees_the_place_and_stops_a_running_job(pipe, tmp_path):
    recorder = Recorder(pipe, hold=True)  # the first job waits at its first step
    studio, server = start(recorder, tmp_path / "out")
    first, second, third = (call(server, "POST", "/api/jobs", {"prompt": p, "steps": 2})[1]["id"]
                            for p in (PROMPT, "a blue square moving up", "a pink star moving down"))
    assert recorder.running.wait(30)
    assert call(server, "GET", f"/api/jobs/{third}")[1]["position"] == 2
    assert call(server, "DELETE", f"/api/jobs/{second}")[1]["state"] == "cancelled"
    assert call(server, "GET", f"/api/jobs/{third}")[1]["position"] == 1
    assert call(server, "DELETE", f"/api/jobs/{first}")[0] == 200
    recorder.release.set()
    assert wait(server, first)["state"] == "cancelled"
    assert wait(server, third)["state"] == "done"
    server.shutdown()
    server.server_close()
    studio.close(timeout=10)
    assert [p for p, step, _ in recorder.steps if step == 1] == [PROMPT, "a pink star moving down"]
    assert sorted(p.name for p in studio.out.iterdir()) == [f"{third}.mp4", f"{third}.webm"]


def test_cli_serve(tmp_path, capsys):
    """The console script serves the page and prints its URL; a bad --model is one line."""
    assert main(["serve", "--model", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.startswith("zoetrope serve: error: no pipeline.json")
    (tmp_path / "file").touch()
    assert main(["serve", "--out", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err.startswith("zoetrope serve: error: --out")
    tiny_pipeline().save_pretrained(tmp_path / "model")
    command = [str(Path(sys.executable).parent / "zoetrope"), "serve", "--model",
               str(tmp_path / "model"), "--port", "0", "--out", str(tmp_path / "out")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("zoetrope studio on http://127.0.0.1:"), line
        url = line.split()[3]
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("GET", "/api/model")
        assert json.loads(connection.getresponse().read())["num_frames"] == 9
    finally:
        process.terminate()
        process.wait(30)
