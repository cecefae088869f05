//! This device's audit records, uploaded in batches.

use carekeep_protocol::Secret;
use carekeep_protocol::sync::{DeviceAuditReceipt, DeviceAuditUpload};

use super::Server;
use crate::Result;

impl Server {
    /// Uploads a batch of this device's audit records.
    pub async fn upload_audit(&self, access_token: &Secret, upload: &DeviceAuditUpload) -> Result<DeviceAuditReceipt> {
        self.send(
            self.http
                .post(self.url.join("/audit/device"))
                .bearer_auth(access_token.expose())
                .json(upload),
        )
        .await
    }
}
