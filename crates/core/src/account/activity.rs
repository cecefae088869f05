//! The app's life around the session (DESIGN §3): input restarts the idle timer; the idle
//! limit, going to the background and the OS screen lock end in `Locked`, and whatever locks
//! the session drops the vault's key at the same moment, so a locked app holds no key.

use super::Account;
use crate::session::{State, Transition};

impl Account {
    /// The person did something (a key, a tap): the idle timer restarts.
    pub fn user_input(&mut self) {
        self.session.input();
    }

    /// The idle limit in force while unlocked (`None` when locked).
    pub fn idle_limit(&self) -> Option<std::time::Duration> {
        self.session.idle_limit()
    }

    /// Applies the idle limit and the background grace. `true`: this locked the account
    /// just now, and every view of records must go. Call it every second or so.
    pub fn tick(&mut self) -> bool {
        let transition = self.session.tick();
        self.locked_by(transition)
    }

    /// The app went to the background or was minimised: locks at once, or once the policy's
    /// grace (at most 30 s) has passed at a later [`Account::tick`]. `true`: locked now.
    pub fn backgrounded(&mut self) -> bool {
        let transition = self.session.backgrounded();
        self.locked_by(transition)
    }

    /// The app is in front again; inside the grace nothing happens. `true`: locked now.
    pub fn foregrounded(&mut self) -> bool {
        let transition = self.session.foregrounded();
        self.locked_by(transition)
    }

    /// The operating system locked the screen: locks at once. `true`: locked now.
    pub fn os_locked(&mut self) -> bool {
        let transition = self.session.os_locked();
        self.locked_by(transition)
    }

    /// Drops the vault's key if `transition` locked the session, and queues its audit record.
    fn locked_by(&mut self, transition: Option<Transition>) -> bool {
        let locked = transition.is_some_and(|t| t.to == State::Locked);
        if locked {
            self.vault.lock();
            // The audit record of the lock is queued now, not when the app ends.
            let _ = self.write_audit();
        }
        locked
    }
}
