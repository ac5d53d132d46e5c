//! Normalising the original request's URI before the policy sees it.
//!
//! The gate decides on a path that the proxy and the upstream may read
//! differently: one decodes `%2F` into a slash, another treats `\` as `/`,
//! a third resolves `..` after the check. Any such difference lets a key
//! for account A read account B (`/accounts/A/..%2FB/data`). So the gate
//! accepts only paths that every reasonable reader agrees on, and answers
//! 400 for the rest — it never allows a path it had to guess about.
//!
//! What it does to a path (the query is ignored by the policy):
//! - percent-decodes *unreserved* characters (`A-Z a-z 0-9 - _ ~`), which
//!   every reader decodes the same way, and upper-cases the hex of every
//!   other escape, so `%c3%a9` and `%C3%A9` are one path;
//! - merges duplicate slashes (`//`);
//! - takes an absolute-form URI (`http://host/path`) as its path.
//!
//! What it refuses (400):
//! - encoded slashes, backslashes and dots (`%2F`, `%5C`, `%2E`), double
//!   encodings (`%25` followed by an escape's hex, such as `%252E`);
//! - dot segments (`.`, `..`, and look-alikes such as `..;x`, `..%3B`,
//!   `...`, `..%20`): clients resolve them before sending, so one on the
//!   wire is a probe or a confused client, and resolving it here would only
//!   be right if the upstream resolved it the same way;
//! - backslashes, fragments, spaces, NUL and other control characters,
//!   raw non-ASCII bytes, malformed escapes, escapes that are not UTF-8;
//! - anything that is not a path starting with `/`, or longer than
//!   [`MAX_URI_BYTES`].
//!
//! A path with nothing to change is returned borrowed: no allocation on
//! the usual hot path.

use std::borrow::Cow;

/// The longest original URI accepted, in bytes.
pub const MAX_URI_BYTES: usize = 8192;

/// Why an original URI was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriError {
    Empty,
    TooLong,
    NotAPath,
    InvalidByte,
    Backslash,
    Fragment,
    BadEscape,
    EncodedSlash,
    EncodedBackslash,
    EncodedDot,
    EncodedControl,
    DoubleEncoded,
    NotUtf8,
    DotSegment,
}

impl UriError {
    /// A message for the caller, naming what to fix.
    pub fn message(self) -> &'static str {
        match self {
            UriError::Empty => "the original URI is empty",
            UriError::TooLong => "the original URI is longer than 8192 bytes",
            UriError::NotAPath => "the original URI must be a path starting with /",
            UriError::InvalidByte => {
                "the original URI contains a space, a control character or a raw non-ASCII byte"
            }
            UriError::Backslash => "the original URI contains a backslash",
            UriError::Fragment => "the original URI contains a fragment (#)",
            UriError::BadEscape => "the original URI contains a malformed percent-escape",
            UriError::EncodedSlash => "the original URI contains an encoded slash (%2F)",
            UriError::EncodedBackslash => "the original URI contains an encoded backslash (%5C)",
            UriError::EncodedDot => "the original URI contains an encoded dot (%2E)",
            UriError::EncodedControl => "the original URI contains an encoded control character",
            UriError::DoubleEncoded => "the original URI contains a double percent-encoding",
            UriError::NotUtf8 => "the original URI's percent-escapes are not valid UTF-8",
            UriError::DotSegment => {
                "the original URI contains a dot segment (. or ..); send the resolved path"
            }
        }
    }
}

/// The path of an original request URI (origin-form or absolute-form),
/// normalised as the [module documentation](self) says.
pub fn normalise(uri: &str) -> Result<Cow<'_, str>, UriError> {
    if uri.is_empty() {
        return Err(UriError::Empty);
    }
    if uri.len() > MAX_URI_BYTES {
        return Err(UriError::TooLong);
    }
    for &b in uri.as_bytes() {
        match b {
            b'\\' => return Err(UriError::Backslash),
            b'#' => return Err(UriError::Fragment),
            0..=0x20 | 0x7f..=0xff => return Err(UriError::InvalidByte),
            _ => {}
        }
    }
    let uri = strip_scheme_and_authority(uri);
    let path = match uri.find('?') {
        Some(end) => &uri[..end],
        None => uri,
    };
    if !path.starts_with('/') {
        return Err(UriError::NotAPath);
    }
    let path = if path.contains('%') || path.contains("//") {
        Cow::Owned(rewrite(path)?)
    } else {
        Cow::Borrowed(path)
    };
    check_segments(&path)?;
    Ok(path)
}

