"""Model loading under hostile conditions: damaged or lying checkpoints, missing weights, no network."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aim_cli import demo
from aim_cli.errors import ModelError
from aim_cli.models import weights
from aim_cli.models.hub import load_pretrained
from aim_cli.models.registry import load_model
from tests.conftest import REPO, aim_env, assert_user_error, run_aim

SAMPLES = demo.samples_dir("classify")
# Advice no aim message may pass on: each would switch a safety check off.
UNSAFE_ADVICE = ("weights_only=false", "re-run", "rerun", "re-running", "trust_remote_code=true")


class CodePickle:
    """An object whose unpickling calls a function: what a hostile checkpoint does."""

    def __reduce__(self):
        return (os.getpid, ())


def assert_safe_one_line(message: str) -> None:
    """One line, and no advice to disable a safety check."""
    assert "\n" not in message.strip(), message
    assert not any(advice in message.lower() for advice in UNSAFE_ADVICE), message


def without_tensors(source: Path, target: Path, prefix: str) -> list[str]:
    """Copy an HF directory, dropping the safetensors tensors whose names start with prefix."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    shutil.copytree(source, target)
    with safe_open(str(source / "model.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
        state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118  # safe_open has keys(), no __iter__
    dropped = sorted(key for key in state if key.startswith(prefix))
    assert dropped, prefix
    save_file({k: v for k, v in state.items() if k not in dropped}, str(target / "model.safetensors"), metadata)
    return dropped


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny random checkpoints saved normally: ViT, SegFormer, GPT-2 (tied), Llama tied and untied."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        SegformerConfig,
        SegformerForSemanticSegmentation,
        SegformerImageProcessor,
        ViTConfig,
        ViTForImageClassification,
        ViTImageProcessor,
    )

    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    models = {
        "vit": ViTForImageClassification(
            ViTConfig(
                image_size=32,
                patch_size=8,
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=32,
                num_labels=3,
            )
        ),
        "segformer": SegformerForSemanticSegmentation(
            SegformerConfig(
                num_channels=3,
                num_encoder_blocks=1,
                depths=[1],
                sr_ratios=[1],
                hidden_sizes=[8],
                patch_sizes=[3],
                strides=[2],
                num_attention_heads=[1],
                mlp_ratios=[2],
                decoder_hidden_size=8,
                num_labels=3,
            )
        ),
        "gpt2": GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2)),
    }
    for tied in (True, False):
        models[f"llama_{'tied' if tied else 'untied'}"] = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=64,
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=1,
                max_position_embeddings=32,
                tie_word_embeddings=tied,
            )
        )
    dirs = {}
    for name, model in models.items():
        dirs[name] = root / name
        model.save_pretrained(dirs[name])
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(dirs["vit"])
    SegformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(dirs["segformer"])
    return dirs


def _factory(name: str):
    """The Auto class aim uses for a checkpoint kind."""
    from transformers import AutoModelForCausalLM, AutoModelForImageClassification, AutoModelForSemanticSegmentation

    if name == "vit":
        return AutoModelForImageClassification.from_pretrained
    if name == "segformer":
        return AutoModelForSemanticSegmentation.from_pretrained
    return AutoModelForCausalLM.from_pretrained


@pytest.mark.parametrize("name", ["vit", "segformer", "gpt2", "llama_tied", "llama_untied"])
def test_complete_checkpoint_loads_without_complaint(tiny_dirs, name):
    # Tied heads and unsaved buffers (position_ids, rotary inv_freq) are not missing weights.
    model = load_pretrained(_factory(name), str(tiny_dirs[name]), "model", complete=True)
    assert isinstance(model, torch.nn.Module)


