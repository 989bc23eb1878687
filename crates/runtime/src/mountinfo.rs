//! `/proc/self/mountinfo`: what the cgroup layer reads to find the hierarchies, and what the
//! sandbox reads to find the mounts under a task directory.

use std::io;
use std::path::PathBuf;

pub const PATH: &str = "/proc/self/mountinfo";

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_point: PathBuf,
    /// The path inside the mounted filesystem that appears at `mount_point`.
    pub root: String,
    pub fs_type: String,
    pub source: String,
    pub super_options: String,
}

/// The calling process's mounts, in mount order.
pub fn read() -> io::Result<Vec<MountInfo>> {
    Ok(parse(&std::fs::read_to_string(PATH)?))
}

/// Carries the cgroup hierarchies' lines of mountinfo from a process that read them to the
/// processes it starts (agent -> shim -> runtime). The kernel writes out the whole table for
/// every read, ~20 ms at the 5,000 mounts of a host with 1,000 tasks, and a task's start
/// would otherwise read it twice for a handful of lines that do not change.
pub const CGROUP_MOUNTS_ENV: &str = "FLOTILLA_CGROUP_MOUNTINFO";

/// The cgroup and cgroup2 mounts: as a parent passed them in [`CGROUP_MOUNTS_ENV`], else read.
pub fn cgroup_mounts() -> io::Result<Vec<MountInfo>> {
    let passed = std::env::var(CGROUP_MOUNTS_ENV).map(|lines| parse(&lines)).unwrap_or_default();
    if !passed.is_empty() && passed.iter().all(is_cgroup) {
        return Ok(passed);
    }
    Ok(read()?.into_iter().filter(is_cgroup).collect())
}

/// This process's cgroup mounts as mountinfo lines, for [`CGROUP_MOUNTS_ENV`] of a child.
pub fn cgroup_lines() -> io::Result<String> {
    let text = std::fs::read_to_string(PATH)?;
    let lines = text.lines().filter(|line| parse(line).first().is_some_and(is_cgroup));
    Ok(lines.map(|l| format!("{l}\n")).collect())
}

fn is_cgroup(m: &MountInfo) -> bool {
    m.fs_type == "cgroup" || m.fs_type == "cgroup2"
}

pub fn parse(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            // id parent maj:min root mount-point options [optional...] - fstype source super-options
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            if l.len() < 6 || r.len() < 3 {
                return None;
            }
            Some(MountInfo {
                root: unescape(l[3]),
                mount_point: PathBuf::from(unescape(l[4])),
                fs_type: r[0].to_string(),
                source: unescape(r[1]),
                super_options: r[2].to_string(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let text = "36 25 0:31 / /sys/fs/cgroup/memory rw,relatime shared:14 - cgroup cgroup rw,memory\n\
                    37 25 0:32 /a\\040b /mnt/x\\040y rw - overlay overlay rw,lowerdir=/l\n";
        let m = parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(m[0].fs_type, "cgroup");
        assert_eq!(m[0].super_options, "rw,memory");
        assert_eq!(m[1].mount_point, PathBuf::from("/mnt/x y"));
        assert_eq!(m[1].root, "/a b");
    }

    #[test]
    fn cgroup_lines_are_this_hosts_cgroup_mounts_and_nothing_else() {
        let passed = parse(&cgroup_lines().unwrap());
        let read: Vec<MountInfo> = read().unwrap().into_iter().filter(is_cgroup).collect();
        assert!(!read.is_empty(), "no cgroup mounts on this host");
        assert_eq!(passed, read);
    }
}
