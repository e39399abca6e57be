//! Node lists as Slurm writes them: `gpu[01-16]`, `gpu[1-3,7],cpu01`, `r[1-2]n[1-4]`. (The
//! `hostlist` crate reads these too, but has had no release since 2020 and brings nom 6.)

use thiserror::Error;

/// More names than any cluster has: a typo like `gpu[1-99999999]`.
const MAX_NAMES: usize = 100_000;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HostlistError {
    #[error("{0:?}: unbalanced brackets")]
    Brackets(String),
    #[error("{0:?}: {1:?} is not a number or a range of numbers such as 01-16")]
    Range(String, String),
    #[error("{0:?}: the range {1:?} goes backwards")]
    Backwards(String, String),
    #[error("{0:?} names more than {MAX_NAMES} nodes")]
    TooMany(String),
}

/// Every name `text` stands for, in order, repeats dropped.
pub fn expand(text: &str) -> Result<Vec<String>, HostlistError> {
    let mut names: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for item in split_top_level(text).map_err(|()| HostlistError::Brackets(text.into()))? {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        for name in expand_item(item, text)? {
            if seen.insert(name.clone()) {
                names.push(name);
            }
            if names.len() > MAX_NAMES {
                return Err(HostlistError::TooMany(text.into()));
            }
        }
    }
    Ok(names)
}

/// Splits at the commas outside brackets.
fn split_top_level(text: &str) -> Result<Vec<&str>, ()> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (i, c) in text.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            ']' if depth == 1 => depth = 0,
            '[' | ']' => return Err(()),
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(());
    }
    items.push(&text[start..]);
    Ok(items)
}

/// One item: the first bracket group expanded, then the rest of the item after it.
fn expand_item(item: &str, whole: &str) -> Result<Vec<String>, HostlistError> {
    let Some(open) = item.find('[') else {
        return Ok(vec![item.to_string()]);
    };
    let close = item[open..]
        .find(']')
        .map(|i| open + i)
        .ok_or_else(|| HostlistError::Brackets(whole.into()))?;
    let (prefix, group, rest) = (&item[..open], &item[open + 1..close], &item[close + 1..]);
    let tails = expand_item(rest, whole)?;
    let mut names = Vec::new();
    for part in group.split(',') {
        let bad = || HostlistError::Range(whole.into(), part.into());
        let (low, high) = part.split_once('-').unwrap_or((part, part));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(low) || !digits(high) {
            return Err(bad());
        }
        let (from, to): (u64, u64) = (
            low.parse().map_err(|_| bad())?,
            high.parse().map_err(|_| bad())?,
        );
        if to < from {
            return Err(HostlistError::Backwards(whole.into(), part.into()));
        }
        if (to - from) as usize >= MAX_NAMES {
            return Err(HostlistError::TooMany(whole.into()));
        }
        for n in from..=to {
            for tail in &tails {
                names.push(format!("{prefix}{n:0width$}{tail}", width = low.len()));
            }
            if names.len() > MAX_NAMES {
                return Err(HostlistError::TooMany(whole.into()));
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_lists_padding_and_products_expand_in_order() {
        assert_eq!(expand("gpu[01-03]").unwrap(), ["gpu01", "gpu02", "gpu03"]);
        assert_eq!(
            expand("gpu[1-2,7],cpu01, gpu1").unwrap(),
            ["gpu1", "gpu2", "gpu7", "cpu01"]
        );
        assert_eq!(
            expand("r[1-2]n[8-9]").unwrap(),
            ["r1n8", "r1n9", "r2n8", "r2n9"]
        );
        assert_eq!(expand("n[9-10]").unwrap(), ["n9", "n10"]);
        assert_eq!(expand("plain,,").unwrap(), ["plain"]);
    }

    #[test]
    fn bad_lists_say_what_is_wrong() {
        assert_eq!(
            expand("gpu[1-3"),
            Err(HostlistError::Brackets("gpu[1-3".into()))
        );
        assert_eq!(
            expand("gpu]1["),
            Err(HostlistError::Brackets("gpu]1[".into()))
        );
        assert_eq!(
            expand("gpu[a-3]"),
            Err(HostlistError::Range("gpu[a-3]".into(), "a-3".into()))
        );
        assert_eq!(
            expand("gpu[]"),
            Err(HostlistError::Range("gpu[]".into(), String::new()))
        );
        assert_eq!(
            expand("gpu[5-3]"),
            Err(HostlistError::Backwards("gpu[5-3]".into(), "5-3".into()))
        );
        assert_eq!(
            expand("gpu[1-99999999]"),
            Err(HostlistError::TooMany("gpu[1-99999999]".into()))
        );
        assert_eq!(
            expand("r[1-9999]n[1-9999]"),
            Err(HostlistError::TooMany("r[1-9999]n[1-9999]".into()))
        );
    }
}
