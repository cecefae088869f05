//! The server's authenticator codes are RFC 6238's: checked against the RFC's own test
//! vectors (Appendix B, SHA-1) and against `oathtool`, an independent implementation, at
//! random moments with random secrets — so a phone's authenticator app and the server agree.

use std::process::Command;

use carekeep_server::auth::totp::{matching_step, totp};

/// RFC 6238 Appendix B: the SHA-1 secret and (time, 8-digit code) pairs. The server uses 6
/// digits, the last six of each.
const RFC_SECRET: &[u8] = b"12345678901234567890";
const RFC_VECTORS: [(u64, &str); 6] = [
    (59, "94287082"),
    (1_111_111_109, "07081804"),
    (1_111_111_111, "14050471"),
    (1_234_567_890, "89005924"),
    (2_000_000_000, "69279037"),
    (20_000_000_000, "65353130"),
];

#[test]
fn the_rfc_6238_vectors_are_accepted_at_their_time_and_not_far_from_it() {
    for (time, code) in RFC_VECTORS {
        let six = &code[2..];
        assert_eq!(totp(RFC_SECRET, "rfc").unwrap().generate(time).to_string(), six, "at {time}");
        assert_eq!(matching_step(RFC_SECRET, six, time), Some(time / 30), "at {time}");
        // One step of skew either way, and no more.
        assert!(matching_step(RFC_SECRET, six, time + 30).is_some(), "one step late, at {time}");
        assert!(matching_step(RFC_SECRET, six, time + 90).is_none(), "three steps late, at {time}");
        if time >= 90 {
            assert!(matching_step(RFC_SECRET, six, time - 90).is_none(), "three steps early, at {time}");
        }
    }
}

#[test]
fn oathtool_and_the_server_agree() {
    let Ok(version) = Command::new("oathtool").arg("--version").output() else {
        panic!("oathtool is not installed: `cargo xtask setup` installs it (apt install oathtool)");
    };
    assert!(version.status.success());
    for round in 0..20u64 {
        let secret = carekeep_server::auth::totp::new_secret().unwrap();
        let base32 = totp(&secret, "x").unwrap().secret().to_base32();
        let mut random = [0u8; 4];
        getrandom::fill(&mut random).unwrap();
        let time = 1_000_000_000 + u64::from(u32::from_le_bytes(random)) + round;
        let out = Command::new("oathtool")
            .args(["--totp=SHA1", "--digits=6", "--time-step-size=30s", "--base32", &base32])
            .arg(format!("--now=@{time}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "oathtool: {}", String::from_utf8_lossy(&out.stderr));
        let theirs = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        assert_eq!(totp(&secret, "x").unwrap().generate(time).to_string(), theirs, "round {round}");
        assert_eq!(matching_step(&secret, &theirs, time), Some(time / 30), "round {round}");
    }
}
