//! Names admins give things (accounts, switches): short, and safe in logs, files and tables.

/// The longest such name.
pub const MAX_NAME_LEN: usize = 64;

/// 1 to 64 ASCII letters, digits, `-`, `_` or `.`.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names() {
        for ok in ["a", "leaf-1", "vision_2", "gpu.rack3"] {
            assert!(is_plain_name(ok), "{ok}");
        }
        for bad in ["", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(!is_plain_name(bad), "{bad}");
        }
    }
}
