//! What the gate allows: the request's account, and the decision for a
//! verified key.
//!
//! **The account** of a request comes from the normalised path, through
//! `--account-path` (a pattern such as `/accounts/{account}/`), or from a
//! request header (`--account-header`). A request with no account (the
//! path does not match the pattern, the header is absent) may be made only
//! by keys whose scope is all accounts: `global_admin`, `global_viewer`,
//! and `cloud_account_viewer` with `["*"]`. An account value that is not a
//! valid account id (the issuer's rule: 1 to 128 of `A-Z a-z 0-9 . _ : -`)
//! makes the request ambiguous (400), never another account.
//!
//! **The decision**, for a key already verified:
//! 1. the account must be within the key's scope (always; a policy file
//!    cannot widen it);
//! 2. the most specific rule of the policy file (longest prefix; for one
//!    prefix, a rule listing the method before one for every method) whose
//!    methods include the request's decides by role: the key needs one of
//!    the rule's roles (`roles = []` refuses every key);
//! 3. with no rule, the §1 policy: `GET`/`HEAD` are reads, allowed within
//!    the scope; `POST`, `PUT`, `PATCH`, `DELETE` need `global_admin`;
//!    any other method is refused.

use axum::http::{HeaderMap, HeaderName};
use latchkey_verifier::{ALL_ACCOUNTS, Role, VerifiedKey};

use super::uri;

/// The longest account id the issuer accepts.
const MAX_ACCOUNT_CHARS: usize = 128;

/// Whether `account` is an account id the issuer could have put in a key.
pub fn valid_account_id(account: &str) -> bool {
    (1..=MAX_ACCOUNT_CHARS).contains(&account.len())
        && account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Where a request's account comes from.
#[derive(Debug, Clone, Default)]
pub enum AccountSource {
    /// Nowhere: every request is account-less.
    #[default]
    None,
    /// A path segment, located by a pattern.
    Path(AccountPattern),
    /// A request header.
    Header(HeaderName),
}

/// Why a request's account could not be read (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountError {
    /// The path segment or header value is not a valid account id.
    Invalid,
    /// The account header was sent more than once.
    Repeated,
}

impl AccountError {
    pub fn message(self) -> &'static str {
        match self {
            AccountError::Invalid => {
                "the request's account is not a valid account id (1 to 128 of A-Z a-z 0-9 . _ : -)"
            }
            AccountError::Repeated => "the account header was sent more than once",
        }
    }
}

impl AccountSource {
    /// The account of a request with this normalised `path` and these
    /// headers (`Ok(None)`: no account).
    pub fn account<'a>(
        &self,
        path: &'a str,
        headers: &'a HeaderMap,
    ) -> Result<Option<&'a str>, AccountError> {
        let value = match self {
            AccountSource::None => return Ok(None),
            AccountSource::Path(pattern) => match pattern.capture(path) {
                Some(segment) => segment,
                None => return Ok(None),
            },
            AccountSource::Header(name) => {
                let mut values = headers.get_all(name).iter();
                let Some(value) = values.next() else {
                    return Ok(None);
                };
                if values.next().is_some() {
                    return Err(AccountError::Repeated);
                }
                value.to_str().map_err(|_| AccountError::Invalid)?.trim()
            }
        };
        if value.is_empty() {
            return Ok(None);
        }
        if !valid_account_id(value) {
            return Err(AccountError::Invalid);
        }
        Ok(Some(value))
    }
}

/// `--account-path`: literal segments around one `{account}` segment,
/// matched against the start of the normalised path (what follows is free).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountPattern {
    before: Vec<String>,
    after: Vec<String>,
}

/// The placeholder segment of an account pattern.
pub const ACCOUNT_PLACEHOLDER: &str = "{account}";

