//! Sign-in: password, TOTP, throttling, token rotation and reuse, idle expiry, logout. The rules
//! run against the real store with time passed in; the wire runs over real TLS.

use std::net::IpAddr;
use std::sync::Arc;

use carekeep_protocol::Secret;
use carekeep_protocol::auth::{LoginRequest, LogoutRequest, MfaRequest, RefreshRequest, Role, TokenResponse};
use carekeep_server::DataDir;
use carekeep_server::auth::{Auth, AuthError, AuthPolicy};

mod common;

const T0: i64 = 1_800_000_000;
const PASSWORD: &str = "correct horse battery staple";
/// A username long enough that it cannot turn up by chance in ciphertext or log noise.
const AMY: &str = "amy.sentinel-4c19d7";

struct Fixture {
    _dir: tempfile::TempDir,
    data: DataDir,
    auth: Auth,
    totp_secret: Vec<u8>,
}

fn fixture() -> Fixture {
    fixture_with(AuthPolicy::default())
}

fn fixture_with(policy: AuthPolicy) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = DataDir::init(&dir.path().join("server"), "localhost").unwrap();
    let store = data.open_store().unwrap();
    carekeep_server::admin::add_tenant(&store, "clinic-1", "Clinic One", T0).unwrap();
    let user = carekeep_server::admin::add_user(&store, "clinic-1", AMY, Role::Patient, PASSWORD, T0).unwrap();
    assert!(user.otpauth_uri.starts_with("otpauth://totp/"));
    let totp_secret = totp_rs::Secret::try_from_base32(&user.totp_base32).unwrap().as_bytes().to_vec();
    let auth = Auth::new(Arc::new(store), policy, 2);
    Fixture { _dir: dir, data, auth, totp_secret }
}

/// The code an authenticator app shows at `time` (computed independently of the server).
fn code(secret: &[u8], time: i64) -> Secret {
    let totp = totp_rs::Builder::new().with_secret(secret).build().unwrap();
    Secret::new(totp.generate(u64::try_from(time).unwrap()).to_string())
}

fn login(user: &str, password: &str) -> LoginRequest {
    LoginRequest { username: user.into(), password: Secret::new(password), device_cookie: None }
}

/// Where the tests' sign-ins come from, unless they say otherwise.
const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10));

async fn sign_in(f: &Fixture, now: i64) -> TokenResponse {
    let challenge = f.auth.login(login(AMY, PASSWORD), HOME, now).await.unwrap();
    f.auth
        .verify_mfa(
            MfaRequest {
                mfa_token: challenge.mfa_token,
                code: code(&f.totp_secret, now),
                device_name: "laptop".into(),
            },
            HOME,
            now,
        )
        .await
        .unwrap()
}

fn refresh(tokens: &TokenResponse) -> RefreshRequest {
    RefreshRequest {
        refresh_token: tokens.refresh_token.clone(),
        device_id: tokens.device_id.clone(),
        rotation_id: None,
    }
}

