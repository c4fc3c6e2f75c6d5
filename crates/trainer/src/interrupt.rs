//! Ctrl-C / SIGTERM: the first signal asks the loop to stop after the current optimizer step
//! and save; a second one of the same kind ends the process at once.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};

/// A stop request received from the operating system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Ctrl-C.
    Interrupt,
    /// `kill` / pre-emption.
    Terminate,
}

impl Signal {
    /// Conventional exit status: 128 + signal number (130 for SIGINT, 143 for SIGTERM).
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }

    /// `SIGINT` / `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }
}

/// Watches for SIGINT and SIGTERM once installed.
#[derive(Debug, Clone)]
pub struct Interrupts {
    received: Arc<AtomicUsize>,
}

impl Interrupts {
    /// Installs the handlers. A second signal while the first is being handled exits with
    /// 130 / 143 immediately, for users who really mean it.
    pub fn install() -> io::Result<Self> {
        let received = Arc::new(AtomicUsize::new(0));
        for sig in [SIGINT, SIGTERM] {
            let seen = Arc::new(AtomicBool::new(false));
            // Registered first, so it sees `seen` as it was before this signal.
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&seen))?;
            signal_hook::flag::register(sig, seen)?;
            signal_hook::flag::register_usize(sig, Arc::clone(&received), sig as usize)?;
        }
        Ok(Self { received })
    }

    /// A watcher that never fires (for library use without handlers).
    pub fn none() -> Self {
        Self { received: Arc::new(AtomicUsize::new(0)) }
    }

    /// The signal received so far, if any.
    pub fn received(&self) -> Option<Signal> {
        match self.received.load(Ordering::SeqCst) {
            0 => None,
            s if s == SIGTERM as usize => Some(Signal::Terminate),
            _ => Some(Signal::Interrupt),
        }
    }

    /// Marks a signal as received (what the handler does; used by tests and embedders).
    pub fn request(&self, signal: Signal) {
        let sig = match signal {
            Signal::Interrupt => SIGINT,
            Signal::Terminate => SIGTERM,
        };
        self.received.store(sig as usize, Ordering::SeqCst);
    }
}
