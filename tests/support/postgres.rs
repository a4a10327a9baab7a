//! Private PostgreSQL processes for tests that crash or lose them: run as the `postgres` user
//! when the tests run as root (initdb and pg_autoctl refuse root), in directories of their own.
#![allow(dead_code)] // each test crate that includes this uses part of it

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program` as a command run by the `postgres` user when this process is root, from `dir`
/// (the test's own working directory may not be readable by that user).
pub fn as_postgres(program: &Path, dir: &Path) -> Command {
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command.current_dir(dir);
    command
}

/// A new empty directory under the temp dir, the `postgres` user's when this process is root.
pub fn private_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    give_to_postgres(&dir);
    dir
}

/// Makes `dir` the `postgres` user's when this process is root (the cluster runs as that user).
pub fn give_to_postgres(dir: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// The directory of `initdb` and `pg_ctl`: on PATH, else the newest /usr/lib/postgresql/*/bin.
pub fn postgres_bin_dir() -> PathBuf {
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v pg_ctl"])
        .output()
        && out.status.success()
    {
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let resolved = std::fs::canonicalize(&path).unwrap_or(path);
        return resolved.parent().unwrap().to_path_buf();
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's binaries (initdb, pg_ctl) are needed")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a PostgreSQL version under /usr/lib/postgresql")
}