#[tokio::test]
async fn password_then_totp_gives_device_bound_tokens() {
    let f = fixture();
    let tokens = sign_in(&f, T0).await;
    assert_eq!(tokens.expires_in, 300);
    assert!(tokens.device_id.starts_with("dev-"));
    assert_ne!(tokens.access_token.expose(), tokens.refresh_token.expose());
    assert!(tokens.access_token.expose().len() >= 43);
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_look_the_same() {
    let f = fixture();
    assert_eq!(f.auth.login(login(AMY, "wrong password!"), HOME, T0).await.unwrap_err(), AuthError::BadCredentials);
    assert_eq!(f.auth.login(login("nobody", PASSWORD), HOME, T0).await.unwrap_err(), AuthError::BadCredentials);
}

#[tokio::test]
async fn a_wrong_code_is_refused_and_a_code_is_accepted_only_once() {
    let f = fixture();
    let challenge = f.auth.login(login(AMY, PASSWORD), HOME, T0).await.unwrap();
    let wrong =
        MfaRequest { mfa_token: challenge.mfa_token.clone(), code: Secret::new("000000"), device_name: "x".into() };
    let expected =
        if code(&f.totp_secret, T0).expose() == "000000" { AuthError::CodeAlreadyUsed } else { AuthError::BadCode };
    assert_eq!(f.auth.verify_mfa(wrong, HOME, T0).await.unwrap_err(), expected);
    let right = MfaRequest { mfa_token: challenge.mfa_token, code: code(&f.totp_secret, T0), device_name: "x".into() };
    f.auth.verify_mfa(right, HOME, T0).await.unwrap();

    // The same code again, on a fresh password step, within its 30 s window: refused.
    let again = f.auth.login(login(AMY, PASSWORD), HOME, T0 + 5).await.unwrap();
    let replay =
        MfaRequest { mfa_token: again.mfa_token.clone(), code: code(&f.totp_secret, T0), device_name: "x".into() };
    assert_eq!(f.auth.verify_mfa(replay, HOME, T0 + 5).await.unwrap_err(), AuthError::CodeAlreadyUsed);
    // The next code works.
    let next = MfaRequest { mfa_token: again.mfa_token, code: code(&f.totp_secret, T0 + 30), device_name: "x".into() };
    f.auth.verify_mfa(next, HOME, T0 + 31).await.unwrap();
}

/// Signs in fully from `client` (with `cookie`, if any) and returns the device cookie.
async fn sign_in_from(f: &Fixture, client: IpAddr, cookie: Option<&Secret>, now: i64) -> Result<Secret, AuthError> {
    let request = LoginRequest { device_cookie: cookie.cloned(), ..login(AMY, PASSWORD) };
    let challenge = f.auth.login(request, client, now).await?;
    let mfa = MfaRequest { mfa_token: challenge.mfa_token, code: code(&f.totp_secret, now), device_name: "x".into() };
    Ok(f.auth
        .verify_mfa(mfa, client, now)
        .await?
        .device_cookie
        .expect("a full sign-in gives a device cookie"))
}

/// NIST 800-63B §5.2.2 and OWASP: failures slow the account down for devices it does not
/// know, doubling each time, but nothing locks — the owner's device, which signed in
/// before, keeps its own budget and signs in while a stranger is held back.
#[tokio::test]
async fn failures_slow_strangers_down_and_never_lock_the_owner_out() {
    let f = fixture();
    let cookie = sign_in_from(&f, HOME, None, T0).await.unwrap();
    let stranger: IpAddr = "198.51.100.7".parse().unwrap();
    for i in 0..5 {
        let wrong = f
            .auth
            .login(login(AMY, "wrong password!"), stranger, T0 + 40 + i)
            .await
            .unwrap_err();
        assert_eq!(wrong, AuthError::BadCredentials);
    }
    // The next try waits 30 s, the right password included (no KDF is run for it).
    let held = f.auth.login(login(AMY, PASSWORD), stranger, T0 + 50).await.unwrap_err();
    assert_eq!(held, AuthError::Throttled { retry_after_secs: 30 - 6 });
    // The owner, on the device that signed in before, is not held back at all.
    let cookie = sign_in_from(&f, HOME, Some(&cookie), T0 + 60).await.unwrap();
    // A wrong code counts like a wrong password; after the wait, one more failure doubles it.
    let challenge = f.auth.login(login(AMY, PASSWORD), stranger, T0 + 80).await.unwrap();
    let wrong = MfaRequest { mfa_token: challenge.mfa_token, code: Secret::new("not-a-code"), device_name: "x".into() };
    assert_eq!(f.auth.verify_mfa(wrong, stranger, T0 + 80).await.unwrap_err(), AuthError::BadCode);
    assert_eq!(
        f.auth.login(login(AMY, PASSWORD), stranger, T0 + 81).await.unwrap_err(),
        AuthError::Throttled { retry_after_secs: 59 }
    );
    // A cookie is the device's for this name only, and an altered one is no cookie.
    let mut altered = cookie.expose().to_owned().into_bytes();
    altered[5] = if altered[5] == b'A' { b'B' } else { b'A' };
    let forged = Secret::new(String::from_utf8(altered).unwrap());
    let request = LoginRequest { device_cookie: Some(forged), ..login(AMY, PASSWORD) };
    assert!(matches!(f.auth.login(request, HOME, T0 + 82).await, Err(AuthError::Throttled { .. })));
    sign_in_from(&f, HOME, Some(&cookie), T0 + 90).await.unwrap();
}

/// A name that exists and one that does not get the same answers in the same order, and
/// the same wait; and they take about as long (both run the password hash: the old lock
/// answered a real name in 4 ms and an unknown one in 112).
#[tokio::test(flavor = "multi_thread")]
async fn unknown_names_are_answered_and_held_exactly_like_known_ones() {
    let f = fixture();
    let mut answers: Vec<Vec<AuthError>> = Vec::new();
    let mut took = Vec::new();
    for (name, client) in [(AMY, "198.51.100.1"), ("nobody.at.all", "198.51.100.2")] {
        let client: IpAddr = client.parse().unwrap();
        let mut seen = Vec::new();
        for i in 0..7 {
            let started = std::time::Instant::now();
            seen.push(f.auth.login(login(name, "wrong password!"), client, T0 + i).await.unwrap_err());
            if i < 5 {
                took.push((name, started.elapsed()));
            }
        }
        answers.push(seen);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0][5], AuthError::Throttled { retry_after_secs: 30 - 1 });
    let median = |who: &str| {
        let mut t: Vec<_> = took.iter().filter(|(n, _)| *n == who).map(|(_, d)| *d).collect();
        t.sort();
        t[t.len() / 2]
    };
    let (known, unknown) = (median(AMY), median("nobody.at.all"));
    assert!(known * 3 > unknown && unknown * 3 > known, "known {known:?}, unknown {unknown:?}");
}

