//! The gate's TOML policy file (`--policy`): rules by path prefix and
//! method naming the roles required.
//!
//! ```toml
//! # Only admins may see /admin, even to read.
//! [[rule]]
//! prefix = "/admin"
//! roles = ["global_admin"]
//!
//! # Cloud-account viewers may run queries (POST) in their own accounts.
//! [[rule]]
//! prefix = "/accounts/"
//! methods = ["POST"]
//! roles = ["global_admin", "cloud_account_viewer"]
//! ```
//!
//! Each `[[rule]]` has a `prefix` (a normalised path starting with `/`,
//! matched on segment boundaries), optional `methods` (upper case; default
//! every method) and `roles` (the key needs one of them; `[]` refuses every
//! key). Of the rules that match a request, the one with the longest
//! prefix decides; for equal prefixes, the one that lists the method beats
//! the one without `methods`. See [`super::policy`] for how rules combine
//! with accounts and the §1 policy. A file that does not parse, has an unknown field, an unknown
//! role or method, a prefix that is not normalised, or two rules with the
//! same prefix and a method in common is refused with its line and the
//! reason.

use std::path::Path;

use latchkey_verifier::Role;
use serde::Deserialize;
use toml::Spanned;

use super::policy::{Policy, Rule};
use super::uri;

/// Why a policy file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFileError {
    /// The file as given.
    pub file: String,
    /// 1-based, when the error is at a place in the file.
    pub line: Option<usize>,
    pub reason: String,
}

impl std::fmt::Display for PolicyFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(
                f,
                "the policy file {} is refused: line {line}: {}",
                self.file, self.reason
            ),
            None => write!(
                f,
                "the policy file {} is refused: {}",
                self.file, self.reason
            ),
        }
    }
}

impl std::error::Error for PolicyFileError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    prefix: Spanned<String>,
    #[serde(default)]
    methods: Option<Vec<Spanned<String>>>,
    roles: Vec<Spanned<String>>,
}

/// The most methods a rule may list.
const MAX_METHODS: usize = 32;

/// Reads and checks the policy file at `path`.
pub fn load(path: &Path) -> Result<Policy, PolicyFileError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| PolicyFileError {
        file: file.clone(),
        line: None,
        reason: format!("cannot read it: {e}"),
    })?;
    parse(&file, &text)
}

/// Checks policy `text` (named `file` in messages).
pub fn parse(file: &str, text: &str) -> Result<Policy, PolicyFileError> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let refuse = |offset: usize, reason: String| PolicyFileError {
        file: file.to_owned(),
        line: Some(line_of(offset)),
        reason,
    };
    let parsed: File = toml::from_str(text).map_err(|e| PolicyFileError {
        file: file.to_owned(),
        line: e.span().map(|span| line_of(span.start)),
        reason: e.message().trim().to_owned(),
    })?;
    let mut rules: Vec<Rule> = Vec::with_capacity(parsed.rule.len());
    for raw in parsed.rule {
        let rule_start = raw.span().start;
        let raw = raw.into_inner();
        let prefix_at = raw.prefix.span().start;
        let prefix = raw.prefix.into_inner();
        check_prefix(&prefix).map_err(|reason| refuse(prefix_at, reason))?;
        let methods = match raw.methods {
            None => None,
            Some(list) => {
                if list.is_empty() || list.len() > MAX_METHODS {
                    return Err(refuse(
                        rule_start,
                        format!(
                            "methods lists 1 to {MAX_METHODS} methods; leave it out for every method"
                        ),
                    ));
                }
                let mut methods = Vec::with_capacity(list.len());
                for method in list {
                    let at = method.span().start;
                    let method = method.into_inner();
                    check_method(&method).map_err(|reason| refuse(at, reason))?;
                    if !methods.contains(&method) {
                        methods.push(method);
                    }
                }
                Some(methods)
            }
        };
        let mut roles = Vec::with_capacity(raw.roles.len());
        for role in raw.roles {
            let at = role.span().start;
            let role = parse_role(role.get_ref()).map_err(|reason| refuse(at, reason))?;
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        let line = line_of(rule_start);
        if let Some(earlier) = rules
            .iter()
            .find(|r| r.prefix == prefix && methods_overlap(&r.methods, &methods))
        {
            return Err(refuse(
                prefix_at,
                format!(
                    "this rule and the one at line {} both match {prefix:?} for the same method; merge them",
                    earlier.line
                ),
            ));
        }
        rules.push(Rule {
            prefix,
            methods,
            roles,
            line,
        });
    }
    Ok(Policy::new(rules))
}

