//! Text that reaches a terminal or a log from something meshca read (a file, a Secret, an API):
//! every message that quotes such a value quotes it through [`printable`], and every message
//! that lists values lists them through [`list_bounded`], so no input can put a terminal escape
//! sequence on a screen or make one message megabytes long.

/// `text` with every control character (terminal escapes, line breaks, NUL) removed and cut to
/// `max_chars` characters (an ellipsis says it was cut).
pub fn printable(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (kept, c) in text.chars().filter(|c| !c.is_control() && !is_bidi_control(*c)).enumerate() {
        if kept == max_chars {
            out.push('…');
            return out;
        }
        out.push(c);
    }
    out
}

/// Unicode's bidirectional overrides and isolates: not control characters to `char`, but they
/// reorder what a terminal shows (CVE-2021-42574).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// At most `max` items, joined with ", ", and how many more there were: `a, b and 3 more`.
pub fn list_bounded<I>(items: I, max: usize) -> String
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    let mut shown = Vec::new();
    let mut more = 0usize;
    for item in items {
        if shown.len() < max {
            shown.push(printable(item.as_ref(), 80));
        } else {
            more += 1;
        }
    }
    match (shown.len(), more) {
        (0, _) => String::new(),
        (_, 0) => shown.join(", "),
        (_, n) => format!("{} and {n} more", shown.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_text_has_no_control_characters_and_a_bound() {
        assert_eq!(printable("a\u{1b}[2Jb\nc\u{202e}d", 100), "a[2Jbcd");
        assert_eq!(printable("abcdef", 3), "abc…");
        assert_eq!(printable("abc", 3), "abc");
    }

    #[test]
    fn a_listed_message_names_at_most_max_items_and_counts_the_rest() {
        let many: Vec<String> = (0..10_000).map(|i| format!("c{i}")).collect();
        let s = list_bounded(&many, 3);
        assert_eq!(s, "c0, c1, c2 and 9997 more");
        assert_eq!(list_bounded(["a", "b"], 3), "a, b");
        assert_eq!(list_bounded(Vec::<String>::new(), 3), "");
    }
}