/// Per network, not per address: four neighbours in a /24, or anywhere in a /64, share one
/// window; and the whole server takes only so many failures a minute from unknown devices,
/// while a known device still gets in.
#[tokio::test]
async fn networks_and_the_server_share_one_window_each() {
    // The server's budget made small (300 by default), so the test need not hash 300 guesses.
    let mut policy = AuthPolicy::default();
    policy.throttle.server_failures_per_minute = 40;
    let f = fixture_with(policy);
    let cookie = sign_in_from(&f, HOME, None, T0).await.unwrap();
    let t = T0 + 60;
    for i in 0..30_u8 {
        let client: IpAddr = format!("127.0.0.{}", 50 + i % 4).parse().unwrap();
        let guess = login(&format!("nobody{i}"), "guess");
        assert_eq!(f.auth.login(guess, client, t).await.unwrap_err(), AuthError::BadCredentials);
    }
    let over = f
        .auth
        .login(login("nobody", "guess"), "127.0.0.53".parse().unwrap(), t)
        .await
        .unwrap_err();
    assert!(matches!(over, AuthError::RateLimited { .. }), "{over:?}");
    for i in 0..30_u16 {
        let client: IpAddr = format!("2001:db8:5:7::{:x}", i * 977).parse().unwrap();
        let _ = f.auth.login(login(&format!("someone{i}"), "guess"), client, t).await;
    }
    let v6 = f
        .auth
        .login(login("someone", "guess"), "2001:db8:5:7:ffff::1".parse().unwrap(), t)
        .await;
    assert!(matches!(v6, Err(AuthError::RateLimited { .. })), "{v6:?}");

    // 40 failures from 40 networks, on 40 names: the server's share of the minute is spent.
    // Each network then gets a few attempts, not none: whoever tries from a network that
    // was quiet still signs in (a closed budget would let anyone shut every new device out).
    let t = T0 + 120;
    for i in 0..40_u32 {
        let client = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0001 + (i << 8)));
        let _ = f.auth.login(login(&format!("user{i}"), "guess"), client, t).await;
    }
    // A clinic behind one address gets three whole sign-ins: the code step of a real
    // challenge was paid for at the password step and is not counted again.
    let quiet: IpAddr = "203.0.113.9".parse().unwrap();
    for step in [-30, 0, 30] {
        // Three people, three codes (the previous, current and next step are all accepted).
        let challenge = f
            .auth
            .login(login(AMY, PASSWORD), quiet, t + 31)
            .await
            .expect("a quiet network");
        let code = code(&f.totp_secret, t + 31 + step);
        let mfa = MfaRequest { mfa_token: challenge.mfa_token, code, device_name: "x".into() };
        f.auth
            .verify_mfa(mfa, quiet, t + 31)
            .await
            .expect("a quiet network is not shut out");
    }
    let tight = f.auth.login(login(AMY, PASSWORD), quiet, t + 32).await;
    assert!(matches!(tight, Err(AuthError::RateLimited { .. })), "{tight:?}");
    // A known device passes (its password step is enough to show it: every code of the
    // minute has been used by the three above).
    let known = LoginRequest { device_cookie: Some(cookie), ..login(AMY, PASSWORD) };
    f.auth.login(known, quiet, t + 45).await.expect("a known device");
    // A made-up challenge is counted: guessing tokens spends the network's window.
    let guesser: IpAddr = "203.0.114.9".parse().unwrap();
    for i in 0..4 {
        let made_up = MfaRequest {
            mfa_token: Secret::new(format!("made-up-{i}")),
            code: Secret::new("123456"),
            device_name: "x".into(),
        };
        let refused = f.auth.verify_mfa(made_up, guesser, t + 3).await.unwrap_err();
        let expected = if i < 3 { "ChallengeExpired" } else { "RateLimited" };
        assert!(format!("{refused:?}").starts_with(expected), "guess {i}: {refused:?}");
    }
}

