//! What a signed-in device asks for, over real TLS: the signed policy, its devices, and
//! remote wipe honoured at the next contact.

mod common;

use base64::Engine as _;
use carekeep_protocol::auth::{Role, TokenResponse};
use carekeep_protocol::policy::SignedPolicy;
use carekeep_server::DataDir;
use serde_json::json;

struct Setup {
    _dir: tempfile::TempDir,
    data: DataDir,
    amy_totp: String,
    ben_totp: String,
}

const PASSWORD: &str = "correct horse battery staple";

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = DataDir::init(&dir.path().join("server"), "localhost").unwrap();
    let store = data.open_store().unwrap();
    let now = 1_800_000_000;
    carekeep_server::admin::add_tenant(&store, "clinic-1", "Clinic One", now).unwrap();
    carekeep_server::admin::add_tenant(&store, "clinic-2", "Clinic Two", now).unwrap();
    let amy = carekeep_server::admin::add_user(&store, "clinic-1", "amy", Role::Patient, PASSWORD, now).unwrap();
    let ben = carekeep_server::admin::add_user(&store, "clinic-2", "ben", Role::Admin, PASSWORD, now).unwrap();
    Setup { _dir: dir, data, amy_totp: amy.totp_base32, ben_totp: ben.totp_base32 }
}

/// Signs in over HTTPS as `user` (see [`common::sign_in`]).
async fn sign_in(http: &reqwest::Client, base: &str, user: &str, totp: &str, step: u64) -> TokenResponse {
    serde_json::from_value(common::sign_in(http, base, user, PASSWORD, totp, step).await.tokens).unwrap()
}

/// The server for `s`, a client trusting it, and its base URL.
async fn serve(s: &Setup) -> (common::Running, reqwest::Client, String) {
    let server = common::start(&s.data).await;
    let base = format!("https://localhost:{}", server.port());
    (server, common::client_for(&s.data), base)
}

/// `GET url` with a bearer token, read as JSON.
async fn get_json<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: String, token: &str) -> T {
    http.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_is_signed_for_the_callers_tenant_and_role_with_the_servers_pins() {
    let s = setup();
    let (_server, http, base) = serve(&s).await;
    let tokens = sign_in(&http, &base, "amy", &s.amy_totp, 0).await;

    let unauthenticated = http.get(format!("{base}/policy")).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let forged = http.get(format!("{base}/policy")).bearer_auth("forged").send().await.unwrap();
    assert_eq!(forged.status(), 401);

    let signed: SignedPolicy = get_json(&http, format!("{base}/policy"), tokens.access_token.expose()).await;
    let key: serde_json::Value = http
        .get(format!("{base}/policy/key"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(key["key_id"], signed.key_id.as_str());
    let bytes: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(key["public_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let public = ed25519_dalek::VerifyingKey::from_bytes(&bytes).unwrap();
    let policy = signed.verify(&public).unwrap();
    assert_eq!((policy.tenant.as_str(), policy.role), ("clinic-1", Role::Patient));
    assert_eq!(policy.idle_lock_secs, 300, "patients lock after 5 minutes");
    let pins = s.data.pins().unwrap();
    assert_eq!(policy.pins.pins(), [pins.live, pins.backup]);
    // A tenant's shorter idle limit for the role shortens the device's lock with it.
    carekeep_server::admin::set_idle_limit(&s.data.open_store().unwrap(), "clinic-1", Role::Patient, 2).unwrap();
    let signed: SignedPolicy = get_json(&http, format!("{base}/policy"), tokens.access_token.expose()).await;
    assert_eq!(signed.verify(&public).unwrap().idle_lock_secs, 120);

    // The authenticator can be replaced right after a full sign-in, over the API.
    let enroll = http.post(format!("{base}/auth/mfa/enroll")).send().await.unwrap();
    assert_eq!(enroll.status(), 401);
    let enroll: serde_json::Value = http
        .post(format!("{base}/auth/mfa/enroll"))
        .bearer_auth(tokens.access_token.expose())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(enroll["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/"));
    assert!(enroll["qr_png_base64"].as_str().unwrap().len() > 100);
    let confirm = http
        .post(format!("{base}/auth/mfa/confirm"))
        .bearer_auth(tokens.access_token.expose())
        .json(&json!({"code": "abcdef"}))
        .send()
        .await
        .unwrap();
    assert_eq!(confirm.json::<serde_json::Value>().await.unwrap()["error"], "bad_code");
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_are_listed_and_a_remote_wipe_is_honoured_at_the_next_contact() {
    let s = setup();
    let (_server, http, base) = serve(&s).await;
    let laptop = sign_in(&http, &base, "amy", &s.amy_totp, 0).await;
    let phone = sign_in(&http, &base, "amy", &s.amy_totp, 1).await;

    let listed: Vec<serde_json::Value> = get_json(&http, format!("{base}/devices"), laptop.access_token.expose()).await;
    assert_eq!(listed.len(), 2);
    let current: Vec<_> = listed.iter().filter(|d| d["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], laptop.device_id.as_str());

    // The phone was lost: wipe it from the laptop.
    let wiped = http
        .post(format!("{base}/devices/{}/wipe", phone.device_id))
        .bearer_auth(laptop.access_token.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(wiped.status(), 204);
    let call = http
        .get(format!("{base}/policy"))
        .bearer_auth(phone.access_token.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), 401);
    assert_eq!(call.json::<serde_json::Value>().await.unwrap()["error"], "device_wipe");
    let renew = http
        .post(format!("{base}/auth/refresh"))
        .json(&json!({"refresh_token": phone.refresh_token.expose(), "device_id": phone.device_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(renew.json::<serde_json::Value>().await.unwrap()["error"], "device_wipe");
    // The laptop is unaffected.
    let ok = http
        .get(format!("{base}/policy"))
        .bearer_auth(laptop.access_token.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn another_tenants_admin_sees_and_touches_nothing() {
    let s = setup();
    let (_server, http, base) = serve(&s).await;
    let amy = sign_in(&http, &base, "amy", &s.amy_totp, 0).await;
    let ben = sign_in(&http, &base, "ben", &s.ben_totp, 0).await;

    let seen: Vec<serde_json::Value> = get_json(&http, format!("{base}/devices"), ben.access_token.expose()).await;
    assert!(seen.iter().all(|d| d["id"] != amy.device_id.as_str()), "admins see only their own tenant");
    for action in ["revoke", "wipe"] {
        let attempt = http
            .post(format!("{base}/devices/{}/{action}", amy.device_id))
            .bearer_auth(ben.access_token.expose())
            .send()
            .await
            .unwrap();
        assert_eq!(attempt.status(), 404, "another tenant's device is indistinguishable from a missing one");
    }
    let missing = http
        .post(format!("{base}/devices/dev-does-not-exist/revoke"))
        .bearer_auth(ben.access_token.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        http.get(format!("{base}/policy"))
            .bearer_auth(amy.access_token.expose())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
