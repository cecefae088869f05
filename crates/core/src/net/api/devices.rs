//! The caller's devices: listing them and signing one out.

use carekeep_protocol::Secret;
use carekeep_protocol::auth::DeviceInfo;

use super::{OpaqueId, Server, refusal};
use crate::{Error, Result};

impl Server {
    /// The caller's devices (signed in, or signed out by the server), this one marked.
    pub async fn devices(&self, access_token: &Secret) -> Result<Vec<DeviceInfo>> {
        self.send(self.http.get(self.url.join("/devices")).bearer_auth(access_token.expose()))
            .await
    }

    /// Signs one of the caller's devices out (it erases its cache at its next contact).
    pub async fn revoke_device(&self, access_token: &Secret, device_id: &str) -> Result<()> {
        let device_id = OpaqueId::parse(device_id)
            .map_err(|_| Error::InvalidArgument { what: "device", problem: "not a device id" })?;
        let request = self
            .http
            .post(self.url.join(&format!("/devices/{device_id}/revoke")))
            .bearer_auth(access_token.expose());
        let response = self.exchange(request).await?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            404 => Err(Error::InvalidArgument { what: "device", problem: "there is no such device of yours" }),
            _ => Err(refusal(response).await),
        }
    }
}
