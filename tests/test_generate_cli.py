"""`aim generate` end to end: the real CLI on the demo LM, on a tiny Llama checkpoint, and on bad input."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

from aim_cli import demo
from aim_cli.demo import arithmetic
from tests.conftest import REPO, run_aim

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CORPUS = [
    "The capital of France is Paris.",
    "paris is a city in France",
    "Hello world, hello there!",
    "Numbers: 1 2 3 12 7 19",
] * 5
KEYED_PROFILE = REPO / "profiles" / "keyed-tier.yaml"


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained offline on a few sentences, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", backend.token_to_id("<s>"))]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_llama(
    directory: Path | None = None, hidden: int = 32, layers: int = 2, context: int = 128
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A random tiny Llama (LlamaConfig) and its tokenizer; saved as an HF directory when given one."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    if directory is not None:
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    return model, tokenizer


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    """The tiny Llama saved as a local Hugging Face directory."""
    directory = tmp_path_factory.mktemp("tiny_llama")
    build_tiny_llama(directory)
    return directory


def run_here(*args: str, stdin: str = "", capsys=None, monkeypatch=None) -> tuple[int, str, str]:
    """Run the CLI entry point in this process (same code path as `aim`, without the start-up cost)."""
    from aim_cli.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("AIM_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def records(path: Path) -> list[dict]:
    """The JSON lines of an output file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- the demo model ------------------------------------------------------------------------------


def test_default_prompt_and_sigma_prints_text():
    result = run_aim("generate", "--sigma", "0.3", stdin="")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), result.stderr
    assert "demo lm" in result.stderr and "sigma 0.3" in result.stderr