/// `http://host:port/p?q` → `/p?q`; `http://host?q` → `/?q`. Anything
/// else is returned as it is.
fn strip_scheme_and_authority(uri: &str) -> &str {
    let rest = if uri.len() >= 7 && uri[..7].eq_ignore_ascii_case("http://") {
        &uri[7..]
    } else if uri.len() >= 8 && uri[..8].eq_ignore_ascii_case("https://") {
        &uri[8..]
    } else {
        return uri;
    };
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => &rest[i..],
        // No path: the root. A query alone cannot be borrowed with a
        // leading slash, and the policy ignores it anyway.
        _ => "/",
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Decodes unreserved escapes, upper-cases the others, merges slashes.
fn rewrite(path: &str) -> Result<String, UriError> {
    let bytes = path.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut high_escapes = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex_value),
                    bytes.get(i + 2).copied().and_then(hex_value),
                ) else {
                    return Err(UriError::BadEscape);
                };
                let value = hi << 4 | lo;
                match value {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => out.push(value),
                    b'.' => return Err(UriError::EncodedDot),
                    b'/' => return Err(UriError::EncodedSlash),
                    b'\\' => return Err(UriError::EncodedBackslash),
                    0..=0x1f | 0x7f => return Err(UriError::EncodedControl),
                    _ => {
                        high_escapes |= value >= 0x80;
                        out.extend_from_slice(&[
                            b'%',
                            HEX_UPPER[usize::from(hi)],
                            HEX_UPPER[usize::from(lo)],
                        ]);
                    }
                }
                i += 3;
            }
            b'/' if out.last() == Some(&b'/') => i += 1,
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    // `%25` followed by hex is an escape of an escape: one decoding
    // further it is `%2E` or `%2F`. (Checked on the output: decoding
    // `%25%32%45` yields `%252E`.)
    if out
        .windows(5)
        .any(|w| &w[..3] == b"%25" && hex_value(w[3]).is_some() && hex_value(w[4]).is_some())
    {
        return Err(UriError::DoubleEncoded);
    }
    if high_escapes && std::str::from_utf8(&percent_decode(&out)).is_err() {
        return Err(UriError::NotUtf8);
    }
    // Only ASCII went in, and only ASCII came out.
    String::from_utf8(out).map_err(|_| UriError::InvalidByte)
}

/// Every escape of `text` decoded (escapes are known to be well formed).
fn percent_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                text.get(i + 1).copied().and_then(hex_value),
                text.get(i + 2).copied().and_then(hex_value),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    out
}

fn check_segments(path: &str) -> Result<(), UriError> {
    if path.split('/').any(is_dot_like) {
        return Err(UriError::DotSegment);
    }
    Ok(())
}

