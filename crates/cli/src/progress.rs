//! The sync's progress on standard error: a bar redrawn in place on a terminal, one line per
//! step otherwise (logs, CI).

use std::io::{IsTerminal, Write};

use carekeep_core::account::sync::{Phase, Progress};

const WIDTH: usize = 30;

/// Draws [`Progress`] as it arrives.
pub struct Bar {
    terminal: bool,
    last: Option<Phase>,
}

impl Bar {
    /// A bar on standard error.
    pub fn new() -> Self {
        Self { terminal: std::io::stderr().is_terminal(), last: None }
    }

    /// Shows one update.
    pub fn show(&mut self, p: Progress) {
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let filled = (p.done.min(p.total) * WIDTH).checked_div(p.total).unwrap_or(WIDTH);
            let _ = write!(
                err,
                "\\r\\x1b[2K[{}{}] {}/{} {}",
                "#".repeat(filled),
                ".".repeat(WIDTH - filled),
                p.done,
                p.total,
                p.phase.label()
            );
        } else if self.last != Some(p.phase) || p.done == p.total {
            let _ = writeln!(err, "carekeep: {} ({}/{})", p.phase.label(), p.done, p.total);
        }
        self.last = Some(p.phase);
    }

    /// Ends the bar's line.
    pub fn finish(&mut self) {
        if self.terminal {
            let _ = writeln!(std::io::stderr());
        }
    }
}