impl AccountPattern {
    /// Parses a pattern such as `/accounts/{account}/` or
    /// `/v1/orgs/{account}/projects`.
    pub fn parse(pattern: &str) -> Result<AccountPattern, String> {
        let fix = "write it as a path with one {account} segment, e.g. /accounts/{account}/";
        if !pattern.starts_with('/') {
            return Err(format!("{pattern:?} does not start with /: {fix}"));
        }
        let trimmed = pattern.trim_end_matches('/');
        let mut before = Vec::new();
        let mut after = Vec::new();
        let mut seen = false;
        for segment in trimmed[1..].split('/') {
            if segment == ACCOUNT_PLACEHOLDER {
                if seen {
                    return Err(format!("{pattern:?} has more than one {{account}}: {fix}"));
                }
                seen = true;
                continue;
            }
            let literal_ok = !segment.is_empty()
                && !segment.contains(['{', '}'])
                && uri::normalise(&format!("/{segment}")).is_ok_and(|n| n[1..] == *segment);
            if !literal_ok {
                return Err(format!(
                    "{pattern:?} has the segment {segment:?}, which is not a plain path segment: {fix}"
                ));
            }
            if seen {
                after.push(segment.to_owned());
            } else {
                before.push(segment.to_owned());
            }
        }
        if !seen {
            return Err(format!("{pattern:?} has no {{account}} segment: {fix}"));
        }
        Ok(AccountPattern { before, after })
    }

    /// The `{account}` segment of a normalised path, if the path matches.
    pub fn capture<'a>(&self, path: &'a str) -> Option<&'a str> {
        let mut segments = path.strip_prefix('/')?.split('/');
        for literal in &self.before {
            if segments.next()? != literal {
                return None;
            }
        }
        let account = segments.next()?;
        for literal in &self.after {
            if segments.next()? != literal {
                return None;
            }
        }
        Some(account)
    }
}

/// A rule of the policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// A normalised path prefix, matched on segment boundaries.
    pub prefix: String,
    /// Upper-case methods; `None`: every method.
    pub methods: Option<Vec<String>>,
    /// The key needs one of these (empty: no key may).
    pub roles: Vec<Role>,
    /// Where it is in the file, for messages.
    pub line: usize,
}

impl Rule {
    fn matches(&self, method: &str, path: &str) -> bool {
        prefix_matches(&self.prefix, path)
            && self
                .methods
                .as_ref()
                .is_none_or(|methods| methods.iter().any(|m| m == method))
    }
}

/// `/admin` matches `/admin` and `/admin/x` but not `/administrator`;
/// `/admin/` matches only below `/admin/`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Why the policy refused a valid key (403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The account is not among the key's.
    OutOfScope,
    /// The request has no account and the key does not cover all accounts.
    NeedsAllAccounts,
    /// A policy rule needs a role the key lacks.
    MissingRole,
    /// A write without `global_admin` (§1).
    WriteNeedsAdmin,
    /// A method the §1 policy allows to no one.
    Method,
}

impl Refusal {
    /// The metrics label.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::OutOfScope => "out_of_scope",
            Refusal::NeedsAllAccounts => "needs_all_accounts",
            Refusal::MissingRole => "missing_role",
            Refusal::WriteNeedsAdmin => "write_needs_admin",
            Refusal::Method => "method_not_allowed",
        }
    }

    /// The `error_description` and problem detail.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::OutOfScope => "this access key may not use this account",
            Refusal::NeedsAllAccounts => {
                "this request names no account: it needs an access key for all accounts"
            }
            Refusal::MissingRole => "the gate's policy needs another role for this request",
            Refusal::WriteNeedsAdmin => "writes need an access key with the global_admin role",
            Refusal::Method => "this method is not allowed for any access key",
        }
    }
}

/// Whether `key`'s scope is every account.
pub fn covers_all_accounts(key: &VerifiedKey) -> bool {
    key.can_read_all()
        || (key.has_role(Role::CloudAccountViewer)
            && key
                .accounts
                .as_deref()
                .is_some_and(|a| a.iter().any(|a| a == ALL_ACCOUNTS)))
}

/// The §1 policy plus the rules of an optional policy file.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Longest prefix first, so the first match is the most specific.
    rules: Vec<Rule>,
}

