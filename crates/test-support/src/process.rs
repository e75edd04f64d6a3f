//! Binaries of this workspace run as processes: [`workspace_binary`] builds one and gives
//! its path; [`Process`] runs it with its output collected, to wait for a line, signal it
//! and check how it exits.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The path of a binary of this workspace, built first (`cargo build -p PACKAGE`, a no-op
/// when it is up to date): a package's tests get only their own binaries from Cargo
/// (`CARGO_BIN_EXE_*`), and the system tests run the api's and the worker's. Uses the
/// `cargo` and target directory of the test run.
pub fn workspace_binary(package: &str) -> std::path::PathBuf {
    // The test binary is `<target>/<profile>/deps/<name>-<hash>`; binaries sit in
    // `<target>/<profile>`.
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("<target>/<profile>/deps");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(&cargo);
    build.args(["build", "--quiet", "-p", package, "--bin", package]);
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    let built = build.status().expect("cargo runs");
    assert!(built.success(), "cargo build -p {package} failed");
    let binary = profile_dir.join(package);
    assert!(binary.exists(), "{} was not built", binary.display());
    binary
}

/// A binary run for its exit: stdout and stderr collected line by line as they come, so a
/// test can wait for a log line, signal the process, and check what it printed on the way
/// out.
pub struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `command` with both streams captured.
    pub fn spawn(mut command: Command) -> Process {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        collect(stdout, Arc::clone(&lines));
        collect(stderr, Arc::clone(&lines));
        Process { child, lines }
    }

    /// Everything printed so far, one line per item.
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().expect("not poisoned").clone()
    }

    /// The first line printed that satisfies `matches`, waiting up to `limit`.
    pub fn wait_for_line(&self, limit: Duration, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.output().into_iter().find(|l| matches(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no matching line within {limit:?}; output:\n{}",
                self.output().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it with SIGKILL (`kill -9`: no shutdown code runs) and reaps it.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -TERM failed");
    }

    /// Waits for the exit as [`Process::wait_exit`] does and returns everything printed
    /// with it: for a process expected to stop on its own, as at a configuration error.
    pub fn wait_exit_with_output(self, limit: Duration) -> (ExitStatus, String) {
        let lines = Arc::clone(&self.lines);
        let status = self.wait_exit(limit);
        let output = lines.lock().expect("not poisoned").join("\n");
        (status, output)
    }

    /// Waits for the exit, at most `limit` (the process is killed past it and the test
    /// fails), and checks that nothing panicked on the way: a panic at exit is a bug even
    /// when the exit status looks right.
    pub fn wait_exit(mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "still running after {limit:?}; output:\n{}",
                    self.output().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The collecting threads read to the end of the pipes; give them a moment.
        std::thread::sleep(Duration::from_millis(200));
        let output = self.output().join("\n");
        assert!(
            !output.contains("panicked"),
            "the process panicked ({status:?}):\n{output}"
        );
        status
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn collect(stream: impl Read + Send + 'static, lines: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            lines.lock().expect("not poisoned").push(line);
        }
    });
}
