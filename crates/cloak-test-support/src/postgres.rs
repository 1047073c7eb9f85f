//! A throwaway PostgreSQL cluster: `initdb` in a temporary directory, a server on a free
//! loopback port, stopped (immediately) and deleted on drop.
//!
//! `initdb` refuses to run as root, so under root the cluster belongs to the `postgres` user
//! (Debian's package makes it) and every server program runs through `runuser`. The server
//! binaries are Debian's (`/usr/lib/postgresql/VERSION/bin`); without them a test is skipped
//! out loud, or fails under `CLOAK_REQUIRE_POSTGRES=1` (which `.ci/run` sets once it has
//! installed the `postgresql` package).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

use crate::deps::missing;

/// A running PostgreSQL cluster (trust authentication, loopback only; without fsync unless
/// started [durable](TempPostgres::start_durable)).
#[derive(Debug)]
pub struct TempPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl TempPostgres {
    /// Starts a cluster, or `None` (after skipping out loud, or failing under
    /// `CLOAK_REQUIRE_POSTGRES=1`) when no PostgreSQL server is installed.
    pub fn start() -> Option<Self> {
        Self::start_with(false, None)
    }

    /// As [`TempPostgres::start`], but committing durably (fsync, synchronous commit), as a
    /// production database does: for benchmarks.
    pub fn start_durable() -> Option<Self> {
        Self::start_with(true, None)
    }

    /// As [`TempPostgres::start`], but accepting TCP connections over TLS only, with this
    /// certificate chain and private key (PEM).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Option<Self> {
        Self::start_with(false, Some((cert_pem, key_pem)))
    }

    fn start_with(durable: bool, tls: Option<(&str, &str)>) -> Option<Self> {
        let Some(bin) = server_bin() else {
            missing(
                "CLOAK_REQUIRE_POSTGRES",
                "there is no PostgreSQL server (apt-get install postgresql)",
            );
            return None;
        };
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("cloak-pg-")
            .tempdir()
            .expect("a temporary directory");
        if as_postgres {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()));
        }
        let port = free_port();
        let cluster = Self {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = cluster.data();
        cluster.run_bin(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        if let Some((cert, key)) = tls {
            cluster.require_tls(cert, key);
        }
        let relaxed = if durable {
            ""
        } else {
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        };
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200{relaxed}",
            cluster.dir.path().display()
        );
        let log = format!("{}/server.log", cluster.dir.path().display());
        cluster.run_bin(
            "pg_ctl",
            &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
        );
        Some(cluster)
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates the database `name` and returns its URL (user `postgres`, no password).
    pub fn database(&self, name: &str) -> String {
        let port = self.port.to_string();
        self.run_bin(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", name],
        );
        self.url(name)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs SQL in database `name` through `psql` (for tests that tamper with rows); its output.
    pub fn psql(&self, name: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let out = self.run_bin(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                name,
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Turns TLS on with `cert` and `key`, and lets TCP clients in only over it.
    fn require_tls(&self, cert: &str, key: &str) {
        let data = std::path::Path::new(&self.data()).to_path_buf();
        let write = |name: &str, contents: &str, mode: u32| {
            let path = data.join(name);
            std::fs::write(&path, contents).expect("a cluster file");
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .expect("its mode");
            path
        };
        let cert = write("server.crt", cert, 0o644);
        let key = write("server.key", key, 0o600);
        let conf = data.join("postgresql.conf");
        let mut settings = std::fs::read_to_string(&conf).expect("postgresql.conf");
        settings
            .push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        write("postgresql.conf", &settings, 0o600);
        write(
            "pg_hba.conf",
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
            0o600,
        );
        if self.as_postgres {
            run(Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&cert)
                .arg(&key)
                .arg(&conf)
                .arg(data.join("pg_hba.conf")));
        }
    }

    fn data(&self) -> String {
        format!("{}/data", self.dir.path().display())
    }

    fn run_bin(&self, program: &str, args: &[&str]) -> Output {
        run(self.command(program).args(args))
    }

    /// The server program `program`, run as the cluster's owner, in the cluster's directory.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        command.current_dir(self.dir.path());
        command
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The newest `/usr/lib/postgresql/VERSION/bin` with `initdb` in it.
fn server_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn run(command: &mut Command) -> Output {
    let out = command.output().expect("the program runs");
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
