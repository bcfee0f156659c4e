"""The studio behind `zoetrope serve`: a queue of generation jobs run one at a time.

No HTTP here (that is `zoetrope.serve.app`): `Studio` checks a request, queues it, runs the queue
on one worker thread, writes each result into its output folder and judges it with the critic.

- One generation at a time: the pipeline is not shared between threads. Queued jobs know their
  position (1 = next); a cancelled job leaves the queue at once, a running one stops at its next
  DiT step (the sampler's per-step callback raises `Cancelled`).
- Files: the server names every file it writes (`<job id>.webm`, `.mp4`), all inside `out`. No
  value from a request becomes a path; `file(name)` serves only names this studio wrote.
- A request is a JSON object of known fields; anything else, an empty prompt, a size the models
  cannot take, or a size over MAX_PIXELS is a `UserError` with one line to show in the page.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..diffusion import StepInfo
from ..errors import UserError

# Bounds on one request, so one request cannot exhaust the machine: 129 frames of 512x512 is
# beyond any model here and a few GiB of activations for a large one.
MAX_PIXELS = 129 * 512 * 512
MAX_STEPS = 500
MAX_GUIDANCE = 50.0
MAX_PROMPT = 500  # characters
MAX_QUEUE = 32  # waiting jobs; more is a UserError ("the queue is full")
FIELDS = ("prompt", "num_frames", "height", "width", "steps", "guidance", "seed")


class Cancelled(Exception):
    """Raised from the sampler's callback to stop a job its user cancelled."""


@dataclass(frozen=True)
class Request:
    """One checked generation request."""

    prompt: str
    num_frames: int
    height: int
    width: int
    steps: int
    guidance: float
    seed: int


@dataclass
class Job:
    """A request and what became of it; `state` is queued, running, done, failed or cancelled."""

    id: str
    request: Request
    state: str = "queued"
    step: int = 0  # DiT steps done
    total: int = 0  # DiT steps in all (known once the job runs)
    error: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # format ("webm", "mp4") -> file name
    frames: int = 0  # frames in the written clip
    verdict: dict | None = None  # Critique.to_dict()
    critic_note: str | None = None  # why there is no verdict (a prompt the critic cannot read)
    seconds: float = 0.0
    cancel: bool = False

    def to_dict(self, position: int = 0) -> dict:
        """JSON-ready view for the page; `position` is the place in the queue (0: not waiting)."""
        keys = ("id", "state", "step", "total", "error", "files", "frames", "verdict",
                "critic_note", "seconds")
        return {**{k: getattr(self, k) for k in keys}, "position": position,
                "request": vars(self.request)}


