//! The Fargate size of a Kubernetes pod, as EKS computes it ("Fargate Pod configuration" in the
//! EKS user guide): each container asks for its requests (or its limits, when only limits are
//! given: Kubernetes defaults requests to limits); the init containers' ask is the largest of
//! theirs, the app containers' the sum of theirs, per resource; the pod's is the larger of the
//! two, per resource; Fargate adds 256 MiB for its own Kubernetes components and rounds up to
//! the smallest CPU/memory pair of its table that holds the result. A pod that asks for nothing
//! gets the smallest pair, 0.25 vCPU and 0.5 GB.
//!
//! Pure: no I/O, the same answer for the same pod. Quantities are Kubernetes' string forms
//! (`"250m"`, `"0.5"`, `"512Mi"`, `"1G"`, `"1e3"`), parsed here.

use flotilla_types::size::TaskSize;

/// The annotation EKS writes on a Fargate pod: `CapacityProvisioned: 0.25vCPU 0.5GB`.
pub const CAPACITY_ANNOTATION: &str = "CapacityProvisioned";

/// What Fargate adds to every pod's memory for kubelet, kube-proxy and containerd.
pub const KUBERNETES_OVERHEAD_MIB: u64 = 256;

/// One container's resources as its pod spec gives them (Kubernetes quantity strings).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerResources {
    /// The container's name, for the error naming a quantity that does not parse.
    pub name: String,
    pub cpu_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_request: Option<String>,
    pub memory_limit: Option<String>,
}

/// The Fargate size a pod runs at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSize {
    /// CPU units, 1024 a vCPU.
    pub cpu: u32,
    /// MiB.
    pub memory: u32,
    /// The value of the [`CAPACITY_ANNOTATION`] annotation: `0.25vCPU 0.5GB`, `2vCPU 4GB`.
    pub capacity_provisioned: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizingError {
    #[error("container {container}: {resource} quantity {value:?} is not a valid Kubernetes quantity")]
    Quantity { container: String, resource: &'static str, value: String },
    /// The pod asks for more than Fargate's largest size.
    #[error(
        "Pod requires {vcpus}vCPU and {gb}GB (its requests plus 256MB), more than the largest Fargate configuration ({max_vcpus}vCPU {max_gb}GB)"
    )]
    TooLarge { vcpus: String, gb: String, max_vcpus: String, max_gb: String },
}

/// What a pod asks for, in millicores and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Ask {
    millicores: u128,
    bytes: u128,
}

/// The pod's Fargate size from its init containers and app containers.
pub fn sizing(init: &[ContainerResources], app: &[ContainerResources]) -> Result<PodSize, SizingError> {
    let mut init_ask = Ask::default();
    for container in init {
        let ask = container_ask(container)?;
        init_ask.millicores = init_ask.millicores.max(ask.millicores);
        init_ask.bytes = init_ask.bytes.max(ask.bytes);
    }
    let mut app_ask = Ask::default();
    for container in app {
        let ask = container_ask(container)?;
        app_ask.millicores = app_ask.millicores.saturating_add(ask.millicores);
        app_ask.bytes = app_ask.bytes.saturating_add(ask.bytes);
    }
    let millicores = init_ask.millicores.max(app_ask.millicores);
    let mib = init_ask.bytes.max(app_ask.bytes).div_ceil(1 << 20).saturating_add(u128::from(KUBERNETES_OVERHEAD_MIB));
    let cpu_units = (millicores.saturating_mul(1024)).div_ceil(1000);
    let fitting = match (u32::try_from(cpu_units), u32::try_from(mib)) {
        (Ok(cpu), Ok(memory)) => TaskSize::smallest_fitting(cpu, memory),
        _ => None,
    };
    let Some(size) = fitting else {
        let (max_cpu, max_memory) = largest();
        return Err(SizingError::TooLarge {
            vcpus: decimal(millicores, 1000),
            gb: decimal(mib, 1024),
            max_vcpus: decimal(u128::from(max_cpu), 1024),
            max_gb: decimal(u128::from(max_memory), 1024),
        });
    };
    Ok(PodSize {
        cpu: size.cpu,
        memory: size.memory,
        capacity_provisioned: format!(
            "{}vCPU {}GB",
            decimal(u128::from(size.cpu), 1024),
            decimal(u128::from(size.memory), 1024)
        ),
    })
}

/// Fargate's largest CPU units and its largest memory for that CPU.
fn largest() -> (u32, u32) {
    let cpu = TaskSize::cpu_choices().max().unwrap_or_default();
    let memory = TaskSize::memory_choices(cpu).and_then(|m| m.into_iter().max()).unwrap_or_default();
    (cpu, memory)
}

/// `value / unit` as the shortest decimal that says it (to two places): 0.25, 0.5, 1, 2.5.
fn decimal(value: u128, unit: u128) -> String {
    let hundredths = value.saturating_mul(100).div_ceil(unit);
    let (whole, frac) = (hundredths / 100, hundredths % 100);
    match frac {
        0 => whole.to_string(),
        f if f % 10 == 0 => format!("{whole}.{}", f / 10),
        f => format!("{whole}.{f:02}"),
    }
}

