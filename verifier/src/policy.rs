//! The verified key a request carries, and the access policy of contract §1.
//!
//! - a read (`GET`, `HEAD`) is allowed for any valid key within its scope:
//!   `global_admin` and `global_viewer` read every account, a
//!   `cloud_account_viewer` reads the accounts in its `accounts` claim (all of
//!   them with `["*"]`);
//! - a write (`POST`, `PUT`, `PATCH`, `DELETE`) needs `global_admin`;
//! - any other method is denied.

use crate::claims::{ALL_ACCOUNTS, AccessClaims, Role, StatusListRef};

/// An access key whose signature and claims have been verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedKey {
    /// The key's id (`sub`); stable across renewals.
    pub id: String,
    /// The key's unique name.
    pub name: String,
    /// The roles granted to the key (never empty).
    pub roles: Vec<Role>,
    /// The readable accounts, present only for `cloud_account_viewer`.
    pub accounts: Option<Vec<String>>,
    /// The token's `exp` (seconds since the Unix epoch).
    pub expires_at: i64,
    /// This token's id.
    pub jti: String,
    /// Where this token's revocation status lives.
    pub status: StatusListRef,
}

impl From<AccessClaims> for VerifiedKey {
    fn from(claims: AccessClaims) -> Self {
        VerifiedKey {
            id: claims.sub,
            name: claims.name,
            roles: claims.roles,
            accounts: claims.accounts,
            expires_at: claims.exp,
            jti: claims.jti,
            status: claims.status.status_list,
        }
    }
}

impl VerifiedKey {
    /// Whether the key has `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether the key is a `global_admin`.
    pub fn is_admin(&self) -> bool {
        self.has_role(Role::GlobalAdmin)
    }

    /// Whether the key may read everything, including latchkey's own registry
    /// and audit log: `global_admin` or `global_viewer`. A
    /// `cloud_account_viewer` with `["*"]` reads every *account*
    /// ([`can_read`](Self::can_read)) but is not a global reader.
    pub fn can_read_all(&self) -> bool {
        self.is_admin() || self.has_role(Role::GlobalViewer)
    }

    /// Whether the key may read `account`.
    pub fn can_read(&self, account: &str) -> bool {
        if self.can_read_all() {
            return true;
        }
        if account.is_empty() || !self.has_role(Role::CloudAccountViewer) {
            return false;
        }
        self.accounts
            .as_deref()
            .is_some_and(|accounts| accounts.iter().any(|a| a == ALL_ACCOUNTS || a == account))
    }

    /// Whether the key may write to `account`: only `global_admin` writes.
    pub fn can_write(&self, _account: &str) -> bool {
        self.is_admin()
    }

    /// Whether the key may make a request with this HTTP `method` (exact,
    /// upper-case, as on the wire) on `account`. `GET` and `HEAD` are reads;
    /// `POST`, `PUT`, `PATCH` and `DELETE` are writes; anything else is
    /// denied.
    pub fn allows(&self, method: &str, account: &str) -> bool {
        match method {
            "GET" | "HEAD" => self.can_read(account),
            "POST" | "PUT" | "PATCH" | "DELETE" => self.can_write(account),
            _ => false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::claims::{Audience, StatusClaim};

    fn key(roles: &[Role], accounts: Option<&[&str]>) -> VerifiedKey {
        VerifiedKey::from(AccessClaims {
            iss: "https://latchkey.example".into(),
            sub: "id-1".into(),
            client_id: "id-1".into(),
            aud: Audience::One("latchkey".into()),
            iat: 1,
            nbf: 1,
            exp: 99,
            jti: "jti-1".into(),
            name: "name-1".into(),
            roles: roles.to_vec(),
            accounts: accounts.map(|a| a.iter().map(|s| s.to_string()).collect()),
            status: StatusClaim {
                status_list: StatusListRef {
                    idx: 5,
                    uri: "https://latchkey.example/v1/status/1".into(),
                },
            },
        })
    }

    const READS: [&str; 2] = ["GET", "HEAD"];
    const WRITES: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];
    const OTHERS: [&str; 6] = ["OPTIONS", "TRACE", "CONNECT", "get", "Post", ""];

    #[test]
    fn from_claims() {
        let k = key(&[Role::CloudAccountViewer], Some(&["a"]));
        assert_eq!(k.id, "id-1");
        assert_eq!(k.name, "name-1");
        assert_eq!(k.jti, "jti-1");
        assert_eq!(k.expires_at, 99);
        assert_eq!(k.status.idx, 5);
        assert_eq!(k.accounts, Some(vec!["a".to_string()]));
    }

    #[test]
    fn global_admin() {
        let k = key(&[Role::GlobalAdmin], None);
        assert!(k.is_admin() && k.can_read_all());
        assert!(k.has_role(Role::GlobalAdmin) && !k.has_role(Role::GlobalViewer));
        for account in ["acct-1", "*", ""] {
            assert!(k.can_read(account) && k.can_write(account));
            for m in READS.iter().chain(&WRITES) {
                assert!(k.allows(m, account), "{m}");
            }
            for m in OTHERS {
                assert!(!k.allows(m, account), "{m}");
            }
        }
    }

    #[test]
    fn global_viewer() {
        let k = key(&[Role::GlobalViewer], None);
        assert!(!k.is_admin() && k.can_read_all());
        for account in ["acct-1", "acct-2"] {
            assert!(k.can_read(account) && !k.can_write(account));
            for m in READS {
                assert!(k.allows(m, account));
            }
            for m in WRITES.iter().chain(&OTHERS) {
                assert!(!k.allows(m, account), "{m}");
            }
        }
    }

    #[test]
    fn cloud_account_viewer() {
        let k = key(&[Role::CloudAccountViewer], Some(&["acct-1", "acct-2"]));
        assert!(!k.is_admin() && !k.can_read_all());
        assert!(k.can_read("acct-1") && k.can_read("acct-2"));
        assert!(!k.can_read("acct-3") && !k.can_read("") && !k.can_read("*"));
        assert!(!k.can_read("ACCT-1") && !k.can_read("acct-"));
        assert!(k.allows("GET", "acct-1") && k.allows("HEAD", "acct-2"));
        assert!(!k.allows("GET", "acct-3"));
        for m in WRITES.iter().chain(&OTHERS) {
            assert!(!k.allows(m, "acct-1"), "{m}");
            assert!(!k.can_write("acct-1"));
        }
    }

    #[test]
    fn cloud_account_viewer_of_all_accounts() {
        let k = key(&[Role::CloudAccountViewer], Some(&["*"]));
        assert!(!k.can_read_all());
        assert!(k.can_read("acct-1") && k.can_read("anything"));
        assert!(k.allows("GET", "acct-9"));
        for m in WRITES {
            assert!(!k.allows(m, "acct-1"));
        }
    }

    #[test]
    fn combined_roles() {
        let k = key(
            &[Role::GlobalViewer, Role::CloudAccountViewer],
            Some(&["a"]),
        );
        assert!(k.can_read("b") && !k.can_write("a"));
        let k = key(&[Role::CloudAccountViewer, Role::GlobalAdmin], Some(&["a"]));
        assert!(k.can_read("b") && k.can_write("b") && k.allows("DELETE", "b"));
        // Accounts without the role grant nothing (such claims never verify).
        let k = key(&[Role::GlobalViewer], Some(&["a"]));
        assert!(!k.can_write("a"));
        let k = key(&[], Some(&["a"]));
        assert!(!k.can_read("a") && !k.allows("GET", "a"));
    }
}