class Studio:
    """Checks, queues and runs generation requests on one worker thread; see the module docs."""

    def __init__(self, pipe, out: str | Path, fps: float | None = None) -> None:
        self.pipe = pipe
        self.out = Path(out).resolve()
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out {str(out)!r} is a file; give a folder for the clips")
        self.out.mkdir(parents=True, exist_ok=True)
        self.fps = fps or pipe.fps
        self._jobs: dict[str, Job] = {}  # every job since start, in order of submission
        self._queue: deque[Job] = deque()
        self._files: dict[str, Path] = {}  # file name -> path, only files this studio wrote
        self._wake = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="zoetrope-studio", daemon=True)
        self._worker.start()

    # -- what the page asks --------------------------------------------------------------------

    def model_info(self) -> dict:
        """The model's defaults, valid sizes and vocabulary, for the page's controls."""
        frames, height, width = self.pipe.default_size
        config = self.pipe.diffusion
        vocab = getattr(self.pipe.text_encoder.config, "vocab", None) or []
        return {"num_frames": frames, "height": height, "width": width,
                "steps": config.num_inference_steps, "guidance": config.guidance_scale,
                "sizes": [list(s) for s in dict.fromkeys(map(tuple, self.pipe.sizes))],
                "fps": self.fps, "vocabulary": [w for w in vocab if not w.startswith("<")],
                "limits": {"max_pixels": MAX_PIXELS, "max_steps": MAX_STEPS,
                           "max_guidance": MAX_GUIDANCE, "max_prompt": MAX_PROMPT}}

    def submit(self, body: object) -> dict:
        """Check a request (UserError if bad) and queue it; returns the new job's view."""
        request = self.parse(body)
        with self._wake:
            if len(self._queue) >= MAX_QUEUE:
                raise UserError(f"the queue is full ({MAX_QUEUE} waiting); try again later")
            job = Job(secrets.token_hex(6), request)
            self._jobs[job.id] = job
            self._queue.append(job)
            self._wake.notify()
            return job.to_dict(len(self._queue))

    def job(self, job_id: str) -> dict | None:
        """The view of one job, or None for an id this studio never gave out."""
        with self._wake:
            job = self._jobs.get(job_id)
            return None if job is None else job.to_dict(self._position(job))

    def jobs(self) -> list[dict]:
        """Every job since start, newest first (the gallery reads the finished ones)."""
        with self._wake:
            return [j.to_dict(self._position(j)) for j in reversed(self._jobs.values())]

    def cancel(self, job_id: str) -> dict | None:
        """Cancel a queued job (it leaves the queue) or a running one (stops at its next step)."""
        with self._wake:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.state == "queued":
                self._queue.remove(job)
                job.state = "cancelled"
            elif job.state == "running":
                job.cancel = True
            return job.to_dict(self._position(job))

    def file(self, name: str) -> Path | None:
        """The path of a file this studio wrote, by its name; None for any other name."""
        with self._wake:
            return self._files.get(name)

    def close(self, timeout: float | None = None) -> None:
        """Stop the worker after the job it is running (queued jobs are cancelled)."""
        with self._wake:
            self._closed = True
            for job in self._queue:
                job.state = "cancelled"
            self._queue.clear()
            for job in self._jobs.values():
                job.cancel = True
            self._wake.notify()
        self._worker.join(timeout)

    def _position(self, job: Job) -> int:
        return self._queue.index(job) + 1 if job.state == "queued" else 0

    # -- checking a request --------------------------------------------------------------------

    def parse(self, body: object) -> Request:
        """A JSON object from the page -> a checked Request (UserError with one line if bad)."""
        if not isinstance(body, dict):
            raise UserError("a request is a JSON object of settings")
        unknown = sorted(set(body) - set(FIELDS))
        if unknown:
            raise UserError(f"unknown setting {unknown[0]!r}; known: {', '.join(FIELDS)}")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError("the prompt is empty; describe the video to generate")
        if len(prompt) > MAX_PROMPT:
            raise UserError(f"the prompt is {len(prompt)} characters; at most {MAX_PROMPT}")
        info = self.model_info()
        frames, height, width = (_integer(body, k, info[k], 1)
                                 for k in ("num_frames", "height", "width"))
        steps = _integer(body, "steps", info["steps"], 1, MAX_STEPS)
        guidance = _number(body, "guidance", info["guidance"], 0.0, MAX_GUIDANCE)
        seed = _integer(body, "seed", None, 0, 2**63 - 1)
        self._check_size(frames, height, width)
        seed = secrets.randbelow(2**31) if seed is None else seed
        return Request(" ".join(prompt.split()), frames, height, width, steps, guidance, seed)

    def _check_size(self, frames: int, height: int, width: int) -> None:
        """UserError unless the models can make (frames, height, width) within MAX_PIXELS."""
        if frames * height * width > MAX_PIXELS:
            raise UserError(f"{frames} frames of {height}x{width} is too large for this server "
                            f"(at most {MAX_PIXELS} pixels in all)")
        try:
            self.pipe.latent_shape((frames, height, width))
        except ValueError as e:  # VAEShapeError, UserError: each names the nearest valid sizes
            raise UserError(f"impossible size {frames} frames of {height}x{width}: {e}") from None

    # -- the worker ----------------------------------------------------------------------------

    def _run(self) -> None:
        """Worker loop: take the next job, run it, repeat until closed."""
        while True:
            with self._wake:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                job = self._queue.popleft()
                job.state = "running"
            self._run_job(job)

    def _run_job(self, job: Job) -> None:
        """Generate, write and judge one job; any failure ends the job, never the worker."""
        start = time.perf_counter()
        try:
            frames = self._generate(job)
            files = self._write(job, frames)
            verdict, note = _judge(frames, job.request.prompt)
            with self._wake:
                self._files.update({name: self.out / name for name in files.values()})
                job.files, job.frames, job.verdict, job.critic_note = files, len(frames), \
                    verdict, note
                job.state = "done"
        except Cancelled:
            job.state = "cancelled"
        except UserError as e:  # e.g. a disk full while writing: the user's to fix
            job.state, job.error = "failed", str(e).splitlines()[0]
        except Exception as e:  # a bug: keep serving, show it, print the traceback for a report
            traceback.print_exc()
            job.state, job.error = "failed", f"internal error: {type(e).__name__}: {e}"
        job.seconds = round(time.perf_counter() - start, 3)

    def _generate(self, job: Job) -> np.ndarray:
        """Run the pipeline for one job, reporting each DiT step; returns uint8 (T, H, W, 3)."""
        r = job.request

        def progress(info: StepInfo) -> None:
            job.step, job.total = info.step, info.total
            if job.cancel:
                raise Cancelled

        # the model's own scale leaves it its settings: a long clip's later windows take its
        # motion_guidance_scale; any other scale sets every window
        guidance = None if r.guidance == self.pipe.diffusion.guidance_scale else r.guidance
        video = self.pipe(r.prompt, num_frames=r.num_frames, height=r.height, width=r.width,
                          num_inference_steps=r.steps, guidance_scale=guidance, seed=r.seed,
                          progress=False, callback=progress)
        return np.asarray(video.frames[0])

    def _write(self, job: Job, frames: np.ndarray) -> dict[str, str]:
        """Write the clip as WebM (plays in every browser) and MP4; names come from the job id."""
        from ..data.video import write_video

        files = {}
        for ext in ("webm", "mp4"):
            name = f"{job.id}.{ext}"
            write_video(self.out / name, frames, self.fps)  # atomic: complete or absent
            files[ext] = name
        return files


def _judge(frames: np.ndarray, prompt: str) -> tuple[dict | None, str | None]:
    """The critic's verdict as a dict, or None and why (it reads only its worlds' prompts)."""
    from ..critic import critique

    try:
        return critique(frames, prompt).to_dict(), None
    except UserError as e:
        return None, f"no verdict: {str(e).splitlines()[0]}"


def _integer(body: dict, key: str, default: int | None, low: int, high: int | None = None
             ) -> int | None:
    """body[key] as an int in [low, high] (default when absent or null); UserError otherwise."""
    value = body.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UserError(f"{key} must be a whole number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise UserError(f"{key} must be a whole number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise UserError(f"{key} must be a whole number, got {value!r}")
    if number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise UserError(f"{key} must be {bound}, got {value!r}")
    return int(number)


def _number(body: dict, key: str, default: float, low: float, high: float) -> float:
    """body[key] as a finite float in [low, high] (default when absent); UserError otherwise."""
    value = body.get(key)
    if value is None or value == "":
        return float(default)
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or not low <= number <= high:
        raise UserError(f"{key} must be a number between {low:g} and {high:g}, got {value!r}")
    return number