fn container_ask(c: &ContainerResources) -> Result<Ask, SizingError> {
    let pick = |request: &Option<String>, limit: &Option<String>, resource: &'static str| match request
        .as_deref()
        .or(limit.as_deref())
    {
        None => Ok(None),
        Some(value) => parse_quantity(value).map(Some).ok_or_else(|| SizingError::Quantity {
            container: c.name.clone(),
            resource,
            value: value.to_string(),
        }),
    };
    let cpu = pick(&c.cpu_request, &c.cpu_limit, "cpu")?;
    let memory = pick(&c.memory_request, &c.memory_limit, "memory")?;
    Ok(Ask {
        // Kubernetes rounds a CPU quantity up to whole millicores, and memory up to whole bytes.
        millicores: cpu.map(|q| q.scaled_up(1000)).unwrap_or(0),
        bytes: memory.map(|q| q.scaled_up(1)).unwrap_or(0),
    })
}

/// A non-negative Kubernetes quantity as the exact fraction `numerator / denominator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity {
    numerator: u128,
    denominator: u128,
}

impl Quantity {
    /// `self * factor`, rounded up to an integer.
    pub fn scaled_up(self, factor: u128) -> u128 {
        self.numerator.saturating_mul(factor).div_ceil(self.denominator)
    }
}