impl Policy {
    /// A policy with these rules (checked for conflicts by the file loader).
    pub fn new(mut rules: Vec<Rule>) -> Policy {
        // Longest prefix first; for one prefix, the rule that names
        // methods before the one for every method.
        rules.sort_by_key(|rule| (std::cmp::Reverse(rule.prefix.len()), rule.methods.is_none()));
        Policy { rules }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether `key` may make a `method` request on the normalised `path`
    /// within `account`.
    pub fn decide(
        &self,
        key: &VerifiedKey,
        method: &str,
        path: &str,
        account: Option<&str>,
    ) -> Result<(), Refusal> {
        match account {
            Some(account) if !key.can_read(account) => return Err(Refusal::OutOfScope),
            None if !covers_all_accounts(key) => return Err(Refusal::NeedsAllAccounts),
            _ => {}
        }
        if let Some(rule) = self.rules.iter().find(|rule| rule.matches(method, path)) {
            return if rule.roles.iter().any(|role| key.has_role(*role)) {
                Ok(())
            } else {
                Err(Refusal::MissingRole)
            };
        }
        match method {
            "GET" | "HEAD" => Ok(()),
            "POST" | "PUT" | "PATCH" | "DELETE" if key.is_admin() => Ok(()),
            "POST" | "PUT" | "PATCH" | "DELETE" => Err(Refusal::WriteNeedsAdmin),
            _ => Err(Refusal::Method),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use latchkey_verifier::StatusListRef;

    pub(crate) fn key(roles: &[Role], accounts: Option<&[&str]>) -> VerifiedKey {
        VerifiedKey {
            id: "0190f5b2-0000-7000-8000-000000000001".into(),
            name: "test key".into(),
            roles: roles.to_vec(),
            accounts: accounts.map(|a| a.iter().map(|s| (*s).to_owned()).collect()),
            expires_at: i64::MAX,
            jti: "jti".into(),
            status: StatusListRef {
                idx: 0,
                uri: "http://issuer/v1/status/0".into(),
            },
        }
    }

    fn pattern() -> AccountSource {
        AccountSource::Path(AccountPattern::parse("/accounts/{account}/").unwrap())
    }

    #[test]
    fn account_patterns() {
        let p = AccountPattern::parse("/accounts/{account}/").unwrap();
        assert_eq!(p.capture("/accounts/a1/data"), Some("a1"));
        assert_eq!(p.capture("/accounts/a1"), Some("a1"));
        assert_eq!(p.capture("/accounts/"), Some(""));
        assert_eq!(p.capture("/accounts"), None);
        assert_eq!(p.capture("/other/a1"), None);
        let p = AccountPattern::parse("/v1/orgs/{account}/projects").unwrap();
        assert_eq!(p.capture("/v1/orgs/o-1/projects/7"), Some("o-1"));
        assert_eq!(p.capture("/v1/orgs/o-1/users"), None);
        for bad in [
            "accounts/{account}",
            "/accounts/",
            "/{account}/{account}",
            "/a//{account}",
            "/a/../{account}",
            "/a%2Fb/{account}",
            "/a{b}/{account}",
        ] {
            assert!(AccountPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn account_from_path_and_header() {
        let headers = HeaderMap::new();
        assert_eq!(
            pattern().account("/accounts/a1/x", &headers),
            Ok(Some("a1"))
        );
        assert_eq!(pattern().account("/accounts/", &headers), Ok(None));
        assert_eq!(pattern().account("/status", &headers), Ok(None));
        assert_eq!(
            pattern().account("/accounts/a%20b/x", &headers),
            Err(AccountError::Invalid)
        );
        assert_eq!(
            pattern().account("/accounts/*/x", &headers),
            Err(AccountError::Invalid)
        );
        let source = AccountSource::Header(HeaderName::from_static("x-account"));
        assert_eq!(source.account("/", &headers), Ok(None));
        let mut headers = HeaderMap::new();
        headers.insert("x-account", "acct-9".parse().unwrap());
        assert_eq!(source.account("/", &headers), Ok(Some("acct-9")));
        headers.append("x-account", "acct-8".parse().unwrap());
        assert_eq!(source.account("/", &headers), Err(AccountError::Repeated));
        let mut headers = HeaderMap::new();
        headers.insert("x-account", "a,b".parse().unwrap());
        assert_eq!(source.account("/", &headers), Err(AccountError::Invalid));
    }

    #[test]
    fn default_policy_is_section_1() {
        let policy = Policy::default();
        let admin = key(&[Role::GlobalAdmin], None);
        let viewer = key(&[Role::GlobalViewer], None);
        let cav = key(&[Role::CloudAccountViewer], Some(&["a1", "a2"]));
        let cav_all = key(&[Role::CloudAccountViewer], Some(&["*"]));
        for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] {
            assert_eq!(policy.decide(&admin, method, "/x", Some("a1")), Ok(()));
            assert_eq!(policy.decide(&admin, method, "/x", None), Ok(()));
        }
        assert_eq!(
            policy.decide(&admin, "OPTIONS", "/x", None),
            Err(Refusal::Method)
        );
        assert_eq!(policy.decide(&viewer, "GET", "/x", Some("a3")), Ok(()));
        assert_eq!(policy.decide(&viewer, "GET", "/x", None), Ok(()));
        assert_eq!(
            policy.decide(&viewer, "POST", "/x", Some("a1")),
            Err(Refusal::WriteNeedsAdmin)
        );
        assert_eq!(policy.decide(&cav, "GET", "/x", Some("a2")), Ok(()));
        assert_eq!(policy.decide(&cav, "HEAD", "/x", Some("a1")), Ok(()));
        assert_eq!(
            policy.decide(&cav, "GET", "/x", Some("a3")),
            Err(Refusal::OutOfScope)
        );
        assert_eq!(
            policy.decide(&cav, "GET", "/x", None),
            Err(Refusal::NeedsAllAccounts)
        );
        assert_eq!(
            policy.decide(&cav, "DELETE", "/x", Some("a1")),
            Err(Refusal::WriteNeedsAdmin)
        );
        assert_eq!(policy.decide(&cav_all, "GET", "/x", Some("zz")), Ok(()));
        assert_eq!(policy.decide(&cav_all, "GET", "/x", None), Ok(()));
        assert_eq!(
            policy.decide(&cav_all, "PUT", "/x", None),
            Err(Refusal::WriteNeedsAdmin)
        );
    }

    #[test]
    fn rules_decide_by_role_within_the_scope() {
        let rule = |prefix: &str, methods: Option<&[&str]>, roles: &[Role]| Rule {
            prefix: prefix.into(),
            methods: methods.map(|m| m.iter().map(|s| (*s).to_owned()).collect()),
            roles: roles.to_vec(),
            line: 1,
        };
        let policy = Policy::new(vec![
            rule("/admin", None, &[Role::GlobalAdmin]),
            rule("/admin/public", Some(&["GET"]), &[Role::GlobalViewer]),
            rule(
                "/accounts/",
                Some(&["POST"]),
                &[Role::GlobalAdmin, Role::CloudAccountViewer],
            ),
            rule("/closed/", None, &[]),
            rule("/closed/", Some(&["HEAD"]), &[Role::GlobalViewer]),
        ]);
        let admin = key(&[Role::GlobalAdmin], None);
        let viewer = key(&[Role::GlobalViewer], None);
        let cav = key(&[Role::CloudAccountViewer], Some(&["a1"]));
        assert_eq!(
            policy.decide(&viewer, "GET", "/admin/users", None),
            Err(Refusal::MissingRole)
        );
        assert_eq!(policy.decide(&admin, "GET", "/admin/users", None), Ok(()));
        // The longer prefix wins; other methods fall back to the shorter.
        assert_eq!(
            policy.decide(&viewer, "GET", "/admin/public/x", None),
            Ok(())
        );
        assert_eq!(
            policy.decide(&viewer, "HEAD", "/admin/public/x", None),
            Err(Refusal::MissingRole)
        );
        // Segment boundaries.
        assert_eq!(
            policy.decide(&viewer, "GET", "/administrator", None),
            Ok(())
        );
        // A rule widens the methods, never the accounts.
        assert_eq!(
            policy.decide(&cav, "POST", "/accounts/a1/q", Some("a1")),
            Ok(())
        );
        assert_eq!(
            policy.decide(&cav, "POST", "/accounts/a2/q", Some("a2")),
            Err(Refusal::OutOfScope)
        );
        assert_eq!(
            policy.decide(&admin, "GET", "/closed/x", None),
            Err(Refusal::MissingRole)
        );
        assert_eq!(policy.decide(&viewer, "HEAD", "/closed/x", None), Ok(()));
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(prefix_matches("/a", "/a"));
        assert!(prefix_matches("/a", "/a/b"));
        assert!(!prefix_matches("/a", "/ab"));
        assert!(prefix_matches("/a/", "/a/b"));
        assert!(!prefix_matches("/a/", "/a"));
        assert!(prefix_matches("/", "/anything"));
    }
}
