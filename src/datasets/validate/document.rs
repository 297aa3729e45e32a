//! Files that are one JSON document: a top-level array of records (any format), or the
//! brightrun-lora-v4 full JSON object whose `conversations[].training_pairs[]` are the records.
//!
//! A byte-level scanner walks the structure with line numbers and copies out one record at a
//! time (bounded), so memory stays constant whatever the document size.

use std::io::{self, Read, Write};

use super::examples::detect;
use super::stats::Tally;
use super::{Options, Problem, handle_record, parse_record, unknown_format, utf8_problem};
use crate::datasets::DatasetFormat;

/// One record (or conversation) larger than this is refused.
const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;
/// Structure deeper than this is a nesting bomb.
const MAX_DEPTH: usize = 64;

enum ScanError {
    Io(io::Error),
    /// Not JSON (or not the structure we expect) at a line: the document cannot be followed.
    Syntax {
        line: u64,
        message: String,
    },
    Truncated {
        line: u64,
    },
    TooDeep {
        line: u64,
    },
    TooLarge {
        line: u64,
    },
}

impl From<io::Error> for ScanError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

struct Scanner<R> {
    reader: R,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    line: u64,
}

impl<R: Read> Scanner<R> {
    fn new(reader: R) -> Self {
        Self {
            reader,
            buf: vec![0; 64 * 1024].into_boxed_slice(),
            pos: 0,
            len: 0,
            line: 1,
        }
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        if self.pos == self.len {
            self.len = self.reader.read(&mut self.buf)?;
            self.pos = 0;
            if self.len == 0 {
                return Ok(None);
            }
        }
        Ok(Some(self.buf[self.pos]))
    }

    fn next(&mut self) -> io::Result<Option<u8>> {
        let byte = self.peek()?;
        if let Some(b) = byte {
            self.pos += 1;
            if b == b'\n' {
                self.line += 1;
            }
        }
        Ok(byte)
    }

    /// The next non-whitespace byte, not consumed.
    fn peek_token(&mut self) -> io::Result<Option<u8>> {
        while let Some(b) = self.peek()? {
            if b.is_ascii_whitespace() {
                self.next()?;
            } else {
                return Ok(Some(b));
            }
        }
        Ok(None)
    }

    fn expect(&mut self, wanted: u8, what: &str) -> Result<(), ScanError> {
        match self.peek_token()? {
            Some(b) if b == wanted => {
                self.next()?;
                Ok(())
            }
            Some(b) => Err(ScanError::Syntax {
                line: self.line,
                message: format!("expected {what}, found '{}'", b as char),
            }),
            None => Err(ScanError::Truncated { line: self.line }),
        }
    }

    /// Copies (or, with `out` = None, skips) one complete JSON value.
    fn value(&mut self, mut out: Option<&mut Vec<u8>>) -> Result<(), ScanError> {
        let start_line = self.line;
        let first = self
            .peek_token()?
            .ok_or(ScanError::Truncated { line: self.line })?;
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        let push = |out: &mut Option<&mut Vec<u8>>, b: u8| -> Result<(), ScanError> {
            if let Some(out) = out.as_deref_mut() {
                if out.len() >= MAX_RECORD_BYTES {
                    return Err(ScanError::TooLarge { line: start_line });
                }
                out.push(b);
            }
            Ok(())
        };
        if !matches!(first, b'{' | b'[' | b'"') {
            // A scalar: up to the next delimiter.
            while let Some(b) = self.peek()? {
                if matches!(b, b',' | b']' | b'}') || b.is_ascii_whitespace() {
                    return Ok(());
                }
                push(&mut out, b)?;
                self.next()?;
            }
            return Ok(());
        }
        loop {
            let b = self
                .next()?
                .ok_or(ScanError::Truncated { line: self.line })?;
            push(&mut out, b)?;
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(ScanError::TooDeep { line: self.line });
                    }
                }
                b'}' | b']' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
    }

    /// An object key (a short string).
    fn key(&mut self) -> Result<String, ScanError> {
        let line = self.line;
        if self.peek_token()? != Some(b'"') {
            return Err(ScanError::Syntax {
                line,
                message: "expected a quoted key".into(),
            });
        }
        let mut raw = Vec::new();
        self.value(Some(&mut raw))?;
        serde_json::from_slice::<String>(&raw).map_err(|e| ScanError::Syntax {
            line,
            message: format!("invalid key: {e}"),
        })
    }

    /// After an element: `,` (more follow) or the closing bracket (done).
    fn separator(&mut self, close: u8) -> Result<bool, ScanError> {
        match self.peek_token()? {
            Some(b',') => {
                self.next()?;
                Ok(true)
            }
            Some(b) if b == close => {
                self.next()?;
                Ok(false)
            }
            Some(b) => Err(ScanError::Syntax {
                line: self.line,
                message: format!("expected ',' or '{}', found '{}'", close as char, b as char),
            }),
            None => Err(ScanError::Truncated { line: self.line }),
        }
    }
}

