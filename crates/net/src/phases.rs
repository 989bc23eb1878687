//! Where an interface change spends its time, for benches (`benches/setup.rs`) and for callers
//! that log it: a thread that calls [`record`] collects the phases of the changes it makes
//! itself until [`take`]. Off (one thread-local read per phase) until asked for.

use std::cell::RefCell;
use std::time::{Duration, Instant};

thread_local! {
    static PHASES: RefCell<Option<Vec<(&'static str, Duration)>>> = const { RefCell::new(None) };
}

/// Starts collecting this thread's phases (dropping any collected so far).
pub fn record() {
    PHASES.with(|p| *p.borrow_mut() = Some(Vec::new()));
}

/// The phases collected since [`record`], in order (a phase may repeat); stops collecting.
pub fn take() -> Vec<(&'static str, Duration)> {
    PHASES.with(|p| p.borrow_mut().take()).unwrap_or_default()
}

/// Runs `f`, adding its time to `name` when this thread collects.
pub(crate) fn timed<T>(name: &'static str, f: impl FnOnce() -> T) -> T {
    let _phase = Phase::start(name);
    f()
}

/// A phase that ends when dropped (for the rest of a scope).
pub(crate) struct Phase {
    name: &'static str,
    start: Option<Instant>,
}

impl Phase {
    pub(crate) fn start(name: &'static str) -> Phase {
        let collecting = PHASES.with(|p| p.borrow().is_some());
        Phase { name, start: collecting.then(Instant::now) }
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        let Some(start) = self.start else { return };
        let took = start.elapsed();
        PHASES.with(|p| {
            if let Some(phases) = p.borrow_mut().as_mut() {
                phases.push((self.name, took));
            }
        });
    }
}
