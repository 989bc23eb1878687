//! The container's filesystem view, built inside its new mount namespace: the config's mounts
//! (resolved inside the root, so an image's symlinks cannot point them at the host), /dev's
//! nodes, the pivot into the root, masked and read-only paths, and a read-only root.

use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

use flotilla_oci::{Mount, Spec};
use rustix::fs::{FileType, OFlags, StatVfsMountFlags};
use rustix::mount::{MountFlags, MountPropagationFlags};

use crate::cgroup::Cgroups;
use crate::sys::{self, err_at};

/// Flags and data of a mount's option list; propagation options apart, as they need a
/// mount(2) call of their own.
#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    pub flags: MountFlags,
    pub propagation: MountPropagationFlags,
    pub data: Vec<String>,
}

pub fn parse_options(options: &[String]) -> Options {
    let mut o = Options { flags: MountFlags::empty(), propagation: MountPropagationFlags::empty(), data: vec![] };
    for opt in options {
        let (set, clear) = match opt.as_str() {
            "ro" => (MountFlags::RDONLY, MountFlags::empty()),
            "rw" => (MountFlags::empty(), MountFlags::RDONLY),
            "nosuid" => (MountFlags::NOSUID, MountFlags::empty()),
            "suid" => (MountFlags::empty(), MountFlags::NOSUID),
            "nodev" => (MountFlags::NODEV, MountFlags::empty()),
            "dev" => (MountFlags::empty(), MountFlags::NODEV),
            "noexec" => (MountFlags::NOEXEC, MountFlags::empty()),
            "exec" => (MountFlags::empty(), MountFlags::NOEXEC),
            "sync" => (MountFlags::SYNCHRONOUS, MountFlags::empty()),
            "noatime" => (MountFlags::NOATIME, MountFlags::empty()),
            "nodiratime" => (MountFlags::NODIRATIME, MountFlags::empty()),
            "relatime" => (MountFlags::RELATIME, MountFlags::empty()),
            "strictatime" => (MountFlags::STRICTATIME, MountFlags::empty()),
            "bind" => (MountFlags::BIND, MountFlags::empty()),
            "rbind" => (MountFlags::BIND | MountFlags::REC, MountFlags::empty()),
            "private" => {
                o.propagation = MountPropagationFlags::PRIVATE;
                continue;
            }
            "rprivate" => {
                o.propagation = MountPropagationFlags::PRIVATE | MountPropagationFlags::REC;
                continue;
            }
            "slave" => {
                o.propagation = MountPropagationFlags::DOWNSTREAM;
                continue;
            }
            "rslave" => {
                o.propagation = MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC;
                continue;
            }
            _ => {
                o.data.push(opt.clone());
                continue;
            }
        };
        o.flags = (o.flags | set) - clear;
    }
    o
}

/// `unsafe_path` resolved inside `root` the way the container will see it: `..` stops at the
/// root and symlinks are followed as if `root` were `/`. The result is always under `root`.
pub fn resolve_in_root(root: &Path, unsafe_path: &str) -> io::Result<PathBuf> {
    let mut done: Vec<OsString> = Vec::new();
    let mut todo: Vec<OsString> =
        Path::new(unsafe_path).components().rev().filter_map(normal_or_parent).collect::<Vec<_>>();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            done.pop();
            continue;
        }
        let candidate: PathBuf = root.join(done.iter().collect::<PathBuf>()).join(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(io::Error::other(format!("{unsafe_path}: too many levels of symbolic links")));
                }
                let target = std::fs::read_link(&candidate).map_err(|e| err_at("readlink", &candidate, e))?;
                if target.is_absolute() {
                    done.clear();
                }
                todo.extend(target.components().rev().filter_map(normal_or_parent));
            }
            _ => done.push(part),
        }
    }
    Ok(root.join(done.iter().collect::<PathBuf>()))
}

fn normal_or_parent(c: Component<'_>) -> Option<OsString> {
    match c {
        Component::Normal(p) => Some(p.to_os_string()),
        Component::ParentDir => Some("..".into()),
        _ => None,
    }
}

fn mkdir_all(path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(path).map_err(|e| err_at("mkdir", path, e))
}

