//! nginx from the distribution as an untrusted, TLS-terminating load balancer on loopback: one
//! process, no user switch, everything under one directory, a self-signed certificate for
//! `localhost` that the test's clients trust as the balancer's CA. Killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{Killed, free_port};

/// A running nginx.
pub struct Nginx {
    _child: Killed,
    /// `https://localhost:PORT`.
    pub url: String,
    /// The balancer's certificate (PEM), for clients to trust.
    pub ca: PathBuf,
    /// Its directory (logs, configuration).
    pub root: PathBuf,
}

/// Starts nginx in `dir/nginx`, or `None` where there is none (CI installs it and sets
/// `CLOAK_REQUIRE_NGINX=1`). `http(root, port)` gives the inside of the `http` block after the
/// temporary paths: typically `upstream`s and a `server` listening on `127.0.0.1:port` with
/// `ssl_certificate root/lb.pem` and `ssl_certificate_key root/lb.key`.
pub fn start(dir: &Path, http: impl FnOnce(&str, u16) -> String) -> Option<Nginx> {
    let binary = crate::deps::nginx()?;
    let root = dir.join("nginx");
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let ca = root.join("lb.pem");
    std::fs::write(&ca, certified.cert.pem()).unwrap();
    std::fs::write(root.join("lb.key"), certified.signing_key.serialize_pem()).unwrap();
    let port = free_port();
    let r = root.to_str().unwrap();
    let inner = http(r, port);
    let config = format!(
        r#"daemon off;
master_process off;
pid {r}/nginx.pid;
error_log {r}/error.log info;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {r}/tmp/body;
    proxy_temp_path {r}/tmp/proxy;
    fastcgi_temp_path {r}/tmp/fastcgi;
    uwsgi_temp_path {r}/tmp/uwsgi;
    scgi_temp_path {r}/tmp/scgi;
{inner}
}}
"#
    );
    std::fs::write(root.join("nginx.conf"), config).unwrap();
    let child = Command::new(binary)
        .args(["-p", r, "-c", root.join("nginx.conf").to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(root.join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let child = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start: {}",
            std::fs::read_to_string(root.join("stderr.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Nginx {
        _child: child,
        url: format!("https://localhost:{port}"),
        ca,
        root,
    })
}
