//! The cgroup v2 device filter, enforced by the real kernel: a shell moved into a cgroup with
//! the filter may open and create only what the rules allow. Needs root and a cgroup2 mount
//! (pure v2 at /sys/fs/cgroup, or a hybrid host's /sys/fs/cgroup/unified, as on CI).

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use flotilla_oci::DeviceRule;

fn cgroup2_mount() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split(' ').next() == Some("cgroup2")).then(|| PathBuf::from(left.split(' ').nth(4).unwrap()))
        })
        .expect("a cgroup2 hierarchy is mounted (as on every systemd host)")
}

fn rule(allow: bool, kind: Option<&str>, major: Option<i64>, minor: Option<i64>, access: &str) -> DeviceRule {
    DeviceRule { allow, kind: kind.map(str::to_string), major, minor, access: access.to_string() }
}

/// Removes the test's cgroup even when an assertion fails first.
struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn only_the_allowed_devices_can_be_opened_or_made() {
    let cgroup = Cgroup(cgroup2_mount().join(format!("flotilla-devfilter-{}", std::process::id())));
    let dir = cgroup.0.clone();
    std::fs::create_dir(&dir).unwrap();
    let rules = [
        rule(false, None, None, None, "rwm"),
        rule(true, Some("c"), None, None, "m"),
        rule(true, Some("c"), Some(1), Some(3), "rwm"),
    ];
    flotilla_runtime::attach_device_filter(&dir, &rules).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let procs = CString::new(dir.join("cgroup.procs").to_str().unwrap()).unwrap();
    let script = "( : < /dev/null ) 2>/dev/null && echo null=ok || echo null=denied; \
                  ( head -c1 /dev/zero >/dev/null ) 2>/dev/null && echo zero=ok || echo zero=denied; \
                  mknod \"$T/c\" c 1 5 2>/dev/null && echo mknodc=ok || echo mknodc=denied; \
                  mknod \"$T/b\" b 8 0 2>/dev/null && echo mknodb=ok || echo mknodb=denied";
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).env("T", scratch.path());
    // SAFETY: only open/write/close between fork and exec, on a path prepared before.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.split_whitespace().collect::<Vec<_>>(), ["null=ok", "zero=denied", "mknodc=ok", "mknodb=denied"]);
}
