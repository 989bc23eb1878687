//! Group runs: work that costs about the same for one item as for many (one kernel batch
//! deleting every doomed veth, one walk of the connection-tracking table) done once for every
//! caller waiting at the time, as the store's group commit shares one fsync.

use std::sync::{Condvar, Mutex, MutexGuard};

/// Items submitted by callers, run a batch at a time by whichever caller finds no batch
/// running; every caller returns the outcome of the first batch that started after it
/// submitted (so its item was in it).
pub(crate) struct Batch<T, R> {
    queue: Mutex<Queue<T, R>>,
    done: Condvar,
}

struct Queue<T, R> {
    waiting: Vec<T>,
    /// Tickets handed out so far; a caller's ticket is the count when it submitted.
    submitted: u64,
    /// The last ticket a finished batch covered, and that batch's outcome.
    finished: u64,
    outcome: Option<R>,
    running: bool,
}

impl<T, R: Clone> Batch<T, R> {
    pub fn new() -> Self {
        Batch {
            queue: Mutex::new(Queue { waiting: Vec::new(), submitted: 0, finished: 0, outcome: None, running: false }),
            done: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue<T, R>> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Submits `item` and returns the outcome of the batch that ran it: `run` is called (by
    /// this caller or another) with every item waiting when that batch started.
    pub fn submit(&self, item: T, run: impl FnOnce(Vec<T>) -> R) -> R {
        // A caller runs at most one batch: the one it runs covers its own ticket.
        let mut run = Some(run);
        let mut queue = self.lock();
        queue.waiting.push(item);
        queue.submitted += 1;
        let ticket = queue.submitted;
        loop {
            if queue.finished >= ticket {
                // Batches finish in ticket order and each covers every ticket before its
                // start, so the last outcome is the one of the batch holding this ticket.
                return queue.outcome.clone().expect("a finished batch left its outcome");
            }
            if queue.running {
                queue = self.done.wait(queue).unwrap_or_else(|poisoned| poisoned.into_inner());
                continue;
            }
            queue.running = true;
            let upto = queue.submitted;
            let items = std::mem::take(&mut queue.waiting);
            drop(queue);
            let outcome = run.take().expect("a caller runs one batch at most")(items);
            queue = self.lock();
            queue.running = false;
            queue.finished = upto;
            queue.outcome = Some(outcome);
            self.done.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn every_item_runs_once_and_callers_waiting_together_share_one_run() {
        let batch = Arc::new(Batch::<usize, usize>::new());
        let (runs, items) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
        let threads: Vec<_> = (0..32)
            .map(|i| {
                let (batch, runs, items) = (batch.clone(), runs.clone(), items.clone());
                let watched = batch.clone();
                std::thread::spawn(move || {
                    batch.submit(i, |got| {
                        // The first run lasts until every caller has submitted.
                        if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                            while watched.lock().submitted < 32 && std::time::Instant::now() < deadline {
                                std::thread::yield_now();
                            }
                        }
                        let n = got.len();
                        items.lock().unwrap().extend(got);
                        n
                    })
                })
            })
            .collect();
        let sizes: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let mut seen = items.lock().unwrap().clone();
        seen.sort();
        assert_eq!(seen, (0..32).collect::<Vec<_>>(), "each item exactly once");
        assert_eq!(runs.load(Ordering::SeqCst), 2, "the 31 callers that waited share the second run");
        // Each caller got the outcome of the run that carried its item: 1 or 31.
        assert_eq!(sizes.iter().filter(|&&n| n == 1).count(), 1, "{sizes:?}");
        assert_eq!(sizes.iter().filter(|&&n| n == 31).count(), 31, "{sizes:?}");
    }
}
