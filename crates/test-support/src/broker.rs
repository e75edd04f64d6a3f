//! Disturbing the shared RabbitMQ: [`BrokerLock`], held by every test that disturbs it for
//! everyone, and [`rabbitmqctl`].

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The lock every test (and script) that disturbs the shared broker for everyone holds for
/// the duration: a restart, a memory alarm, closing every connection.
pub const BROKER_LOCK: &str = "/tmp/fractile-broker.lock";

/// Holds [`BROKER_LOCK`] until dropped, through `flock(1)`: a shell opens the lock file,
/// takes the lock on it and becomes `cat` reading this process's pipe, so the lock goes
/// when the guard drops the pipe, and also when this process dies without dropping it.
pub struct BrokerLock {
    holder: Child,
}

impl BrokerLock {
    /// Waits for the lock, at most `limit`.
    pub fn acquire(limit: Duration) -> BrokerLock {
        Self::acquire_file(BROKER_LOCK, limit)
    }

    fn acquire_file(path: &str, limit: Duration) -> BrokerLock {
        let script =
            "exec 9>>\"$0\" && flock --timeout \"$1\" 9 && echo locked && exec cat > /dev/null";
        let mut holder = Command::new("sh")
            .args(["-c", script, path, &limit.as_secs().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh runs");
        let stdout = holder.stdout.take().expect("piped");
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        assert_eq!(
            line.trim(),
            "locked",
            "could not take {path} within {limit:?}"
        );
        BrokerLock { holder }
    }
}

impl Drop for BrokerLock {
    fn drop(&mut self) {
        // End of input: `cat` exits, and the lock with it.
        drop(self.holder.stdin.take());
        let _ = self.holder.wait();
    }
}

/// Runs `rabbitmqctl` with `args` and returns its output; fails the test if it fails.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isolation::unique_prefix;

    #[test]
    fn the_broker_lock_is_held_until_dropped() {
        let path = std::env::temp_dir().join(format!("{}lock", unique_prefix()));
        let path = path.to_str().expect("utf-8").to_owned();
        let free = || {
            Command::new("flock")
                .args(["--nonblock", &path, "true"])
                .status()
                .expect("flock runs")
                .success()
        };
        let lock = BrokerLock::acquire_file(&path, Duration::from_secs(5));
        assert!(!free(), "held");
        drop(lock);
        assert!(free(), "released");
        let _ = std::fs::remove_file(&path);
    }
}
