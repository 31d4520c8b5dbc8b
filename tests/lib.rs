//! Support for the end-to-end tests: run the real `adlake` and
//! `adlake-ingest` binaries and talk to them through real clients.
//!
//! The binaries are the ones cargo built next to the test executable
//! (`target/<profile>/`), or those in `ADLAKE_BIN_DIR`. Build them first:
//! `cargo build --bins` (the README's test command does).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a server may take to open the warehouse and bind its ports.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The directory holding the workspace's binaries.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ADLAKE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/e2e-<hash> → target/<profile>
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory")
        .to_path_buf()
}

/// The path of one of the workspace's binaries, checked to exist.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --bins` first (or set ADLAKE_BIN_DIR)",
        path.display()
    );
    path
}

/// Output of a finished command.
#[derive(Debug)]
pub struct Output {
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

/// Runs `adlake-ingest` with `args` to completion.
pub fn run_ingest(args: &[&str]) -> Output {
    run(&bin("adlake-ingest"), args, &[])
}

/// Runs `adlake` with `args` to completion (for commands that exit, such as
/// a startup error).
pub fn run_server_to_exit(args: &[&str]) -> Output {
    run(&bin("adlake"), args, &[])
}

/// As [`run_server_to_exit`], with `env` (name, value) added to the
/// server's environment.
pub fn run_server_to_exit_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    run(&bin("adlake"), args, env)
}

fn run(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(program)
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A running `adlake` server, killed when dropped.
#[derive(Debug)]
pub struct TestServer {
    child: Child,
    /// `host:port` of the Flight SQL / gRPC listener.
    pub flight_addr: String,
    /// `host:port` of the HTTP listener.
    pub http_addr: String,
    stderr_path: PathBuf,
    _stderr_dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts `adlake` on free ports over `warehouse` with `auth_file` and
    /// waits until it says it is ready.
    pub fn start(warehouse: &Path, auth_file: Option<&Path>, extra: &[&str]) -> Self {
        Self::start_with_env(warehouse, auth_file, extra, &[])
    }

    /// As [`TestServer::start`], with `env` (name, value) added to the
    /// server's environment.
    pub fn start_with_env(
        warehouse: &Path,
        auth_file: Option<&Path>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let stderr_dir = tempfile::tempdir().expect("temp dir");
        let stderr_path = stderr_dir.path().join("adlake.stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut cmd = Command::new(bin("adlake"));
        cmd.arg("--warehouse")
            .arg(warehouse)
            .args(["--flight-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr);
        if let Some(auth) = auth_file {
            cmd.arg("--auth-file").arg(auth);
        }
        let mut child = cmd.spawn().expect("spawn adlake");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("adlake ready ") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "adlake did not become ready within {READY_TIMEOUT:?}; stderr:\n{}",
                    read_to_string(&stderr_path)
                );
            }
        };
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in ready line {line:?}"))
                .to_string()
        };
        Self {
            flight_addr: field("flight="),
            http_addr: field("http="),
            child,
            stderr_path,
            _stderr_dir: stderr_dir,
        }
    }

    /// The Flight SQL endpoint as a URL.
    pub fn flight_url(&self) -> String {
        format!("http://{}", self.flight_addr)
    }

    /// What the server logged so far.
    pub fn stderr(&self) -> String {
        read_to_string(&self.stderr_path)
    }

    /// A plain HTTP/1.1 GET against the server's HTTP listener; returns
    /// the status code and body.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        use std::io::Write;
        let mut stream =
            std::net::TcpStream::connect(&self.http_addr).expect("connect to http listener");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.http_addr
        )
        .expect("write request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read response");
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad HTTP response {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_to_string(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Hex SHA-256 of `token`, as the auth file stores it.
pub fn sha256_hex(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// Writes an auth file with one principal per `(name, token, clients)`.
pub fn write_auth_file(path: &Path, principals: &[(&str, &str, &[&str])]) {
    let mut text = String::new();
    for (name, token, clients) in principals {
        let clients: Vec<String> = clients.iter().map(|c| format!("{c:?}")).collect();
        text.push_str(&format!(
            "[[principal]]\nname = {name:?}\ntoken_sha256 = \"{}\"\nclients = [{}]\n\n",
            sha256_hex(token),
            clients.join(", ")
        ));
    }
    std::fs::write(path, text).expect("write auth file");
}
