"""The training loop: loss goes down, exact resume (stop, SIGTERM, SIGKILL), torchrun parity, bad input."""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from zoetrope import checkpoint as ckpt
from zoetrope.cli import main
from zoetrope.config import ConfigError, load_recipe
from zoetrope.train import Interrupted, TrainingError, stage_loop, train

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.toml"


def free_port() -> int:
    """A TCP port nobody listens on now (a fixed one fails while another run still holds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    """A tiny VAE trained for a few steps: the frozen VAE of the DiT runs below."""
    recipe = load_recipe(TINY, ['--train.stages=["vae"]', "--train.vae.steps=3", "--train.vae.batch_size=2"])
    return train(recipe, tmp_path_factory.mktemp("vae"), progress=False) / "vae"


def dit_recipe(vae_dir, *extra):
    return load_recipe(TINY, ['--train.stages=["dit"]', f"--train.dit.vae_path={vae_dir}",
                              "--train.dit.steps=6", "--train.dit.checkpoint_every=2", *extra])


@pytest.fixture(scope="module")
def reference(vae_dir, tmp_path_factory):
    """An uninterrupted 6-step DiT run."""
    out = tmp_path_factory.mktemp("ref")
    train(dit_recipe(vae_dir), out, progress=False)
    return out


def final_weights(run: Path) -> dict:
    return load_file(str(ckpt.latest_checkpoint(run) / "model.safetensors"))


def assert_same_weights(a: Path, b: Path):
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    ea, eb = (load_file(str(ckpt.latest_checkpoint(r) / "ema.safetensors")) for r in (a, b))
    assert all(torch.equal(ea[k], eb[k]) for k in ea)


def test_tiny_dit_loss_goes_down(vae_dir, tmp_path):
    recipe = dit_recipe(vae_dir, "--train.dit.steps=40", "--train.dit.checkpoint_every=40",
                        "--train.dit.lr=2e-3", "--train.dit.batch_size=8")
    final = train(recipe, tmp_path, progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 40
    first, last = sum(losses[:4]) / 4, sum(losses[-8:]) / 8
    assert last < 0.7 * first, (first, last)
    assert {p.name for p in final.iterdir()} == {"dit", "vae", "text_encoder", "pipeline.json"}
    assert (tmp_path / "loss.png").stat().st_size > 0 and (tmp_path / "config.json").is_file()


def test_previews_keep_the_trained_modules_in_train_mode(vae_dir, tmp_path):
    recipe = dit_recipe(vae_dir, "--train.dit.steps=2", "--train.dit.preview_every=1",
                        '--train.dit.preview_prompts=["a red circle moving right"]')
    loop = stage_loop(recipe, "dit", tmp_path, progress=False)
    loop.run()
    assert (tmp_path / "previews" / "step_00000002.gif").stat().st_size > 0
    assert loop.task.module.dit.training


def test_stop_and_resume_is_bit_exact(vae_dir, reference, tmp_path):
    stopper = stage_loop(dit_recipe(vae_dir), "dit", tmp_path, progress=False)
    stopper.should_stop = lambda: stopper.step == 3  # as if SIGINT arrived during step 3
    with pytest.raises(Interrupted):
        stopper.run()
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000003"
    stage_loop(dit_recipe(vae_dir), "dit", tmp_path, progress=False).run()
    assert_same_weights(tmp_path, reference)


def _run_cli_until_checkpoint(vae_dir, out: Path, sig: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "zoetrope.cli", "train", str(TINY), "--out", str(out), "--quiet",
           '--train.stages=["dit"]', f"--train.dit.vae_path={vae_dir}", "--train.dit.steps=6",
           "--train.dit.checkpoint_every=2"]
    proc = subprocess.Popen(cmd, env=cli_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while ckpt.latest_checkpoint(out) is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return proc


@pytest.mark.slow
def test_sigkill_after_checkpoint_then_rerun_is_bit_exact(vae_dir, reference, tmp_path):
    proc = _run_cli_until_checkpoint(vae_dir, tmp_path, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert ckpt.latest_checkpoint(tmp_path) is not None
    args = ["train", str(TINY), "--out", str(tmp_path), "--quiet", '--train.stages=["dit"]',
            f"--train.dit.vae_path={vae_dir}", "--train.dit.steps=6", "--train.dit.checkpoint_every=2"]
    assert main(args) == 0
    assert_same_weights(tmp_path, reference)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(vae_dir, tmp_path):
    proc = _run_cli_until_checkpoint(vae_dir, tmp_path, signal.SIGTERM)
    err = proc.stderr.read()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "rerun the same command to resume" in err and "Traceback" not in err
    stopped = json.loads((ckpt.latest_checkpoint(tmp_path) / "state.json").read_text())["step"]
    assert stopped >= 2


def test_non_finite_loss_stops_with_the_step_and_keeps_checkpoint(vae_dir, tmp_path):
    trainer = stage_loop(dit_recipe(vae_dir), "dit", tmp_path, progress=False)
    real = trainer.micro_loss
    trainer.micro_loss = lambda items: (real(items)[0] * (float("nan") if trainer.step == 3 else 1.0), 1)
    with pytest.raises(TrainingError, match="at step 3.*step_00000002"):
        trainer.run()
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000002"


def test_full_disk_keeps_the_previous_checkpoint(vae_dir, tmp_path, monkeypatch):
    trainer = stage_loop(dit_recipe(vae_dir), "dit", tmp_path, progress=False)
    real_save = ckpt.save_file

    def save_file(tensors, path):
        if "step_00000004" in path and path.endswith("ema.safetensors"):
            raise OSError(28, "No space left on device")
        return real_save(tensors, path)

    monkeypatch.setattr(ckpt, "save_file", save_file)
    with pytest.raises(ckpt.CheckpointError, match="step 4: No space left.*step_00000002 is intact"):
        trainer.run()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000002"]
    assert not any(p.name.startswith(".tmp") for p in ckpt.checkpoint_dir(tmp_path).iterdir())
    ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))  # still readable


@pytest.mark.slow
def test_torchrun_two_processes_match_one(vae_dir, tmp_path):
    args = ["train", str(TINY), "--quiet", '--train.stages=["dit"]', f"--train.dit.vae_path={vae_dir}",
            "--train.dit.steps=3", "--train.dit.checkpoint_every=3", "--train.dit.precision=fp32"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(free_port()), "-m", "zoetrope.cli", *args, "--out", str(tmp_path / "two")]
    result = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]

    def losses(run):
        return [json.loads(x)["loss"] for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    assert len(losses("two")) == 3
    assert losses("two") == pytest.approx(losses("one"), rel=1e-4, abs=1e-5)
    wa, wb = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=1e-4)


def test_bad_recipes_are_one_line_errors(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "r")]) == 2
    assert main(["train", str(TINY), "--out", str(tmp_path / "r"), "--train.stepz=3"]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[train.dit]\nsteps = 'many'\n")
    assert main(["train", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("zoetrope train: error:") for line in err)
    assert "not found" in err[0] and "unknown key 'train.stepz'" in err[1] and "must be int" in err[2]
    assert not (tmp_path / "r").exists()


def test_run_dir_of_another_recipe_is_refused(vae_dir, reference):
    with pytest.raises(ConfigError, match="another recipe.*train.dit.lr"):
        stage_loop(dit_recipe(vae_dir, "--train.dit.lr=0.5"), "dit", reference, progress=False)


def test_settings_added_after_a_run_started_count_as_their_defaults(tmp_path):
    """A config.json written before a setting existed resumes while the recipe leaves it at
    its default, and is refused once the recipe changes it."""
    from types import SimpleNamespace

    from zoetrope.train.loop import check_run_dir

    d = SimpleNamespace(main=True)
    check_run_dir(load_recipe(TINY), tmp_path, d)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["data"]["occluder"], saved["train"]["distill"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    check_run_dir(load_recipe(TINY), tmp_path, d)  # as if the run started before they existed
    assert "occluder" in json.loads((tmp_path / "config.json").read_text())["data"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match="another recipe.*data.occluder"):
        check_run_dir(load_recipe(TINY, ["--data.occluder=true"]), tmp_path, d)


def test_worker_processes_fetch_the_same_samples(vae_dir, reference, tmp_path):
    # Two DataLoader workers decode ahead of the step; what each step trains on is unchanged.
    train(dit_recipe(vae_dir, "--data.num_workers=2"), tmp_path, progress=False)

    def losses(run):
        return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]

    assert len(losses(tmp_path)) == 6 and losses(tmp_path) == losses(reference)
    assert_same_weights(tmp_path, reference)


def test_two_stages_hand_the_vae_over_without_touching_the_config(tmp_path):
    from zoetrope.pipeline import TextToVideoPipeline

    recipe = load_recipe(TINY, ["--train.vae.steps=2", "--train.dit.steps=2"])
    final = train(recipe, tmp_path, progress=False)
    assert {p.name for p in tmp_path.iterdir()} >= {"vae", "dit", "final"}
    saved = json.loads((tmp_path / "dit" / "config.json").read_text())
    assert saved["train"]["dit"]["vae_path"] == "" and saved == json.loads(
        (tmp_path / "vae" / "config.json").read_text())  # one recipe, no stage rewrote it
    pipe = TextToVideoPipeline.from_pretrained(final)  # written by save_pretrained, read back
    assert pipe.sizes == [tuple(s) for s in recipe.data.sizes] and pipe.fps == recipe.data.fps
    vae = load_file(str(tmp_path / "vae" / "final" / "vae" / "model.safetensors"))
    assert all(torch.equal(v, pipe.vae.state_dict()[k]) for k, v in vae.items())
    with pytest.raises(ConfigError, match="vae_path must be empty"):
        train(load_recipe(TINY, ["--train.dit.vae_path=elsewhere"]), tmp_path / "again")


def test_ddpm_loss_takes_the_recipes_vlb_weight(vae_dir, tmp_path):
    ddpm = ["--diffusion.objective=ddpm", "--diffusion.sampler=ddpm", "--dit.learn_sigma=true",
            "--train.dit.precision=fp32"]
    losses = []
    for weight in (0.0, 0.5):  # same seed: same weights and samples; only L_vlb's weight differs
        loop = stage_loop(dit_recipe(vae_dir, *ddpm, f"--diffusion.vlb_weight={weight}"), "dit",
                          tmp_path / str(weight), progress=False)
        items = [(i, loop.dataset.sample(i)) for i in range(4)]
        with torch.no_grad():
            losses.append(loop.micro_loss(items)[0].item())
    assert losses[1] > losses[0] > 0  # L_vlb >= 0 is added, weighted


def test_shapes_demo_trains_in_fp32_on_a_cpu_without_native_bf16(tmp_path, monkeypatch, capsys):
    from zoetrope import hardware
    from zoetrope.train.vae_task import VAETask

    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"sse4_2", "avx2", "fma"}))
    autocast, loss = [], VAETask.loss
    monkeypatch.setattr(VAETask, "loss", lambda self, *a: (autocast.append(
        torch.is_autocast_enabled("cpu")), loss(self, *a))[1])
    recipe = ROOT / "configs" / "shapes-demo.toml"  # its default precision, "auto", on a small run
    args = ["train", str(recipe), "--out", str(tmp_path), "--quiet", '--train.stages=["vae"]',
            "--train.vae.steps=1", "--train.vae.batch_size=1", "--train.vae.sizes=[[1, 64, 64]]"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "precision: fp32 (CPU without native bf16: no avx512_bf16/amx_bf16)" in out
    assert autocast == [False]


@pytest.mark.parametrize("override", ["--train.dit.lr=-1", "--train.dit.batch_size=0",
                                      "--train.dit.steps=0"])
def test_bad_values_fail_before_the_run_directory_is_written(tmp_path, capsys, override):
    out = tmp_path / "run"
    assert main(["train", str(TINY), "--out", str(out), "--quiet", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    setting = override[2:].split("=")[0]
    assert len(err) == 1 and err[0].startswith(f"zoetrope train: error: {setting} must be")
    assert not out.exists()


def test_a_resume_logs_each_step_once(vae_dir, tmp_path):
    crasher = stage_loop(dit_recipe(vae_dir), "dit", tmp_path, progress=False)
    real = crasher.micro_loss

    def crash_in_step_4(items):
        if crasher.step == 3:  # steps 1-3 are logged, the last checkpoint is step 2
            raise RuntimeError("the machine went down")
        return real(items)

    crasher.micro_loss = crash_in_step_4
    with pytest.raises(RuntimeError, match="went down"):
        crasher.run()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "lo')  # and a line the crash cut short
    stage_loop(dit_recipe(vae_dir), "dit", tmp_path, progress=False).run()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4, 5, 6]


def test_init_from_starts_the_dit_at_a_pipelines_weights(vae_dir, reference, tmp_path):
    """train.dit.init_from: step 0 holds the given pipeline's DiT and text encoder (fine-tuning),
    and a pipeline with another DiT is a one-line error before anything is written."""
    from zoetrope.train.dit_task import DiTTask
    from zoetrope.train.distributed import setup_distributed
    from zoetrope.weights import load_state

    src = reference / "final"
    recipe = dit_recipe(vae_dir, f"--train.dit.init_from={src}", "--train.dit.seed=5")
    task = DiTTask.setup(recipe, tmp_path / "a", setup_distributed())
    want = load_state(src / "dit")
    got = task.module.dit.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    fresh = DiTTask.setup(dit_recipe(vae_dir, "--train.dit.seed=5"), tmp_path / "b",
                          setup_distributed())
    assert not torch.equal(fresh.module.dit.state_dict()["final_layer.linear.weight"],
                           want["final_layer.linear.weight"])
    wider = dit_recipe(vae_dir, f"--train.dit.init_from={src}", "--dit.depth=3")
    with pytest.raises(ConfigError, match="init_from.*differs from the recipe.s DiT in depth"):
        DiTTask.setup(wider, tmp_path / "c", setup_distributed())
    with pytest.raises(ConfigError, match="not a pipeline directory"):
        DiTTask.setup(dit_recipe(vae_dir, f"--train.dit.init_from={tmp_path}"), tmp_path / "d",
                      setup_distributed())


def test_a_decoder_trained_alone_keeps_the_encoder_and_its_latents(vae_dir, tmp_path):
    """train.vae.init_from + train_encoder = false: the exported VAE has init_from's encoder and
    latent scaling bit for bit (a DiT trained on its latents still fits) and a new decoder;
    a VAE of another config, or a frozen encoder with nothing to start from, is a one-line error."""
    from zoetrope.train.distributed import setup_distributed
    from zoetrope.train.vae_task import VAETask
    from zoetrope.vae import CausalVAE

    args = ['--train.stages=["vae"]', "--train.vae.steps=2", "--train.vae.batch_size=2",
            f"--train.vae.init_from={vae_dir}", "--train.vae.seed=3"]  # other clips
    out = train(load_recipe(TINY, [*args, "--train.vae.train_encoder=false"]), tmp_path / "a",
                progress=False) / "vae"
    before, after = CausalVAE.from_pretrained(vae_dir), CausalVAE.from_pretrained(out)
    old, new = before.state_dict(), after.state_dict()
    encoder = [k for k in old if k.startswith("encoder.")]
    decoder = [k for k in old if k.startswith("decoder.")]
    assert encoder and all(torch.equal(old[k], new[k]) for k in encoder)
    assert any(not torch.equal(old[k], new[k]) for k in decoder)
    assert (after.config.scaling_mean, after.config.scaling_std) == \
        (before.config.scaling_mean, before.config.scaling_std)
    # the encoder trained too: the latents move, and the scaling is fitted again
    both = CausalVAE.from_pretrained(train(load_recipe(TINY, args), tmp_path / "b",
                                           progress=False) / "vae").state_dict()
    assert any(not torch.equal(old[k], both[k]) for k in encoder)
    with pytest.raises(ConfigError, match="init_from.*differs from the recipe.s \\[vae\\] in "
                                          "latent_channels"):
        VAETask.setup(load_recipe(TINY, [*args, "--vae.latent_channels=8"]), tmp_path / "c",
                      setup_distributed())
    with pytest.raises(ConfigError, match="train_encoder = false needs train.vae.init_from"):
        load_recipe(TINY, ["--train.vae.train_encoder=false"])
