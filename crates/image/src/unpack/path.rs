//! Lexical cleaning of tar entry names.

use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathProblem {
    Absolute,
    Escapes,
}

/// Turns a tar entry name into a path relative to the layer root made only of
/// normal components (`""` is the root itself). `.` and non-escaping `..` are
/// resolved lexically: we only ever act on the cleaned path, so a symlink along the
/// way cannot give `..` a different meaning.
pub(crate) fn clean(raw: &Path) -> Result<PathBuf, PathProblem> {
    let mut out = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::RootDir | Component::Prefix(_) => return Err(PathProblem::Absolute),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(PathProblem::Escapes);
                }
            }
            Component::Normal(c) => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_names() {
        let ok = |s: &str| clean(Path::new(s)).unwrap();
        assert_eq!(ok("./etc/passwd"), Path::new("etc/passwd"));
        assert_eq!(ok("a//b/./c/"), Path::new("a/b/c"));
        assert_eq!(ok("a/../b"), Path::new("b"));
        assert_eq!(ok("./"), Path::new(""));
        assert_eq!(clean(Path::new("/etc/x")), Err(PathProblem::Absolute));
        assert_eq!(clean(Path::new("../../etc/x")), Err(PathProblem::Escapes));
        assert_eq!(clean(Path::new("a/../../x")), Err(PathProblem::Escapes));
    }
}
