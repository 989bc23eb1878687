//! The plane's own threads: one current-thread runtime per core, as nginx has one worker
//! process per core. Each listener has a socket per worker (`SO_REUSEPORT`: the kernel spreads
//! connections across them), and a connection lives on the worker that accepted it, with that
//! worker's keep-alive connections to targets. Nothing on the request path crosses threads:
//! no work stealing, no wake-ups of another thread, and what requests read often (routing,
//! group membership, round-robin turns, idle connections) is kept per worker, each copy on a
//! cache line of its own.
//!
//! Health checks and the batching of reports run where [`Plane::apply`](crate::Plane::apply)
//! is called (the agent's runtime): they are not on the request path.

use std::cell::Cell;
use std::io;
use std::sync::OnceLock;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    /// The index of the worker this thread is, if it is one.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// How many workers a plane runs: one per core this process may use.
pub(crate) fn count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The slot of the calling thread in a [`PerWorker`]: its worker index, or the one slot past
/// the workers shared by every other thread.
fn slot() -> usize {
    WORKER.get().unwrap_or(count())
}

/// The running worker threads; dropping this stops them, closing every listener and
/// connection they serve.
pub(crate) struct Workers {
    handles: Vec<Handle>,
    stop: CancellationToken,
}

impl Workers {
    pub fn start() -> io::Result<Workers> {
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(count());
        for index in 0..count() {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            let stopped = stop.clone();
            let spawned = std::thread::Builder::new().name(format!("lb-worker-{index}")).spawn(move || {
                WORKER.set(Some(index));
                runtime.block_on(stopped.cancelled());
                // The runtime drops here, and with it every task of this worker.
            });
            if let Err(e) = spawned {
                stop.cancel();
                return Err(e);
            }
        }
        Ok(Workers { handles, stop })
    }

    /// One runtime handle per worker, by index.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A value per worker (and one for every other thread), each on its own cache line, so
/// workers touching their own never contend for one.
pub(crate) struct PerWorker<T>(Box<[Padded<T>]>);

#[repr(align(128))]
struct Padded<T>(T);

impl<T> PerWorker<T> {
    pub fn new(mut make: impl FnMut() -> T) -> PerWorker<T> {
        PerWorker((0..=count()).map(|_| Padded(make())).collect())
    }

    /// The calling thread's own.
    pub fn local(&self) -> &T {
        &self.0[slot()].0
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|p| &p.0)
    }
}