/// "Each code accepted once" holds for two requests at the same instant (two devices, two
/// password steps, one code): exactly one gets tokens, the other is told the code was used.
/// (One device the account knows and one it does not: two budgets, so the two checks run
/// side by side — one budget takes one attempt at a time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_code_sent_twice_at_the_same_instant_signs_in_once() {
    let f = Arc::new(fixture());
    let cookie = sign_in_from(&f, HOME, None, T0 - 60).await.unwrap();
    for round in 0..4 {
        let now = T0 + 30 * round;
        let first = f.auth.login(login(AMY, PASSWORD), HOME, now).await.unwrap();
        let known = LoginRequest { device_cookie: Some(cookie.clone()), ..login(AMY, PASSWORD) };
        let second = f.auth.login(known, HOME, now).await.unwrap();
        let send = |challenge: carekeep_protocol::auth::LoginResponse| {
            let f = f.clone();
            tokio::spawn(async move {
                let mfa = MfaRequest {
                    mfa_token: challenge.mfa_token,
                    code: code(&f.totp_secret, now),
                    device_name: "x".into(),
                };
                f.auth.verify_mfa(mfa, HOME, now).await
            })
        };
        let (a, b) = tokio::join!(send(first), send(second));
        let results = [a.unwrap(), b.unwrap()];
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "round {round}: {results:?}");
        assert!(results.iter().any(|r| matches!(r, Err(AuthError::CodeAlreadyUsed))));
    }
}

