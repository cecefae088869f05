//! The real presence check of this OS. Here (a container: no system D-Bus, no polkit) it
//! must answer "unavailable", which sends the person to the password — never "present".
//! On a desktop with polkit but without Carekeep's action installed the answer is the same.

use carekeep_presence::PresenceError;

#[test]
fn without_polkit_the_answer_is_unavailable_so_the_password_is_asked() {
    if std::path::Path::new("/usr/share/polkit-1/actions/org.carekeep.Carekeep.unlock.policy").exists() {
        // Installed: the real dialog would appear; that is for a person to try, not a test.
        return;
    }
    let verdict = carekeep_presence::for_this_os().verify("test");
    assert_eq!(verdict, Err(PresenceError::Unavailable));
}
