#!/usr/bin/env python3
# python_validator.py - reference Python validator for OpenAI chat fine-tuning JSONL (benchmark).
# Usage: python3 python_validator.py PATH   -> prints ONE line of JSON stats on stdout.
# Stdlib only; same semantics as node_validator.mjs. Streams lines, json.loads each, applies OpenAI
# cookbook format checks and approx tokens 3 + ceil(utf8_bytes/4) per message (+3 per example).
# Counted examples/messages/token stats cover only lines that pass every check; errors are per hit.
import json
import sys
import time

ERROR_CODES = (
    "invalid_json",
    "data_type",
    "missing_messages_list",
    "message_missing_key",
    "message_unrecognized_key",
    "unrecognized_role",
    "missing_content",
    "example_missing_assistant_message",
)
ALLOWED_KEYS = frozenset(("role", "content", "name", "function_call", "weight"))
ALLOWED_ROLES = frozenset(("system", "user", "assistant", "function", "tool"))
BLANK = b" \t\r\n"
BOM = b"\xef\xbb\xbf"


def _reject_constant(name):
    # JSON has no NaN/Infinity; JS JSON.parse rejects them, so must we.
    raise ValueError("invalid JSON constant " + name)


def _utf8_len(s):
    if s.isascii():
        return len(s)
    # surrogatepass: a lone surrogate from a \uD800-style escape counts 3 bytes, like
    # Node's Buffer.byteLength (which counts it as U+FFFD, also 3 bytes).
    return len(s.encode("utf-8", "surrogatepass"))


def percentile(sorted_vals, p):
    n = len(sorted_vals)
    if n == 0:
        return None
    idx = (p * n + 99) // 100 - 1  # ceil(p/100*n) - 1, in exact integer arithmetic
    return sorted_vals[max(idx, 0)]


def validate(path):
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)  # JS has no digit limit on numbers
    loads = json.JSONDecoder(parse_constant=_reject_constant).decode
    errors = dict.fromkeys(ERROR_CODES, 0)
    examples = messages_total = total_tokens = assistant_tokens = 0
    token_counts = []
    nbytes = 0
    first = True

    t0 = time.perf_counter()
    with open(path, "rb", buffering=1 << 20) as f:
        for line in f:
            nbytes += len(line)
            if first:
                first = False
                if line.startswith(BOM):
                    line = line[3:]
            if not line.strip(BLANK):
                continue
            try:
                ex = loads(line.decode("utf-8"))
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
                errors["invalid_json"] += 1
                continue

            if not isinstance(ex, dict):
                errors["data_type"] += 1
                continue
            msgs = ex.get("messages")
            if not isinstance(msgs, list) or not msgs:
                errors["missing_messages_list"] += 1
                continue

            bad = False
            has_assistant = False
            ex_tokens = 3
            ex_asst = 0
            for m in msgs:
                if not isinstance(m, dict):
                    errors["message_missing_key"] += 1
                    bad = True
                    continue
                if "role" not in m or "content" not in m:
                    errors["message_missing_key"] += 1
                    bad = True
                if not ALLOWED_KEYS.issuperset(m):
                    errors["message_unrecognized_key"] += 1
                    bad = True
                role = m.get("role")
                if not (isinstance(role, str) and role in ALLOWED_ROLES):
                    errors["unrecognized_role"] += 1
                    bad = True
                content = m.get("content")
                if isinstance(content, str):
                    t = (_utf8_len(content) + 3) // 4
                elif content is None and m.get("function_call") is not None:
                    t = 0
                else:
                    errors["missing_content"] += 1
                    bad = True
                    t = 0
                ex_tokens += 3 + t
                if role == "assistant":
                    has_assistant = True
                    ex_asst += t
            if not has_assistant:
                errors["example_missing_assistant_message"] += 1
                bad = True
            if bad:
                continue

            examples += 1
            messages_total += len(msgs)
            total_tokens += ex_tokens
            assistant_tokens += ex_asst
            token_counts.append(ex_tokens)
    seconds = time.perf_counter() - t0

    token_counts.sort()
    return {
        "impl": "python",
        "bytes": nbytes,
        "seconds": round(seconds, 4),
        "mb_per_s": round(nbytes / 1e6 / seconds, 2) if seconds > 0 else None,
        "examples": examples,
        "messages": messages_total,
        "total_tokens": total_tokens,
        "assistant_tokens": assistant_tokens,
        "min": token_counts[0] if token_counts else None,
        "p50": percentile(token_counts, 50),
        "p95": percentile(token_counts, 95),
        "max": token_counts[-1] if token_counts else None,
        "over_2048": sum(1 for t in token_counts if t > 2048),
        "errors": errors,
    }


def main():
    if len(sys.argv) != 2:
        print("usage: python3 python_validator.py PATH", file=sys.stderr)
        return 2
    print(json.dumps(validate(sys.argv[1]), separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
