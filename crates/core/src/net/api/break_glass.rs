//! Break-glass: opening a record outside the care team, with a reason kept for review.

use carekeep_protocol::Secret;

use super::{Server, refusal};
use crate::{Error, Result};

impl Server {
    /// Opens `patient`'s record outside the caller's care team for a while (break-glass),
    /// with the clinician's reason, kept for review.
    pub async fn break_glass(&self, access_token: &Secret, patient: &str, reason: &str) -> Result<()> {
        let body = serde_json::json!({"patient": patient, "reason": reason});
        let request = self
            .http
            .post(self.url.join("/break-glass"))
            .bearer_auth(access_token.expose())
            .json(&body);
        let response = self.exchange(request).await?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            404 => Err(Error::InvalidArgument { what: "patient", problem: "there is no such patient" }),
            _ => Err(refusal(response).await),
        }
    }
}
