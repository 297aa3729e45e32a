//! The streaming dataset validator: auto-detects the format, checks every record, measures the
//! statistics, and writes the normalised training file (OpenAI chat JSONL) — in constant memory
//! whatever the file size.
//!
//! Two paths:
//! - **JSONL** (one record per line): the reader cuts the input into ~4 MiB blocks at line
//!   boundaries; worker threads parse and check blocks in parallel; results are merged and the
//!   normalised output is written strictly in file order. At most `2 × threads` blocks are in
//!   flight, so memory does not grow with the file.
//! - **One JSON document** (an array of records, or brightrun-lora-v4 full JSON): a byte-level
//!   scanner walks the structure and hands each record (never the whole document) to the parser.
//!
//! At ~750 lines this file is over the engine's ~600-line guide on purpose: the JSONL
//! pipeline (reader, parallel block workers, in-order writer) and the shared normalisation it
//! feeds are one unit whose private types would otherwise have to be exposed across files; the
//! format detection, per-record checks and statistics already live in `document`, `examples`
//! and `stats`.

mod document;
mod examples;
mod stats;
#[cfg(test)]
mod tests;

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use self::examples::{RawRecord, Record, detect};
use self::stats::Tally;
use super::{DatasetFormat, DatasetStatistics, ValidationReport};

/// Lines longer than this are refused without being buffered.
pub const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;
const BLOCK_BYTES: usize = 4 * 1024 * 1024;

/// How tokens are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counting {
    /// Exact counts with the cl100k_base BPE (what the platform stores).
    Exact,
    /// `ceil(bytes / 4)` per message — only for benchmarking against other validators.
    Approximate,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub counting: Counting,
    pub max_seq_len: u32,
    pub threads: usize,
    /// Produce the normalised training file (off only when measuring the checks alone).
    pub normalize: bool,
    /// Compute the file's SHA-256 (off when the upload path already did).
    pub hash: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            counting: Counting::Exact,
            max_seq_len: super::DEFAULT_MAX_SEQ_LEN,
            threads: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .clamp(1, 8),
            normalize: true,
            hash: true,
        }
    }
}

/// Name of the tokenizer behind [`Counting::Exact`], stored with the statistics.
pub const TOKENIZER: &str = "cl100k_base (OpenAI BPE, via bpe-openai)";

/// A problem with one record (the line and index are attached by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub code: &'static str,
    pub message: String,
    pub suggestion: String,
}

impl Problem {
    pub fn new(
        code: &'static str,
        message: impl Into<String>,
        suggestion: impl Into<String>,
    ) -> Self {
        Self {
            code,
            message: message.into(),
            suggestion: suggestion.into(),
        }
    }
}

/// Counts and hashes every byte that passes through.
struct Measured<R> {
    inner: R,
    hasher: Option<Sha256>,
    bytes: u64,
}

