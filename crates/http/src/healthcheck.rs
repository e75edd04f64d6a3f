//! `fractile-api healthcheck` / `fractile-worker healthcheck`: asks this container's own admin
//! port for `/readyz` and exits 0 or 1, so a compose or Docker healthcheck needs no shell
//! and no curl in the image (the runtime image has neither).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

/// Time allowed for the whole check.
const TIMEOUT: Duration = Duration::from_secs(2);

/// If the first argument is `healthcheck`, runs the check against the admin address from
/// `FRACTILE_ADMIN_LISTEN` (else `default_admin`) and returns the exit code to end with.
pub fn run_if_asked(default_admin: &str) -> Option<ExitCode> {
    if std::env::args().nth(1).as_deref() != Some("healthcheck") {
        return None;
    }
    let admin = std::env::var("FRACTILE_ADMIN_LISTEN").unwrap_or_else(|_| default_admin.to_owned());
    Some(match check(&admin) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("unhealthy: {why}");
            ExitCode::FAILURE
        }
    })
}

/// GET /readyz on the admin address (an unspecified IP means this host's loopback).
pub fn check(admin: &str) -> Result<(), String> {
    let mut addr: SocketAddr = admin.parse().map_err(|e| format!("{admin:?}: {e}"))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 16];
    let n = stream.read(&mut head).map_err(|e| e.to_string())?;
    let status = String::from_utf8_lossy(&head[..n]);
    if status.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!(
            "/readyz answered {:?}",
            status.lines().next().unwrap_or("")
        ))
    }
}