struct Walk<'o> {
    options: &'o Options,
    tally: Tally,
    format: Option<DatasetFormat>,
    index: u64,
    out: Vec<u8>,
}

impl Walk<'_> {
    /// Checks one captured record, found at `line`.
    fn record(
        &mut self,
        raw: &[u8],
        line: u64,
        conversation: Option<&str>,
        fixed: Option<DatasetFormat>,
    ) {
        let index = self.index;
        self.index += 1;
        let at = (Some(line), Some(index));
        if let Err(e) = std::str::from_utf8(raw) {
            self.tally.problem(Some(line), Some(index), utf8_problem(e));
            return;
        }
        let record = match parse_record(raw) {
            Ok(record) => record,
            Err(problem) => {
                self.tally.problem(Some(line), Some(index), problem);
                return;
            }
        };
        let format = match (fixed, detect(&record)) {
            (Some(fixed), _) => fixed,
            (None, None) => {
                self.tally
                    .problem(Some(line), Some(index), unknown_format());
                return;
            }
            (None, Some(kind)) => match self.format {
                None => {
                    self.format = Some(kind);
                    kind
                }
                Some(format) if format == kind => format,
                Some(format) => {
                    self.tally.problem(
                        Some(line),
                        Some(index),
                        Problem::new(
                            "mixed_formats",
                            format!(
                                "this record is {}, but the file is {}",
                                kind.label(),
                                format.label()
                            ),
                            "Use one format for the whole file.",
                        ),
                    );
                    return;
                }
            },
        };
        handle_record(
            record,
            format,
            at,
            false,
            conversation,
            self.options,
            &mut self.tally,
            &mut self.out,
        );
    }

    fn flush(&mut self, sink: &mut dyn Write) -> io::Result<()> {
        sink.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }
}

pub(super) fn validate<R: Read>(
    reader: R,
    options: &Options,
    sink: &mut dyn Write,
) -> io::Result<(Option<DatasetFormat>, Tally, u64)> {
    let mut scanner = Scanner::new(reader);
    let mut walk = Walk {
        options,
        tally: Tally::default(),
        format: None,
        index: 0,
        out: Vec::new(),
    };
    let result = match scanner.peek_token()? {
        Some(b'[') => records_array(&mut scanner, &mut walk, sink, None, None),
        _ => {
            walk.format = Some(DatasetFormat::BrightrunV4Json);
            brightrun_document(&mut scanner, &mut walk, sink)
        }
    };
    let result = result.and_then(|()| match scanner.peek_token()? {
        None => Ok(()),
        Some(_) => Err(ScanError::Syntax {
            line: scanner.line,
            message: "unexpected data after the end of the JSON document".into(),
        }),
    });
    match result {
        Ok(()) => {}
        Err(ScanError::Io(e)) => return Err(e),
        Err(error) => {
            let (line, problem) = describe(error);
            walk.tally.problem(Some(line), None, problem);
        }
    }
    walk.flush(sink)?;
    // Count the remaining lines for the statistics.
    while scanner.next()?.is_some() {}
    Ok((walk.format, walk.tally, scanner.line))
}

fn describe(error: ScanError) -> (u64, Problem) {
    match error {
        ScanError::Syntax { line, message } => (
            line,
            Problem::new(
                "invalid_json",
                format!("invalid JSON: {message}"),
                "Fix the syntax at this line (quotes, commas, brackets); the rest of the file could not be read.",
            ),
        ),
        ScanError::Truncated { line } => (
            line,
            Problem::new(
                "truncated_json",
                "the JSON document ends before it is complete",
                "The file was cut off: upload it again, or close the open brackets.",
            ),
        ),
        ScanError::TooDeep { line } => (
            line,
            Problem::new(
                "nesting_too_deep",
                format!("the JSON is nested more than {MAX_DEPTH} levels deep"),
                "Records are flat objects with lists of messages; remove the deep nesting.",
            ),
        ),
        ScanError::TooLarge { line } => (
            line,
            Problem::new(
                "record_too_large",
                format!(
                    "one record is larger than {} MiB",
                    MAX_RECORD_BYTES / (1024 * 1024)
                ),
                "Split very large examples or conversations into smaller ones.",
            ),
        ),
        ScanError::Io(e) => (
            0,
            Problem::new("io_error", e.to_string(), "Upload the file again."),
        ),
    }
}