impl<R: Read> Read for Measured<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Validates `input`, writing every usable example to `normalized` as one OpenAI chat JSONL
/// line (pass `io::sink()` to discard; the caller discards the output if the report is not
/// valid).
pub fn validate<R: Read, W: Write>(
    input: R,
    options: &Options,
    normalized: &mut W,
) -> io::Result<ValidationReport> {
    let mut input = Measured {
        inner: input,
        hasher: options.hash.then(Sha256::new),
        bytes: 0,
    };
    let mut first = Vec::with_capacity(64 * 1024);
    (&mut input).take(64 * 1024).read_to_end(&mut first)?;
    let bom = first.starts_with(b"\xEF\xBB\xBF");
    let body = if bom { &first[3..] } else { &first[..] };

    let first_byte = body.iter().copied().find(|b| !b.is_ascii_whitespace());
    let (format, tally, lines) = match first_byte {
        None if input.bytes < 64 * 1024 => {
            let mut tally = Tally::default();
            tally.problem(
                None,
                None,
                Problem::new(
                    "empty_file",
                    "the file is empty",
                    "Upload a JSON or JSONL file with at least one training example.",
                ),
            );
            (None, tally, 0)
        }
        first_byte => {
            let start = body
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(0);
            let single_document = match first_byte {
                Some(b'[') => true,
                // `{` opens either the first JSONL record or one pretty-printed document: a
                // first line that is not a complete value means the latter.
                Some(b'{') => {
                    let line_end = body[start..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .map(|p| start + p);
                    let line = &body[start..line_end.unwrap_or(body.len())];
                    // A truncated JSONL record also ends early, but mid-value; a pretty-printed
                    // document's first line ends where structure continues.
                    let continues = matches!(
                        line.iter().rev().find(|b| !b.is_ascii_whitespace()),
                        Some(b'{' | b'[' | b',' | b':')
                    );
                    match serde_json::from_slice::<serde::de::IgnoredAny>(line) {
                        Ok(_) => false,
                        Err(e) => e.is_eof() && line_end.is_some() && continues,
                    }
                }
                _ => false,
            };
            let prefix = if bom { first[3..].to_vec() } else { first };
            if single_document {
                let reader = io::Cursor::new(prefix).chain(&mut input);
                document::validate(reader, options, normalized)?
            } else {
                validate_lines(prefix, &mut input, options, normalized)?
            }
        }
    };
    // Read whatever a document parser left unread, so the hash and size cover the whole file.
    io::copy(&mut input, &mut io::sink())?;
    Ok(finish(
        format,
        tally,
        lines,
        input.bytes,
        input
            .hasher
            .map(|h| hex::encode(h.finalize()))
            .unwrap_or_default(),
        options,
    ))
}

fn finish(
    format: Option<DatasetFormat>,
    mut tally: Tally,
    lines: u64,
    bytes: u64,
    sha256: String,
    options: &Options,
) -> ValidationReport {
    if tally.examples == 0 && tally.error_counts.is_empty() {
        tally.problem(
            None,
            None,
            Problem::new(
                "no_examples",
                "the file contains no usable training examples",
                "Each example needs at least one user message and an assistant reply.",
            ),
        );
    }
    let statistics = DatasetStatistics {
        examples: tally.examples,
        skipped_examples: tally.skipped,
        conversations: tally.conversations,
        messages: tally.messages,
        avg_turns: if tally.examples == 0 {
            0.0
        } else {
            tally.user_turns as f64 / tally.examples as f64
        },
        total_tokens: tally.total_tokens,
        assistant_tokens: tally.assistant_tokens,
        tokens: tally.distribution(),
        max_seq_len: options.max_seq_len,
        over_max_seq_len: tally.over_max,
        tokenizer: match options.counting {
            Counting::Exact => TOKENIZER.to_owned(),
            Counting::Approximate => "approximate (bytes / 4)".to_owned(),
        },
        bytes,
        lines,
    };
    ValidationReport {
        format,
        statistics,
        issues: tally.issues,
        error_counts: tally.error_counts,
        sample: tally.sample,
        sha256,
    }
}

/// One JSON value as the normalised training file stores it.
#[derive(serde::Serialize)]
struct NormalizedExample<'a> {
    messages: Vec<NormalizedMessage<'a>>,
}

#[derive(serde::Serialize)]
struct NormalizedMessage<'a> {
    role: &'static str,
    content: &'a str,
}

/// Checks one record and adds it to `tally` (and its normalised form to `out`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn handle_record(
    record: RawRecord<'_>,
    format: DatasetFormat,
    at: (Option<u64>, Option<u64>),
    allow_meta: bool,
    conversation: Option<&str>,
    options: &Options,
    tally: &mut Tally,
    out: &mut Vec<u8>,
) {
    let (line, index) = at;
    match examples::convert(record, format) {
        Ok(Record::Example(mut example)) => {
            if let Some(conversation) = conversation {
                example.conversation = Some(std::borrow::Cow::Owned(conversation.to_owned()));
            }
            tally.example(&example, options.counting, options.max_seq_len);
            if !options.normalize {
                return;
            }
            let value = NormalizedExample {
                messages: example
                    .messages
                    .iter()
                    .map(|(role, content)| NormalizedMessage {
                        role: role.as_str(),
                        content,
                    })
                    .collect(),
            };
            // Writing JSON to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, &value);
            out.push(b'\n');
        }
        Ok(Record::Skipped) => tally.skipped += 1,
        Ok(Record::Meta) if allow_meta => {}
        Ok(Record::Meta) => tally.problem(
            line,
            index,
            Problem::new(
                "misplaced_meta",
                "a \"_meta\" record appears after the first line",
                "Keep the single _meta line at the top of the file.",
            ),
        ),
        Err(problem) => tally.problem(line, index, problem),
    }
}