@pytest.mark.parametrize(
    "name, prefix",
    [
        ("vit", "classifier."),
        ("segformer", "decode_head.classifier."),
        ("llama_untied", "lm_head."),
        ("gpt2", "transformer.h.0.mlp."),
        ("llama_tied", "model.layers.0.self_attn."),
    ],
)
def test_missing_weights_are_an_error_naming_them(tiny_dirs, tmp_path, name, prefix):
    dropped = without_tensors(tiny_dirs[name], tmp_path / name, prefix)
    with pytest.raises(ModelError) as caught:
        load_pretrained(_factory(name), str(tmp_path / name), "model", complete=True)
    message = str(caught.value)
    assert f"lacks {len(dropped)} weight" in message, message
    assert dropped[0] in message, message
    assert_safe_one_line(message)


@pytest.mark.parametrize("name, prefix", [("vit", "classifier."), ("segformer", "decode_head.classifier.")])
def test_task_loaders_refuse_a_checkpoint_without_its_head(tiny_dirs, tmp_path, name, prefix):
    without_tensors(tiny_dirs[name], tmp_path / name, prefix)
    task = "classify" if name == "vit" else "segment"
    load_model(task, str(tiny_dirs[name]), device=torch.device("cpu"))  # the complete checkpoint loads
    with pytest.raises(ModelError, match=rf"lacks 2 weight\(s\).*{prefix}bias, {prefix}weight"):
        load_model(task, str(tmp_path / name), device=torch.device("cpu"))


def test_segmenter_checkpoint_given_to_classify_is_refused(tiny_dirs):
    # SegFormer has an image-classification head too, so transformers would build one at random.
    with pytest.raises(ModelError, match=r"lacks \d+ weight.*classifier"):
        load_model("classify", str(tiny_dirs["segformer"]), device=torch.device("cpu"))


def _truncated(data: bytes) -> bytes:
    """The first half of a safetensors file."""
    return data[: len(data) // 2]


def _lying_offsets(data: bytes) -> bytes:
    """A header that claims ten times the bytes the file holds."""
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + size])
    for key, entry in header.items():
        if key != "__metadata__":
            entry["data_offsets"] = [entry["data_offsets"][0] * 10, entry["data_offsets"][1] * 10]
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data[8 + size :]


@pytest.mark.parametrize("damage", [_truncated, _lying_offsets], ids=["truncated", "lying_offsets"])
def test_damaged_safetensors_is_a_model_error(tiny_dirs, tmp_path, damage):
    broken = tmp_path / "vit"
    shutil.copytree(tiny_dirs["vit"], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(ModelError, match="weights file is damaged") as caught:
        load_model("classify", str(broken), device=torch.device("cpu"))
    assert_safe_one_line(str(caught.value))


def test_code_pickle_in_hf_directory_is_refused_with_exit_2(tiny_dirs, tmp_path):
    hostile = tmp_path / "vit"
    shutil.copytree(tiny_dirs["vit"], hostile)
    (hostile / "model.safetensors").unlink()
    torch.save({"classifier.weight": CodePickle()}, hostile / "pytorch_model.bin")
    result = run_aim("classify", str(SAMPLES), "--model", str(hostile), "-q")
    assert_user_error(result, 2, "arbitrary code", "it asks for posix.getpid")
    assert_safe_one_line(result.stderr)


def test_processor_asking_for_custom_code_is_refused(tiny_dirs, tmp_path):
    hostile = tmp_path / "vit"
    shutil.copytree(tiny_dirs["vit"], hostile)
    custom = {"image_processor_type": "Evil", "auto_map": {"AutoImageProcessor": "evil.Evil"}}
    (hostile / "preprocessor_config.json").write_text(json.dumps(custom))
    with pytest.raises(ModelError, match=r"needs custom code to load .*which aim never runs") as caught:
        load_model("classify", str(hostile), device=torch.device("cpu"))
    assert_safe_one_line(str(caught.value).replace("(trust_remote_code)", ""))


def test_labels_metadata_that_is_not_json(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"labels": "cat, dog"})
    with pytest.raises(ModelError, match="'labels' metadata is not valid JSON"):
        weights.load_state_dict(path)


