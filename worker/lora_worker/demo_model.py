"""The `tiny-random-llama` demo base model: random weights, built locally, no download.

It lets the whole product flow run on a CPU-only machine in about a minute. Everything is derived from fixed
seeds and a fixed built-in corpus, so two builds (on the same torch version) produce identical weights and an
identical tokenizer: an adapter trained against one copy loads onto a freshly built one.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

NAME = "tiny-random-llama"
VERSION_DIR = "tiny-random-llama-v1"  # bump when anything below changes, so stale caches are not reused
VOCAB_SIZE = 768
SEED = 1234

BOS, EOS, PAD = "<|begin_of_text|>", "<|eot_id|>", "<|pad|>"
END_OF_TEXT, START_HEADER, END_HEADER = "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>"
SPECIAL_TOKENS = [BOS, END_OF_TEXT, START_HEADER, END_HEADER, EOS, PAD]

# Llama-3 style: the assistant turn is "header + content + <|eot_id|>", so the loss masks can label
# content + end-of-turn (the model must learn to stop).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + (message['content'] | trim) + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def cache_root() -> Path:
    return Path(os.environ.get("LORA_WORKER_CACHE") or Path.home() / ".cache" / "lora-worker")


def _corpus() -> list[str]:
    """A few hundred deterministic English lines, enough for a byte-level BPE with a small vocabulary."""
    rng = random.Random(SEED)
    subjects = ["the model", "a student", "the teacher", "my friend", "the assistant", "our team", "the user",
                "a small dog", "the weather", "this recipe", "the city", "a good answer"]
    verbs = ["explains", "writes", "reads", "answers", "learns", "builds", "describes", "summarises",
             "improves", "checks", "translates", "remembers"]
    objects = ["the question", "a short story", "the data", "simple code", "the main idea", "a clear plan",
               "the results", "a friendly reply", "the next step", "a list of facts", "the problem", "a poem"]
    tails = ["today.", "carefully.", "in plain English.", "step by step.", "with care.", "quickly.",
             "for the user.", "again and again.", "without errors.", "before lunch."]
    questions = ["What is", "How do I", "Can you explain", "Why does", "Where is", "When should I", "Who wrote"]
    lines = []
    for _ in range(400):
        lines.append(" ".join([rng.choice(subjects).capitalize(), rng.choice(verbs), rng.choice(objects),
                               rng.choice(tails)]))
        lines.append(f"{rng.choice(questions)} {rng.choice(objects)}? {rng.randint(0, 9999)} {rng.choice(tails)}")
    lines += ["system user assistant", "You are a helpful assistant.", "0123456789 .,;:!?'\"()[]{}-_/\\@#$%&*+=<>"]
    return lines


def _build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, show_progress=False,
        # Full byte alphabet: any UTF-8 input tokenises, even characters absent from the corpus.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=2048,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _build_model(tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    assert len(tokenizer) <= VOCAB_SIZE, len(tokenizer)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    # Seeded CPU init with a forked RNG: deterministic, and does not disturb the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = LlamaForCausalLM(config)
    return model.to(torch.float32)


def ensure_demo_model() -> Path:
    """Returns the cached demo model directory, building it atomically (temp dir + rename) if missing."""
    root = cache_root()
    final = root / VERSION_DIR
    if (final / "config.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{VERSION_DIR}-", dir=root))
    try:
        log.info("building demo model %s in %s", NAME, final)
        tokenizer = _build_tokenizer()
        model = _build_model(tokenizer)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            # A concurrent worker won the race: its copy is identical, use it.
            if not (final / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