/// Describes a serde_json error on one record.
pub(crate) fn parse_problem(error: &serde_json::Error, raw: &[u8]) -> Problem {
    let text = error.to_string();
    if text.contains("recursion limit exceeded") {
        return Problem::new(
            "nesting_too_deep",
            "the record is nested too deeply",
            "Records are flat objects with lists of messages; remove the deep nesting.",
        );
    }
    match error.classify() {
        serde_json::error::Category::Data => {
            let first = raw.iter().find(|b| !b.is_ascii_whitespace()).copied();
            if first != Some(b'{') {
                Problem::new(
                    "not_an_object",
                    "the record is not a JSON object",
                    "Each record must be a JSON object such as {\"messages\": […]}.",
                )
            } else {
                Problem::new(
                    "invalid_record",
                    format!("the record has the wrong shape: {}", strip_position(&text)),
                    "Check the record against an example of its format.",
                )
            }
        }
        serde_json::error::Category::Eof => Problem::new(
            "invalid_json",
            format!("the JSON ends early: {}", strip_position(&text)),
            "The record is cut off: check for a missing closing quote or bracket.",
        ),
        _ => Problem::new(
            "invalid_json",
            format!("invalid JSON: {text}"),
            "Fix the syntax at the given column (quotes, commas, brackets).",
        ),
    }
}

fn strip_position(text: &str) -> &str {
    text.split(" at line ").next().unwrap_or(text)
}

/// Parses one record; anything but a JSON object is refused before serde sees it (serde would
/// accept an array as a struct's fields in order).
pub(crate) fn parse_record(raw: &[u8]) -> Result<RawRecord<'_>, Problem> {
    if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(raw) {
            Ok(_) => Problem::new(
                "not_an_object",
                "the record is not a JSON object",
                "Each record must be a JSON object such as {\"messages\": […]}.",
            ),
            Err(e) => parse_problem(&e, raw),
        });
    }
    serde_json::from_slice::<RawRecord>(raw).map_err(|e| {
        // Only a failed record pays for this scan.
        if nesting_depth(raw) > 64 {
            Problem::new(
                "nesting_too_deep",
                "the record is nested too deeply",
                "Records are flat objects with lists of messages; remove the deep nesting.",
            )
        } else {
            parse_problem(&e, raw)
        }
    })
}

