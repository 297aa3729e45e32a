//! Numbers as people read them (DESIGN §9): sizes, money, durations.

/// The longest message a validator returns (and the most of the input it may quote).
pub const MAX_MESSAGE_CHARS: usize = 200;

/// `text` cut to at most `max` characters (on a character boundary), "…" marking a cut: what a
/// message may quote of user input, so a 1 MB value never travels back or into the database.
pub fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(text),
        Some(_) => {
            let keep = max.saturating_sub(1);
            let end = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
            std::borrow::Cow::Owned(format!("{}…", &text[..end]))
        }
    }
}

/// `48.2 MB`: decimal units, one decimal from kB up.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1000.0 {
            break;
        }
        value /= 1000.0;
        unit = u;
    }
    format!("{value:.1} {unit}")
}

/// `$1.23`, or four decimals below one cent (`$0.0042`).
pub fn money(usd: f64) -> String {
    if usd.abs() < 0.01 && usd != 0.0 {
        format!("${usd:.4}")
    } else {
        format!("${usd:.2}")
    }
}

/// `1 h 12 min`, `3 min 5 s`, `42 s`.
pub fn duration(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s} s"),
        (0, _) if s == 0 => format!("{m} min"),
        (0, _) => format!("{m} min {s} s"),
        _ if m == 0 => format!("{h} h"),
        _ => format!("{h} h {m} min"),
    }
}

/// `1,234,567`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_on_a_char_boundary() {
        assert_eq!(clip("user", 10), "user");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("ééééé", 3).chars().count(), 3);
        assert_eq!(clip(&"x".repeat(1 << 20), 200).chars().count(), 200);
    }

    use super::*;

    #[test]
    fn formats() {
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(48_200_000), "48.2 MB");
        assert_eq!(bytes(524_288_000), "524.3 MB");
        assert_eq!(money(1.234), "$1.23");
        assert_eq!(money(0.0042), "$0.0042");
        assert_eq!(money(0.0), "$0.00");
        assert_eq!(duration(42), "42 s");
        assert_eq!(duration(185), "3 min 5 s");
        assert_eq!(duration(4320), "1 h 12 min");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(-1234567), "-1,234,567");
    }
}
