//! Sign-in through the core's client against the real server over TLS: password then a
//! TOTP code computed here, wrong and replayed codes, throttling, refresh rotation and reuse,
//! logout, and the signed policy verified with the server's key.

use carekeep_core::Error;
use carekeep_core::error::ServerError;
use carekeep_core::net::{Server, Tokens};
use carekeep_e2e::{PASSWORD, Running, World};
use carekeep_protocol::auth::Role;

async fn sign_in(world: &World, server: &Server, step: i64) -> Result<Tokens, Error> {
    let challenge = server.login(&world.username, PASSWORD, None).await?;
    server.verify_code(challenge, &world.code(step), "e2e laptop").await
}

#[tokio::test(flavor = "multi_thread")]
async fn password_and_code_give_tokens_and_the_verified_policy() {
    let world = World::new(Role::Clinician);
    let running = Running::start(&world.data).await;
    let server = running.client(world.pins());
    let tokens = sign_in(&world, &server, 0).await.unwrap();
    assert!(tokens.device_id.starts_with("dev-"), "{}", tokens.device_id);
    assert!(tokens.expires_in > 0 && tokens.expires_in <= 300);
    let verified = server.policy(&tokens.access_token).await.unwrap();
    let policy = &verified.policy;
    assert_eq!((policy.tenant.as_str(), policy.role), (carekeep_e2e::TENANT, Role::Clinician));
    assert_eq!(policy.idle_lock_secs, 15 * 60);
    assert!(policy.pins.contains(&world.data.pins().unwrap().backup));
    // The server's clock, from its answers: a time the device's clock cannot set back.
    let server_time = server.last_server_time().unwrap();
    assert!(server_time.abs_diff(i64::try_from(carekeep_e2e::now_unix()).unwrap()) < 60);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_replayed_and_repeated_failures_are_told_apart() {
    let world = World::new(Role::Patient);
    let running = Running::start(&world.data).await;
    let server = running.client(world.pins());

    assert!(matches!(
        server.login(&world.username, "not the password!", None).await,
        Err(Error::Server(ServerError::BadCredentials))
    ));
    let challenge = server.login(&world.username, PASSWORD, None).await.unwrap();
    let wrong = if world.code(0) == "000000" { "111111" } else { "000000" };
    assert!(matches!(server.verify_code(challenge, wrong, "x").await, Err(Error::Server(ServerError::BadCode))));

    // A code is accepted once: the same code again, on a fresh challenge, is refused.
    let code = world.code(0);
    let first = server.login(&world.username, PASSWORD, None).await.unwrap();
    server.verify_code(first, &code, "x").await.unwrap();
    let second = server.login(&world.username, PASSWORD, None).await.unwrap();
    let replayed = server.verify_code(second, &code, "x").await.unwrap_err();
    assert!(matches!(replayed, Error::Server(ServerError::CodeAlreadyUsed)), "{replayed:?}");

    // Five failures in a row from devices the account does not know (the replay is no
    // guess and does not count; the success before reset the count) make the next attempt
    // wait — even with the right password — and the wait is shown. Nothing is locked: the
    // device that signed in before, with its cookie, goes straight on.
    let challenge = server.login(&world.username, PASSWORD, None).await.unwrap();
    let tokens = server.verify_code(challenge, &world.code(1), "x").await.unwrap();
    let cookie = tokens.device_cookie.expect("a full sign-in hands out a device cookie");
    for _ in 0..5 {
        let _ = server.login(&world.username, "still not the password", None).await;
    }
    let held = server.login(&world.username, PASSWORD, None).await.unwrap_err();
    let Error::Server(ServerError::SignInThrottled { retry_after_secs }) = held else { panic!("{held:?}") };
    assert!((1..=30).contains(&retry_after_secs), "{retry_after_secs}");
    assert!(held.to_string().contains("wait") && held.to_string().contains("not held back"));
    server
        .login(&world.username, PASSWORD, Some(&cookie))
        .await
        .expect("the owner's device is not held back");
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_rotates_reuse_ends_the_session_and_logout_revokes() {
    let world = World::new(Role::Patient);
    let running = Running::start(&world.data).await;
    let server = running.client(world.pins());
    let first = sign_in(&world, &server, 0).await.unwrap();
    let second = server
        .refresh(&first.refresh_token, &first.device_id, "rotation-1")
        .await
        .unwrap();
    assert_ne!(second.refresh_token.expose(), first.refresh_token.expose());
    // The device lost that answer (killed mid-refresh) and retries the same rotation: it
    // gets the same new token, not a session ended.
    let retried = server
        .refresh(&first.refresh_token, &first.device_id, "rotation-1")
        .await
        .unwrap();
    assert_eq!(retried.refresh_token.expose(), second.refresh_token.expose());
    let third = server
        .refresh(&second.refresh_token, &second.device_id, "rotation-2")
        .await
        .unwrap();
    // The spent token again, once its successor was used: someone holds a copy, so the
    // whole device session ends…
    let replayed = server.refresh(&first.refresh_token, &first.device_id, "rotation-1").await;
    assert!(matches!(replayed, Err(Error::Server(ServerError::SessionEnded))), "{replayed:?}");
    // … the newest token included.
    let newest = server.refresh(&third.refresh_token, &third.device_id, "rotation-3").await;
    assert!(matches!(newest, Err(Error::Server(ServerError::SessionEnded))), "{newest:?}");
    let other = sign_in(&world, &server, 1).await.unwrap();
    server.logout(&other.refresh_token).await.unwrap();
    assert!(matches!(
        server.refresh(&other.refresh_token, &other.device_id, "r").await,
        Err(Error::Server(ServerError::SessionEnded))
    ));
    assert!(matches!(server.policy(&other.access_token).await, Err(Error::Server(ServerError::SessionEnded))));
}

/// The app's side of device cookies: a full sign-in keeps the server's cookie in the
/// profile (owner-only), the next sign-in on that device sends it, so a stranger's guesses
/// elsewhere do not hold this device back.
#[tokio::test(flavor = "multi_thread")]
async fn the_device_keeps_its_cookie_and_signs_in_while_strangers_are_held_back() {
    let world = World::new(Role::Patient);
    let running = Running::start(&world.data).await;
    let device = carekeep_e2e::Device::new();
    let clock = std::sync::Arc::new(carekeep_core::SystemClock);
    device
        .sign_in(&world, &running, clock.clone(), 0)
        .await
        .unwrap()
        .logout()
        .await
        .unwrap();
    let cookie = device.profile.dir().join("device-cookie");
    assert!(cookie.exists(), "the cookie outlives logout: that is its use");
    #[cfg(unix)]
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&cookie).unwrap().permissions()) & 0o777,
        0o600
    );

    let stranger = running.client(world.pins());
    for _ in 0..6 {
        let _ = stranger.login(&world.username, "a stranger's guess", None).await;
    }
    assert!(matches!(
        stranger.login(&world.username, PASSWORD, None).await,
        Err(Error::Server(ServerError::SignInThrottled { .. }))
    ));
    device
        .sign_in(&world, &running, clock, 1)
        .await
        .expect("the owner's device is not held back");
}