fn check_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') {
        return Err(format!("prefix {prefix:?} must start with /"));
    }
    if prefix.contains('?') {
        return Err(format!(
            "prefix {prefix:?} contains a query (?); rules match paths only"
        ));
    }
    match uri::normalise(prefix) {
        Ok(normal) if normal == prefix => Ok(()),
        Ok(normal) => Err(format!(
            "prefix {prefix:?} is not normalised; write it as {normal:?}"
        )),
        Err(e) => Err(format!("prefix {prefix:?} is refused: {}", e.message())),
    }
}

fn check_method(method: &str) -> Result<(), String> {
    let token =
        !method.is_empty() && method.len() <= 32 && method.bytes().all(|b| b.is_ascii_uppercase());
    if token {
        Ok(())
    } else if method.bytes().all(|b| b.is_ascii_alphabetic()) && !method.is_empty() {
        Err(format!(
            "method {method:?} must be written in upper case: {:?}",
            method.to_ascii_uppercase()
        ))
    } else {
        Err(format!(
            "{method:?} is not an HTTP method; use names such as GET, HEAD, POST, PUT, PATCH, DELETE"
        ))
    }
}

fn parse_role(role: &str) -> Result<Role, String> {
    match role {
        "global_admin" => Ok(Role::GlobalAdmin),
        "global_viewer" => Ok(Role::GlobalViewer),
        "cloud_account_viewer" => Ok(Role::CloudAccountViewer),
        other => Err(format!(
            "{other:?} is not a role; use global_admin, global_viewer or cloud_account_viewer"
        )),
    }
}

fn methods_overlap(a: &Option<Vec<String>>, b: &Option<Vec<String>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
        (None, None) => true,
        // The rule naming the method is the more specific one.
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn refused(text: &str) -> PolicyFileError {
        parse("policy.toml", text).expect_err(text)
    }

    #[test]
    fn a_good_file_loads() {
        let policy = parse(
            "policy.toml",
            r#"
# comment
[[rule]]
prefix = "/admin"
roles = ["global_admin"]

[[rule]]
prefix = "/accounts/"
methods = ["POST", "POST", "PUT"]
roles = ["global_admin", "cloud_account_viewer"]

[[rule]]
prefix = "/admin"
methods = ["GET"]
roles = ["global_viewer"]
"#,
        );
        let policy = policy.unwrap_or_else(|e| panic!("{e}"));
        let rules = policy.rules();
        assert_eq!(rules.len(), 3);
        let accounts = rules.iter().find(|r| r.prefix == "/accounts/").unwrap();
        assert_eq!(accounts.methods, Some(vec!["POST".into(), "PUT".into()]));
        assert_eq!(
            accounts.roles,
            vec![Role::GlobalAdmin, Role::CloudAccountViewer]
        );
        assert_eq!(accounts.line, 7);
        assert!(parse("empty.toml", "").unwrap().rules().is_empty());
    }

    #[test]
    fn bad_files_name_the_line_and_the_reason() {
        let cases: [(&str, usize, &str); 9] = [
            (
                "[[rule]]\nprefix = \"/a\"\nroles = [\"admin\"]\n",
                3,
                "\"admin\" is not a role",
            ),
            (
                "[[rule]]\nprefix = \"a\"\nroles = []\n",
                2,
                "must start with /",
            ),
            (
                "[[rule]]\nprefix = \"/a/../b\"\nroles = []\n",
                2,
                "dot segment",
            ),
            (
                "[[rule]]\nprefix = \"/a//b\"\nroles = []\n",
                2,
                "write it as \"/a/b\"",
            ),
            (
                "[[rule]]\nprefix = \"/a\"\nmethods = [\"get\"]\nroles = []\n",
                3,
                "upper case: \"GET\"",
            ),
            (
                "[[rule]]\nprefix = \"/a\"\nrole = []\n",
                3,
                "unknown field `role`",
            ),
            ("[[rule]]\nprefix = \"/a\"\n", 1, "missing field `roles`"),
            ("\n\n[[rule]\nprefix = 1\n", 3, ""),
            (
                "[[rule]]\nprefix = \"/a\"\nmethods = [\"PUT\", \"GET\"]\nroles = []\n[[rule]]\nprefix = \"/a\"\nmethods = [\"GET\"]\nroles = []\n",
                6,
                "line 1",
            ),
        ];
        for (text, line, reason) in cases {
            let e = refused(text);
            assert_eq!(e.line, Some(line), "{text:?}: {e}");
            assert!(e.reason.contains(reason), "{text:?}: {e}");
            assert!(
                e.to_string().starts_with(&format!(
                    "the policy file policy.toml is refused: line {line}: "
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn a_missing_file_is_refused_by_name() {
        let e = load(Path::new("/nonexistent/gate-policy.toml")).unwrap_err();
        assert_eq!(e.line, None);
        assert!(e.to_string().contains("gate-policy.toml"), "{e}");
        assert!(e.reason.starts_with("cannot read it"), "{e}");
    }
}
