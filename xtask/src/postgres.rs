//! A private PostgreSQL server for the tests: `initdb` and `pg_ctl` on a temporary
//! directory, listening on a Unix socket inside it and, for the tests of TLS to the
//! database, on a loopback port that takes TLS only (a certificate from a CA made for the
//! run, by `openssl`) and a password; stopped and removed on drop. PostgreSQL refuses to run
//! as root, and CI runs as root: there it runs as the unprivileged `postgres` user Debian's
//! package creates.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Result;

/// The environment variable the PostgreSQL tests read their connection string from.
pub const URL_ENV: &str = "CAREKEEP_TEST_POSTGRES";

/// The same superuser over TCP and TLS (`sslmode=verify-full`, `sslrootcert=` the run's CA).
pub const TLS_URL_ENV: &str = "CAREKEEP_TEST_POSTGRES_TLS";

/// A running private cluster.
pub struct PgCluster {
    root: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    port: u16,
    password: String,
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
        let port = free_port()?;
        let password =
            format!("{:x}{:x}", std::process::id(), std::time::UNIX_EPOCH.elapsed().unwrap_or_default().as_nanos());
        let cluster = Self { root, bin, as_postgres, port, password };
        let data = cluster.root.join("data");
        cluster.run_tool("initdb", |c| {
            c.arg("-D").arg(&data).args([
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ]);
        })?;
        // TCP only with TLS: every `host` line becomes `hostssl`.
        let hba = data.join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).map_err(|e| format!("cannot read {}: {e}", hba.display()))?;
        let rules: String = rules
            .lines()
            .map(|l| {
                l.strip_prefix("host ")
                    .map_or_else(|| l.to_owned(), |rest| format!("hostssl {rest}"))
                    + "\n"
            })
            .collect();
        std::fs::write(&hba, rules).map_err(|e| format!("cannot write {}: {e}", hba.display()))?;
        let tls = cluster.make_certificates()?;
        let options = format!(
            "-k {} -c port={port} -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            cluster.root.display(),
            tls.join("server.crt").display(),
            tls.join("server.key").display()
        );
        cluster.run_tool("pg_ctl", |c| {
            c.arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(cluster.root.join("log"))
                .args(["-w", "-o", &options, "start"]);
        })?;
        let set_password = format!("ALTER ROLE postgres PASSWORD '{}'", cluster.password);
        run(
            Command::new(cluster.bin.join("psql")).args(["-X", "-q", "-d", &cluster.url(), "-c", &set_password]),
            "psql",
        )?;
        Ok(cluster)
    }

    /// A CA for this run and a certificate it signs for localhost and 127.0.0.1, in `tls/`
    /// (the key readable by the server's user only).
    fn make_certificates(&self) -> Result<PathBuf> {
        let tls = self.root.join("tls");
        std::fs::create_dir_all(&tls).map_err(|e| format!("cannot create {}: {e}", tls.display()))?;
        std::fs::write(tls.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
            .map_err(|e| format!("cannot write the certificate extensions: {e}"))?;
        let openssl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(&tls), "openssl");
        let new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        openssl(
            &[
                &["req", "-x509"][..],
                &new_key,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=carekeep-test-ca"],
            ]
            .concat(),
        )?;
        openssl(
            &[&["req"][..], &new_key, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]]
                .concat(),
        )?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ])?;
        if self.as_postgres {
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&tls), "chown")?;
        }
        run(Command::new("chmod").args(["600"]).arg(tls.join("server.key")), "chmod")?;
        Ok(tls)
    }

    /// The connection string of the superuser, over the cluster's socket.
    pub fn url(&self) -> String {
        format!("host={} port={} user=postgres dbname=postgres", self.root.display(), self.port)
    }

    /// The environment the tests read: both connection strings.
    pub fn env(&self) -> [(&'static str, String); 2] {
        let tls = format!(
            "host=127.0.0.1 port={} user=postgres password={} dbname=postgres sslmode=verify-full sslrootcert={}",
            self.port,
            self.password,
            self.root.join("tls").join("ca.pem").display()
        );
        [(URL_ENV, self.url()), (TLS_URL_ENV, tls)]
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

/// A loopback port nothing listens on right now.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free loopback port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
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