/// Everything up to the pivot: the root made a mount point and every configured mount.
pub fn prepare_root(spec: &Spec, cgroups: &Cgroups) -> io::Result<()> {
    // As the kernel names it, so that `pin` can compare what /proc/self/fd says against it.
    let root = &std::fs::canonicalize(&spec.root.path).map_err(|e| err_at("resolve", &spec.root.path, e))?;
    // Nothing mounted from here on propagates back to the host.
    sys::propagate(Path::new("/"), MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC)?;
    sys::bind(root, root, true)?;
    for m in &spec.mounts {
        mount_one(root, m, cgroups)?;
    }
    make_devices(root)
}

/// `dest` opened without following a final link, and checked to still lie inside `root`;
/// with the `/proc/self/fd` path that names exactly that inode. Mounting on that path cannot
/// be redirected by a link swapped in after `resolve_in_root` looked (another container of the
/// task may share a volume this path goes through).
fn pin(root: &Path, dest: &Path) -> io::Result<(std::os::fd::OwnedFd, PathBuf)> {
    use std::os::fd::AsRawFd;
    let fd = sys::open(dest, OFlags::PATH | OFlags::NOFOLLOW)?;
    // fstat works on O_PATH descriptors.
    let is_link = rustix::fs::fstat(&fd).map(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
    if !matches!(is_link, Ok(false)) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("mount destination {} became a symbolic link", dest.display()),
        ));
    }
    let magic = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let real = std::fs::read_link(&magic).map_err(|e| err_at("readlink", &magic, e))?;
    if !real.starts_with(root) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("mount destination {} moved outside the container's root (to {})", dest.display(), real.display()),
        ));
    }
    Ok((fd, magic))
}

fn mount_one(root: &Path, m: &Mount, cgroups: &Cgroups) -> io::Result<()> {
    let dest = resolve_in_root(root, &m.destination)?;
    let o = parse_options(&m.options);
    if m.kind == "cgroup" {
        return mount_cgroups(&dest, o.flags, cgroups);
    }
    if m.kind == "bind" || o.flags.contains(MountFlags::BIND) {
        let source = Path::new(&m.source);
        let meta = std::fs::metadata(source).map_err(|e| err_at("bind source", source, e))?;
        if meta.is_dir() {
            mkdir_all(&dest)?;
        } else {
            if let Some(parent) = dest.parent() {
                mkdir_all(parent)?;
            }
            if !dest.exists() {
                std::fs::File::create(&dest).map_err(|e| err_at("create", &dest, e))?;
            }
        }
        let (_fd, target) = pin(root, &dest)?;
        let rec = o.flags & MountFlags::REC;
        sys::bind(source, &target, !rec.is_empty())?;
        let extra = o.flags - (MountFlags::BIND | MountFlags::REC);
        if !extra.is_empty() {
            // The new mount, not the directory under it: open the path again.
            let (_fd, target) = pin(root, &dest)?;
            sys::remount(&target, extra | MountFlags::BIND | rec, "")?;
        }
    } else {
        mkdir_all(&dest)?;
        let (_fd, target) = pin(root, &dest)?;
        sys::mount_fs(&m.source, &target, &m.kind, o.flags, Some(&o.data.join(",")))?;
    }
    if !o.propagation.is_empty() {
        let (_fd, target) = pin(root, &dest)?;
        sys::propagate(&target, o.propagation)?;
    }
    Ok(())
}

