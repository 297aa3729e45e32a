"""Dataset parsing, train/eval split and tokenisation with assistant-only loss labels."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from .errors import WorkerError

IGNORE_INDEX = -100  # torch cross_entropy's ignore_index: positions that contribute no loss
ROLES = ("system", "user", "assistant")


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False  # cut to max_seq_len (some of it is not trained on)

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)


def load_jsonl(path: Path) -> list[list[dict]]:
    """Parses normalised OpenAI chat JSONL; any malformed line fails the job (the platform validated it already)."""
    examples: list[list[dict]] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise WorkerError("dataset_invalid", f"line {lineno}: not valid JSON ({e})") from None
            msgs = obj.get("messages") if isinstance(obj, dict) else None
            if not isinstance(msgs, list) or not msgs:
                raise WorkerError("dataset_invalid", f'line {lineno}: expected {{"messages": [...]}} with a non-empty list')
            clean = []
            for j, m in enumerate(msgs):
                if (not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str)):
                    raise WorkerError("dataset_invalid", f"line {lineno}, message {j}: needs role "
                                      f"system|user|assistant and string content")
                clean.append({"role": m["role"], "content": m["content"]})
            if not any(m["role"] == "assistant" for m in clean):
                raise WorkerError("dataset_invalid", f"line {lineno}: no assistant message to learn from")
            examples.append(clean)
    if not examples:
        raise WorkerError("dataset_invalid", "the dataset is empty")
    return examples


def split_indices(n: int, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic (seeded) split; >= 1 eval example when eval_fraction > 0 and n >= 2, and >= 1 train example."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    if eval_fraction <= 0 or n < 2:
        return order, []
    n_eval = min(max(1, round(n * eval_fraction)), n - 1)
    return order[n_eval:], order[:n_eval]


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as e:  # noqa: BLE001 - templates refuse conversations with raise_exception (jinja)
        roles = "/".join(m["role"] for m in messages)
        raise WorkerError("dataset_incompatible", f"the model's chat template refuses a conversation ({roles}): {e}",
                          "this model's template has a rule the dataset breaks (e.g. strictly alternating "
                          "user/assistant turns, or no system role): fix the dataset or pick another "
                          "base model") from None


def _with_system_folded(messages: list[dict]) -> list[dict]:
    """The system prompt prepended to the first user turn (for templates that drop system messages)."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system}\n\n{m['content']}" if system else m["content"]
            break
    return rest


def prepare_messages(tokenizer, messages: list[dict]) -> list[dict]:
    """The conversation as this template can render it faithfully: a template that silently drops the
    system prompt gets it folded into the first user turn instead (the model still sees it)."""
    system = [m["content"].strip() for m in messages if m["role"] == "system" and m["content"].strip()]
    if not system:
        return messages
    try:
        full = _render(tokenizer, messages, False)
    except WorkerError:
        # Templates that refuse the system role (Gemma-style) get it in the first user turn.
        return _with_system_folded(messages)
    if all(s in full for s in system):
        return messages
    return _with_system_folded(messages)


def assistant_char_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """Renders the conversation and returns [start, end) character spans produced by each assistant turn.

    Generic over chat templates: the span of assistant turn i is the text that rendering messages[:i+1]
    adds to rendering messages[:i] with the generation prompt, i.e. the reply plus its end-of-turn marker,
    but not the "assistant" header (the model is given that at inference time).
    """
    full = _render(tokenizer, messages, False)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = _render(tokenizer, messages[:i], True) if i > 0 else None
        end = _render(tokenizer, messages[: i + 1], False)
        if start is not None and full.startswith(start) and full.startswith(end) and len(end) > len(start):
            spans.append((len(start), len(end)))
        else:
            # Templates that rewrite history (e.g. strip reasoning from earlier turns, or move the
            # system prompt) break the prefix property; fall back to locating the reply text itself,
            # anchored after the preceding turn so a reply that also occurs in the user's turn
            # cannot label the user's words.
            content = m["content"].strip()
            anchor = cursor
            previous = messages[i - 1]["content"].strip() if i > 0 else ""
            if previous:
                at = full.find(previous, cursor)
                if at >= 0:
                    anchor = at + len(previous)
            idx = full.find(content, anchor) if content else -1
            if idx < 0:
                continue
            spans.append((idx, idx + len(content)))
        cursor = spans[-1][1]
    return full, spans


