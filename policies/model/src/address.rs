//! Scheduler addresses as people type them: `host:port`, `http://host:port`, a bare `host`
//! (port 7420), `[::1]:7420`, and comma-separated lists naming several replicas. The one
//! parser for the CLI, the node daemon and everything else that dials the scheduler.

use thiserror::Error;

/// The port Gantry's scheduler listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 7420;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("no scheduler address given")]
    Empty,
    #[error("invalid scheduler address {address:?}: {reason}")]
    Invalid {
        address: String,
        reason: &'static str,
    },
}

/// Parses a comma-separated list into `http://host:port` URLs, in the order given.
pub fn parse_servers(text: &str) -> Result<Vec<String>, AddressError> {
    let urls = text
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(parse_server)
        .collect::<Result<Vec<_>, _>>()?;
    if urls.is_empty() {
        return Err(AddressError::Empty);
    }
    Ok(urls)
}

/// Parses one address into an `http://host:port` URL.
pub fn parse_server(address: &str) -> Result<String, AddressError> {
    let bad = |reason| AddressError::Invalid {
        address: address.to_string(),
        reason,
    };
    let rest = match address.split_once("://") {
        None => address,
        Some(("http", rest)) => rest,
        Some(("https", _)) => return Err(bad("TLS is not supported yet; use http://")),
        Some(_) => return Err(bad("only http:// addresses are supported")),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('?') {
        return Err(bad("an address has no path; use host:port"));
    }
    if rest.contains('@') {
        return Err(bad("user names in addresses are not supported"));
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (inner, after) = bracketed
            .split_once(']')
            .ok_or_else(|| bad("unclosed [ in an IPv6 address"))?;
        if inner.is_empty() {
            return Err(bad("no host"));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| bad("expected host:port"))?,
            ),
        };
        (format!("[{inner}]"), port)
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c == ':' && !host.starts_with('['))
    {
        return Err(bad("expected host:port or http://host:port"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        },
    };
    Ok(format!("http://{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_form() {
        let ok = [
            ("127.0.0.1:7420", "http://127.0.0.1:7420"),
            ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
            ("http://sched-1:9000/", "http://sched-1:9000"),
            ("sched-1", "http://sched-1:7420"),
            ("[::1]:9000", "http://[::1]:9000"),
            ("http://[::1]", "http://[::1]:7420"),
        ];
        for (text, url) in ok {
            assert_eq!(parse_server(text).as_deref(), Ok(url), "{text}");
        }
        assert_eq!(
            parse_servers(" a:1, http://b:2 ,,c").unwrap(),
            ["http://a:1", "http://b:2", "http://c:7420"]
        );
    }

    #[test]
    fn bad_addresses_say_why() {
        let bad = [
            ("https://a:1", "TLS"),
            ("ftp://a", "http://"),
            ("a:", "port"),
            ("a:0", "port"),
            ("a:99999", "port"),
            ("a:x1", "port"),
            ("http://a:1/path", "path"),
            ("user@a:1", "user names"),
            (":7420", "no host"),
            ("[::1", "unclosed"),
            ("a b:1", "host:port"),
        ];
        for (text, needle) in bad {
            let err = parse_server(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(err.contains(text), "{text}: {err}");
        }
        assert_eq!(parse_servers(" , "), Err(AddressError::Empty));
    }
}