/// `/sys/fs/cgroup` as runc gives it: on v2 the cgroup2 filesystem; on v1 a read-only
/// directory holding each hierarchy, mounted inside the container's cgroup namespace so that
/// each shows the container's own cgroup as its root. The directory is the host's own when it
/// has the usual layout (`host_cgroup_dir`), else a tmpfs of the container's.
fn mount_cgroups(dest: &Path, flags: MountFlags, cgroups: &Cgroups) -> io::Result<()> {
    mkdir_all(dest)?;
    let v1 = match cgroups {
        Cgroups::V2(_) => return sys::mount_fs("cgroup2", dest, "cgroup2", flags, None),
        Cgroups::V1(v1) => v1,
    };
    let base = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    if let Some(host) = host_cgroup_dir(v1) {
        // The host's directory of hierarchies, read-only and without what is mounted in it:
        // the same mount points as a tmpfs of the container's own, without another filesystem
        // instance (each costs the kernel shrinker state in every memory cgroup on the host).
        // Private first, so the hierarchies mounted on it never reach the host's.
        sys::bind(&host, dest, false)?;
        sys::propagate(dest, MountPropagationFlags::PRIVATE)?;
        sys::remount(dest, MountFlags::BIND | MountFlags::RDONLY | base, "")?;
        for h in v1.hierarchies() {
            let Some(name) = h.mount.file_name() else { continue };
            sys::mount_fs("cgroup", &dest.join(name), "cgroup", flags, Some(&h.mount_data()))?;
        }
        return Ok(());
    }
    sys::mount_fs("tmpfs", dest, "tmpfs", base, Some("mode=755"))?;
    for h in v1.hierarchies() {
        let Some(name) = h.mount.file_name() else { continue };
        let sub = dest.join(name);
        mkdir_all(&sub)?;
        sys::mount_fs("cgroup", &sub, "cgroup", flags, Some(&h.mount_data()))?;
        // `cpu,cpuacct` is also reachable as `cpu` and `cpuacct`.
        let joined = name.to_string_lossy();
        if joined.contains(',') {
            for alias in joined.split(',') {
                let _ = std::os::unix::fs::symlink(&*joined, dest.join(alias));
            }
        }
    }
    if flags.contains(MountFlags::RDONLY) {
        sys::remount(dest, MountFlags::RDONLY | base, "mode=755")?;
    }
    Ok(())
}

/// The one tmpfs directory holding every v1 hierarchy's mount point (a host's
/// `/sys/fs/cgroup`), with a name for each controller of a co-mounted one (`cpu` for
/// `cpu,cpuacct`); `None` when the host's layout is anything else.
fn host_cgroup_dir(v1: &crate::cgroup::V1) -> Option<PathBuf> {
    const TMPFS_MAGIC: rustix::fs::FsWord = 0x0102_1994;
    let parent = v1.hierarchies().first()?.mount.parent()?.to_path_buf();
    let names_there = v1.hierarchies().iter().all(|h| {
        let Some(name) = h.mount.file_name() else { return false };
        h.mount.parent() == Some(parent.as_path())
            && name.to_string_lossy().split(',').all(|a| std::fs::symlink_metadata(parent.join(a)).is_ok())
    });
    let tmpfs = rustix::fs::statfs(&parent).is_ok_and(|st| st.f_type == TMPFS_MAGIC);
    (names_there && tmpfs).then_some(parent)
}

