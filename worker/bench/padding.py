"""Padding benchmark (docs/PERFORMANCE.md): the share of padding tokens in the training batches, with a plain
shuffled order and with length-grouped batches, on a generated mixed-length chat dataset tokenised by the demo
tokenizer. Prints one line per batch size; CPU only, seconds.

    ~/.cache/lora-pipeline/worker-venv/bin/python worker/bench/padding.py
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lora_worker import data, demo_model  # noqa: E402


def main() -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo_model.ensure_demo_model(), local_files_only=True)
    rng = random.Random(0)
    words = "the model learns from every answer it is given in the dataset".split()
    examples = []
    for _ in range(2000):
        # Chat data is mixed: many short exchanges, some long documents.
        n_user = rng.choice([5, 10, 20, 80, 300])
        n_reply = rng.choice([5, 15, 40, 120, 400])
        examples.append([{"role": "user", "content": " ".join(rng.choices(words, k=n_user))},
                         {"role": "assistant", "content": " ".join(rng.choices(words, k=n_reply))}])
    encoded = data.encode_all(tok, examples, 2048).examples
    lengths = [e.n_tokens for e in encoded]
    print(f"{len(lengths)} examples, {sum(lengths)} tokens, length min {min(lengths)} / median "
          f"{sorted(lengths)[len(lengths) // 2]} / max {max(lengths)}")
    for batch_size in (4, 8, 16):
        shuffled = list(range(len(lengths)))
        random.Random(42).shuffle(shuffled)
        grouped = data.length_grouped_order(lengths, batch_size, random.Random(42))
        print(f"batch_size {batch_size:2d}: padding {data.padding_share(lengths, batch_size, shuffled):6.1%} shuffled"
              f" -> {data.padding_share(lengths, batch_size, grouped):6.1%} length-grouped")


if __name__ == "__main__":
    main()
