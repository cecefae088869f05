//! Device sessions after sign-in: handing out tokens, rotating refresh tokens, checking
//! access tokens, logging out. Each reads its rows, asks [`rules`] what they mean, and
//! writes what was decided.

use carekeep_protocol::Secret;
use carekeep_protocol::auth::{LogoutRequest, RefreshRequest, Role, TokenResponse};

use super::secrets::{new_token, token_hash};
use super::store::IssuedTokens;
use super::{Auth, AuthError, Principal, rules};

/// The refresh token an issue hands out.
pub(super) enum RefreshToken {
    /// A new one, recorded now.
    New(String),
    /// One already recorded and never used, handed out again (a lost answer's retry).
    Reissue(String),
}

impl Auth {
    /// The refresh token a rotation of `spent_hash` with `rotation_id` hands out: derived,
    /// not random, so a device that lost the answer gets the same token when it retries.
    fn successor(&self, spent_hash: &[u8], rotation_id: &str) -> String {
        use base64::Engine as _;
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(self.rotation_key.as_slice())
            .expect("HMAC takes any key length");
        mac.update(b"carekeep.refresh.rotation.v1\0");
        mac.update(spent_hash);
        mac.update(rotation_id.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Rotates a refresh token. Presenting one that was already used revokes the device.
    pub async fn refresh(&self, request: RefreshRequest, now: i64) -> Result<TokenResponse, AuthError> {
        let spent_hash = token_hash(request.refresh_token.expose());
        let found = self.accounts.refresh_token(spent_hash.clone()).await?;
        let Some(row) = found else { return Err(AuthError::SessionEnded) };
        let idle_secs = rules::idle_secs(row.session.idle_limit, self.policy.idle_secs);
        let rotation_id = request.rotation_id.filter(|r| !r.is_empty() && r.len() <= 128);
        let (tenant, device_id) = (row.session.tenant.clone(), row.session.device_id.clone());
        match rules::refresh(&row, &request.device_id, rotation_id.is_some(), idle_secs, now) {
            rules::Refresh::Refuse(refused) => Err(refused),
            rules::Refresh::CheckRetry => {
                // A rotated-out token came back. With the rotation id of the rotation that
                // spent it, and that rotation's token never used, it is the same device
                // retrying after losing the answer: it gets the same token again. Otherwise
                // someone holds a copy: the device session ends.
                let rotation_id = rotation_id.as_deref().unwrap_or_default();
                let successor = self.successor(&spent_hash, rotation_id);
                let successor_used = self
                    .accounts
                    .refresh_used(tenant.clone(), token_hash(&successor), device_id.clone())
                    .await?;
                if rules::retry(successor_used, &row.session, idle_secs, now) {
                    let (mut tokens, issued) =
                        self.new_tokens(tenant, device_id, now, RefreshToken::Reissue(successor))?;
                    tokens.user_id = self.accounts.record_tokens(issued).await?;
                    return Ok(tokens);
                }
                self.end_device(tenant, device_id).await?;
                Err(AuthError::SessionEnded)
            }
            rules::Refresh::EndSession => {
                self.end_device(tenant, device_id).await?;
                Err(AuthError::SessionEnded)
            }
            rules::Refresh::Rotate => {
                let next = match &rotation_id {
                    Some(id) => RefreshToken::New(self.successor(&spent_hash, id)),
                    None => RefreshToken::New(new_token().map_err(|_| AuthError::Internal)?),
                };
                let (mut tokens, issued) = self.new_tokens(tenant.clone(), device_id.clone(), now, next)?;
                let Some(user_id) = self.accounts.rotate(spent_hash, issued).await? else {
                    // Another request rotated this same token a moment ago: two holders again.
                    self.end_device(tenant, device_id).await?;
                    return Err(AuthError::SessionEnded);
                };
                tokens.user_id = user_id;
                Ok(tokens)
            }
        }
    }

    /// Who is calling, from an access token: checks expiry, revocation, remote wipe and idle
    /// time, and records the activity.
    pub async fn authenticate(&self, access_token: &str, now: i64) -> Result<Principal, AuthError> {
        let found = self.accounts.access_token(token_hash(access_token)).await?;
        let Some(row) = found else { return Err(AuthError::SessionEnded) };
        let idle_secs = rules::idle_secs(row.session.idle_limit, self.policy.idle_secs);
        let touch = match rules::access(&row, idle_secs, now) {
            rules::Access::Refuse(refused) => return Err(refused),
            rules::Access::EndSession => {
                self.end_device(row.session.tenant, row.session.device_id).await?;
                return Err(AuthError::SessionEnded);
            }
            rules::Access::Admit { touch } => touch,
        };
        let role = Role::parse(&row.role).ok_or(AuthError::Internal)?;
        let (tenant, device_id) = (row.session.tenant, row.session.device_id);
        if touch {
            self.accounts.touch_device(tenant.clone(), device_id.clone(), now).await?;
        }
        Ok(Principal { user_id: row.user_id, tenant, role, device_id, idle_secs })
    }

    /// Ends the device session the refresh token belongs to. Unknown tokens are ignored.
    pub async fn logout(&self, request: LogoutRequest) -> Result<(), AuthError> {
        match self.accounts.refresh_device(token_hash(request.refresh_token.expose())).await? {
            Some((tenant, device)) => self.end_device(tenant, device).await,
            None => Ok(()),
        }
    }

    /// A new access token and `refresh` for `device_id`: what the device is handed (its
    /// `user_id` filled in once recorded) and what the store records.
    pub(super) fn new_tokens(
        &self,
        tenant: String,
        device_id: String,
        now: i64,
        refresh: RefreshToken,
    ) -> Result<(TokenResponse, IssuedTokens), AuthError> {
        let access = new_token().map_err(|_| AuthError::Internal)?;
        let (refresh, is_new) = match refresh {
            RefreshToken::New(token) => (token, true),
            RefreshToken::Reissue(token) => (token, false),
        };
        let issued = IssuedTokens {
            tenant,
            device_id: device_id.clone(),
            access_hash: token_hash(&access),
            expires_at: now + self.policy.access_ttl_secs,
            new_refresh_hash: is_new.then(|| token_hash(&refresh)),
            now,
        };
        let tokens = TokenResponse {
            access_token: Secret::new(access),
            refresh_token: Secret::new(refresh),
            expires_in: u32::try_from(self.policy.access_ttl_secs).unwrap_or(u32::MAX),
            device_id,
            user_id: String::new(),
            device_cookie: None,
        };
        Ok((tokens, issued))
    }
}