/// A segment some reader may take for `.` or `..`: it starts with a dot
/// and holds nothing but dots, encoded spaces (which Windows servers
/// trim) and, after a `;` or `%3B`, path parameters (which servlet
/// containers strip).
fn is_dot_like(segment: &str) -> bool {
    if !segment.starts_with('.') {
        return false;
    }
    let bytes = segment.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'.' => i += 1,
            b';' => return true,
            b'%' if bytes[i..].starts_with(b"%20") => i += 3,
            b'%' if bytes[i..].starts_with(b"%3B") || bytes[i..].starts_with(b"%3b") => {
                return true;
            }
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ok(uri: &str) -> String {
        normalise(uri)
            .unwrap_or_else(|e| panic!("{uri:?}: {e:?}"))
            .into_owned()
    }

    fn err(uri: &str) -> UriError {
        normalise(uri).expect_err(uri)
    }

    #[test]
    fn plain_paths_are_borrowed_and_unchanged() {
        for uri in ["/", "/accounts/acct-1/data", "/a/b/", "/.well-known/x"] {
            assert!(
                matches!(normalise(uri), Ok(Cow::Borrowed(p)) if p == uri),
                "{uri}"
            );
        }
        assert_eq!(ok("/a/b?x=1&y=/../z"), "/a/b");
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        assert_eq!(ok("/accounts/%61cct-1/data"), "/accounts/acct-1/data");
        assert_eq!(ok("/x/%7e%5f%2d"), "/x/~_-");
        assert_eq!(ok("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(ok("/a%20b"), "/a%20b");
        assert_eq!(ok("/q%3fx"), "/q%3Fx");
    }

    #[test]
    fn duplicate_slashes_are_merged() {
        assert_eq!(ok("//accounts///acct-1//data"), "/accounts/acct-1/data");
        assert_eq!(ok("/a//"), "/a/");
    }

    #[test]
    fn absolute_form_yields_its_path() {
        assert_eq!(ok("http://example.com/a/b?c"), "/a/b");
        assert_eq!(ok("HTTPS://example.com:8443/a"), "/a");
        assert_eq!(ok("http://example.com"), "/");
        assert_eq!(ok("http://example.com?x"), "/");
        assert_eq!(err("ftp://example.com/a"), UriError::NotAPath);
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        let cases = [
            ("", UriError::Empty),
            ("*", UriError::NotAPath),
            ("accounts/a", UriError::NotAPath),
            ("?x", UriError::NotAPath),
            ("/accounts/a/..", UriError::DotSegment),
            ("/accounts/a/../b", UriError::DotSegment),
            ("/accounts/./a", UriError::DotSegment),
            ("/accounts/a/...", UriError::DotSegment),
            ("/accounts/a/..;x/b", UriError::DotSegment),
            ("/accounts/a/..%3bx/b", UriError::DotSegment),
            ("/accounts/a/..%20/b", UriError::DotSegment),
            ("/accounts/a/%2e%2e/b", UriError::EncodedDot),
            ("/accounts/a/.%2E/b", UriError::EncodedDot),
            ("/accounts/a%2Fb", UriError::EncodedSlash),
            ("/accounts/a%2fb", UriError::EncodedSlash),
            ("/accounts/a%5cb", UriError::EncodedBackslash),
            ("/accounts/a\\..\\b", UriError::Backslash),
            ("/accounts/a%00", UriError::EncodedControl),
            ("/accounts/a%0a", UriError::EncodedControl),
            ("/accounts/a%7F", UriError::EncodedControl),
            ("/accounts/a\u{0}", UriError::InvalidByte),
            ("/accounts/a b", UriError::InvalidByte),
            ("/accounts/a\tb", UriError::InvalidByte),
            ("/accounts/caf\u{e9}", UriError::InvalidByte),
            ("/accounts/a#frag", UriError::Fragment),
            ("/accounts/a%", UriError::BadEscape),
            ("/accounts/a%2", UriError::BadEscape),
            ("/accounts/a%zz", UriError::BadEscape),
            ("/accounts/a/%252e%252e/b", UriError::DoubleEncoded),
            ("/accounts/a/%25%32%45", UriError::DoubleEncoded),
            ("/accounts/%c0%ae%c0%ae/b", UriError::NotUtf8),
            ("/accounts/%ff", UriError::NotUtf8),
        ];
        for (uri, expected) in cases {
            assert_eq!(normalise(uri).err(), Some(expected), "{uri:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_URI_BYTES));
        assert_eq!(err(&long), UriError::TooLong);
    }

    #[test]
    fn dot_files_are_ordinary_segments() {
        assert_eq!(ok("/.well-known/jwks.json"), "/.well-known/jwks.json");
        assert_eq!(ok("/a/.hidden/..x"), "/a/.hidden/..x");
        assert_eq!(ok("/a/file.tar.gz"), "/a/file.tar.gz");
        // A literal percent sign stays encoded when no escape follows it.
        assert_eq!(ok("/a/100%25"), "/a/100%25");
        assert_eq!(ok("/a/%25zz"), "/a/%25zz");
    }

    #[test]
    fn messages_name_the_problem() {
        assert!(UriError::EncodedSlash.message().contains("%2F"));
        assert!(UriError::DotSegment.message().contains(".."));
    }
}