/// The nodes runc creates in the container's /dev, and the usual links.
fn make_devices(root: &Path) -> io::Result<()> {
    let dev = resolve_in_root(root, "/dev")?;
    for (name, major, minor) in
        [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
    {
        let path = dev.join(name);
        let _ = std::fs::remove_file(&path);
        sys::mknod_char(&path, 0o666, major, minor)?;
        // mknod applies the umask; the nodes must be usable by every user.
        let _ = sys::chmod(&path, 0o666);
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        let path = dev.join(name);
        if std::fs::symlink_metadata(&path).is_err() {
            std::os::unix::fs::symlink(target, &path).map_err(|e| err_at("symlink", &path, e))?;
        }
    }
    Ok(())
}

/// Makes `root` the process's `/` and drops the host's tree from its mount namespace.
pub fn pivot(root: &Path) -> io::Result<()> {
    sys::chdir(root)?;
    sys::pivot_root_here()?;
    // The old root is stacked on "."; detach it without sending the unmount back to the host.
    sys::propagate(Path::new("."), MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC)?;
    sys::umount_detach(Path::new("."))?;
    sys::chdir(Path::new("/"))
}

/// The flags a mount already has, so a remount keeps nosuid/nodev/noexec.
fn mount_flags(path: &Path) -> io::Result<MountFlags> {
    let st = rustix::fs::statvfs(path).map_err(|e| err_at("statvfs", path, e.into()))?;
    let mut flags = MountFlags::empty();
    for (st_flag, ms) in [
        (StatVfsMountFlags::NOSUID, MountFlags::NOSUID),
        (StatVfsMountFlags::NODEV, MountFlags::NODEV),
        (StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
        (StatVfsMountFlags::NOATIME, MountFlags::NOATIME),
        (StatVfsMountFlags::NODIRATIME, MountFlags::NODIRATIME),
        (StatVfsMountFlags::RELATIME, MountFlags::RELATIME),
    ] {
        if st.f_flag.contains(st_flag) {
            flags |= ms;
        }
    }
    Ok(flags)
}

/// Hides each masked path (after the pivot): an empty read-only tmpfs over directories,
/// /dev/null over files. Paths the kernel does not have are skipped. The directories share
/// one tmpfs (the first one's, bound over the others): every filesystem instance costs the
/// kernel shrinker state in each memory cgroup on the host, so a container makes no more of
/// them than it needs.
pub fn mask(paths: &[String]) -> io::Result<()> {
    let mut empty: Option<&Path> = None;
    for p in paths {
        let path = Path::new(p);
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => match empty {
                // Read-only from its superblock, so the binds are too.
                Some(first) => sys::bind(first, path, false)?,
                None => {
                    sys::mount_fs("tmpfs", path, "tmpfs", MountFlags::RDONLY, None)?;
                    empty = Some(path);
                }
            },
            Ok(_) => sys::bind(Path::new("/dev/null"), path, false)?,
            Err(_) => {}
        }
    }
    Ok(())
}

/// Makes each path read-only (after the pivot) by a read-only bind of itself.
pub fn read_only(paths: &[String]) -> io::Result<()> {
    for p in paths {
        let path = Path::new(p);
        if std::fs::symlink_metadata(path).is_err() {
            continue;
        }
        sys::bind(path, path, true)?;
        let keep = mount_flags(path)?;
        sys::remount(path, keep | MountFlags::BIND | MountFlags::RDONLY | MountFlags::REC, "")?;
    }
    Ok(())
}

/// Remounts `/` read-only (readonlyRootFilesystem).
pub fn root_read_only() -> io::Result<()> {
    let root = Path::new("/");
    let keep = mount_flags(root)?;
    sys::remount(root, keep | MountFlags::BIND | MountFlags::RDONLY, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = parse_options(&["nosuid".into(), "ro".into(), "mode=755".into(), "rprivate".into(), "rbind".into()]);
        assert_eq!(o.flags, MountFlags::NOSUID | MountFlags::RDONLY | MountFlags::BIND | MountFlags::REC);
        assert_eq!(o.propagation, MountPropagationFlags::PRIVATE | MountPropagationFlags::REC);
        assert_eq!(o.data, vec!["mode=755".to_string()]);
        assert!(parse_options(&["ro".into(), "rw".into()]).flags.is_empty());
    }

    #[test]
    fn a_pinned_destination_must_be_inside_the_root_and_no_link() {
        let base = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(base.path()).unwrap().join("root");
        std::fs::create_dir_all(root.join("dir")).unwrap();
        let (_fd, magic) = pin(&root, &root.join("dir")).unwrap();
        assert!(magic.starts_with("/proc/self/fd/"));
        std::os::unix::fs::symlink("/etc", root.join("swapped")).unwrap();
        assert!(pin(&root, &root.join("swapped")).is_err(), "a link swapped in is refused");
        let outside = base.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        assert!(pin(&root, &outside).is_err(), "a path that left the root is refused");
    }

    #[test]
    fn paths_resolve_inside_the_root_whatever_the_links_say() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("real/dir")).unwrap();
        std::os::unix::fs::symlink("/etc", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", r.join("rel")).unwrap();
        std::os::unix::fs::symlink("real/dir", r.join("inner")).unwrap();
        std::os::unix::fs::symlink("loop2", r.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", r.join("loop2")).unwrap();
        assert_eq!(resolve_in_root(r, "/abs/passwd").unwrap(), r.join("etc/passwd"));
        assert_eq!(resolve_in_root(r, "/rel/passwd").unwrap(), r.join("etc/passwd"));
        assert_eq!(resolve_in_root(r, "/../../x").unwrap(), r.join("x"));
        assert_eq!(resolve_in_root(r, "/inner/f").unwrap(), r.join("real/dir/f"));
        assert_eq!(resolve_in_root(r, "/new/path").unwrap(), r.join("new/path"));
        assert!(resolve_in_root(r, "/loop1").is_err());
    }
}
