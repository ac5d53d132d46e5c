//! Access keys: create, describe, list, update, renew, suspend, resume and
//! revoke (contract §2–§3).
//!
//! Minting lives here only: a status slot from the store, the claims, one
//! signature with the active key. A change of a key is computed from the
//! record as read (the rules of its state first, so a refused change never
//! reaches the store) and written as one compare-and-set; if another write
//! changed the key meanwhile, it is read again and the rules run again.

use latchkey_verifier::{AccessClaims, StatusClaim, TokenStatus};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{Actor, NewEntry};
use crate::issuer::{Issuer, IssuerError, IssuerResult};
use crate::model::{KeyRecord, KeyState, KeyStatus, TokenSlot, rfc3339};
use crate::names::fold_name;
use crate::signing::SigningKey;
use crate::store::{KeyUpdate, NewKey, StoreError};
use crate::validation::{FieldError, NewKeyRequest, ValidNewKey};

/// How often a change is recomputed when the key keeps changing under it.
const MAX_ATTEMPTS: usize = 16;

/// A freshly minted token: returned once, never stored.
pub struct Minted {
    pub record: KeyRecord,
    pub token: String,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("record", &self.record)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// A page of keys.
#[derive(Debug)]
pub struct KeyPage {
    pub items: Vec<KeyRecord>,
    pub next_cursor: Option<String>,
}

/// Filters for listing keys.
#[derive(Debug, Default, Clone)]
pub struct KeyFilter {
    pub status: Option<KeyStatus>,
    /// Case-insensitive substring of the name or description.
    pub query: Option<String>,
}

impl Issuer {
    /// Signs a new token for `record`, valid until `expires_at`.
    async fn mint(
        &self,
        record: &KeyRecord,
        signing_key: &SigningKey,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> IssuerResult<(TokenSlot, String)> {
        let slot = self.store.allocate_slot().await?;
        let jti = Uuid::now_v7().to_string();
        let claims = AccessClaims {
            iss: self.settings.issuer.clone(),
            sub: record.id.clone(),
            client_id: record.id.clone(),
            aud: self.settings.audience.clone(),
            iat: now.unix_timestamp(),
            nbf: now.unix_timestamp(),
            exp: expires_at.unix_timestamp(),
            jti: jti.clone(),
            name: record.name.clone(),
            roles: record.roles.clone(),
            accounts: record.accounts.clone(),
            status: StatusClaim {
                status_list: self.lists.reference(slot),
            },
        };
        let token = signing_key
            .mint(&claims)
            .map_err(|e| IssuerError::Internal(e.to_string()))?;
        metrics::counter!("latchkey_keys_minted_total").increment(1);
        Ok((
            TokenSlot {
                jti,
                slot,
                issued_at: now.unix_timestamp(),
                expires_at: expires_at.unix_timestamp(),
                signing_kid: signing_key.kid().to_owned(),
                revoked: false,
            },
            token,
        ))
    }

    /// Creates a key and mints its first token, once validated.
    pub async fn create(&self, actor: &Actor, request: &NewKeyRequest) -> IssuerResult<Minted> {
        let valid = request
            .validate(self.settings.max_expiry_days, self.now())
            .map_err(IssuerError::Validation)?;
        self.create_valid(actor, valid).await
    }

    /// Creates a key from a request that passed validation (the bootstrap
    /// and recovery keys, seeding).
    pub async fn create_valid(&self, actor: &Actor, valid: ValidNewKey) -> IssuerResult<Minted> {
        let now = self.now();
        let signing_key = self.keyring.snapshot().active.clone();
        let mut record = KeyRecord {
            id: Uuid::now_v7().to_string(),
            name: valid.name,
            description: valid.description,
            roles: valid.roles,
            accounts: valid.accounts,
            created_at: now,
            created_by: actor.clone(),
            expires_at: valid.expires_at,
            last_used_at: None,
            state: KeyState::Active,
            revoked_at: None,
            signing_kid: signing_key.kid().to_owned(),
            tokens: Vec::new(),
        };
        let (slot, token) = self
            .mint(&record, &signing_key, now, record.expires_at)
            .await?;
        let entry = NewEntry {
            actor: actor.clone(),
            action: "key.create",
            target: Some(record.id.clone()),
            details: json!({
                "name": record.name,
                "roles": record.roles,
                "accounts": record.accounts,
                "expires_at": rfc3339(record.expires_at),
                "jti": slot.jti,
            }),
        };
        record.tokens.push(slot);
        let new = NewKey {
            folded_name: fold_name(&record.name),
            record: record.clone(),
            entry,
        };
        self.store
            .insert_keys(vec![new], now)
            .await?
            .pop()
            .unwrap_or_else(|| Err(StoreError::Internal("a create had no outcome".into())))?;
        Ok(Minted { record, token })
    }

    /// One key.
    pub async fn describe(&self, id: &str) -> IssuerResult<KeyRecord> {
        self.store.key(id).await?.ok_or(IssuerError::NotFound)
    }

    /// Keys newest first, `limit` at most, after `cursor` (the
    /// `next_cursor` of the previous page: a key id this issuer handed out).
    pub async fn list(
        &self,
        filter: &KeyFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> IssuerResult<KeyPage> {
        if let Some(cursor) = cursor
            && self.store.key(cursor).await?.is_none()
        {
            return Err(IssuerError::UnknownParameter(FieldError::new(
                "cursor",
                "was not handed out by this server: pass the next_cursor of the previous page, or no cursor for the first page",
            )));
        }
        let now = self.now();
        let query = filter.query.as_ref().map(|q| q.to_lowercase());
        let mut items = Vec::with_capacity(limit.min(512));
        let mut next_cursor = None;
        self.store
            .scan_keys(cursor, &mut |record| {
                if let Some(status) = filter.status
                    && record.status(now) != status
                {
                    return true;
                }
                if let Some(q) = &query
                    && !record.name.to_lowercase().contains(q.as_str())
                    && !record.description.to_lowercase().contains(q.as_str())
                {
                    return true;
                }
                if items.len() == limit {
                    next_cursor = items.last().map(|r: &KeyRecord| r.id.clone());
                    return false;
                }
                items.push(record);
                true
            })
            .await?;
        Ok(KeyPage { items, next_cursor })
    }

    /// Applies `change` to key `id` and records `action`: the change runs on
    /// the record as read, the status bits that move are derived from the
    /// record before and after, and the whole is one compare-and-set.
    async fn change_key(
        &self,
        actor: &Actor,
        id: &str,
        now: OffsetDateTime,
        action: &'static str,
        change: impl Fn(&mut KeyRecord) -> IssuerResult<serde_json::Value>,
    ) -> IssuerResult<KeyRecord> {
        for _ in 0..MAX_ATTEMPTS {
            let expected = self.describe(id).await?;
            let mut record = expected.clone();
            let details = change(&mut record)?;
            let mut statuses = Vec::new();
            let mut new_jtis = Vec::new();
            for (i, token) in record.tokens.iter().enumerate() {
                let before = match expected.tokens.get(i) {
                    Some(old) => expected.token_status(old),
                    None => {
                        new_jtis.push(token.jti.clone());
                        TokenStatus::Valid
                    }
                };
                let after = record.token_status(token);
                if before != after {
                    statuses.push((token.slot, after));
                }
            }
            let update = KeyUpdate {
                expected,
                record: record.clone(),
                new_jtis,
                statuses,
                entry: NewEntry {
                    actor: actor.clone(),
                    action,
                    target: Some(id.to_owned()),
                    details,
                },
            };
            match self.store.update_key(update, now).await {
                Ok(()) => return Ok(record),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IssuerError::Internal(format!(
            "key {id} kept changing during {action}; gave up after {MAX_ATTEMPTS} attempts"
        )))
    }

    /// Changes the description (validated first).
    pub async fn update_description(
        &self,
        actor: &Actor,
        id: &str,
        description: String,
    ) -> IssuerResult<KeyRecord> {
        crate::validation::validate_description(&description)
            .map_err(|e| IssuerError::Validation(vec![e]))?;
        self.change_key(actor, id, self.now(), "key.update", |record| {
            if record.state == KeyState::Revoked {
                return Err(IssuerError::AlreadyRevoked);
            }
            let details = json!({"description": {"from": record.description, "to": description}});
            record.description = description.clone();
            Ok(details)
        })
        .await
    }

    /// Suspends every live token of the key.
    pub async fn suspend(&self, actor: &Actor, id: &str) -> IssuerResult<KeyRecord> {
        self.change_key(
            actor,
            id,
            self.now(),
            "key.suspend",
            |record| match record.state {
                KeyState::Revoked => Err(IssuerError::AlreadyRevoked),
                KeyState::Suspended => Err(IssuerError::InvalidState(
                    "the key is already suspended".into(),
                )),
                KeyState::Active => {
                    record.state = KeyState::Suspended;
                    Ok(json!({"name": record.name}))
                }
            },
        )
        .await
    }

    /// Lifts a suspension.
    pub async fn resume(&self, actor: &Actor, id: &str) -> IssuerResult<KeyRecord> {
        self.change_key(actor, id, self.now(), "key.resume", |record| {
            match record.state {
                KeyState::Revoked => Err(IssuerError::AlreadyRevoked),
                KeyState::Active => {
                    Err(IssuerError::InvalidState("the key is not suspended".into()))
                }
                KeyState::Suspended => {
                    record.state = KeyState::Active;
                    Ok(json!({"name": record.name}))
                }
            }
        })
        .await
    }

    /// Revokes the key and every token it has, permanently.
    pub async fn revoke(&self, actor: &Actor, id: &str) -> IssuerResult<KeyRecord> {
        let now = self.now();
        self.change_key(actor, id, now, "key.revoke", |record| match record.state {
            KeyState::Revoked => Err(IssuerError::AlreadyRevoked),
            _ => {
                record.state = KeyState::Revoked;
                record.revoked_at = Some(now);
                Ok(json!({"name": record.name, "tokens": record.tokens.len()}))
            }
        })
        .await
    }

    /// Mints a replacement token for the key: same `sub`, name, roles and
    /// accounts; new `jti`, status slot and expiry.
    pub async fn renew(
        &self,
        actor: &Actor,
        id: &str,
        expires_in_days: Option<u32>,
        revoke_previous: bool,
    ) -> IssuerResult<Minted> {
        let now = self.now();
        let expires_at =
            crate::validation::expiry(expires_in_days, self.settings.max_expiry_days, now)
                .map_err(|e| IssuerError::Validation(vec![e]))?;
        let current = self.describe(id).await?;
        if current.state == KeyState::Revoked {
            return Err(IssuerError::AlreadyRevoked);
        }
        let signing_key = self.keyring.snapshot().active.clone();
        let (slot, token) = self.mint(&current, &signing_key, now, expires_at).await?;
        let kid = signing_key.kid().to_owned();
        let record = self
            .change_key(actor, id, now, "key.renew", |record| {
                if record.state == KeyState::Revoked {
                    return Err(IssuerError::AlreadyRevoked);
                }
                let mut revoked = Vec::new();
                if revoke_previous {
                    for token in record.tokens.iter_mut().filter(|t| !t.revoked) {
                        token.revoked = true;
                        revoked.push(token.jti.clone());
                    }
                }
                record.tokens.push(slot.clone());
                record.expires_at = expires_at;
                record.signing_kid = kid.clone();
                Ok(json!({
                    "name": record.name,
                    "jti": slot.jti,
                    "expires_at": rfc3339(expires_at),
                    "revoke_previous": revoke_previous,
                    "revoked_jtis": revoked,
                }))
            })
            .await?;
        Ok(Minted { record, token })
    }
}
