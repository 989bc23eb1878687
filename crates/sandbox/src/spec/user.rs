//! Resolving a container's `user` ("uid", "uid:gid", "name", "name:group") against the
//! image's own `/etc/passwd` and `/etc/group`, with Docker's rules.

use std::io::Read;
use std::path::Path;

use crate::mount::open_in_root;
use crate::task::SpecError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The image's user database; empty when the image has none (a scratch image).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserDb {
    pub users: Vec<PasswdEntry>,
    pub groups: Vec<GroupEntry>,
}

/// The identity the container's process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

/// Larger files are not user databases; refusing them bounds what an image can make us read.
const MAX_DB_BYTES: u64 = 4 << 20;

impl UserDb {
    /// Reads `/etc/passwd` and `/etc/group` from a mounted root filesystem, never following
    /// links out of it. Missing files mean an empty database.
    pub fn load(rootfs: &Path) -> Self {
        UserDb {
            users: read_in_root(rootfs, "/etc/passwd").map(|s| parse_passwd(&s)).unwrap_or_default(),
            groups: read_in_root(rootfs, "/etc/group").map(|s| parse_group(&s)).unwrap_or_default(),
        }
    }

    /// Docker's rules: a numeric user need not exist (primary group 0, home "/"); a named one
    /// must. A group part overrides the primary group and must exist when named. The user's
    /// supplementary groups come from `/etc/group` membership.
    pub fn resolve(&self, spec: Option<&str>) -> Result<ResolvedUser, SpecError> {
        let spec = spec.map(str::trim).filter(|s| !s.is_empty()).unwrap_or("0");
        let (user_part, group_part) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let entry = match user_part.parse::<u32>() {
            Ok(uid) => self.users.iter().find(|u| u.uid == uid).cloned().or(Some(PasswdEntry {
                name: String::new(),
                uid,
                gid: 0,
                home: "/".into(),
            })),
            Err(_) => self.users.iter().find(|u| u.name == user_part).cloned(),
        };
        let entry = entry
            .ok_or_else(|| SpecError::invalid(format!("user {user_part:?} not found in the image's /etc/passwd")))?;
        let gid =
            match group_part {
                None | Some("") => entry.gid,
                Some(g) => match g.parse::<u32>() {
                    Ok(gid) => gid,
                    Err(_) => self.groups.iter().find(|gr| gr.name == g).map(|gr| gr.gid).ok_or_else(|| {
                        SpecError::invalid(format!("group {g:?} not found in the image's /etc/group"))
                    })?,
                },
            };
        // runc's (and so Docker's) rule: with an explicit group that group is the only
        // supplementary one; otherwise the primary group plus every group listing the user.
        let mut additional_gids: Vec<u32> = match group_part {
            Some(g) if !g.is_empty() => vec![gid],
            _ => self
                .groups
                .iter()
                .filter(|g| g.gid == entry.gid || (!entry.name.is_empty() && g.members.contains(&entry.name)))
                .map(|g| g.gid)
                .collect(),
        };
        let mut seen = Vec::new();
        additional_gids.retain(|g| {
            let new = !seen.contains(g);
            seen.push(*g);
            new
        });
        let home = if entry.home.is_empty() { "/".into() } else { entry.home };
        Ok(ResolvedUser { uid: entry.uid, gid, additional_gids, home })
    }
}

fn read_in_root(rootfs: &Path, path: &str) -> Option<String> {
    let file = open_in_root(rootfs, path).ok()?;
    let mut s = String::new();
    file.take(MAX_DB_BYTES).read_to_string(&mut s).ok()?;
    Some(s)
}

pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f[3].split(',').filter(|m| !m.is_empty()).map(str::to_string).collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> UserDb {
        UserDb {
            users: parse_passwd(
                "root:x:0:0:root:/root:/bin/sh\n\
                 app:x:1000:1000:App:/home/app:/bin/sh\n\
                 nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
                 broken line\n",
            ),
            groups: parse_group(
                "root:x:0:\n\
                 app:x:1000:\n\
                 audio:x:29:app,other\n\
                 video:x:44:app\n\
                 nogroup:x:65534:\n",
            ),
        }
    }

    #[test]
    fn default_is_root() {
        let u = db().resolve(None).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
        assert_eq!(u.additional_gids, vec![0]);
    }

    #[test]
    fn named_user_gets_primary_and_supplementary_groups() {
        let u = db().resolve(Some("app")).unwrap();
        assert_eq!(
            u,
            ResolvedUser { uid: 1000, gid: 1000, additional_gids: vec![1000, 29, 44], home: "/home/app".into() }
        );
    }

    #[test]
    fn numeric_user_need_not_exist() {
        let u = db().resolve(Some("4242")).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        assert_eq!(u.additional_gids, vec![0]);
        let u = db().resolve(Some("1000")).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
    }

    #[test]
    fn group_part_overrides_primary_group() {
        let u = db().resolve(Some("app:nogroup")).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 65534));
        assert_eq!(u.additional_gids, vec![65534]);
        let u = db().resolve(Some("4242:29")).unwrap();
        assert_eq!((u.uid, u.gid), (4242, 29));
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(db().resolve(Some("ghost")).unwrap_err().reason.contains("ghost"));
        assert!(db().resolve(Some("app:ghosts")).unwrap_err().reason.contains("ghosts"));
        assert!(UserDb::default().resolve(Some("app")).is_err());
        assert_eq!(UserDb::default().resolve(Some("0:0")).unwrap().home, "/");
    }
}
