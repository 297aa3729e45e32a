#!/usr/bin/env python3
# generate_chat_jsonl.py - synthetic OpenAI chat fine-tuning JSONL for validator benchmarks.
# Usage: python3 generate_chat_jsonl.py OUT_PATH SIZE_MB [--seed N]
# Writes {"messages":[...]} lines (optional system msg, 1-4 user/assistant pairs) until
# SIZE_MB * 10^6 bytes are written; output is deterministic for a given seed (default 42).
# Standard library only; prints the byte count and line count when done.
import argparse
import json
import math
import random
import sys

WORDS = (
    "the of and to in is that for it as with was on be by at this from or have an are "
    "not but which one all their were can there been has more if will would about out "
    "so what up its into than them only other new some could time these two may then "
    "first any like now my such make over our even most after also did many before must "
    "through back years where much your way well down should because each just those "
    "people how too little state good very world still own see men work long get here "
    "between both life being under never day same another know while last might us great "
    "old year off come since against go came right used take three model training data "
    "dataset token adapter gradient learning rate batch epoch checkpoint weights layer "
    "attention matrix rank alpha dropout optimizer schedule warmup loss validation "
    "inference latency throughput memory GPU kernel tensor precision quantization "
    "pipeline worker queue server request response config parameter evaluation metric "
    "accuracy perplexity prompt completion assistant user system function example "
    "question answer summary document paragraph sentence language translation customer "
    "order invoice account password network database index cache storage backup deploy "
    "release version feature bug issue ticket report schedule meeting project budget "
    "café naïve résumé façade jalapeño crème brûlée über coöperate São Paulo Zürich "
    "Ångström señor déjà vu Köln Malmö"
).split()

EMOJI = ["🚀", "🙂", "🔥", "✅", "📦", "🤖", "💡", "⚠️", "🎉", "👍🏽", "🇫🇷", "→", "…", "€", "½", "漢字", "日本語", "Ελληνικά", "русский"]

SNIPPETS = [
    'He said "hello" and left.',
    'Use the path C:\\Users\\admin\\data\\train.jsonl on Windows.',
    'The regex \\d+\\.\\d+ matches version numbers.',
    'Escape quotes like \\" inside JSON strings.',
    "Step 1: load the data.\nStep 2: validate it.\nStep 3: train.",
    "```python\nprint(\"hi\\n\")\nfor i in range(3):\n\tprint(i)\n```",
    "Tab\tseparated\tvalues\tare\tfine.",
    "A 'single-quoted' phrase and a \"double-quoted\" one.",
    "Line one.\r\nLine two with CRLF inside the content.",
    "Backslash at the end \\",
    "JSON inside text: {\"key\": [1, 2, 3], \"ok\": true}",
]

SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a concise technical support agent for a cloud storage company.",
    "You are Marv, a factual chatbot that is also sarcastic.",
    "Answer in the style of a friendly teacher. Use examples when helpful.",
    "You are an expert at fine-tuning language models with LoRA adapters.",
]


def make_sentence(rng):
    n = rng.randint(4, 22)
    words = rng.choices(WORDS, k=n)
    r = rng.random()
    if r < 0.08:
        words.insert(rng.randrange(len(words) + 1), rng.choice(EMOJI))
    elif r < 0.14:
        i = rng.randrange(len(words))
        words[i] = '"' + words[i] + '"'
    s = " ".join(words)
    s = s[0].upper() + s[1:]
    s += rng.choice((".", ".", ".", "?", "!", ":", ";"))
    r = rng.random()
    if r < 0.05:
        s += "\n\n"
    elif r < 0.08:
        s += " " + rng.choice(SNIPPETS)
    return s


def build_pool(rng, size):
    pool = [make_sentence(rng) for _ in range(size)]
    pool.extend(SNIPPETS)
    return pool


def make_content(rng, pool, avg_len):
    # Log-uniform target length between ~50 and ~4000 characters.
    target = int(math.exp(rng.uniform(math.log(50), math.log(4000))))
    k = max(1, round(target / avg_len))
    text = " ".join(rng.choices(pool, k=k))
    if len(text) > 4000:
        cut = text.rfind(" ", 0, 4000)
        text = text[: cut if cut > 40 else 4000]
    return text


def make_example(rng, pool, avg_len):
    msgs = []
    if rng.random() < 0.6:
        sp = rng.choice(SYSTEM_PROMPTS)
        if rng.random() < 0.3:
            sp += " " + make_content(rng, pool, avg_len)
        msgs.append({"role": "system", "content": sp})
    turns = rng.randint(1, 4)
    for t in range(turns):
        msgs.append({"role": "user", "content": make_content(rng, pool, avg_len)})
        a = {"role": "assistant", "content": make_content(rng, pool, avg_len)}
        if turns > 1 and rng.random() < 0.15:
            a["weight"] = 0 if t < turns - 1 else 1
        msgs.append(a)
    return {"messages": msgs}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out_path")
    ap.add_argument("size_mb", type=float)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    limit = int(args.size_mb * 1_000_000)
    rng = random.Random(args.seed)
    pool = build_pool(rng, 20000)
    avg_len = sum(len(s) + 1 for s in pool) / len(pool)

    dumps_utf8 = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    dumps_ascii = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode

    written = 0
    lines = 0
    chunk = []
    chunk_bytes = 0
    CHUNK = 8 << 20
    with open(args.out_path, "wb", buffering=0) as f:
        while written < limit:
            ex = make_example(rng, pool, avg_len)
            # ~10% of lines use \uXXXX escapes (incl. surrogate pairs for emoji).
            enc = dumps_ascii if rng.random() < 0.1 else dumps_utf8
            b = enc(ex).encode("utf-8") + b"\n"
            chunk.append(b)
            chunk_bytes += len(b)
            written += len(b)
            lines += 1
            if chunk_bytes >= CHUNK:
                f.write(b"".join(chunk))
                chunk.clear()
                chunk_bytes = 0
        if chunk:
            f.write(b"".join(chunk))
    print(f"wrote {written} bytes, {lines} lines to {args.out_path}")


if __name__ == "__main__":
    sys.exit(main())
