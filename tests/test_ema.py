"""The moving average of the weights (--ema): its update, that it runs inside the (compiled) step, that it
is saved, resumed and loaded, and that every consumer says which weights it used."""

import json

import pytest
import torch
from safetensors.torch import load_file

import fastgen
from fastgen.config import TrainConfig
from fastgen.errors import FastgenError
from fastgen.training.compiled_step import CompiledStep
from fastgen.training.ema import EMA
from fastgen.training.trainers import GANTrainer, VAETrainer
from tests.helpers import run_cli


def test_update_matches_a_hand_computation():
    layer = torch.nn.Linear(3, 2)
    ema = EMA({"layer": layer}, decay=0.9)
    expected = [p.detach().clone().double() for p in layer.parameters()]
    for step in range(30):
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(torch.randn_like(p))
        ema.update()
        decay = min(0.9, (1 + step) / (10 + step))  # the warm-up, then the decay asked for (from the 81st update)
        expected = [decay * e + (1 - decay) * p.detach().double() for e, p in zip(expected, layer.parameters())]
    for shadow, want in zip(ema.shadows, expected):
        torch.testing.assert_close(shadow.double(), want, rtol=1e-6, atol=1e-6)
    assert list(ema.tensors()) == ["ema.layer.weight", "ema.layer.bias", "ema.updates"] and ema.updates.item() == 30


@pytest.mark.parametrize("trainer_class", [GANTrainer, VAETrainer])
def test_each_step_updates_the_average_of_the_sampling_network_only(trainer_class):
    torch.manual_seed(0)
    model = "gan" if trainer_class is GANTrainer else "vae"
    trainer = trainer_class(TrainConfig(model=model, ema=0.5).resolved(), torch.device("cpu"))
    trainer.ema.updates.fill_(100)  # past the warm-up: the decay is 0.5
    network = trainer.generator if model == "gan" else trainer.vae
    assert len(trainer.ema.shadows) == len(list(network.parameters()))  # not the discriminator's
    before = [s.clone() for s in trainer.ema.shadows]
    trainer.step(torch.rand(8, 784) * (2 if model == "gan" else 1) - (1 if model == "gan" else 0))
    for old, new, p in zip(before, trainer.ema.shadows, network.parameters()):
        torch.testing.assert_close(new, 0.5 * old + 0.5 * p.detach())


@pytest.mark.slow
def test_compiled_step_updates_the_average_inside_its_graph():
    torch.manual_seed(0)
    trainer = VAETrainer(TrainConfig(model="vae", ema=0.9).resolved(), torch.device("cpu"))
    expected = [p.detach().clone().double() for p in trainer.vae.parameters()]
    notices = []
    step = CompiledStep(trainer.step, notices.append, cpu=True)
    for t in range(3):
        step(torch.rand(16, 784))
        decay = min(0.9, (1 + t) / (10 + t))
        expected = [decay * e + (1 - decay) * p.detach().double() for e, p in zip(expected, trainer.vae.parameters())]
    assert notices == [] and step.active  # fullgraph: the update is in the compiled graph, no break
    assert trainer.ema.updates.item() == 3
    for shadow, want in zip(trainer.ema.shadows, expected):
        torch.testing.assert_close(shadow.double(), want, rtol=1e-6, atol=1e-6)


def _train(mnist, out, **overrides):
    settings = dict(model="gan", max_steps=6, data_dir=str(mnist), download=False, out=str(out), device="cpu", quiet=True)
    settings["compile"] = False
    return fastgen.train(TrainConfig(**{**settings, **overrides}))


def test_weights_file_holds_both_and_load_says_which_it_gives(mnist, tmp_path):
    _train(mnist, tmp_path / "run")
    tensors = load_file(tmp_path / "run" / "model.safetensors")
    assert any(k.startswith("ema.generator.") for k in tensors) and not any(k.startswith("ema.discriminator") for k in tensors)
    raw, ema = fastgen.load(tmp_path / "run", weights="raw"), fastgen.load(tmp_path / "run", weights="ema")
    assert (raw.weights_used, ema.weights_used) == ("raw", "ema")
    assert fastgen.load(tmp_path / "run").weights_used == fastgen.models.weights.DEFAULT_WEIGHTS["gan"]
    for key in (k for k in tensors if k.startswith("ema.generator.")):
        name = key.removeprefix("ema.generator.")
        assert torch.equal(raw.state_dict()[name], tensors["generator." + name])
        assert torch.equal(ema.state_dict()[name], tensors[key])
    assert not torch.equal(raw(torch.zeros(1, 100)), ema(torch.zeros(1, 100)))


@pytest.mark.slow
def test_a_run_without_an_average_loads_raw_and_refuses_ema(mnist, tmp_path):
    _train(mnist, tmp_path / "run", ema=0)
    assert not any(k.startswith("ema.") for k in load_file(tmp_path / "run" / "model.safetensors"))
    assert fastgen.load(tmp_path / "run").weights_used == "raw"
    with pytest.raises(FastgenError, match="no moving-average weights"):
        fastgen.load(tmp_path / "run", weights="ema")
    result = run_cli("fastgen.sample", str(tmp_path / "run"), "--weights", "ema", "--out", str(tmp_path / "g.png"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1


def test_resume_continues_the_average_bit_for_bit(mnist, tmp_path):
    _train(mnist, tmp_path / "straight", max_steps=12)
    _train(mnist, tmp_path / "cut", max_steps=5)
    fastgen.train(TrainConfig(resume=str(tmp_path / "cut"), max_steps=12, quiet=True, compile=False))
    for name in ("model.safetensors", "checkpoint.safetensors"):
        a, b = load_file(tmp_path / "straight" / name), load_file(tmp_path / "cut" / name)
        averaged = [k for k in a if k.startswith("ema.")]
        assert averaged and all(torch.equal(a[k], b[k]) for k in averaged), name


@pytest.mark.slow
@pytest.mark.parametrize("value", ["1", "-0.1", "nan"])
def test_bad_decay_is_one_line_exit_2(value, tmp_path):
    result = run_cli("fastgen.train", "--model", "vae", "--ema", value, "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--ema" in result.stderr


@pytest.mark.slow
def test_sample_and_evaluate_name_the_weights(mnist, tmp_path, evaluator_cache):
    _train(mnist, tmp_path / "run", model="vae")
    out = run_cli("fastgen.sample", str(tmp_path / "run"), "--weights", "raw", "--out", str(tmp_path / "g.png"))
    assert out.returncode == 0 and "(raw weights)" in out.stdout
    args = ("--n", "200", "--iwae-k", "2", "--no-reference", "--data-dir", str(mnist), "--no-download", "--weights", "ema")
    result = run_cli("fastgen.evaluate", str(tmp_path / "run"), *args, cache=evaluator_cache)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["weights"] == "ema"
    assert "ema weights" in result.stdout
