//! Fargate task sizes: the legal task-level CPU/memory pairs and the string forms users write.

/// A validated Fargate task size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskSize {
    /// CPU units; 1024 = one vCPU.
    pub cpu: u32,
    /// Memory in MiB.
    pub memory: u32,
}

/// `(cpu, min MiB, max MiB, step MiB)` rows of the Fargate size table.
const TABLE: &[(u32, u32, u32, u32)] = &[
    (256, 512, 2048, 0), // special-cased: 512, 1024, 2048
    (512, 1024, 4096, 1024),
    (1024, 2048, 8192, 1024),
    (2048, 4096, 16384, 1024),
    (4096, 8192, 30720, 1024),
    (8192, 16384, 61440, 4096),
    (16384, 32768, 122880, 8192),
];

impl TaskSize {
    /// The memory sizes Fargate allows for `cpu`, or `None` if `cpu` is not a Fargate size.
    pub fn memory_choices(cpu: u32) -> Option<Vec<u32>> {
        let &(_, min, max, step) = TABLE.iter().find(|row| row.0 == cpu)?;
        if step == 0 {
            return Some(vec![512, 1024, 2048]);
        }
        Some((min..=max).step_by(step as usize).collect())
    }

    /// The CPU values Fargate allows.
    pub fn cpu_choices() -> impl Iterator<Item = u32> {
        TABLE.iter().map(|row| row.0)
    }

    /// Checks a pair against the table.
    pub fn new(cpu: u32, memory: u32) -> Result<TaskSize, String> {
        let Some(choices) = TaskSize::memory_choices(cpu) else {
            let cpus: Vec<String> = TaskSize::cpu_choices().map(|c| c.to_string()).collect();
            return Err(format!(
                "No Fargate configuration exists for cpu {cpu}. Valid cpu values are {}.",
                cpus.join(", ")
            ));
        };
        if choices.contains(&memory) {
            Ok(TaskSize { cpu, memory })
        } else {
            Err(format!(
                "No Fargate configuration exists for given values: {cpu} CPU, {memory} memory. For {cpu} CPU, memory must be one of {}.",
                describe_choices(&choices)
            ))
        }
    }

    /// The smallest Fargate size that holds at least `cpu` units and `memory` MiB (EKS pod
    /// sizing, default sizes). `None` when nothing is large enough.
    pub fn smallest_fitting(cpu: u32, memory: u32) -> Option<TaskSize> {
        TABLE.iter().filter(|row| row.0 >= cpu).find_map(|row| {
            let m = TaskSize::memory_choices(row.0)?.into_iter().find(|&m| m >= memory)?;
            Some(TaskSize { cpu: row.0, memory: m })
        })
    }

    pub fn vcpus(self) -> f64 {
        f64::from(self.cpu) / 1024.0
    }
}

fn describe_choices(choices: &[u32]) -> String {
    if choices.len() <= 4 {
        return choices.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
    }
    format!("{} to {} in steps of {}", choices[0], choices[choices.len() - 1], choices[1] - choices[0])
}

/// Parses a task-level `cpu` string: `"256"`, `"1024"`, `"1 vCPU"`, `".25 vcpu"`, `"0.5vCPU"`.
pub fn parse_cpu(s: &str) -> Option<u32> {
    let t = s.trim();
    if let Ok(units) = t.parse::<u32>() {
        return Some(units);
    }
    let lower = t.to_ascii_lowercase();
    let number = lower.strip_suffix("vcpu")?.trim();
    scaled(number, 1024.0)
}

/// Parses a task-level `memory` string: `"512"` (MiB), `"2 GB"`, `"2GB"`, `"0.5 gb"`.
pub fn parse_memory(s: &str) -> Option<u32> {
    let t = s.trim();
    if let Ok(mib) = t.parse::<u32>() {
        return Some(mib);
    }
    let lower = t.to_ascii_lowercase();
    let number = lower.strip_suffix("gb")?.trim();
    scaled(number, 1024.0)
}

fn scaled(number: &str, factor: f64) -> Option<u32> {
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let scaled = value * factor;
    if !(scaled.is_finite() && scaled > 0.0 && scaled <= f64::from(u32::MAX)) || scaled.fract() != 0.0 {
        return None;
    }
    Some(scaled as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_edges() {
        assert!(TaskSize::new(256, 512).is_ok());
        assert!(TaskSize::new(256, 2048).is_ok());
        assert!(TaskSize::new(256, 3072).is_err());
        assert!(TaskSize::new(512, 4096).is_ok());
        assert!(TaskSize::new(512, 512).is_err());
        assert!(TaskSize::new(4096, 30720).is_ok());
        assert!(TaskSize::new(8192, 20480).is_ok());
        assert!(TaskSize::new(8192, 18432).is_err());
        assert!(TaskSize::new(16384, 122880).is_ok());
        assert!(TaskSize::new(16384, 40960).is_ok());
        assert!(TaskSize::new(16384, 36864).is_err());
        assert!(TaskSize::new(300, 512).is_err());
    }

    #[test]
    fn string_forms() {
        assert_eq!(parse_cpu("1 vCPU"), Some(1024));
        assert_eq!(parse_cpu(".25 vCPU"), Some(256));
        assert_eq!(parse_cpu("0.5vcpu"), Some(512));
        assert_eq!(parse_cpu("256"), Some(256));
        assert_eq!(parse_cpu("lots"), None);
        assert_eq!(parse_cpu("-1 vCPU"), None);
        assert_eq!(parse_memory("2 GB"), Some(2048));
        assert_eq!(parse_memory("0.5GB"), Some(512));
        assert_eq!(parse_memory("512"), Some(512));
        assert_eq!(parse_memory("2 TB"), None);
    }

    #[test]
    fn smallest_fitting_rounds_up() {
        assert_eq!(TaskSize::smallest_fitting(0, 0), Some(TaskSize { cpu: 256, memory: 512 }));
        assert_eq!(TaskSize::smallest_fitting(300, 768), Some(TaskSize { cpu: 512, memory: 1024 }));
        assert_eq!(TaskSize::smallest_fitting(2048, 4352), Some(TaskSize { cpu: 2048, memory: 5120 }));
        assert_eq!(TaskSize::smallest_fitting(20000, 1), None);
    }
}