/// The deepest bracket nesting outside strings.
fn nesting_depth(raw: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in raw {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

pub(crate) fn utf8_problem(error: std::str::Utf8Error) -> Problem {
    Problem::new(
        "invalid_utf8",
        format!(
            "invalid UTF-8 at byte {} of the record",
            error.valid_up_to() + 1
        ),
        "Save the file as UTF-8 (most editors: \"Save with encoding\" → UTF-8).",
    )
}

// ---------------------------------------------------------------------------------------------
// JSONL: blocks in parallel, merged in order
// ---------------------------------------------------------------------------------------------

struct Block {
    seq: u64,
    first_line: u64,
    data: Vec<u8>,
    /// A line we refused for its length (no data to parse).
    too_long: Option<u64>,
}

struct BlockResult {
    seq: u64,
    tally: Tally,
    normalized: Vec<u8>,
}

/// Finds the format from the first records that parse, and the line of the first record.
fn detect_jsonl(prefix: &[u8]) -> (Option<DatasetFormat>, Option<u64>) {
    let mut first_record_line = None;
    for (i, line) in prefix.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        first_record_line.get_or_insert(i as u64 + 1);
        if let Ok(record) = serde_json::from_slice::<RawRecord>(line)
            && let Some(format) = detect(&record)
        {
            return (Some(format), first_record_line);
        }
    }
    (None, first_record_line)
}

fn process_block(
    block: &Block,
    format: Option<DatasetFormat>,
    meta_line: Option<u64>,
    options: &Options,
) -> (Tally, Vec<u8>) {
    let mut tally = Tally::default();
    let mut out = Vec::with_capacity(block.data.len() + block.data.len() / 8);
    if let Some(line) = block.too_long {
        tally.problem(
            Some(line),
            None,
            Problem::new(
                "line_too_long",
                format!(
                    "the line is longer than {} MiB",
                    MAX_LINE_BYTES / (1024 * 1024)
                ),
                "Each JSONL line is one example; split very long examples or shorten them.",
            ),
        );
        return (tally, out);
    }
    for (i, line) in block.data.split(|&b| b == b'\n').enumerate() {
        let number = block.first_line + i as u64;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Err(e) = std::str::from_utf8(line) {
            tally.problem(Some(number), None, utf8_problem(e));
            continue;
        }
        let record = match parse_record(line) {
            Ok(record) => record,
            Err(problem) => {
                tally.problem(Some(number), None, problem);
                continue;
            }
        };
        let Some(file_format) = format else {
            tally.problem(Some(number), None, unknown_format());
            continue;
        };
        match detect(&record) {
            None => tally.problem(Some(number), None, unknown_format()),
            Some(kind) if kind != file_format => tally.problem(
                Some(number),
                None,
                Problem::new(
                    "mixed_formats",
                    format!(
                        "this record is {}, but the file is {}",
                        kind.label(),
                        file_format.label()
                    ),
                    "Use one format for the whole file.",
                ),
            ),
            Some(_) => handle_record(
                record,
                file_format,
                (Some(number), None),
                meta_line == Some(number),
                None,
                options,
                &mut tally,
                &mut out,
            ),
        }
    }
    (tally, out)
}

pub(crate) fn unknown_format() -> Problem {
    Problem::new(
        "unknown_format",
        "the record matches no supported format",
        "Use OpenAI chat {\"messages\"}, ShareGPT {\"conversations\"}, Alpaca {\"instruction\", \"output\"} \
         or brightrun-lora-v4 pairs.",
    )
}

fn validate_lines<R: Read>(
    prefix: Vec<u8>,
    input: &mut R,
    options: &Options,
    sink: &mut dyn Write,
) -> io::Result<(Option<DatasetFormat>, Tally, u64)> {
    let (format, meta_line) = detect_jsonl(&prefix);
    let threads = options.threads.max(1);
    let in_flight = threads * 2;
    let (work_tx, work_rx) = sync_channel::<Block>(in_flight);
    let (result_tx, result_rx) = sync_channel::<BlockResult>(in_flight);
    let work_rx = Arc::new(Mutex::new(work_rx));

    std::thread::scope(|scope| {
        for _ in 0..threads {
            let work_rx = Arc::clone(&work_rx);
            let result_tx = result_tx.clone();
            scope.spawn(move || worker(&work_rx, &result_tx, format, meta_line, options));
        }
        drop(result_tx);
        let read = read_blocks(prefix, input, &work_tx, &result_rx, sink, in_flight);
        drop(work_tx);
        // Drain the remaining results in order.
        let (mut tally, mut pending, mut next, lines, sent) = read?;
        collect_in_order(&result_rx, &mut pending, &mut next, sent, &mut tally, sink)?;
        Ok((format, tally, lines))
    })
}

fn worker(
    work_rx: &Mutex<Receiver<Block>>,
    result_tx: &SyncSender<BlockResult>,
    format: Option<DatasetFormat>,
    meta_line: Option<u64>,
    options: &Options,
) {
    loop {
        let block = match work_rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(block) = block else { return };
        let (tally, normalized) = process_block(&block, format, meta_line, options);
        if result_tx
            .send(BlockResult {
                seq: block.seq,
                tally,
                normalized,
            })
            .is_err()
        {
            return;
        }
    }
}

type ReadState = (
    Tally,
    std::collections::BTreeMap<u64, BlockResult>,
    u64,
    u64,
    u64,
);

/// Reads blocks cut at line ends and sends them to the workers, merging finished results
/// whenever the pipeline is full. Returns the merged tally so far and the bookkeeping.
fn read_blocks<R: Read>(
    prefix: Vec<u8>,
    input: &mut R,
    work_tx: &SyncSender<Block>,
    result_rx: &Receiver<BlockResult>,
    sink: &mut dyn Write,
    in_flight: usize,
) -> io::Result<ReadState> {
    let mut tally = Tally::default();
    let mut pending = std::collections::BTreeMap::new();
    let mut next = 0u64; // next sequence number to merge
    let mut sent = 0u64;
    let mut line = 1u64; // line number at the start of `carry`
    let mut carry = prefix;
    carry.reserve(BLOCK_BYTES);
    let mut skipping_long_line = false;
    let mut ends_with_newline = true;
    let mut eof = false;
    let mut buf = vec![0u8; 256 * 1024];

    let mut send = |block: Block,
                    sent: &mut u64,
                    tally: &mut Tally,
                    pending: &mut std::collections::BTreeMap<u64, BlockResult>,
                    next: &mut u64|
     -> io::Result<()> {
        if (*sent - *next) as usize >= in_flight {
            collect_in_order(result_rx, pending, next, *next + 1, tally, sink)?;
        }
        work_tx
            .send(block)
            .map_err(|_| io::Error::other("validator worker stopped"))?;
        *sent += 1;
        Ok(())
    };

    while !eof || !carry.is_empty() {
        // Fill `carry` up to a block, or to the end of the input.
        while !eof && carry.len() < BLOCK_BYTES {
            if skipping_long_line {
                let n = input.read(&mut buf)?;
                if n == 0 {
                    eof = true;
                    break;
                }
                if let Some(p) = memchr::memchr(b'\n', &buf[..n]) {
                    skipping_long_line = false;
                    line += 1;
                    carry.extend_from_slice(&buf[p + 1..n]);
                }
                continue;
            }
            // Read straight into the block (no intermediate copy).
            let want = (BLOCK_BYTES - carry.len()) as u64;
            if input.by_ref().take(want).read_to_end(&mut carry)? == 0 {
                eof = true;
            }
        }
        if carry.is_empty() {
            break;
        }
        // Only the first line of `carry` can be over-long: it grows past a block only while no
        // line end has been found.
        let first_end = memchr::memchr(b'\n', &carry);
        if first_end.unwrap_or(carry.len()) > MAX_LINE_BYTES {
            let block = Block {
                seq: sent,
                first_line: line,
                data: Vec::new(),
                too_long: Some(line),
            };
            send(block, &mut sent, &mut tally, &mut pending, &mut next)?;
            match first_end {
                Some(p) => {
                    carry.drain(..=p);
                    line += 1;
                }
                None => {
                    carry.clear();
                    skipping_long_line = !eof;
                    ends_with_newline = eof;
                }
            }
            continue;
        }
        let cut = if eof {
            Some(carry.len())
        } else {
            memchr::memrchr(b'\n', &carry).map(|p| p + 1)
        };
        match cut {
            Some(cut) => {
                let mut rest = Vec::with_capacity(BLOCK_BYTES + 64 * 1024);
                rest.extend_from_slice(&carry[cut..]);
                carry.truncate(cut);
                let data = std::mem::replace(&mut carry, rest);
                let first_line = line;
                line += memchr::memchr_iter(b'\n', &data).count() as u64;
                ends_with_newline = data.last() == Some(&b'\n');
                let block = Block {
                    seq: sent,
                    first_line,
                    data,
                    too_long: None,
                };
                send(block, &mut sent, &mut tally, &mut pending, &mut next)?;
            }
            None => {
                // No line end yet: read past the block size until one comes (or the limit).
                let n = input.read(&mut buf)?;
                if n == 0 {
                    eof = true;
                } else {
                    carry.extend_from_slice(&buf[..n]);
                }
            }
        }
    }
    let lines = line - 1 + u64::from(!ends_with_newline);
    Ok((tally, pending, next, lines, sent))
}

fn collect_in_order(
    result_rx: &Receiver<BlockResult>,
    pending: &mut std::collections::BTreeMap<u64, BlockResult>,
    next: &mut u64,
    until: u64,
    tally: &mut Tally,
    sink: &mut dyn Write,
) -> io::Result<()> {
    while *next < until {
        if let Some(result) = pending.remove(next) {
            sink.write_all(&result.normalized)?;
            tally.merge(result.tally);
            *next += 1;
            continue;
        }
        match result_rx.recv() {
            Ok(result) => {
                pending.insert(result.seq, result);
            }
            Err(_) => return Err(io::Error::other("validator workers stopped early")),
        }
    }
    Ok(())
}
