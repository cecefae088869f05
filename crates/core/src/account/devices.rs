//! The account's devices, as its security settings show them: list them, sign one out
//! (a lost phone), or sign out everywhere.

use carekeep_protocol::auth::DeviceInfo;

use super::{Account, LoggedOut};
use crate::{Error, Result};

impl Account {
    /// The user's devices at the server, this one marked `current`.
    pub async fn devices(&mut self) -> Result<Vec<DeviceInfo>> {
        self.request(|server, token| async move { server.devices(&token).await }).await
    }

    /// Signs another of the user's devices out: it erases its copy at its next contact.
    /// This device signs out with [`Account::logout`] instead.
    pub async fn revoke_device(&mut self, device_id: &str) -> Result<()> {
        if device_id == self.facts.server_device_id {
            return Err(Error::InvalidArgument { what: "device", problem: "this is this device: sign out instead" });
        }
        let id = device_id.to_owned();
        self.request(|server, token| {
            let id = id.clone();
            async move { server.revoke_device(&token, &id).await }
        })
        .await
    }

    /// Signs out everywhere: every other device of the user first (each erases its copy at
    /// its next contact), then this one. Stops at the first device the server would not
    /// sign out, with nothing on this device changed.
    pub async fn sign_out_everywhere(mut self) -> Result<LoggedOut> {
        for device in self.devices().await? {
            if !device.current && !device.revoked {
                self.revoke_device(&device.id).await?;
            }
        }
        self.logout().await
    }
}
