//! Validation of what clients send to create or change a key (contract §2).
//!
//! Each rule yields a [`FieldError`] naming the field and saying what to fix;
//! all problems of a request are reported together.

use latchkey_verifier::{ALL_ACCOUNTS, Role};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
pub const MAX_ACCOUNTS: usize = 1000;
pub const MAX_ACCOUNT_CHARS: usize = 128;
/// Default lifetime of a key: six calendar months.
pub const DEFAULT_EXPIRY_MONTHS: u8 = 6;

/// One problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// `POST /v1/keys` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKeyRequest {
    /// 1–100 printable characters (no Unicode Cc, Cf, Zl or Zp), trimmed;
    /// unique compared NFKC case-folded; cannot change later.
    pub name: String,
    /// 0–1000 characters; editable.
    #[serde(default)]
    pub description: Option<String>,
    /// Non-empty, each role once.
    pub roles: Vec<String>,
    /// Required with (and only with) `cloud_account_viewer`: 1–1000 account ids
    /// of `[A-Za-z0-9._:-]` (1–128 characters each), or `["*"]` for all.
    #[serde(default)]
    pub accounts: Option<Vec<String>>,
    /// 1 to the configured maximum (default 730); six calendar months when omitted.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

/// A request that passed validation.
#[derive(Debug, Clone)]
pub struct ValidNewKey {
    pub name: String,
    pub description: String,
    pub roles: Vec<Role>,
    pub accounts: Option<Vec<String>>,
    pub expires_at: OffsetDateTime,
}

impl NewKeyRequest {
    pub fn validate(
        &self,
        max_expiry_days: u32,
        now: OffsetDateTime,
    ) -> Result<ValidNewKey, Vec<FieldError>> {
        let mut errors = Vec::new();
        let name = self.name.trim().to_owned();
        // Positions in messages count from the start of the name as sent.
        let leading = self.name.chars().count() - self.name.trim_start().chars().count();
        if let Err(e) = validate_name_from(&name, leading) {
            errors.push(e);
        }
        let description = self.description.clone().unwrap_or_default();
        if let Err(e) = validate_description(&description) {
            errors.push(e);
        }
        let roles = parse_roles(&self.roles).unwrap_or_else(|e| {
            errors.push(e);
            Vec::new()
        });
        let accounts = match validate_accounts(&roles, self.accounts.as_deref()) {
            Ok(a) => a,
            Err(e) => {
                errors.push(e);
                None
            }
        };
        let expires_at = expiry(self.expires_in_days, max_expiry_days, now).unwrap_or_else(|e| {
            errors.push(e);
            now
        });
        if errors.is_empty() {
            Ok(ValidNewKey {
                name,
                description,
                roles,
                accounts,
                expires_at,
            })
        } else {
            Err(errors)
        }
    }
}

pub fn validate_name(name: &str) -> Result<(), FieldError> {
    validate_name_from(name, 0)
}

/// [`validate_name`] for a name that had `leading` characters trimmed off
/// its start, so that positions point into what the client sent.
fn validate_name_from(name: &str, leading: usize) -> Result<(), FieldError> {
    let chars = name.chars().count();
    if chars == 0 {
        return Err(FieldError::new(
            "name",
            "is required: give the key a name of 1 to 100 characters",
        ));
    }
    if chars > MAX_NAME_CHARS {
        return Err(FieldError::new(
            "name",
            format!("is {chars} characters long; the limit is {MAX_NAME_CHARS}"),
        ));
    }
    if let Some(mut found) = crate::names::first_forbidden(name) {
        found.position += leading;
        return Err(FieldError::new(
            "name",
            format!(
                "{found}: names may not hold control, format, bidi or line-separator characters (Unicode Cc, Cf, Zl, Zp); remove it"
            ),
        ));
    }
    Ok(())
}

pub fn validate_description(description: &str) -> Result<(), FieldError> {
    let chars = description.chars().count();
    if chars > MAX_DESCRIPTION_CHARS {
        return Err(FieldError::new(
            "description",
            format!("is {chars} characters long; the limit is {MAX_DESCRIPTION_CHARS}"),
        ));
    }
    Ok(())
}

fn parse_roles(roles: &[String]) -> Result<Vec<Role>, FieldError> {
    if roles.is_empty() {
        return Err(FieldError::new(
            "roles",
            "needs at least one role: global_admin, global_viewer or cloud_account_viewer",
        ));
    }
    let mut parsed: Vec<Role> = Vec::with_capacity(roles.len());
    for role in roles {
        let role = match role.as_str() {
            "global_admin" => Role::GlobalAdmin,
            "global_viewer" => Role::GlobalViewer,
            "cloud_account_viewer" => Role::CloudAccountViewer,
            other => {
                return Err(FieldError::new(
                    "roles",
                    format!(
                        "{other:?} is not a role; use global_admin, global_viewer or cloud_account_viewer"
                    ),
                ));
            }
        };
        if parsed.contains(&role) {
            return Err(FieldError::new("roles", format!("{role} is listed twice")));
        }
        parsed.push(role);
    }
    Ok(parsed)
}