/// Parses a Kubernetes quantity: a decimal number (`"1"`, `"0.5"`, `".25"`, `"+2"`) with an
/// optional suffix: binary (`Ki Mi Gi Ti Pi Ei`), decimal SI (`n u m k M G T P E`) or a
/// decimal exponent (`e3`, `E-2`). Negative or unrepresentable quantities are `None`.
pub fn parse_quantity(s: &str) -> Option<Quantity> {
    let s = s.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() || frac.contains('.') || whole.len() + frac.len() > 30 {
        return None;
    }
    let digits = format!("{whole}{frac}");
    let mut numerator: u128 = digits.parse().ok()?;
    let mut denominator: u128 = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    let (multiplier, divisor): (u128, u128) = match suffix {
        "" => (1, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1000),
        "k" => (1000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (10u128.pow(12), 1),
        "P" => (10u128.pow(15), 1),
        "E" => (10u128.pow(18), 1),
        exp => {
            let exponent = exp.strip_prefix(['e', 'E'])?;
            let (negative, digits) = match exponent.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, exponent.strip_prefix('+').unwrap_or(exponent)),
            };
            if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let power = 10u128.checked_pow(digits.parse::<u32>().ok()?)?;
            if negative { (1, power) } else { (power, 1) }
        }
    };
    numerator = numerator.checked_mul(multiplier)?;
    denominator = denominator.checked_mul(divisor)?;
    Some(Quantity { numerator, denominator })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(cpu_request: Option<&str>, memory_request: Option<&str>) -> ContainerResources {
        ContainerResources {
            name: "c".into(),
            cpu_request: cpu_request.map(Into::into),
            memory_request: memory_request.map(Into::into),
            ..Default::default()
        }
    }

    fn limits(cpu_limit: Option<&str>, memory_limit: Option<&str>) -> ContainerResources {
        ContainerResources {
            name: "l".into(),
            cpu_limit: cpu_limit.map(Into::into),
            memory_limit: memory_limit.map(Into::into),
            ..Default::default()
        }
    }

    fn size(init: &[ContainerResources], app: &[ContainerResources]) -> (u32, u32, String) {
        let s = sizing(init, app).unwrap();
        (s.cpu, s.memory, s.capacity_provisioned)
    }

    #[test]
    fn quantities() {
        let millicores = |s: &str| parse_quantity(s).map(|q| q.scaled_up(1000));
        let bytes = |s: &str| parse_quantity(s).map(|q| q.scaled_up(1));
        assert_eq!(millicores("250m"), Some(250));
        assert_eq!(millicores("1"), Some(1000));
        assert_eq!(millicores("0.5"), Some(500));
        assert_eq!(millicores(".25"), Some(250));
        assert_eq!(millicores("1.5"), Some(1500));
        assert_eq!(millicores("100u"), Some(1), "rounded up to a millicore");
        assert_eq!(millicores("2e0"), Some(2000));
        assert_eq!(bytes("512Mi"), Some(512 << 20));
        assert_eq!(bytes("1Gi"), Some(1 << 30));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("2.5G"), Some(2_500_000_000));
        assert_eq!(bytes("128974848"), Some(128_974_848));
        assert_eq!(bytes("129e6"), Some(129_000_000));
        assert_eq!(bytes("1E"), Some(10u128.pow(18)));
        assert_eq!(bytes("1e-3"), Some(1));
        assert_eq!(bytes("+1k"), Some(1000));
        for bad in ["", "-1", "1.2.3", "1Gb", "abc", "1 Gi", "Mi", ".", "1e", "1e-", "1x"] {
            assert_eq!(parse_quantity(bad), None, "{bad:?}");
        }
    }

    /// The documented cases: the EKS user guide's "Fargate Pod configuration" page, its
    /// workshop, and FARGATE.md's EKS section.
    #[test]
    fn documented_examples() {
        // No requests at all: the smallest combination, .25 vCPU and 0.5 GB.
        assert_eq!(size(&[], &[container(None, None)]), (256, 512, "0.25vCPU 0.5GB".into()));
        // 1 vCPU and 8 GB asked: 256 MB added makes it 2 vCPU and 9 GB (the guide's example).
        assert_eq!(size(&[], &[container(Some("1"), Some("8Gi"))]), (2048, 9216, "2vCPU 9GB".into()));
        // The workshop's checkout: cpu "1", memory "2.5G" (limit equal) -> 1vCPU 3GB.
        let checkout = ContainerResources {
            name: "checkout".into(),
            cpu_request: Some("1".into()),
            memory_request: Some("2.5G".into()),
            memory_limit: Some("2.5G".into()),
            ..Default::default()
        };
        assert_eq!(size(&[], &[checkout]), (1024, 3072, "1vCPU 3GB".into()));
        // FARGATE.md's annotation example.
        assert_eq!(size(&[], &[container(Some("2"), Some("3Gi"))]), (2048, 4096, "2vCPU 4GB".into()));
        assert_eq!(size(&[], &[container(Some("500m"), Some("512Mi"))]), (512, 1024, "0.5vCPU 1GB".into()));
    }

    #[test]
    fn overhead_rounds_up_across_a_row() {
        // 256 MiB asked + 256 = 512: still the smallest; one byte more needs 1 GB.
        assert_eq!(size(&[], &[container(Some("250m"), Some("256Mi"))]).2, "0.25vCPU 0.5GB");
        assert_eq!(size(&[], &[container(Some("250m"), Some("268435457"))]).2, "0.25vCPU 1GB");
        // 1.75 GiB + 256 MiB = 2 GiB fits .25 vCPU; 2 GiB asked does not.
        assert_eq!(size(&[], &[container(Some("100m"), Some("1792Mi"))]).2, "0.25vCPU 2GB");
        assert_eq!(size(&[], &[container(Some("100m"), Some("2Gi"))]).2, "0.5vCPU 3GB");
        // A CPU just over a row moves to the next.
        assert_eq!(size(&[], &[container(Some("251m"), None)]).2, "0.5vCPU 1GB");
    }

    #[test]
    fn init_containers_are_the_max_app_containers_the_sum() {
        let init = [container(Some("1"), Some("1Gi")), container(Some("500m"), Some("3Gi"))];
        let app = [container(Some("250m"), Some("512Mi")), container(Some("250m"), Some("512Mi"))];
        // init: max(1, 0.5) = 1 vCPU, max(1, 3) = 3 GiB; app: 0.5 vCPU, 1 GiB.
        // pod: 1 vCPU, 3 GiB + 256 MiB -> 1 vCPU 4 GB.
        assert_eq!(size(&init, &app), (1024, 4096, "1vCPU 4GB".into()));
        // Sidecars add up: three app containers of 1 vCPU need 4 vCPU.
        let app = [container(Some("1"), None), container(Some("1"), None), container(Some("1"), None)];
        assert_eq!(size(&[container(Some("250m"), None)], &app), (4096, 8192, "4vCPU 8GB".into()));
    }

    #[test]
    fn limits_stand_in_for_missing_requests() {
        assert_eq!(size(&[], &[limits(Some("2"), Some("4Gi"))]), (2048, 5120, "2vCPU 5GB".into()));
        // A request wins over its limit.
        let both = ContainerResources {
            name: "both".into(),
            cpu_request: Some("250m".into()),
            cpu_limit: Some("4".into()),
            memory_request: Some("256Mi".into()),
            memory_limit: Some("8Gi".into()),
        };
        assert_eq!(size(&[], &[both]).2, "0.25vCPU 0.5GB");
    }

    #[test]
    fn the_largest_sizes_and_beyond() {
        assert_eq!(size(&[], &[container(Some("4"), Some("29Gi"))]).2, "4vCPU 30GB");
        assert_eq!(size(&[], &[container(Some("16"), Some("119Gi"))]).2, "16vCPU 120GB");
        let too_much = sizing(&[], &[container(Some("16"), Some("120Gi"))]).unwrap_err();
        assert_eq!(
            too_much.to_string(),
            "Pod requires 16vCPU and 120.25GB (its requests plus 256MB), more than the largest Fargate configuration (16vCPU 120GB)"
        );
        assert!(matches!(sizing(&[], &[container(Some("17"), None)]), Err(SizingError::TooLarge { .. })));
        assert!(matches!(sizing(&[], &[container(Some("1E"), Some("1E"))]), Err(SizingError::TooLarge { .. })));
    }

    #[test]
    fn bad_quantities_name_the_container_and_resource() {
        let err = sizing(
            &[],
            &[ContainerResources { name: "web".into(), memory_limit: Some("lots".into()), ..Default::default() }],
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "container web: memory quantity \"lots\" is not a valid Kubernetes quantity");
    }
}