/// Guesses sent in one burst are checked one by one against their budget: the third review
/// had 10–30 wrong codes on one challenge checked at once, where the budget lets five
/// through before the first wait, because all passed the "must it wait?" check before any
/// failure was counted. The same for passwords.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_guesses_is_checked_one_by_one() {
    let f = Arc::new(fixture());
    let stranger: IpAddr = "198.51.100.77".parse().unwrap();
    let challenge = f.auth.login(login(AMY, PASSWORD), stranger, T0).await.unwrap();
    let token = challenge.mfa_token.expose().to_owned();
    let guesses = (0..20).map(|i| {
        let (f, token) = (f.clone(), token.clone());
        tokio::spawn(async move {
            let guess = MfaRequest {
                mfa_token: Secret::new(token),
                code: Secret::new(format!("{:06}", 100_000 + i)),
                device_name: "x".into(),
            };
            f.auth.verify_mfa(guess, stranger, T0 + 1).await
        })
    });
    let answers: Vec<_> = futures_join(guesses).await;
    let checked = answers.iter().filter(|a| matches!(a, Err(AuthError::BadCode))).count();
    assert!((1..=5).contains(&checked), "{checked} wrong codes checked: {answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, Err(AuthError::BadCode | AuthError::Throttled { .. })))
    );

    let passwords = (0..12).map(|i| {
        let f = f.clone();
        let from: IpAddr = format!("203.0.{i}.1").parse().unwrap();
        tokio::spawn(async move { f.auth.login(login("someone.else", "wrong password!"), from, T0 + 2).await })
    });
    let answers: Vec<_> = futures_join(passwords).await;
    let checked = answers.iter().filter(|a| matches!(a, Err(AuthError::BadCredentials))).count();
    assert!((1..=5).contains(&checked), "{checked} passwords checked: {answers:?}");
}

