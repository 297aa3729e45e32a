// node_validator.mjs - reference Node.js validator for OpenAI chat fine-tuning JSONL (benchmark).
// Usage: node node_validator.mjs PATH   -> prints ONE line of JSON stats on stdout.
// Node built-ins only; same semantics as python_validator.py. Streams bytes, splits on '\n',
// JSON.parse each line, cookbook format checks, approx tokens 3 + ceil(utf8_bytes/4) per message.
// Counted examples/messages/token stats cover only lines that pass every check; errors are per hit.
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';

const ERROR_CODES = [
  'invalid_json',
  'data_type',
  'missing_messages_list',
  'message_missing_key',
  'message_unrecognized_key',
  'unrecognized_role',
  'missing_content',
  'example_missing_assistant_message',
];
const ALLOWED_KEYS = new Set(['role', 'content', 'name', 'function_call', 'weight']);
const ALLOWED_ROLES = new Set(['system', 'user', 'assistant', 'function', 'tool']);
const hasOwn = Object.hasOwn;

// fatal: invalid UTF-8 is an error (Python's strict decode); ignoreBOM: keep a BOM so that only the
// first line's BOM is stripped (by us), as in the Python validator.
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function isPlainObject(v) {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

// ceil(p/100*n) - 1 in exact integer arithmetic, nearest-rank percentile.
function percentile(sorted, p) {
  const n = sorted.length;
  if (n === 0) return null;
  const idx = Math.floor((p * n + 99) / 100) - 1;
  return sorted[Math.max(idx, 0)];
}

async function validate(path) {
  const errors = Object.fromEntries(ERROR_CODES.map((c) => [c, 0]));
  let examples = 0;
  let messagesTotal = 0;
  let totalTokens = 0;
  let assistantTokens = 0;
  const tokenCounts = [];
  let nbytes = 0;
  let first = true;

  function processLine(buf) {
    let start = 0;
    if (first) {
      first = false;
      if (buf.length >= 3 && buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) start = 3;
    }
    // Blank line: only space, tab, CR, LF bytes.
    let i = start;
    const len = buf.length;
    while (i < len) {
      const b = buf[i];
      if (b !== 0x20 && b !== 0x09 && b !== 0x0d && b !== 0x0a) break;
      i++;
    }
    if (i === len) return;

    let ex;
    try {
      ex = JSON.parse(decoder.decode(start ? buf.subarray(start) : buf));
    } catch {
      errors.invalid_json++;
      return;
    }

    if (!isPlainObject(ex)) {
      errors.data_type++;
      return;
    }
    const msgs = hasOwn(ex, 'messages') ? ex.messages : undefined;
    if (!Array.isArray(msgs) || msgs.length === 0) {
      errors.missing_messages_list++;
      return;
    }

    let bad = false;
    let hasAssistant = false;
    let exTokens = 3;
    let exAsst = 0;
    for (const m of msgs) {
      if (!isPlainObject(m)) {
        errors.message_missing_key++;
        bad = true;
        continue;
      }
      const hasRole = hasOwn(m, 'role');
      const hasContent = hasOwn(m, 'content');
      if (!hasRole || !hasContent) {
        errors.message_missing_key++;
        bad = true;
      }
      for (const k in m) {
        if (!ALLOWED_KEYS.has(k)) {
          errors.message_unrecognized_key++;
          bad = true;
          break;
        }
      }
      const role = hasRole ? m.role : undefined;
      if (!(typeof role === 'string' && ALLOWED_ROLES.has(role))) {
        errors.unrecognized_role++;
        bad = true;
      }
      const content = hasContent ? m.content : undefined;
      let t;
      if (typeof content === 'string') {
        t = Math.floor((Buffer.byteLength(content, 'utf8') + 3) / 4);
      } else if (
        (content === undefined || content === null) &&
        hasOwn(m, 'function_call') &&
        m.function_call !== null
      ) {
        t = 0;
      } else {
        errors.missing_content++;
        bad = true;
        t = 0;
      }
      exTokens += 3 + t;
      if (role === 'assistant') {
        hasAssistant = true;
        exAsst += t;
      }
    }
    if (!hasAssistant) {
      errors.example_missing_assistant_message++;
      bad = true;
    }
    if (bad) return;

    examples++;
    messagesTotal += msgs.length;
    totalTokens += exTokens;
    assistantTokens += exAsst;
    tokenCounts.push(exTokens);
  }

  const t0 = performance.now();
  let leftover = null; // partial line carried across chunks
  const stream = fs.createReadStream(path, { highWaterMark: 8 << 20 });
  for await (const chunk of stream) {
    nbytes += chunk.length;
    let start = 0;
    let nl;
    while ((nl = chunk.indexOf(10, start)) !== -1) {
      if (leftover !== null) {
        processLine(Buffer.concat([leftover, chunk.subarray(start, nl + 1)]));
        leftover = null;
      } else {
        processLine(chunk.subarray(start, nl + 1));
      }
      start = nl + 1;
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      // Copy: the stream may reuse or release the chunk's memory.
      leftover = leftover === null ? Buffer.from(rest) : Buffer.concat([leftover, rest]);
    }
  }
  if (leftover !== null && leftover.length > 0) processLine(leftover);
  const seconds = (performance.now() - t0) / 1000;

  const sorted = Float64Array.from(tokenCounts).sort();
  const n = sorted.length;
  let over2048 = 0;
  for (let i = 0; i < n; i++) if (sorted[i] > 2048) over2048++;
  return {
    impl: 'node',
    bytes: nbytes,
    seconds: Math.round(seconds * 1e4) / 1e4,
    mb_per_s: seconds > 0 ? Math.round((nbytes / 1e6 / seconds) * 100) / 100 : null,
    examples,
    messages: messagesTotal,
    total_tokens: totalTokens,
    assistant_tokens: assistantTokens,
    min: n ? sorted[0] : null,
    p50: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    max: n ? sorted[n - 1] : null,
    over_2048: over2048,
    errors,
  };
}

if (process.argv.length !== 3) {
  console.error('usage: node node_validator.mjs PATH');
  process.exit(2);
}
console.log(JSON.stringify(await validate(process.argv[2])));
