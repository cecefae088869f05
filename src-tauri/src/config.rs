//! Where the app's server is and which keys it pins: `server.json`, written by IT's
//! provisioning (or by `cargo xtask demo`), never by the UI. No secret and no PHI in it.
//!
//! ```json
//! {"server": "https://records.example.org", "pins": ["<base64>", "<base64>"], "pins_expire": "2027-03-01"}
//! ```

use std::path::Path;

use carekeep_core::net::ServerUrl;
use carekeep_protocol::pins::{Pin, PinSet};
use serde::Deserialize;

/// The server this app talks to, pinned.
pub struct ServerConfig {
    /// The server's address (https only: [`ServerUrl`] refuses anything else).
    pub url: ServerUrl,
    /// The live key and the backup key, at least two.
    pub pins: PinSet,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    server: String,
    pins: Vec<String>,
    pins_expire: String,
}

impl ServerConfig {
    /// Reads and checks `path`; the error says what to fix, in words for IT staff.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the server configuration {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|problem| format!("the server configuration {} {problem}", path.display()))
    }

    fn parse(text: &str) -> Result<Self, String> {
        let file: File = serde_json::from_str(text)
            .map_err(|e| format!("is not valid: {e} (expected server, pins and pins_expire)"))?;
        let url = ServerUrl::parse(&file.server).map_err(|e| format!("names a server that cannot be used: {e}"))?;
        let pins = file
            .pins
            .iter()
            .map(|p| Pin::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| "holds a pin that is not a base64 SHA-256 of a public key".to_owned())?;
        let expires = time::Date::parse(&file.pins_expire, time::macros::format_description!("[year]-[month]-[day]"))
            .map_err(|_| "has a pins_expire that is not a date (YYYY-MM-DD)".to_owned())?;
        let pins = PinSet::new(pins, expires)
            .map_err(|_| "needs at least two different pins: the live key and the backup key".to_owned())?;
        Ok(Self { url, pins })
    }
}

#[cfg(test)]
mod tests {
    use super::ServerConfig;

    const PIN_A: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    const PIN_B: &str = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=";

    fn config(server: &str, pins: &[&str]) -> String {
        serde_json::json!({"server": server, "pins": pins, "pins_expire": "2030-01-01"}).to_string()
    }

    #[test]
    fn a_pinned_https_server_is_accepted() {
        let parsed = ServerConfig::parse(&config("https://127.0.0.1:8443", &[PIN_A, PIN_B])).unwrap();
        assert_eq!(parsed.url.as_str(), "https://127.0.0.1:8443/");
    }

    #[test]
    fn plain_http_one_pin_or_a_bad_pin_is_refused_with_what_to_fix() {
        let http = ServerConfig::parse(&config("http://127.0.0.1:8443", &[PIN_A, PIN_B]))
            .err()
            .unwrap();
        assert!(http.contains("cannot be used"), "{http}");
        let one = ServerConfig::parse(&config("https://h", &[PIN_A])).err().unwrap();
        assert!(one.contains("at least two"), "{one}");
        let bad = ServerConfig::parse(&config("https://h", &[PIN_A, "nope"])).err().unwrap();
        assert!(bad.contains("not a base64"), "{bad}");
        let extra = ServerConfig::parse(r#"{"server":"https://h","pins":[],"pins_expire":"2030-01-01","x":1}"#);
        assert!(extra.is_err());
    }
}
