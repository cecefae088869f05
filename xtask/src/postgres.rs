//! A private PostgreSQL server for the tests: `initdb` and `pg_ctl` on a temporary
//! directory, listening only on a Unix socket inside it (no TCP port, so nothing else on the
//! machine can reach it or collide with it), stopped and removed on drop. PostgreSQL refuses
//! to run as root, and CI runs as root: there it runs as the unprivileged `postgres` user
//! Debian's package creates.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Result;

/// The environment variable the PostgreSQL tests read their connection string from.
pub const URL_ENV: &str = "CAREKEEP_TEST_POSTGRES";

/// A running private cluster.
pub struct PgCluster {
    root: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
}

impl PgCluster {
    /// Initialises and starts a cluster in a new temporary directory.
    pub fn start() -> Result<Self> {
        let bin = bin_dir()?;
        let root = std::env::temp_dir().join(format!("carekeep-postgres-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        let as_postgres = is_root();
        if as_postgres {
            run(Command::new("chown").args(["postgres:postgres"]).arg(&root), "chown")?;
        }
        let cluster = Self { root, bin, as_postgres };
        let data = cluster.root.join("data");
        cluster.run_tool("initdb", |c| {
            c.arg("-D")
                .arg(&data)
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
        })?;
        let options = format!("-k {} -c listen_addresses=''", cluster.root.display());
        cluster.run_tool("pg_ctl", |c| {
            c.arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(cluster.root.join("log"))
                .args(["-w", "-o", &options, "start"]);
        })?;
        Ok(cluster)
    }

    /// The connection string of the superuser, over the cluster's socket.
    pub fn url(&self) -> String {
        format!("host={} user=postgres dbname=postgres", self.root.display())
    }

    fn run_tool(&self, tool: &str, args: impl FnOnce(&mut Command)) -> Result {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        args(&mut command);
        command.current_dir(&self.root);
        run(&mut command, tool)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.root.join("data");
        let _ = self.run_tool("pg_ctl", |c| {
            c.arg("-D").arg(&data).args(["-m", "fast", "-w", "stop"]);
        });
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Where Debian puts the server's programs (the newest major version installed).
fn bin_dir() -> Result<PathBuf> {
    let base = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(base)
        .map_err(|_| "PostgreSQL is not installed; run `cargo xtask setup`".to_owned())?
        .filter_map(std::result::Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no PostgreSQL server under /usr/lib/postgresql".into())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn run(command: &mut Command, what: &str) -> Result {
    let out = command.output().map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}
