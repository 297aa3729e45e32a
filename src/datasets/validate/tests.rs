//! The validator against the shared sample files, a corpus of bad inputs (each with its code
//! and line), block boundaries of the parallel path, and property tests (no panics).

use std::io::{self, Write};
use std::path::PathBuf;

use proptest::prelude::*;

use super::{Counting, Options, validate};
use crate::datasets::{DatasetFormat, ValidationReport};

fn options() -> Options {
    Options {
        counting: Counting::Exact,
        max_seq_len: 2048,
        threads: 2,
        normalize: true,
        hash: true,
    }
}

fn check(bytes: &[u8]) -> ValidationReport {
    validate(bytes, &options(), &mut io::sink()).expect("in-memory validation cannot fail on I/O")
}

fn check_with_output(bytes: &[u8]) -> (ValidationReport, Vec<u8>) {
    let mut out = Vec::new();
    let report = validate(bytes, &options(), &mut out).expect("validate");
    (report, out)
}

fn sample(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/datasets")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("sample file {}: {e}", path.display()))
}

fn only_issue(report: &ValidationReport) -> (&str, Option<u64>) {
    assert_eq!(
        report.error_total(),
        1,
        "exactly one problem expected: {:#?}",
        report.issues
    );
    let issue = &report.issues[0];
    (issue.code.as_str(), issue.line)
}

fn assert_normalized(out: &[u8], examples: u64) {
    let text = std::str::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() as u64, examples);
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let messages = value["messages"].as_array().unwrap();
        assert!(messages.iter().any(|m| m["role"] == "assistant"));
        assert!(messages.iter().all(|m| m["content"].is_string()));
    }
}

// ---------------------------------------------------------------------------------------------
// The shared sample files
// ---------------------------------------------------------------------------------------------

#[test]
fn brightrun_full_json_is_valid_and_null_targets_are_not_examples() {
    let (report, out) = check_with_output(&sample("brightrun-v4-full.json"));
    assert_eq!(report.format, Some(DatasetFormat::BrightrunV4Json));
    assert!(report.is_valid(), "{:#?}", report.issues);
    assert_eq!(report.statistics.examples, 32);
    assert_eq!(report.statistics.skipped_examples, 7);
    assert_eq!(report.statistics.conversations, 13);
    assert!(report.training_ready().is_ok());
    assert_normalized(&out, 32);
}

#[test]
fn brightrun_jsonl_is_valid() {
    let (report, out) = check_with_output(&sample("brightrun-v4.jsonl"));
    assert_eq!(report.format, Some(DatasetFormat::BrightrunV4Jsonl));
    assert!(report.is_valid(), "{:#?}", report.issues);
    assert_eq!(report.statistics.examples, 32);
    assert_eq!(report.statistics.conversations, 13);
    assert_eq!(
        report.statistics.lines, 33,
        "no trailing newline: the last line still counts"
    );
    assert_normalized(&out, 32);
}

#[test]
fn openai_alpaca_and_sharegpt_samples_are_valid() {
    for (file, format) in [
        ("openai-chat.jsonl", DatasetFormat::OpenaiChat),
        ("alpaca.json", DatasetFormat::Alpaca),
        ("sharegpt.jsonl", DatasetFormat::Sharegpt),
    ] {
        let (report, out) = check_with_output(&sample(file));
        assert_eq!(report.format, Some(format), "{file}");
        assert!(report.is_valid(), "{file}: {:#?}", report.issues);
        assert_eq!(report.statistics.examples, 40, "{file}");
        assert_eq!(report.sample.len(), 3);
        let s = &report.statistics;
        assert!(
            s.total_tokens > 0 && s.assistant_tokens > 0 && s.assistant_tokens < s.total_tokens
        );
        assert!(
            s.tokens.min <= s.tokens.p50
                && s.tokens.p50 <= s.tokens.p95
                && s.tokens.p95 <= s.tokens.max
        );
        assert_eq!(s.tokens.histogram.iter().map(|b| b.count).sum::<u64>(), 40);
        assert_normalized(&out, 40);
        assert_eq!(report.sha256.len(), 64);
    }
}

#[test]
fn broken_samples_report_their_line() {
    for (file, code, line) in [
        ("broken-invalid-json-line.jsonl", "invalid_json", 6),
        ("broken-missing-assistant.jsonl", "missing_assistant", 4),
        ("broken-unknown-role.jsonl", "unknown_role", 3),
    ] {
        let report = check(&sample(file));
        assert_eq!(only_issue(&report), (code, Some(line)), "{file}");
        assert!(!report.is_valid());
        assert!(report.training_ready().is_err());
        assert!(!report.issues[0].suggestion.is_empty());
    }
    let report = check(&sample("broken-empty.jsonl"));
    assert_eq!(only_issue(&report), ("empty_file", None));
}

