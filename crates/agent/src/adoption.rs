//! Says once when every task live at the agent's start has a supervisor watching it: the
//! moment a restarted agent has adopted (or, for tasks it had not started yet, provisioned or
//! given up on) everything its first assignment snapshot named. Operators and
//! `bench/density.sh` read it from the log (`flotilla_agent::adoption` at info).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Instant;

pub(crate) struct Adoption {
    started: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// `None` until the first snapshot; then the live tasks not yet supervised.
    waiting: Option<HashSet<String>>,
    /// How many the first snapshot named.
    total: usize,
    /// How many of them were found wired already (nothing applied).
    wired: usize,
    said: bool,
}

impl Adoption {
    pub(crate) fn new() -> Adoption {
        Adoption { started: Instant::now(), state: Mutex::new(State::default()) }
    }

    /// The first snapshot's live tasks; later snapshots change nothing.
    pub(crate) fn expect<'a>(&self, live: impl Iterator<Item = &'a str>) {
        let mut state = self.state.lock().expect("adoption table poisoned");
        if state.waiting.is_none() {
            let set: HashSet<String> = live.map(str::to_owned).collect();
            state.total = set.len();
            state.waiting = Some(set);
            self.say_when_done(&mut state);
        }
    }

    /// Whether `task_arn` is one of the tasks live at start that no supervisor watches yet.
    pub(crate) fn pending(&self, task_arn: &str) -> bool {
        let state = self.state.lock().expect("adoption table poisoned");
        state.waiting.as_ref().is_some_and(|set| set.contains(task_arn))
    }

    /// One of the tasks live at start had its interface wired already.
    pub(crate) fn found_wired(&self) {
        self.state.lock().expect("adoption table poisoned").wired += 1;
    }

    /// `task_arn`'s supervisor watches its task now (or ended without needing to).
    pub(crate) fn supervised(&self, task_arn: &str) {
        let mut state = self.state.lock().expect("adoption table poisoned");
        if let Some(set) = state.waiting.as_mut()
            && set.remove(task_arn)
        {
            self.say_when_done(&mut state);
        }
    }

    fn say_when_done(&self, state: &mut State) {
        if !state.said && state.waiting.as_ref().is_some_and(HashSet::is_empty) {
            state.said = true;
            tracing::info!(
                tasks = state.total,
                wired = state.wired,
                ms = self.started.elapsed().as_millis() as u64,
                "every task live at start is supervised"
            );
        }
    }
}
