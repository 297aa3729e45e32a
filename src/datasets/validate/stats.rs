//! Statistics accumulated per block of records and merged in file order. Everything is
//! bounded: a fixed histogram, the first problems, the first samples.

use std::collections::BTreeMap;

use super::examples::{Example, Role};
use super::{Counting, Problem};
use crate::datasets::{
    HistogramBucket, MAX_REPORTED_ISSUES, SampleMessage, TokenDistribution, ValidationIssue,
};
use crate::format::{MAX_MESSAGE_CHARS, clip};

/// Exact counts for examples up to this many tokens; longer ones share the last bucket (their
/// exact maximum is tracked separately).
const HISTOGRAM_LIMIT: usize = 1 << 16;
const SAMPLE_SIZE: usize = 3;
const SAMPLE_CHARS: usize = 2000;
/// Per-message overhead of chat formatting, as OpenAI's cookbook counts it.
const TOKENS_PER_MESSAGE: u64 = 3;
const TOKENS_PER_EXAMPLE: u64 = 3;

#[derive(Default)]
pub struct Tally {
    pub examples: u64,
    pub skipped: u64,
    pub conversations: u64,
    pub messages: u64,
    pub user_turns: u64,
    pub total_tokens: u64,
    pub assistant_tokens: u64,
    pub over_max: u64,
    pub min: Option<u64>,
    pub max: u64,
    histogram: Option<Box<[u32]>>,
    pub issues: Vec<ValidationIssue>,
    pub error_counts: BTreeMap<String, u64>,
    pub sample: Vec<Vec<SampleMessage>>,
    /// The conversation id of the last example, to count conversations without remembering ids.
    pub last_conversation: Option<String>,
    pub first_conversation: Option<String>,
}

pub fn count_tokens(counting: Counting, text: &str) -> u64 {
    match counting {
        Counting::Approximate => (text.len() as u64).div_ceil(4),
        Counting::Exact => bpe_openai::cl100k_base().count(text) as u64,
    }
}

impl Tally {
    pub fn problem(&mut self, line: Option<u64>, index: Option<u64>, problem: Problem) {
        *self
            .error_counts
            .entry(problem.code.to_owned())
            .or_default() += 1;
        if self.issues.len() < MAX_REPORTED_ISSUES {
            self.issues.push(ValidationIssue {
                line,
                index,
                code: problem.code.to_owned(),
                // Whatever built it, a stored message quotes at most this much of the file.
                message: clip(&problem.message, MAX_MESSAGE_CHARS).into_owned(),
                suggestion: clip(&problem.suggestion, MAX_MESSAGE_CHARS).into_owned(),
            });
        }
    }

    pub fn example(&mut self, example: &Example<'_>, counting: Counting, max_seq_len: u32) {
        let mut tokens = TOKENS_PER_EXAMPLE;
        for (role, content) in &example.messages {
            let count = count_tokens(counting, content);
            tokens += count + TOKENS_PER_MESSAGE;
            match role {
                Role::Assistant => self.assistant_tokens += count,
                Role::User => self.user_turns += 1,
                Role::System => {}
            }
        }
        self.examples += 1;
        self.messages += example.messages.len() as u64;
        self.total_tokens += tokens;
        if tokens > u64::from(max_seq_len) {
            self.over_max += 1;
        }
        self.min = Some(self.min.map_or(tokens, |m| m.min(tokens)));
        self.max = self.max.max(tokens);
        let histogram = self
            .histogram
            .get_or_insert_with(|| vec![0u32; HISTOGRAM_LIMIT + 1].into_boxed_slice());
        histogram[(tokens as usize).min(HISTOGRAM_LIMIT)] += 1;

        match &example.conversation {
            Some(id) => {
                if self.last_conversation.as_deref() != Some(id.as_ref()) {
                    self.conversations += 1;
                    self.last_conversation = Some(id.to_string());
                    if self.first_conversation.is_none() {
                        self.first_conversation = Some(id.to_string());
                    }
                }
            }
            None => self.conversations += 1,
        }

        if self.sample.len() < SAMPLE_SIZE {
            self.sample.push(
                example
                    .messages
                    .iter()
                    .map(|(role, content)| SampleMessage {
                        role: role.as_str().to_owned(),
                        content: truncate(content, SAMPLE_CHARS),
                    })
                    .collect(),
            );
        }
    }