def encode(tokenizer, messages: list[dict], max_seq_len: int) -> Encoded | None:
    """Token ids + labels (IGNORE_INDEX outside assistant turns), truncated; None if no assistant token survives."""
    text, spans = assistant_char_spans(tokenizer, prepare_messages(tokenizer, messages))
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        labels = [IGNORE_INDEX] * len(ids)
        for j, (s, e) in enumerate(enc["offset_mapping"]):
            # A token belongs to a span if it starts inside it; empty-offset tokens (s == e) only when inside.
            if any(a <= s < b for a, b in spans):
                labels[j] = ids[j]
    else:
        # Slow tokenizers have no offsets: tokenise span boundaries separately (may differ by a merge at edges).
        ids, labels = [], []
        pos = 0
        for a, b in spans + [(len(text), len(text))]:
            pre = tokenizer(text[pos:a], add_special_tokens=False)["input_ids"] if a > pos else []
            mid = tokenizer(text[a:b], add_special_tokens=False)["input_ids"] if b > a else []
            ids += pre + mid
            labels += [IGNORE_INDEX] * len(pre) + mid
            pos = b
    truncated = len(ids) > max_seq_len
    ids, labels = ids[:max_seq_len], labels[:max_seq_len]
    # The first position never gets a loss after the causal shift, so it does not count as a supervised token.
    if not any(lab != IGNORE_INDEX for lab in labels[1:]):
        return None
    return Encoded(ids, labels, truncated)


@dataclass
class EncodedSet:
    examples: list[Encoded]
    dropped: int  # no assistant token left within max_seq_len
    truncated: int  # kept, but cut to max_seq_len


def encode_all(tokenizer, examples: list[list[dict]], max_seq_len: int, check=lambda: None) -> EncodedSet:
    """`check` is called between examples (it raises to stop: a cancel during a long tokenisation)."""
    out, dropped = [], 0
    for n, msgs in enumerate(examples, start=1):
        check()
        try:
            e = encode(tokenizer, msgs, max_seq_len)
        except WorkerError as err:
            err.message = f"example {n}: {err.message}"
            err.args = (err.message,)
            raise
        if e is None:
            dropped += 1
        else:
            out.append(e)
    return EncodedSet(out, dropped, sum(1 for e in out if e.truncated))


# Batches whose examples are sorted by length together: large enough to group similar lengths, small enough
# that the order stays well mixed across the epoch.
GROUP_BATCHES = 50


def length_grouped_order(lengths: list[int], batch_size: int, rng) -> list[int]:
    """A seeded epoch order in which each batch holds examples of similar length (less padding, same
    examples): shuffle, sort within windows of GROUP_BATCHES batches, then shuffle the batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * GROUP_BATCHES
    batches: list[list[int]] = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w:w + window], key=lambda i: lengths[i])
        batches += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return [i for b in batches for i in b]


def padding_share(lengths: list[int], batch_size: int, order: list[int]) -> float:
    """Padding tokens over all tokens of the padded batches this order makes."""
    padded = real = 0
    for k in range(0, len(order), batch_size):
        chunk = [lengths[i] for i in order[k:k + batch_size]]
        padded += max(chunk) * len(chunk)
        real += sum(chunk)
    return 1 - real / padded if padded else 0.0


def make_batches(examples: list[Encoded], batch_size: int, order: list[int], pad_id: int):
    """Right-padded tensors per micro-batch; labels are IGNORE_INDEX on padding."""
    import torch

    batches = []
    for k in range(0, len(order), batch_size):
        chunk = [examples[i] for i in order[k:k + batch_size]]
        width = max(e.n_tokens for e in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, e in enumerate(chunk):
            n = e.n_tokens
            ids[r, :n] = torch.tensor(e.input_ids)
            labels[r, :n] = torch.tensor(e.labels)
            mask[r, :n] = 1
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


def steps_per_epoch(n_train: int, batch_size: int, grad_accum: int) -> int:
    return math.ceil(math.ceil(n_train / batch_size) / grad_accum)