/// Awaits every spawned task, in order.
async fn futures_join<T: std::fmt::Debug>(tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let tasks: Vec<_> = tasks.collect();
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

/// A code used already is no guess: after the server's clock went back, every fresh code
/// looks used, and that must not slow the account down.
#[tokio::test]
async fn a_code_used_already_does_not_count_as_a_failure() {
    let f = fixture();
    sign_in_from(&f, HOME, None, T0 + 300).await.unwrap();
    // The clock goes back ten minutes: every code it makes is older than the one taken.
    for i in 0..8 {
        let now = T0 + i * 30;
        let challenge = f.auth.login(login(AMY, PASSWORD), HOME, now).await.unwrap();
        let mfa =
            MfaRequest { mfa_token: challenge.mfa_token, code: code(&f.totp_secret, now), device_name: "x".into() };
        assert_eq!(f.auth.verify_mfa(mfa, HOME, now).await.unwrap_err(), AuthError::CodeAlreadyUsed);
    }
    assert!(f.auth.login(login(AMY, PASSWORD), HOME, T0 + 240).await.is_ok(), "not held back");
}

#[tokio::test]
async fn the_password_step_expires() {
    let f = fixture();
    let challenge = f.auth.login(login(AMY, PASSWORD), HOME, T0).await.unwrap();
    let late = T0 + 301;
    let mfa = MfaRequest { mfa_token: challenge.mfa_token, code: code(&f.totp_secret, late), device_name: "x".into() };
    assert_eq!(f.auth.verify_mfa(mfa, HOME, late).await.unwrap_err(), AuthError::ChallengeExpired);
}

#[tokio::test]
async fn refresh_rotates_and_reusing_an_old_token_ends_the_device_session() {
    let f = fixture();
    let first = sign_in(&f, T0).await;
    let second = f.auth.refresh(refresh(&first), T0 + 60).await.unwrap();
    assert_eq!(second.device_id, first.device_id);
    assert_ne!(second.refresh_token.expose(), first.refresh_token.expose());
    // The old token comes back (stolen copy): refused, and the device's session ends …
    assert_eq!(f.auth.refresh(refresh(&first), T0 + 61).await.unwrap_err(), AuthError::SessionEnded);
    // … so the legitimate, newer token no longer works either.
    assert_eq!(f.auth.refresh(refresh(&second), T0 + 62).await.unwrap_err(), AuthError::SessionEnded);
}

#[tokio::test]
async fn a_lost_rotation_is_retried_with_its_id_and_a_copy_under_another_id_ends_the_session() {
    let f = fixture();
    let first = sign_in(&f, T0).await;
    let rotate = |tokens: &TokenResponse, id: &str| RefreshRequest { rotation_id: Some(id.into()), ..refresh(tokens) };
    let second = f.auth.refresh(rotate(&first, "r1"), T0 + 60).await.unwrap();
    // The answer was lost; the device retries the same rotation and gets the same token.
    let again = f.auth.refresh(rotate(&first, "r1"), T0 + 61).await.unwrap();
    assert_eq!(again.refresh_token.expose(), second.refresh_token.expose());
    assert_ne!(again.access_token.expose(), second.access_token.expose());
    // A copy of the spent token under another id is a copy: the session ends.
    assert_eq!(f.auth.refresh(rotate(&first, "thief"), T0 + 62).await.unwrap_err(), AuthError::SessionEnded);
    assert_eq!(f.auth.refresh(rotate(&second, "r2"), T0 + 63).await.unwrap_err(), AuthError::SessionEnded);
}

#[tokio::test]
async fn a_refresh_token_only_works_for_its_own_device() {
    let f = fixture();
    let tokens = sign_in(&f, T0).await;
    let stolen = RefreshRequest {
        refresh_token: tokens.refresh_token.clone(),
        device_id: "dev-other".into(),
        rotation_id: None,
    };
    assert_eq!(f.auth.refresh(stolen, T0 + 1).await.unwrap_err(), AuthError::SessionEnded);
}

#[tokio::test]
async fn an_idle_device_must_sign_in_again() {
    let f = fixture();
    let tokens = sign_in(&f, T0).await;
    assert_eq!(f.auth.refresh(refresh(&tokens), T0 + 15 * 60 + 1).await.unwrap_err(), AuthError::SessionEnded);
    // Ended by the idle limit, not revoked by a person: again "ended", never "revoked", so
    // the device keeps its cache and only asks to sign in.
    assert_eq!(f.auth.refresh(refresh(&tokens), T0 + 15 * 60 + 2).await.unwrap_err(), AuthError::SessionEnded);
}

/// A tenant can set a role's idle limit either way: longer here (a clinician's 30 min ward
/// round), shorter there; other tenants and roles keep the 15 min default.
#[tokio::test]
async fn a_tenant_sets_the_idle_limit_per_role() {
    let f = fixture();
    let store = f.data.open_store().unwrap();
    carekeep_server::admin::set_idle_limit(&store, "clinic-1", Role::Patient, 30).unwrap();
    let tokens = sign_in(&f, T0).await;
    let later = T0 + 20 * 60;
    let renewed = f.auth.refresh(refresh(&tokens), later).await.unwrap();
    f.auth.refresh(refresh(&renewed), later + 29 * 60).await.unwrap();

    carekeep_server::admin::set_idle_limit(&store, "clinic-1", Role::Patient, 2).unwrap();
    let short = sign_in(&f, T0 + 3600).await;
    f.auth.authenticate(short.access_token.expose(), T0 + 3600 + 119).await.unwrap();
    assert_eq!(
        f.auth
            .authenticate(short.access_token.expose(), T0 + 3600 + 240)
            .await
            .unwrap_err(),
        AuthError::SessionEnded
    );
    // Another role's limit in this tenant is not this one.
    carekeep_server::admin::set_idle_limit(&store, "clinic-1", Role::Clinician, 600).unwrap();
    let third = sign_in(&f, T0 + 7200).await;
    assert_eq!(f.auth.refresh(refresh(&third), T0 + 7200 + 121).await.unwrap_err(), AuthError::SessionEnded);

    // Out of range, or for a tenant that does not exist: refused, nothing changed.
    for (tenant, minutes) in [("clinic-1", 0), ("clinic-1", 721), ("no-such-clinic", 10)] {
        assert!(carekeep_server::admin::set_idle_limit(&store, tenant, Role::Patient, minutes).is_err());
    }
}

#[tokio::test]
async fn logout_ends_the_session() {
    let f = fixture();
    let tokens = sign_in(&f, T0).await;
    f.auth
        .logout(LogoutRequest { refresh_token: tokens.refresh_token.clone() })
        .await
        .unwrap();
    assert_eq!(f.auth.refresh(refresh(&tokens), T0 + 1).await.unwrap_err(), AuthError::SessionEnded);
    // Unknown tokens are no error (logout is idempotent).
    f.auth
        .logout(LogoutRequest { refresh_token: Secret::new("nonsense") })
        .await
        .unwrap();
}

#[tokio::test]
async fn the_store_is_encrypted_and_holds_no_password_or_token_in_clear() {
    let f = fixture();
    let tokens = sign_in(&f, T0).await;
    drop(f.auth);
    let root = f.data.cert_path().parent().unwrap().parent().unwrap().to_path_buf();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            for needle in
                [PASSWORD.as_bytes(), tokens.refresh_token.expose().as_bytes(), AMY.as_bytes(), b"SQLite format 3"]
            {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{} holds a secret in clear",
                    path.display()
                );
            }
        }
    }
}