    /// Appends the tally of the records that follow this one in the file.
    pub fn merge(&mut self, next: Tally) {
        self.examples += next.examples;
        self.skipped += next.skipped;
        self.messages += next.messages;
        self.user_turns += next.user_turns;
        self.total_tokens += next.total_tokens;
        self.assistant_tokens += next.assistant_tokens;
        self.over_max += next.over_max;
        self.max = self.max.max(next.max);
        self.min = match (self.min, next.min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match (&mut self.histogram, next.histogram) {
            (Some(mine), Some(theirs)) => mine
                .iter_mut()
                .zip(theirs.iter())
                .for_each(|(a, b)| *a += b),
            (mine @ None, theirs) => *mine = theirs,
            (_, None) => {}
        }
        // A conversation split across two blocks is one conversation.
        let continues =
            next.first_conversation.is_some() && next.first_conversation == self.last_conversation;
        self.conversations += next.conversations - u64::from(continues);
        if next.last_conversation.is_some() {
            self.last_conversation = next.last_conversation;
        }
        if self.first_conversation.is_none() {
            self.first_conversation = next.first_conversation;
        }
        for (code, count) in next.error_counts {
            *self.error_counts.entry(code).or_default() += count;
        }
        let room = MAX_REPORTED_ISSUES.saturating_sub(self.issues.len());
        self.issues.extend(next.issues.into_iter().take(room));
        let room = SAMPLE_SIZE.saturating_sub(self.sample.len());
        self.sample.extend(next.sample.into_iter().take(room));
    }

    /// min, p50, p95, max, mean and a 16-bucket chart of tokens per example.
    pub fn distribution(&self) -> TokenDistribution {
        let Some(histogram) = &self.histogram else {
            return TokenDistribution::default();
        };
        let n = self.examples;
        let percentile = |p: u64| -> u64 {
            // Nearest rank: the smallest value with at least ceil(p% of n) examples at or below it.
            let rank = (p * n).div_ceil(100).max(1);
            let mut seen = 0u64;
            for (tokens, count) in histogram.iter().enumerate() {
                seen += u64::from(*count);
                if seen >= rank {
                    return if tokens == HISTOGRAM_LIMIT {
                        self.max
                    } else {
                        tokens as u64
                    };
                }
            }
            self.max
        };
        let min = self.min.unwrap_or(0);
        let max = self.max;
        let buckets = 16u64;
        let width = ((max - min) / buckets + 1).max(1);
        let mut chart: Vec<HistogramBucket> = (0..buckets)
            .map(|i| HistogramBucket {
                from: min + i * width,
                to: min + (i + 1) * width - 1,
                count: 0,
            })
            .take_while(|b| b.from <= max)
            .collect();
        for (tokens, count) in histogram.iter().enumerate() {
            if *count == 0 {
                continue;
            }
            let tokens = if tokens == HISTOGRAM_LIMIT {
                max
            } else {
                tokens as u64
            };
            let at = ((tokens.saturating_sub(min)) / width) as usize;
            let last = chart.len().saturating_sub(1);
            if let Some(bucket) = chart.get_mut(at.min(last)) {
                bucket.count += u64::from(*count);
            }
        }
        TokenDistribution {
            min,
            p50: percentile(50),
            p95: percentile(95),
            max,
            mean: if n == 0 {
                0.0
            } else {
                self.total_tokens as f64 / n as f64
            },
            histogram: chart,
        }
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}