fn validate_accounts(
    roles: &[Role],
    accounts: Option<&[String]>,
) -> Result<Option<Vec<String>>, FieldError> {
    let viewer = roles.contains(&Role::CloudAccountViewer);
    match (viewer, accounts) {
        (false, None) => Ok(None),
        (false, Some(_)) => Err(FieldError::new(
            "accounts",
            "only applies to the cloud_account_viewer role; remove it or add that role",
        )),
        (true, None) => Err(FieldError::new(
            "accounts",
            "is required with cloud_account_viewer: list account ids, or [\"*\"] for all accounts",
        )),
        (true, Some([])) => Err(FieldError::new(
            "accounts",
            "must not be empty with cloud_account_viewer: list account ids, or [\"*\"] for all accounts",
        )),
        (true, Some(list)) => {
            if list.len() > MAX_ACCOUNTS {
                return Err(FieldError::new(
                    "accounts",
                    format!("has {} entries; the limit is {MAX_ACCOUNTS}", list.len()),
                ));
            }
            if list.iter().any(|a| a == ALL_ACCOUNTS) {
                if list.len() > 1 {
                    return Err(FieldError::new(
                        "accounts",
                        "\"*\" already means all accounts; send [\"*\"] alone",
                    ));
                }
                return Ok(Some(vec![ALL_ACCOUNTS.to_owned()]));
            }
            let mut out: Vec<String> = Vec::with_capacity(list.len());
            for account in list {
                let ok_len = (1..=MAX_ACCOUNT_CHARS).contains(&account.len());
                let ok_chars = account
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
                if !ok_len || !ok_chars {
                    return Err(FieldError::new(
                        "accounts",
                        format!(
                            "{account:?} is not a valid account id: use 1 to {MAX_ACCOUNT_CHARS} characters of A-Z a-z 0-9 . _ : -"
                        ),
                    ));
                }
                if !out.contains(account) {
                    out.push(account.clone());
                }
            }
            Ok(Some(out))
        }
    }
}

/// The expiry for `expires_in_days`, or six calendar months from `now`.
pub fn expiry(
    expires_in_days: Option<u32>,
    max_expiry_days: u32,
    now: OffsetDateTime,
) -> Result<OffsetDateTime, FieldError> {
    match expires_in_days {
        None => Ok(add_months(now, DEFAULT_EXPIRY_MONTHS)),
        Some(days) if (1..=max_expiry_days).contains(&days) => {
            Ok(now + time::Duration::days(i64::from(days)))
        }
        Some(days) => Err(FieldError::new(
            "expires_in_days",
            format!(
                "{days} is out of range: use 1 to {max_expiry_days} days, or omit it for six months"
            ),
        )),
    }
}

/// Adds calendar months, clamping the day to the target month's length
/// (31 August + 6 months = 28/29 February).
pub fn add_months(t: OffsetDateTime, months: u8) -> OffsetDateTime {
    let total = t.month() as i32 - 1 + i32::from(months);
    let year = t.year() + total / 12;
    let month = time::Month::try_from((total % 12 + 1) as u8).unwrap_or(time::Month::January);
    let day = t.day().min(month.length(year));
    time::Date::from_calendar_date(year, month, day)
        .map(|date| t.replace_date(date))
        .unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn request(roles: &[&str], accounts: Option<&[&str]>) -> NewKeyRequest {
        NewKeyRequest {
            name: "ci-bot".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            accounts: accounts.map(|a| a.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn six_calendar_months_clamps_the_day() {
        assert_eq!(
            add_months(datetime!(2026-08-31 12:00 UTC), 6),
            datetime!(2027-02-28 12:00 UTC)
        );
        assert_eq!(
            add_months(datetime!(2027-08-31 0:00 UTC), 6),
            datetime!(2028-02-29 0:00 UTC)
        );
        assert_eq!(
            add_months(datetime!(2026-01-15 0:00 UTC), 6),
            datetime!(2026-07-15 0:00 UTC)
        );
    }

    #[test]
    fn accounts_go_with_cloud_account_viewer_only() {
        let now = datetime!(2026-01-01 0:00 UTC);
        assert!(
            request(&["cloud_account_viewer"], Some(&["a", "b"]))
                .validate(730, now)
                .is_ok()
        );
        let errs = request(&["cloud_account_viewer"], None)
            .validate(730, now)
            .unwrap_err();
        assert_eq!(errs[0].field, "accounts");
        let errs = request(&["global_viewer"], Some(&["a"]))
            .validate(730, now)
            .unwrap_err();
        assert_eq!(errs[0].field, "accounts");
        let errs = request(&["cloud_account_viewer"], Some(&["bad/acct"]))
            .validate(730, now)
            .unwrap_err();
        assert!(errs[0].message.contains("bad/acct"));
        let errs = request(&["root"], None).validate(730, now).unwrap_err();
        assert_eq!(errs[0].field, "roles");
    }

    #[test]
    fn expiry_bounds() {
        let now = datetime!(2026-01-01 0:00 UTC);
        assert!(expiry(Some(0), 730, now).is_err());
        assert!(expiry(Some(731), 730, now).is_err());
        assert_eq!(
            expiry(Some(730), 730, now).unwrap(),
            now + time::Duration::days(730)
        );
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        let now = datetime!(2026-01-01 0:00 UTC);
        let mut r = request(&["global_admin"], None);
        r.name = "  spaced  ".into();
        assert_eq!(r.validate(730, now).unwrap().name, "spaced");
        r.name = "x".repeat(101);
        assert_eq!(r.validate(730, now).unwrap_err()[0].field, "name");
        r.name = "line\nbreak".into();
        assert_eq!(r.validate(730, now).unwrap_err()[0].field, "name");
        // Positions count from the name as sent, leading spaces included.
        r.name = "  zero\u{200B}width".into();
        let errors = r.validate(730, now).unwrap_err();
        assert!(
            errors[0].message.starts_with("U+200B at position 7 "),
            "{}",
            errors[0].message
        );
    }
}