/// Over the wire: status codes, JSON bodies, and the per-IP limit.
#[tokio::test(flavor = "multi_thread")]
async fn over_https_errors_are_json_and_sign_in_requests_are_rate_limited() {
    let f = fixture();
    drop(f.auth);
    let server = common::start(&f.data).await;
    let port = server.port();
    let http = common::client_for(&f.data);
    let url = |p: &str| format!("https://localhost:{port}{p}");

    let wrong = http
        .post(url("/auth/login"))
        .json(&login(AMY, "wrong password!"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let body: serde_json::Value = wrong.json().await.unwrap();
    assert_eq!(body["error"], "bad_credentials");
    // A body that is not the JSON the route takes is refused the same way, naming where.
    for (body, status) in [("{\"username\": 7}", 422), ("not json at all", 400)] {
        let refused = http
            .post(url("/auth/login"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), status);
        let said: serde_json::Value = refused.json().await.expect("a JSON refusal");
        assert_eq!(said["error"], "invalid_request", "{said}");
        assert!(said["message"].as_str().unwrap().len() > 10);
    }
    // The sign-in routes answer anyone, so they take small bodies only.
    let padded = serde_json::json!({"username": "x".repeat(20 * 1024), "password": "y"});
    assert_eq!(http.post(url("/auth/login")).json(&padded).send().await.unwrap().status(), 413);

    let challenge: serde_json::Value = http
        .post(url("/auth/login"))
        .json(&login(AMY, PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let mfa = serde_json::json!({"mfa_token": challenge["mfa_token"], "code": code(&f.totp_secret, now).expose(), "device_name": "test"});
    let tokens = http.post(url("/auth/mfa")).json(&mfa).send().await.unwrap();
    assert_eq!(tokens.status(), 200);
    assert_eq!(tokens.headers()["cache-control"], "no-store");
    let tokens: TokenResponse = tokens.json().await.unwrap();
    assert_eq!(tokens.expires_in, 300);

    // Guessed codes against a garbage challenge (no KDF cost) until the per-IP limit answers 429.
    let guess = serde_json::json!({"mfa_token": "x", "code": "123456", "device_name": "test"});
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(http.post(url("/auth/mfa")).json(&guess).send().await.unwrap().status().as_u16());
    }
    assert!(statuses.contains(&401));
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // Refresh carries an unguessable token and is what every device does every few minutes:
    // it is not limited per address, so a hospital behind one NAT keeps working.
    let garbage = serde_json::json!({"refresh_token": "x", "device_id": "y"});
    let refresh = http.post(url("/auth/refresh")).json(&garbage).send().await.unwrap();
    assert_eq!(refresh.status(), 401);
}

#[tokio::test]
async fn access_tokens_expire_after_five_minutes_and_idle_devices_are_signed_out() {
    let f = fixture();
    let tokens = sign_in(&f, T0).await;
    let who = f.auth.authenticate(tokens.access_token.expose(), T0 + 10).await.unwrap();
    assert_eq!(
        (who.tenant.as_str(), who.role, who.device_id.as_str()),
        ("clinic-1", Role::Patient, tokens.device_id.as_str())
    );
    assert_eq!(
        f.auth.authenticate(tokens.access_token.expose(), T0 + 300).await.unwrap_err(),
        AuthError::AccessExpired
    );
    // Each use counts as activity: refresh keeps working while the device is used.
    let renewed = f.auth.refresh(refresh(&tokens), T0 + 310).await.unwrap();
    f.auth.authenticate(renewed.access_token.expose(), T0 + 600).await.unwrap();
    assert_eq!(f.auth.authenticate("garbage", T0).await.unwrap_err(), AuthError::SessionEnded);
}

/// The base32 secret inside an `otpauth://` URI.
fn secret_of(uri: &str) -> Vec<u8> {
    let b32 = uri.split(['?', '&']).find_map(|p| p.strip_prefix("secret=")).unwrap();
    totp_rs::Secret::try_from_base32(b32).unwrap().as_bytes().to_vec()
}

#[tokio::test]
async fn replacing_the_authenticator_needs_a_fresh_sign_in_and_a_code_from_the_new_one() {
    use base64::Engine as _;
    let f = fixture();
    let tokens = sign_in(&f, T0).await;
    let me = f.auth.authenticate(tokens.access_token.expose(), T0 + 1).await.unwrap();
    assert_eq!(f.auth.begin_enrollment(&me, T0 + 301).await.unwrap_err(), AuthError::StepUpRequired);
    assert_eq!(f.auth.confirm_enrollment(&me, "123456", T0 + 10).await.unwrap_err(), AuthError::NoEnrollment);

    let enrollment = f.auth.begin_enrollment(&me, T0 + 10).await.unwrap();
    assert!(
        enrollment
            .otpauth_uri
            .expose()
            .starts_with(&format!("otpauth://totp/Carekeep:{AMY}?")),
        "{}",
        enrollment.otpauth_uri.expose()
    );
    let png = base64::engine::general_purpose::STANDARD
        .decode(enrollment.qr_png_base64.expose())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 200);
    let new_secret = secret_of(enrollment.otpauth_uri.expose());
    assert_ne!(new_secret, f.totp_secret);

    assert_eq!(f.auth.confirm_enrollment(&me, "abcdef", T0 + 20).await.unwrap_err(), AuthError::BadCode);
    // Until confirmed, the old authenticator still signs in…
    let before = f.auth.login(login(AMY, PASSWORD), HOME, T0 + 30).await.unwrap();
    let old_code =
        MfaRequest { mfa_token: before.mfa_token, code: code(&f.totp_secret, T0 + 30), device_name: "x".into() };
    f.auth.verify_mfa(old_code, HOME, T0 + 30).await.unwrap();
    // … after confirming, only the new one does.
    f.auth
        .confirm_enrollment(&me, code(&new_secret, T0 + 60).expose(), T0 + 60)
        .await
        .unwrap();
    let challenge = f.auth.login(login(AMY, PASSWORD), HOME, T0 + 90).await.unwrap();
    let old = MfaRequest {
        mfa_token: challenge.mfa_token.clone(),
        code: code(&f.totp_secret, T0 + 90),
        device_name: "x".into(),
    };
    assert_eq!(f.auth.verify_mfa(old, HOME, T0 + 90).await.unwrap_err(), AuthError::BadCode);
    let new = MfaRequest { mfa_token: challenge.mfa_token, code: code(&new_secret, T0 + 90), device_name: "x".into() };
    f.auth.verify_mfa(new, HOME, T0 + 90).await.unwrap();
}

#[tokio::test]
async fn a_disabled_user_cannot_sign_in_and_their_devices_are_signed_out() {
    let f = fixture();
    let tokens = sign_in(&f, T0).await;
    carekeep_server::admin::disable_user(&f.data.open_store().unwrap(), AMY).unwrap();
    // Revoked by a person, not merely idle: the device is told so, and erases its cache.
    assert_eq!(f.auth.refresh(refresh(&tokens), T0 + 1).await.unwrap_err(), AuthError::DeviceRevoked);
    assert_eq!(f.auth.authenticate(tokens.access_token.expose(), T0 + 1).await.unwrap_err(), AuthError::DeviceRevoked);
    assert_eq!(f.auth.login(login(AMY, PASSWORD), HOME, T0 + 2).await.unwrap_err(), AuthError::BadCredentials);
}
