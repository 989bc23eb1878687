//! What a host offers tasks: its cores and memory, less a reserve for the host itself, times
//! the operator's overcommit. Used by `flotilla up` and `flotilla agent` alike.

/// CPU units kept for the host: the agent, the shims, the kernel's own work (a quarter core).
const RESERVED_CPU: u32 = 256;
/// MiB kept for the host: 512, or a sixteenth of its memory on larger hosts (page cache and
/// the kernel grow with memory; 1 GiB on a 16 GiB host).
const RESERVED_MEMORY_MIN: u32 = 512;

/// How far reservations may exceed the hardware: CPU is overcommitted by default (each task's
/// CPU quota still caps it, and most tasks idle), memory is not (an overcommitted host
/// OOM-kills tasks).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Overcommit {
    pub cpu: f64,
    pub memory: f64,
}

impl Default for Overcommit {
    fn default() -> Overcommit {
        Overcommit { cpu: 4.0, memory: 1.0 }
    }
}

/// Allocatable CPU units and MiB of a host with `cores` and `memory_mib`.
pub fn allocatable(cores: u32, memory_mib: u32, overcommit: Overcommit) -> (u32, u32) {
    let cpu = (cores * 1024).saturating_sub(RESERVED_CPU);
    let memory = memory_mib.saturating_sub(RESERVED_MEMORY_MIN.max(memory_mib / 16));
    let scale = |v: u32, by: f64| (f64::from(v) * by.max(0.0)).min(f64::from(u32::MAX)) as u32;
    (scale(cpu, overcommit.cpu), scale(memory, overcommit.memory))
}

/// This machine's allocatable CPU units and MiB (its CPUs as the scheduler lets this process
/// use them, and MemTotal).
pub fn this_machine(overcommit: Overcommit) -> (u32, u32) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let memory_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kib| (kib / 1024) as u32);
    allocatable(cores, memory_mib, overcommit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_then_overcommit() {
        // 2 cores, 4 GiB: 1792 units x 4, 4096 - 512 MiB x 1.
        assert_eq!(allocatable(2, 4096, Overcommit::default()), (7168, 3584));
        // 16 GiB keeps a sixteenth (1 GiB).
        assert_eq!(allocatable(8, 16384, Overcommit { cpu: 1.0, memory: 1.0 }), (7936, 15360));
        // A tiny host offers nothing rather than wrapping around.
        assert_eq!(allocatable(0, 256, Overcommit::default()), (0, 0));
    }
}
