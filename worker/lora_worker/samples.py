"""Before/after samples: greedy answers to up to five held-out prompts, from the base model (the adapter
disabled) and from the adapter. The model page shows them side by side, so a user sees what the adapter
learned without deploying it. Bounded: a few prompts, a few dozen new tokens each."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

MAX_SAMPLES = 5
MAX_NEW_TOKENS = 64
MAX_PROMPT_TOKENS = 1024
# Greedy, but a token already said costs a little: small models otherwise loop on one token.
REPETITION_PENALTY = 1.15


def _printable(text: str) -> str:
    """Control characters out (a random demo model emits raw bytes; PostgreSQL's jsonb refuses NUL)."""
    return "".join(c for c in text if c in "\n\t" or (ord(c) >= 0x20 and ord(c) != 0x7F))


def _prompt_of(messages: list[dict]) -> tuple[list[dict], str] | None:
    """The conversation before the last assistant reply, and that reply."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if not last:
        return None
    return messages[:last], messages[last]["content"]


def generate(loaded, held_out: list[list[dict]], check=lambda: None) -> list[dict]:
    """[{prompt, reference, base, adapter}] for up to MAX_SAMPLES held-out conversations; empty when there
    is no eval split. A failure here is logged, never a failed job: the adapter is what was paid for."""
    import torch

    model, tok = loaded.model, loaded.tokenizer
    out = []
    try:
        model.eval()
        for messages in held_out:
            if len(out) == MAX_SAMPLES:
                break
            split = _prompt_of(messages)
            if split is None:
                continue
            context, reference = split
            check()
            text = tok.apply_chat_template(context, tokenize=False, add_generation_prompt=True)
            ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"][:, -MAX_PROMPT_TOKENS:]
            ids = ids.to(loaded.device)

            def answer() -> str:
                with torch.no_grad():
                    generated = model.generate(
                        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_NEW_TOKENS,
                        do_sample=False, use_cache=True, pad_token_id=tok.pad_token_id, repetition_penalty=REPETITION_PENALTY,
                        eos_token_id=tok.eos_token_id)
                return _printable(tok.decode(generated[0, ids.shape[1]:], skip_special_tokens=True)).strip()

            adapted = answer()
            with model.disable_adapter():
                base = answer()
            user = next((m["content"] for m in reversed(context) if m["role"] == "user"), "")
            out.append({"prompt": user, "reference": reference, "base": base, "adapter": adapted})
    except Exception as e:  # noqa: BLE001 - samples are a view on the result, not the result
        from .control import Cancelled

        if isinstance(e, Cancelled):
            raise
        log.warning("before/after samples not generated: %s: %s", type(e).__name__, e)
    finally:
        model.train()
    return out
