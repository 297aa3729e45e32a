//! How the CLI writes: tables and sentences for people, the API's JSON for scripts, progress
//! bars on standard error only where a person watches (never with `--json` or into a pipe).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

pub struct Output {
    json: bool,
    /// Standard error is a terminal: progress can be drawn.
    interactive: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Self {
            json,
            interactive: std::io::stderr().is_terminal(),
        }
    }

    pub fn json(&self) -> bool {
        self.json
    }

    /// One JSON document on standard output.
    pub fn json_value(&self, value: &impl Serialize) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut stdout, value)?;
        writeln!(stdout)?;
        Ok(())
    }

    /// One JSON line on standard output (a stream of events), flushed at once.
    pub fn json_line(&self, value: &impl Serialize) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer(&mut stdout, value)?;
        writeln!(stdout)?;
        stdout.flush()?;
        Ok(())
    }

    /// A line beside a bar: above it on a terminal, on standard output when nobody watches a
    /// bar (a log file keeps the stages), nowhere with `--json` (the events say it all).
    pub fn note(&self, bar: &ProgressBar, message: impl Into<String>) {
        if self.json {
            return;
        }
        if self.interactive {
            bar.println(message.into());
        } else {
            println!("{}", message.into());
        }
    }

    /// Whether bars are drawn (else [`Output::note`] prints plain lines).
    pub fn interactive(&self) -> bool {
        self.interactive && !self.json
    }

    /// A bar counting `total` bytes.
    pub fn bytes_bar(&self, total: u64, what: &str) -> ProgressBar {
        let bar = self.bar(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(what.to_owned());
        bar
    }

    /// A bar counting training steps (or percent, while the step count is unknown).
    pub fn steps_bar(&self, total: u64) -> ProgressBar {
        let bar = self.bar(total);
        bar.set_style(
            ProgressStyle::with_template("[{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    }

    /// A spinner for waits of unknown length.
    pub fn spinner(&self, what: &str) -> ProgressBar {
        let spinner = self.bar(0);
        spinner.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        spinner.set_message(what.to_owned());
        spinner.enable_steady_tick(Duration::from_millis(120));
        spinner
    }

    fn bar(&self, total: u64) -> ProgressBar {
        let bar = if total == 0 {
            ProgressBar::new_spinner()
        } else {
            ProgressBar::new(total)
        };
        if self.json || !self.interactive {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar
    }
}

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                text.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                text.push_str(cell);
                text.push_str(&" ".repeat(pad + 2));
            }
        }
        text.push('\n');
    }
    text
}

/// A list's rows as a table, then where the page is: `page 2 · jobs in all: 57`.
pub fn print_page(header: &[&str], rows: &[Vec<String>], what: &str, page: u32, total: i64) {
    print!("{}", table(header, rows));
    println!("page {page} · {what} in all: {total}");
}

/// `1.2 MB`, `532 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Dollars to the cent, or to a hundredth of a cent under a dollar (demo runs cost little).
pub fn dollars(amount: f64) -> String {
    if amount.abs() < 1.0 {
        format!("${amount:.4}")
    } else {
        format!("${amount:.2}")
    }
}

/// `1h 02m`, `3m 05s`, `42s`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_their_columns() {
        let text = table(
            &["ID", "STATUS", "NAME"],
            &[
                vec!["a".into(), "ready".into(), "x".into()],
                vec!["bbbb".into(), "invalid".into(), "y".into()],
            ],
        );
        assert_eq!(
            text,
            "ID    STATUS   NAME\na     ready    x\nbbbb  invalid  y\n"
        );
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(bytes(532), "532 B");
        assert_eq!(bytes(1_234_567), "1.2 MB");
        assert_eq!(dollars(0.01234), "$0.0123");
        assert_eq!(dollars(12.345), "$12.35");
        assert_eq!(duration(42.2), "42s");
        assert_eq!(duration(185.0), "3m 05s");
        assert_eq!(duration(3720.0), "1h 02m");
    }
}
