//! Replacing the authenticator (the TOTP app a sign-in's second step asks for): a new
//! secret from the server, shown once as a QR code, active only after a code from it is
//! confirmed. Changing a sign-in factor is high-risk: both steps need a recent full sign-in.

use carekeep_protocol::auth::Enrollment;

use super::Account;
use crate::Result;
use crate::error::ServerError;

impl Account {
    /// Starts replacing the authenticator: the new secret as an `otpauth://` URI and a QR
    /// code. The old authenticator keeps working until [`Account::confirm_authenticator`].
    /// Needs a full sign-in inside the policy's step-up window ([`ServerError::StepUpRequired`]).
    pub async fn begin_authenticator_change(&mut self) -> Result<Enrollment> {
        self.session.check_step_up()?;
        self.request(|server, token| async move { server.begin_enrollment(&token).await })
            .await
    }

    /// Makes the new authenticator the only one, given a `code` from it; a wrong code
    /// counts as a failed sign-in attempt at the server.
    pub async fn confirm_authenticator(&mut self, code: &str) -> Result<()> {
        self.session.check_step_up()?;
        let code = code.trim();
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(crate::Error::Server(ServerError::BadCode));
        }
        let code = code.to_owned();
        self.request(|server, token| {
            let code = code.clone();
            async move { server.confirm_enrollment(&token, &code).await }
        })
        .await
    }
}
