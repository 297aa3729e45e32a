"""Training throughput benchmark (docs/PERFORMANCE.md): the worker's loop against transformers Trainer + PEFT on
the same model, data and LoRA settings — tokens/s (non-padding), peak memory, padding share.

Throughput does not depend on the weights, so the models are random-weight Llamas of real shapes (nothing to
download). On a GPU (one short run per row, well under 10 minutes in all):

    python worker/bench/throughput.py --shape 1b --quant none --steps 30
    python worker/bench/throughput.py --shape 8b --quant nf4 --steps 20

On CPU, `--tiny` shrinks the 1B shape (same vocabulary, 2 layers) as a smoke test of both paths:

    ~/.cache/lora-pipeline/worker-venv/bin/python worker/bench/throughput.py --tiny --steps 3
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lora_worker import data as data_mod, train as train_mod  # noqa: E402
from lora_worker.data import IGNORE_INDEX, Encoded  # noqa: E402

SHAPES = {
    # Llama-3.2-1B and Llama-3.1-8B: hidden, layers, heads, kv heads, MLP, vocabulary.
    "1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
               intermediate_size=8192, vocab_size=128256),
    "8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
               intermediate_size=14336, vocab_size=128256),
}
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=128256)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def chat_like(n: int, seq: int, vocab: int, seed: int) -> list[Encoded]:
    """Mixed-length examples: a prompt (not trained on) and a reply (trained on), like chat data."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        total = min(seq, rng.choice([64, 128, 256, 512, 1024, 2048]) + rng.randrange(64))
        prompt = max(1, int(total * rng.uniform(0.3, 0.8)))
        ids = [rng.randrange(10, vocab) for _ in range(total)]
        out.append(Encoded(ids, [IGNORE_INDEX] * prompt + ids[prompt:]))
    return out


def build(shape: dict, quant: str, device: str):
    import torch
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**shape, max_position_embeddings=4096, tie_word_embeddings=False)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = LlamaForCausalLM(config).to(dtype)
    if quant == "nf4":
        # Random weights quantised as a real checkpoint would be at load time.
        import tempfile

        from transformers import BitsAndBytesConfig

        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            model = LlamaForCausalLM.from_pretrained(tmp, device_map={"": 0}, dtype=torch.bfloat16,
                                                     quantization_config=BitsAndBytesConfig(
                                                         load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                         bnb_4bit_compute_dtype=torch.bfloat16))
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    else:
        model = model.to(device)
    model.config.use_cache = False
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, task_type=TaskType.CAUSAL_LM)
    return get_peft_model(model, lora)


def peak_memory_gb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process peak RSS, KiB -> GiB


def reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def ours(model, examples: list[Encoded], batch: int, steps: int, device: str) -> tuple[float, float, float]:
    """The worker's loop: length-grouped batches, loss at labelled positions only."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=1e-4)
    order = data_mod.length_grouped_order([e.n_tokens for e in examples], batch, random.Random(0))
    batches = data_mod.make_batches(examples, batch, order, 0)[:steps]
    padding = data_mod.padding_share([e.n_tokens for e in examples], batch, order[: steps * batch])
    reset_peak(device)
    tokens, start = 0, time.monotonic()
    for b in batches:
        b = {k: v.to(device) for k, v in b.items()}
        loss, n = train_mod.compute_loss(model, b)
        (loss / max(1, n)).backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        tokens += int(b["attention_mask"].sum())
    if device == "cuda":
        torch.cuda.synchronize()
    return tokens / (time.monotonic() - start), peak_memory_gb(device), padding


def trainer(model, examples: list[Encoded], batch: int, steps: int, device: str) -> tuple[float, float, float]:
    """transformers Trainer + PEFT as its docs set it up: a shuffled sampler, a padding collator, the model's
    own loss over the full logits."""
    import tempfile

    import torch
    from transformers import Trainer, TrainingArguments

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(examples)

        def __getitem__(self, i):
            return {"input_ids": examples[i].input_ids, "labels": examples[i].labels}

    def collate(rows):
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[k, :n], labels[k, :n], mask[k, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    seen = {"tokens": 0, "padded": 0}

    def counting(rows):
        out = collate(rows)
        seen["tokens"] += int(out["attention_mask"].sum())
        seen["padded"] += out["attention_mask"].numel()
        return out

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=batch, max_steps=steps,
                                 learning_rate=1e-4, logging_strategy="no", save_strategy="no", report_to=[],
                                 disable_tqdm=True, remove_unused_columns=False, dataloader_num_workers=0,
                                 use_cpu=device != "cuda", bf16=device == "cuda", seed=0)
        run = Trainer(model=model, args=args, train_dataset=Rows(), data_collator=counting)
        reset_peak(device)
        start = time.monotonic()
        run.train()
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.monotonic() - start
    padding = 1 - seen["tokens"] / seen["padded"] if seen["padded"] else 0.0
    return seen["tokens"] / elapsed, peak_memory_gb(device), padding


def main(argv=None) -> list[tuple]:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="1b")
    parser.add_argument("--quant", choices=["none", "nf4"], default="none")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test: the shape shrunk to 2 small layers")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = TINY if args.tiny else SHAPES[args.shape]
    seq = min(args.seq, 256) if args.tiny else args.seq
    examples = chat_like(max(64, args.steps * args.batch * 2), seq, shape["vocab_size"], seed=1)
    label = f"{'tiny ' if args.tiny else ''}{args.shape} {args.quant} seq {seq} batch {args.batch} on {device}"
    rows = []
    for name, run in (("ours", ours), ("Trainer + PEFT", trainer)):
        model = build(shape, args.quant, device)
        tps, peak, padding = run(model, examples, args.batch, args.steps, device)
        rows.append((name, tps, peak, padding))
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    # On CPU the memory column is the process's high-water mark so far (both runs share the process).
    print(f"{label}, {args.steps} steps")
    for name, tps, peak, padding in rows:
        print(f"  {name:15s} {tps:10.0f} tokens/s   peak {'VRAM' if device == 'cuda' else 'RSS'} "
              f"{peak:6.2f} GiB   padding {padding:6.1%}")
    print(f"  ratio           {rows[0][1] / rows[1][1]:.2f}x tokens/s")
    return rows


if __name__ == "__main__":
    main()
