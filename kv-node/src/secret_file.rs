//! Files that hold secrets (token files, the TLS private key) must not be
//! open to other local users: like ssh with a private key, the node says so
//! loudly at start (it does not refuse, so that a container whose secrets
//! are mounted read-only with a wide mode still starts).

use std::path::Path;

/// The mode bits of `path` that give group or other users any access, if
/// any (Unix only).
pub fn exposed_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        (mode & 0o077 != 0).then_some(mode & 0o777)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Logs a warning when `path` (a `what`) is open to other users.
pub fn warn_if_exposed(path: &Path, what: &str) {
    if let Some(mode) = exposed_mode(path) {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:o}"),
            "{what} is accessible to other users; restrict it with `chmod 600`"
        );
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_secret_readable_by_others_is_reported_and_a_private_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "secret").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(exposed_mode(&path), Some(0o644));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(exposed_mode(&path), None);
    }
}