#[test]
fn exact_token_counts_use_a_real_bpe() {
    let report = check(
        br#"{"messages":[{"role":"user","content":"Hello, world!"},{"role":"assistant","content":"Hi there."}]}"#,
    );
    // cl100k_base: "Hello, world!" = 4 tokens, "Hi there." = 3 tokens; 3 per message + 3.
    assert_eq!(report.statistics.total_tokens, 4 + 3 + 3 + 3 + 3);
    assert_eq!(report.statistics.assistant_tokens, 3);
}

// ---------------------------------------------------------------------------------------------
// A corpus of bad inputs: each gives its code and line
// ---------------------------------------------------------------------------------------------

const OK: &str =
    r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}"#;

fn jsonl_with(bad: &str, at: usize) -> Vec<u8> {
    let mut lines: Vec<String> = (0..6).map(|_| OK.to_owned()).collect();
    lines.insert(at - 1, bad.to_owned());
    lines.join("\n").into_bytes()
}

#[test]
fn corpus_of_bad_inputs() {
    let cases: Vec<(&str, Vec<u8>, &str, Option<u64>)> = vec![
        ("truncated line", jsonl_with(r#"{"messages":[{"role":"user","#, 3), "invalid_json", Some(3)),
        ("trailing comma", jsonl_with(r#"{"messages":[],}"#, 2), "invalid_json", Some(2)),
        ("single quotes", jsonl_with("{'messages': []}", 4), "invalid_json", Some(4)),
        ("bare word", jsonl_with("hello", 1), "invalid_json", Some(1)),
        ("NaN", jsonl_with(r#"{"messages": NaN}"#, 5), "invalid_json", Some(5)),
        ("array line", jsonl_with("[1,2,3]", 2), "not_an_object", Some(2)),
        ("string line", jsonl_with(r#""just text""#, 2), "not_an_object", Some(2)),
        ("number line", jsonl_with("42", 7), "not_an_object", Some(7)),
        ("unknown keys", jsonl_with(r#"{"prompt":"a","completion":"b"}"#, 3), "unknown_format", Some(3)),
        ("empty object", jsonl_with("{}", 2), "unknown_format", Some(2)),
        ("messages not list", jsonl_with(r#"{"messages":"hi"}"#, 2), "missing_messages", Some(2)),
        ("messages empty", jsonl_with(r#"{"messages":[]}"#, 6), "missing_messages", Some(6)),
        ("messages null", jsonl_with(r#"{"messages":null}"#, 2), "missing_messages", Some(2)),
        (
            "no assistant",
            jsonl_with(r#"{"messages":[{"role":"user","content":"hi"}]}"#, 3),
            "missing_assistant",
            Some(3),
        ),
        (
            "empty assistant",
            jsonl_with(r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"  "}]}"#, 2),
            "empty_content",
            Some(2),
        ),
        (
            "unknown role",
            jsonl_with(r#"{"messages":[{"role":"customer","content":"hi"},{"role":"assistant","content":"x"}]}"#, 4),
            "unknown_role",
            Some(4),
        ),
        (
            "missing role",
            jsonl_with(r#"{"messages":[{"content":"hi"},{"role":"assistant","content":"x"}]}"#, 2),
            "missing_role",
            Some(2),
        ),
        (
            "role is a number",
            jsonl_with(r#"{"messages":[{"role":1,"content":"hi"},{"role":"assistant","content":"x"}]}"#, 2),
            "invalid_field_type",
            Some(2),
        ),
        (
            "missing content",
            jsonl_with(r#"{"messages":[{"role":"user"},{"role":"assistant","content":"x"}]}"#, 2),
            "missing_content",
            Some(2),
        ),
        (
            "content is a number",
            jsonl_with(r#"{"messages":[{"role":"user","content":5},{"role":"assistant","content":"x"}]}"#, 2),
            "invalid_field_type",
            Some(2),
        ),
        (
            "image part",
            jsonl_with(
                r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]},{"role":"assistant","content":"x"}]}"#,
                2,
            ),
            "unsupported_content",
            Some(2),
        ),
        (
            "message is a string",
            jsonl_with(r#"{"messages":["hi",{"role":"assistant","content":"x"}]}"#, 2),
            "invalid_record",
            Some(2),
        ),
        (
            "mixed formats",
            jsonl_with(r#"{"instruction":"a","input":"","output":"b"}"#, 4),
            "mixed_formats",
            Some(4),
        ),
        ("invalid utf-8", {
            let mut bytes = jsonl_with("X", 3);
            let at = bytes.iter().position(|&b| b == b'X').unwrap();
            bytes.splice(at..=at, br#"{"messages":[{"role":"user","content":"caf"#.iter().copied().chain([0xC3, 0x28]).chain(br#""},{"role":"assistant","content":"x"}]}"#.iter().copied()));
            bytes
        }, "invalid_utf8", Some(3)),
        ("nesting bomb in a line", jsonl_with(&format!("{{\"messages\":{}{}}}", "[".repeat(500), "]".repeat(500)), 2), "nesting_too_deep", Some(2)),
        ("misplaced _meta", jsonl_with(r#"{"_meta":{"total_pairs":1}}"#, 3), "mixed_formats", Some(3)),
        ("only whitespace", b" \n\n \r\n\t".to_vec(), "empty_file", None),
        ("empty array", b"[]".to_vec(), "no_examples", None),
        ("array of numbers", b"[1, 2]".to_vec(), "not_an_object", Some(1)),
        ("truncated array", format!("[\n{OK},\n{OK}").into_bytes(), "truncated_json", Some(3)),
        ("garbage after array", format!("[{OK}]\nextra").into_bytes(), "invalid_json", Some(2)),
        ("array bomb", format!("[{}", "[".repeat(100_000)).into_bytes(), "nesting_too_deep", Some(1)),
        (
            "alpaca missing output",
            br#"[{"instruction":"a","input":""},{"instruction":"b","output":"c"}]"#.to_vec(),
            "missing_field",
            Some(1),
        ),
        (
            "alpaca output not string",
            b"[\n{\"instruction\":\"a\",\"output\":\"b\"},\n{\"instruction\":\"a\",\"output\":7}\n]".to_vec(),
            "invalid_field_type",
            Some(3),
        ),
        (
            "sharegpt bad from",
            br#"{"conversations":[{"from":"human","value":"a"},{"from":"robot","value":"b"}]}"#.to_vec(),
            "unknown_role",
            Some(1),
        ),
        (
            "sharegpt missing value",
            br#"{"conversations":[{"from":"human"},{"from":"gpt","value":"b"}]}"#.to_vec(),
            "missing_content",
            Some(1),
        ),
        (
            "brightrun pair without user input",
            b"{\"_meta\":{\"total_pairs\":1}}\n{\"system_prompt\":\"s\",\"target_response\":\"t\"}".to_vec(),
            "missing_field",
            Some(2),
        ),
        (
            "brightrun object without conversations",
            b"{\n \"training_file_metadata\": {}\n}".to_vec(),
            "unknown_format",
            Some(1),
        ),
        (
            "brightrun conversation without pairs",
            b"{\n \"conversations\": [\n  {\"id\": 1}\n ]\n}".to_vec(),
            "missing_field",
            Some(3),
        ),
        (
            "brightrun truncated document",
            b"{\n \"conversations\": [\n  {\"training_pairs\": [\n".to_vec(),
            "truncated_json",
            Some(4),
        ),
    ];
    assert!(cases.len() >= 30, "{} cases", cases.len());
    for (name, bytes, code, line) in cases {
        let report = check(&bytes);
        assert!(!report.is_valid(), "{name}: should be invalid");
        let issue = report
            .issues
            .first()
            .unwrap_or_else(|| panic!("{name}: no issue reported"));
        assert_eq!(
            (issue.code.as_str(), issue.line),
            (code, line),
            "{name}: {:#?}",
            report.issues
        );
        assert!(
            !issue.message.is_empty() && !issue.suggestion.is_empty(),
            "{name}"
        );
    }
}

#[test]
fn bom_crlf_blank_lines_and_no_final_newline_are_fine() {
    let text = format!("\u{feff}{OK}\r\n\r\n   \r\n{OK}\r\n{OK}");
    let report = check(text.as_bytes());
    assert!(report.is_valid(), "{:#?}", report.issues);
    assert_eq!(report.statistics.examples, 3);
    assert_eq!(report.statistics.lines, 5);
    // A JSON array with a BOM and CRLF too.
    let report = check(format!("\u{feff}[\r\n{OK},\r\n{OK}\r\n]\r\n").as_bytes());
    assert!(report.is_valid(), "{:#?}", report.issues);
}

#[test]
fn counts_cover_the_whole_file_but_only_100_issues_are_kept() {
    let mut text = String::new();
    for _ in 0..250 {
        text.push_str("{broken\n");
    }
    text.push_str(OK);
    let report = check(text.as_bytes());
    assert_eq!(report.error_counts["invalid_json"], 250);
    assert_eq!(report.issues.len(), 100);
    assert_eq!(report.issues[99].line, Some(100));
    assert_eq!(report.statistics.examples, 1);
}

#[test]
fn line_numbers_stay_right_across_parallel_blocks() {
    // ~12 MiB of JSONL: several 4 MiB blocks, processed out of order by two threads.
    let long = "x".repeat(3000);
    let good = format!(
        r#"{{"messages":[{{"role":"user","content":"{long}"}},{{"role":"assistant","content":"ok"}}]}}"#
    );
    let mut lines = Vec::new();
    for i in 1..=4000u64 {
        lines.push(if i == 3999 || i == 1777 {
            "{oops".to_owned()
        } else {
            good.clone()
        });
    }
    let (report, out) = check_with_output(lines.join("\n").as_bytes());
    assert_eq!(report.error_counts["invalid_json"], 2);
    let bad: Vec<_> = report.issues.iter().map(|i| i.line).collect();
    assert_eq!(bad, vec![Some(1777), Some(3999)]);
    assert_eq!(report.statistics.examples, 3998);
    assert_eq!(report.statistics.lines, 4000);
    assert_normalized(&out, 3998);
}

#[test]
fn an_overlong_line_is_refused_without_buffering_it() {
    let mut bytes = format!("{OK}\n").into_bytes();
    bytes.extend(std::iter::repeat_n(b'x', super::MAX_LINE_BYTES + 10));
    bytes.extend(format!("\n{OK}\n{OK}").bytes());
    let report = check(&bytes);
    assert_eq!(only_issue(&report), ("line_too_long", Some(2)));
    assert_eq!(report.statistics.examples, 3);
}

#[test]
fn over_length_examples_are_counted_not_refused() {
    let long = "word ".repeat(3000);
    let line = format!(
        r#"{{"messages":[{{"role":"user","content":"{long}"}},{{"role":"assistant","content":"ok"}}]}}"#
    );
    let text = format!("{line}\n{OK}\n");
    let report = check(text.as_bytes());
    assert!(report.is_valid());
    assert_eq!(report.statistics.over_max_seq_len, 1);
    assert!(report.statistics.tokens.max > 2048);
}

#[test]
fn training_ready_needs_ten_examples() {
    let few = [OK; 9].join("\n");
    let report = check(few.as_bytes());
    assert!(report.is_valid());
    assert!(report.training_ready().unwrap_err().contains("at least 10"));
    let enough = [OK; 10].join("\n");
    assert!(check(enough.as_bytes()).training_ready().is_ok());
}

#[test]
fn the_normalised_output_is_written_in_file_order() {
    let mut text = String::new();
    for i in 0..50 {
        text.push_str(&format!(
            "{{\"instruction\":\"q{i}\",\"input\":\"\",\"output\":\"a{i}\"}}\n"
        ));
    }
    let (report, out) = check_with_output(text.as_bytes());
    assert_eq!(report.format, Some(DatasetFormat::Alpaca));
    let firsts: Vec<String> = std::str::from_utf8(&out)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["messages"][0]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(firsts, (0..50).map(|i| format!("q{i}")).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------------
// Properties: whatever the bytes, no panic, and the report is consistent
// ---------------------------------------------------------------------------------------------

fn consistent(report: &ValidationReport) {
    assert!(report.issues.len() <= 100);
    assert!(report.issues.len() as u64 <= report.error_total());
    assert!(report.sample.len() <= 3);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        consistent(&check(&bytes));
    }

    #[test]
    fn json_like_text_never_panics(text in r#"[\[\]{}":,a-z0-9 \n\\]{0,400}"#) {
        consistent(&check(text.as_bytes()));
    }

    #[test]
    fn mutated_valid_files_never_panic(cut in 0usize..2000, byte in any::<u8>(), pos in 0usize..2000) {
        for name in ["brightrun-v4-full.json", "alpaca.json", "openai-chat.jsonl"] {
            let mut bytes = sample(name);
            let cut = cut % bytes.len();
            bytes.truncate(bytes.len() - cut);
            if !bytes.is_empty() {
                let at = pos % bytes.len();
                bytes[at] = byte;
            }
            consistent(&check(&bytes));
        }
    }
}

#[test]
fn output_writer_errors_are_reported() {
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let text = [OK; 20].join("\n");
    let error = validate(text.as_bytes(), &options(), &mut Broken).unwrap_err();
    assert!(error.to_string().contains("disk full"));
}

#[test]
fn a_huge_value_is_quoted_in_at_most_200_characters() {
    // A 1 MB role, a 1 MB key and a 1 MB bare word: no message carries more than 200
    // characters of them.
    let huge = "r".repeat(1 << 20);
    for bad in [
        format!(
            r#"{{"messages":[{{"role":"{huge}","content":"hi"}},{{"role":"assistant","content":"x"}}]}}"#
        ),
        format!(r#"{{"{huge}":1}}"#),
        huge.clone(),
    ] {
        let report = check(&jsonl_with(&bad, 2));
        assert!(!report.issues.is_empty());
        for issue in &report.issues {
            assert!(
                issue.message.chars().count() <= 200 && issue.suggestion.chars().count() <= 200,
                "{} / {}",
                issue.message.len(),
                issue.suggestion.len()
            );
        }
    }
}