def test_pickle_refusal_names_what_the_pickle_wanted(tmp_path):
    path = tmp_path / "hostile.pth"
    torch.save({"w": CodePickle()}, path)
    with pytest.raises(ModelError) as caught:
        weights.load_state_dict(path)
    message = str(caught.value)
    assert "it asks for posix.getpid" in message or "it asks for nt.getpid" in message, message
    assert_safe_one_line(message)


def test_torchvision_weights_missing_tensors_are_refused(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in torchvision.models.mobilenet_v3_small(num_classes=3).state_dict().items()}
    path = tmp_path / "m.safetensors"
    save_file({k: v for k, v in state.items() if not k.startswith("classifier.3.")}, str(path))
    with pytest.raises(ModelError, match=r"2 tensor\(s\) missing \(classifier\.3\.weight, classifier\.3\.bias\)"):
        load_model("classify", "torchvision:mobilenet_v3_small", device=torch.device("cpu"), weights=path)


def test_mistyped_relative_path_names_both_fixes(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelError) as caught:
        load_pretrained(_factory("vit"), "models/typo", "model")
    message = str(caught.value)
    assert "no local directory models/typo and no cached hub model 'models/typo'" in message, message
    assert "check the path" in message and "hf download" in message, message


# --- offline: a cached hub id loads with the network blocked and HF_HUB_OFFLINE unset ---

NET_BLOCKER = """
import os, socket

def _refuse(*args, **kwargs):
    with open(os.environ["AIM_TEST_NET_LOG"], "a") as log:
        log.write(repr(args[:2]) + "\\n")
    raise OSError("network blocked by the test")

socket.getaddrinfo = _refuse
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
"""


def _cache(hf_home: Path, repo_id: str, source: Path) -> None:
    """Lay a checkpoint out as the Hugging Face cache does: models--org--name/snapshots/REV + refs/main."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(source, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)


def _run_networkless(tmp_path: Path, hf_home: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run the CLI with offline variables unset and every socket connection refused; return the attempts."""
    blocker = tmp_path / "blocker"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(NET_BLOCKER)
    log = tmp_path / "net.log"
    log.write_text("")
    env = aim_env(
        {
            "HF_HOME": str(hf_home),
            "AIM_TEST_NET_LOG": str(log),
            "PYTHONPATH": os.pathsep.join([str(blocker), str(REPO)]),
        }
    )
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-m", "aim_cli", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )
    return result, log.read_text()


def test_cached_hub_ids_load_with_no_network_attempt(tiny_dirs, tmp_path):
    from tests.test_generate_cli import build_tiny_llama

    hf_home = tmp_path / "hf"
    _cache(hf_home, "acme/tiny-vit", tiny_dirs["vit"])
    build_tiny_llama(tmp_path / "llama", hidden=16, layers=1)
    _cache(hf_home, "acme/tiny-llama", tmp_path / "llama")
    result, attempts = _run_networkless(
        tmp_path, hf_home, "classify", str(SAMPLES), "--model", "acme/tiny-vit", "-o", str(tmp_path / "out.csv"), "-q"
    )
    assert result.returncode == 0, result.stderr
    assert attempts == "", attempts
    result, attempts = _run_networkless(
        tmp_path, hf_home, "generate", "--model", "acme/tiny-llama", "--prompt", "Hello", "-n", "2", "-q"
    )
    assert result.returncode == 0, result.stderr
    assert attempts == "", attempts


def test_uncached_hub_id_fails_fast_with_no_network_attempt(tmp_path):
    result, attempts = _run_networkless(
        tmp_path, tmp_path / "hf", "classify", str(SAMPLES), "--model", "acme/not-cached"
    )
    assert attempts == "", attempts
    assert_user_error(result, 2, "no cached hub model 'acme/not-cached'", "hf download")