/// `[record, record, …]`: each element is one record.
fn records_array<R: Read>(
    scanner: &mut Scanner<R>,
    walk: &mut Walk<'_>,
    sink: &mut dyn Write,
    conversation: Option<&str>,
    fixed: Option<DatasetFormat>,
) -> Result<(), ScanError> {
    scanner.expect(b'[', "'['")?;
    if scanner.peek_token()? == Some(b']') {
        scanner.next()?;
        return Ok(());
    }
    let mut raw = Vec::new();
    loop {
        raw.clear();
        scanner.peek_token()?;
        let line = scanner.line;
        scanner.value(Some(&mut raw))?;
        walk.record(&raw, line, conversation, fixed);
        if walk.out.len() > 1024 * 1024 {
            walk.flush(sink)?;
        }
        if !scanner.separator(b']')? {
            return Ok(());
        }
    }
}

/// `{…, "conversations": [{…, "training_pairs": [pair, …]}, …]}`.
fn brightrun_document<R: Read>(
    scanner: &mut Scanner<R>,
    walk: &mut Walk<'_>,
    sink: &mut dyn Write,
) -> Result<(), ScanError> {
    scanner.expect(b'{', "'{' or '['")?;
    let mut saw_conversations = false;
    if scanner.peek_token()? == Some(b'}') {
        scanner.next()?;
    } else {
        loop {
            let key = scanner.key()?;
            scanner.expect(b':', "':'")?;
            if key == "conversations" {
                saw_conversations = true;
                conversations(scanner, walk, sink)?;
            } else {
                scanner.value(None)?;
            }
            if !scanner.separator(b'}')? {
                break;
            }
        }
    }
    if !saw_conversations {
        walk.tally.problem(
            Some(1),
            None,
            Problem::new(
                "unknown_format",
                "the JSON object has no \"conversations\" list",
                "A single JSON object must be brightrun-lora-v4 ({\"conversations\": [{\"training_pairs\": […]}]}); \
                 for other formats use a JSON array or JSONL.",
            ),
        );
    }
    Ok(())
}

fn conversations<R: Read>(
    scanner: &mut Scanner<R>,
    walk: &mut Walk<'_>,
    sink: &mut dyn Write,
) -> Result<(), ScanError> {
    scanner.expect(b'[', "'[' (the conversations list)")?;
    if scanner.peek_token()? == Some(b']') {
        scanner.next()?;
        return Ok(());
    }
    let mut number = 0u64;
    loop {
        number += 1;
        let first = scanner.peek_token()?;
        let line = scanner.line;
        if first != Some(b'{') {
            walk.tally.problem(
                Some(line),
                None,
                Problem::new(
                    "invalid_record",
                    format!("conversation {number} is not a JSON object"),
                    "Each conversation is an object with a \"training_pairs\" list.",
                ),
            );
            scanner.value(None)?;
        } else {
            scanner.next()?;
            let label = format!("#{number}");
            let mut saw_pairs = false;
            if scanner.peek_token()? == Some(b'}') {
                scanner.next()?;
            } else {
                loop {
                    let key = scanner.key()?;
                    scanner.expect(b':', "':'")?;
                    if key == "training_pairs" {
                        saw_pairs = true;
                        records_array(
                            scanner,
                            walk,
                            sink,
                            Some(&label),
                            Some(DatasetFormat::BrightrunV4Json),
                        )?;
                    } else {
                        scanner.value(None)?;
                    }
                    if !scanner.separator(b'}')? {
                        break;
                    }
                }
            }
            if !saw_pairs {
                walk.tally.problem(
                    Some(line),
                    None,
                    Problem::new(
                        "missing_field",
                        format!("conversation {number} has no \"training_pairs\" list"),
                        "Give every conversation a \"training_pairs\" array.",
                    ),
                );
            }
        }
        if !scanner.separator(b']')? {
            return Ok(());
        }
    }
}
