//! Reading an `Authorization: Bearer <token>` header (RFC 6750 §2.1): the
//! one parser behind the issuer's admin API and this crate's axum
//! extractor, which word their refusals differently.

/// Why a request's `Authorization` headers hold no usable bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    /// More than one `Authorization` header: ambiguous.
    Repeated,
    /// No `Authorization` header.
    Missing,
    /// The header holds bytes other than visible ASCII.
    NotText,
    /// No space between scheme and credential; `scheme_is_bearer` when the
    /// whole value is the word `Bearer`.
    NoSeparator { scheme_is_bearer: bool },
    /// A scheme other than `Bearer`.
    OtherScheme,
    /// `Bearer` followed by nothing but spaces.
    Empty,
}

/// The token of the `Authorization` header values of a request (all of
/// them, in order, as bytes).
pub fn parse_bearer<'a>(
    mut values: impl Iterator<Item = &'a [u8]>,
) -> Result<&'a str, BearerError> {
    let value = values.next().ok_or(BearerError::Missing)?;
    if values.next().is_some() {
        return Err(BearerError::Repeated);
    }
    // What `http::HeaderValue::to_str` accepts.
    if !value.iter().all(|&b| b == b'\t' || (32..127).contains(&b)) {
        return Err(BearerError::NotText);
    }
    let value = std::str::from_utf8(value).map_err(|_| BearerError::NotText)?;
    let Some((scheme, token)) = value.split_once(' ') else {
        return Err(BearerError::NoSeparator {
            scheme_is_bearer: value.eq_ignore_ascii_case("bearer"),
        });
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(BearerError::OtherScheme);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(BearerError::Empty);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&'static str]) -> Result<&'static str, BearerError> {
        parse_bearer(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn reads_one_bearer_token() {
        assert_eq!(parse(&["Bearer abc.def.ghi"]), Ok("abc.def.ghi"));
        assert_eq!(parse(&["bearer  abc "]), Ok("abc"));
        assert_eq!(parse(&[]), Err(BearerError::Missing));
        assert_eq!(parse(&["Bearer a", "Bearer b"]), Err(BearerError::Repeated));
        assert_eq!(parse(&["Basic dXNlcg=="]), Err(BearerError::OtherScheme));
        assert_eq!(
            parse(&["Bearer"]),
            Err(BearerError::NoSeparator {
                scheme_is_bearer: true
            })
        );
        assert_eq!(
            parse(&["token"]),
            Err(BearerError::NoSeparator {
                scheme_is_bearer: false
            })
        );
        assert_eq!(parse(&["Bearer   "]), Err(BearerError::Empty));
        assert_eq!(
            parse_bearer([&b"Bearer \xff"[..]].into_iter()),
            Err(BearerError::NotText)
        );
    }
}
