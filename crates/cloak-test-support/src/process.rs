//! Long-running processes — servers, brokers, proxies — started as an operator starts them:
//! logs to a file, the address read from the line the program prints once it listens, killed
//! when the test is done.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A child process, killed (and reaped) on drop.
#[derive(Debug)]
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A started process: the URL it printed, its standard output up to that point (and the lines
/// asked for after it), and its log file.
#[derive(Debug)]
pub struct Spawned {
    /// The process.
    pub child: Killed,
    /// The first word after the marker on the listening line.
    pub url: String,
    /// Standard output, as far as it was read.
    pub stdout: Vec<String>,
    /// The log (standard error).
    pub log: PathBuf,
}

impl Spawned {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }
}

/// A predicate over what a process printed: has it printed enough?
type Ready<'a> = dyn Fn(&[String]) -> bool + 'a;

/// How to start a process and know it is ready.
pub struct Launch<'a> {
    exe: &'a Path,
    args: Vec<String>,
    log: PathBuf,
    marker: String,
    then: Box<Ready<'a>>,
}

impl<'a> Launch<'a> {
    /// `exe args`, logging to `log` at debug level, ready once it prints a line starting with
    /// `marker` (the URL is the word that follows it).
    pub fn new(exe: &'a Path, args: &[impl AsRef<str>], log: &Path, marker: &str) -> Self {
        Self {
            exe,
            args: args.iter().map(|a| a.as_ref().to_owned()).collect(),
            log: log.to_owned(),
            marker: marker.to_owned(),
            then: Box::new(|_| true),
        }
    }

    /// After the marker, keep reading standard output until `done` holds for what was read.
    pub fn then_read_until(mut self, done: impl Fn(&[String]) -> bool + 'a) -> Self {
        self.then = Box::new(done);
        self
    }

    /// Starts the process and waits until it is ready; panics with its output and log if it
    /// stops first.
    pub fn spawn(self) -> Spawned {
        let what = format!("{} {:?}", self.exe.display(), self.args);
        self.try_spawn()
            .unwrap_or_else(|(code, output)| panic!("{what} stopped (exit {code:?}): {output}"))
    }

    /// Starts the process and waits until it is ready; when it exits first, its exit code and
    /// what it printed (standard output, then the log).
    pub fn try_spawn(self) -> Result<Spawned, (Option<i32>, String)> {
        // Logs go to a file: a pipe nobody reads would fill and stall the process.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("{}: {e}", self.log.display()));
        let mut child = Command::new(self.exe)
            .args(&self.args)
            .env("CLOAK_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.exe.display()));
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut stdout = Vec::new();
        let url = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                let code = child.wait().ok().and_then(|status| status.code());
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err((code, format!("{}\n{log}", stdout.join("\n"))));
            };
            stdout.push(line.clone());
            if let Some(rest) = line.strip_prefix(&self.marker) {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
        };
        while !(self.then)(&stdout) {
            match lines.next() {
                Some(Ok(line)) => stdout.push(line),
                _ => break,
            }
        }
        // Keep reading whatever else it prints, so its stdout never hits a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Spawned {
            child: Killed(child),
            url,
            stdout,
            log: self.log,
        })
    }
}

impl std::fmt::Debug for Launch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launch")
            .field("exe", &self.exe)
            .field("args", &self.args)
            .field("marker", &self.marker)
            .finish_non_exhaustive()
    }
}

/// A free port on loopback (bound and released: another process could take it meanwhile, so
/// only for programs that cannot bind port 0 themselves).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