def test_single_prompt_streams_completion_only():
    result = run_aim("generate", "--prompt", "12+7=", "--sigma", "0.3", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "19\n"  # completion text only: no prompt, no special tokens


def test_output_jsonl_with_compare(tmp_path):
    out = tmp_path / "gen.jsonl"
    prompts = ["12+7=", "30-4=", "45+45=", "8+8="]
    args = [a for p in prompts for a in ("--prompt", p)]
    result = run_aim(
        "generate", *args, "--sigma", "3", "--seed", "7", "--compare", "-o", str(out), "-q", "--batch-size", "3"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    rows = records(out)
    assert [r["prompt"] for r in rows] == prompts
    for row in rows:
        assert {
            "prompt",
            "completion",
            "clean_completion",
            "sigma",
            "seed",
            "prompt_tokens",
            "completion_tokens",
        } <= set(row)
        assert row["sigma"] == 3.0 and row["seed"] == 7 and row["keyed"] is False
        assert row["prompt_tokens"] == len(row["prompt"]) + 1  # characters plus <s>
        assert 1 <= row["completion_tokens"] <= 4
    # Clean greedy answers are the demo's (near-perfect) arithmetic; sigma 3 breaks most of them.
    assert sum(r["clean_completion"] == str(eval(r["prompt"][:-1])) for r in rows) >= 3
    assert any(r["completion"] != r["clean_completion"] for r in rows)


def test_compare_single_prompt_two_labelled_lines():
    result = run_aim("generate", "--prompt", "12+7=", "--compare", "--sigma", "0", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["modulated: 19", "clean:     19"]


def test_prompts_txt_table_with_compare(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("12+7=\n\n30-4=\n")
    result = run_aim("generate", "--prompts", str(prompts), "--compare", "-q")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("12+7=" in line and line.count("19") == 2 for line in lines), result.stdout
    assert any("30-4=" in line and line.count("26") == 2 for line in lines), result.stdout
    assert "clean" in lines[1]


def test_prompts_jsonl_and_stop(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "12+7=", "answer": "19"}\n{"prompt": "45+45="}\n')
    out = tmp_path / "o.jsonl"
    result = run_aim("generate", "--prompts", str(prompts), "--stop", "9", "-o", str(out), "-q")
    assert result.returncode == 0, result.stderr
    rows = records(out)
    # 19 is cut before its 9; 90 is cut to nothing (the stop string comes first).
    assert [r["completion"] for r in rows] == ["1", ""]
    assert [r["completion_tokens"] for r in rows] == [2, 1]


def test_prompts_from_stdin():
    result = run_aim("generate", "-q", stdin="12+7=\n30-4=\n")
    assert result.returncode == 0, result.stderr
    assert "19" in result.stdout and "26" in result.stdout and "30-4=" in result.stdout


def test_keyed_profile_same_prompt_same_answer(tmp_path, cli):
    problems = arithmetic.evaluation_set(12)
    prompts = tmp_path / "p.txt"
    # Each prompt twice, in different batches and at different positions.
    prompts.write_text("\n".join([p["prompt"] for p in problems] * 2) + "\n")
    outputs = {}
    for name, key, batch in (("a", "secret-1", "5"), ("b", "secret-1", "24"), ("c", "secret-2", "24")):
        out = tmp_path / f"{name}.jsonl"
        args = (
            "generate",
            "--profile",
            str(KEYED_PROFILE),
            "--prompts",
            str(prompts),
            "-o",
            str(out),
            "-q",
            "--batch-size",
            batch,
        )
        if name == "c":  # the other key: in-process, to save a start-up
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("AIM_NOISE_KEY", key)
                code, _out, err = cli(*args)
            assert code == 0, err
        else:
            result = run_aim(*args, env={"AIM_NOISE_KEY": key})
            assert result.returncode == 0, result.stderr
        outputs[name] = [r["completion"] for r in records(out)]
        assert all(r["keyed"] is True and r["seed"] is None for r in records(out))
    n = len(problems)
    assert outputs["a"][:n] == outputs["a"][n:]  # the same question again: the same answer
    assert outputs["a"] == outputs["b"]  # independent of batching and of the run
    assert outputs["a"] != outputs["c"]  # and the key matters
    assert sum(c != p["answer"] for c, p in zip(outputs["a"], problems)) >= 1  # the tier is really degraded


# --- a user's Hugging Face checkpoint ---------------------------------------------------------------


def test_tiny_llama_directory(tiny_llama, tmp_path):
    out = tmp_path / "o.jsonl"
    result = run_aim(
        "generate",
        "--model",
        str(tiny_llama),
        "--prompt",
        "Hello world",
        "--prompt",
        "Paris",
        "-n",
        "6",
        "--sigma",
        "0.5",
        "--focus",
        "paris",
        "--seed",
        "3",
        "--temperature",
        "0.8",
        "--top-k",
        "20",
        "--top-p",
        "0.9",
        "--dtype",
        "float32",
        "--device",
        "cpu",
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "focus paris:up" in result.stderr
    rows = records(out)
    assert [r["prompt"] for r in rows] == ["Hello world", "Paris"]
    assert all(r["completion_tokens"] <= 6 and r["focus"] == ["paris:up"] for r in rows)


def test_tiny_llama_chat_template(tiny_llama, tmp_path):
    from transformers import AutoTokenizer

    out = tmp_path / "o.jsonl"
    result = run_aim(
        "generate", "--model", str(tiny_llama), "--prompt", "Hello world", "--chat", "-n", "4", "-o", str(out), "-q"
    )
    assert result.returncode == 0, result.stderr
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    plain = len(tokenizer("Hello world")["input_ids"])
    (row,) = records(out)
    assert row["prompt"] == "Hello world"
    assert row["prompt_tokens"] == plain + 2  # <|user|> and <|assistant|> wrapped around it


# --- bad input: one line, exit 2, no traceback, nothing written ---------------------------------------


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str, stdin: str = "") -> tuple[int, str, str]:
        return run_here(*args, stdin=stdin, capsys=capsys, monkeypatch=monkeypatch)

    return run


def assert_error(outcome: tuple[int, str, str], *fragments: str, code: int = 2) -> None:
    """Like assert_user_error, for an in-process run."""
    returncode, _out, err = outcome
    assert returncode == code, outcome
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment.lower() in err.lower(), (fragment, err)


def test_empty_prompt(cli, tmp_path):
    out = tmp_path / "o.jsonl"
    assert_error(cli("generate", "--prompt", "12+7=", "--prompt", "  ", "-o", str(out)), "--prompt 2 is empty")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_prompt_longer_than_context(cli, tmp_path):
    out = tmp_path / "o.jsonl"
    long_prompt = "1+" * 40 + "1="
    assert_error(
        cli("generate", "--prompt", "1+1=", "--prompt", long_prompt, "-o", str(out)),
        "prompt 2 is 83 tokens long",
        "context of 64 tokens",
    )
    assert list(tmp_path.iterdir()) == []


def test_directory_without_tokenizer(cli, capsys, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(
        LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    ).save_pretrained(tmp_path)
    capsys.readouterr()  # save_pretrained's own progress bar is not the CLI's output
    assert_error(cli("generate", "--model", str(tmp_path), "--prompt", "hi"), "has no tokenizer")


def test_not_a_causal_lm(cli, tmp_path):
    assert_error(
        cli("generate", "--model", str(demo.model_dir("classify")), "--prompt", "hi"), "is not a causal language model"
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--dtype", "float8"), "unknown --dtype 'float8'"),
        (("--device", "tpu"), "unknown device 'tpu'"),
        (("--focus", "€"), "cannot encode"),
        (("--prompts", "missing.txt"), "not found"),
        (("--chat",), "no chat template"),
        (("--top-p", "0"), "--top-p must be in (0, 1]"),
        (("--model", "no/such/dir"), "does not exist"),
    ],
)
def test_bad_options(cli, args, fragment):
    assert_error(cli("generate", "--prompt", "12+7=", *args), fragment)


def test_bad_jsonl_line_is_named(cli, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "1+1="}\n{"prompt": "2+2="\n')
    assert_error(cli("generate", "--prompts", str(prompts)), "line 2", "not valid JSON")
    prompts.write_text('{"prompt": "1+1="}\n\n{"text": "2+2="}\n')
    assert_error(cli("generate", "--prompts", str(prompts)), "line 3", '"prompt" field')


def test_device_map_without_accelerate(cli):
    pytest.importorskip("transformers")
    try:
        import accelerate  # noqa: F401
    except ImportError:
        assert_error(cli("generate", "--prompt", "1+1=", "--device-map", "auto"), "pip install 'aim-cli[accelerate]'")
    else:
        pytest.skip("accelerate is installed")


def test_model_without_prompt_is_an_error(cli, tiny_llama):
    assert_error(cli("generate", "--model", str(tiny_llama)), "no prompt given")
