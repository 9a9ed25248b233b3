//! The access log: one line per request, written when its response ends, in the
//! Combined Log Format with two fields added: the response time in milliseconds and
//! whether the body was sent whole (`complete`) or cut (`cut`).
//!
//! ```text
//! 127.0.0.1 - - [29/Nov/2026:10:33:36 +0000] "GET /objects/af13… HTTP/1.1" 200 1048576 "-" "curl/7.88.1" 12 complete
//! ```
//!
//! With a file, lines are appended to it, and [`AccessLog::reopen`] (on SIGHUP)
//! reopens it by name, for log rotation; without one they go to `tracing` at info
//! level, target `deltaward_mirror::access`.

use std::{
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, SystemTime},
};

use crate::error::{Error, Result};

/// Where access lines go.
#[derive(Debug)]
pub struct AccessLog {
    path: Option<PathBuf>,
    file: Mutex<Option<std::fs::File>>,
}

/// One request, as logged.
#[derive(Debug, Clone)]
pub struct Line {
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's certificate identity (mutual TLS), if any.
    pub user: Option<String>,
    /// Method.
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: &'static str,
    /// Status code.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// `User-Agent`.
    pub agent: String,
    /// From the request to the end of the response.
    pub took: Duration,
    /// Whether the body was sent whole.
    pub complete: bool,
}

fn open(path: &Path) -> Result<std::fs::File> {
    deltaward_engine::open_append(path).map_err(|source| Error::Io {
        action: "opening",
        path: path.to_path_buf(),
        source,
    })
}

impl AccessLog {
    /// A log to `path`, or to `tracing` without one.
    pub fn new(path: Option<&Path>) -> Result<Self> {
        let file = path.map(open).transpose()?;
        Ok(Self {
            path: path.map(Path::to_path_buf),
            file: Mutex::new(file),
        })
    }

    /// Reopens the file by name (after it was rotated away).
    pub fn reopen(&self) -> Result<()> {
        if let Some(p) = &self.path {
            let f = open(p)?;
            *self.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
        }
        Ok(())
    }

    /// Writes one line.
    pub fn write(&self, l: &Line) {
        let text = format!(
            "{} - {} [{}] \"{} {} {}\" {} {} \"-\" \"{}\" {} {}",
            l.peer.ip(),
            l.user.as_deref().unwrap_or("-"),
            clf_time(SystemTime::now()),
            l.method,
            l.target.escape_default(),
            l.version,
            l.status,
            l.bytes,
            l.agent.escape_default(),
            l.took.as_millis(),
            if l.complete { "complete" } else { "cut" },
        );
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        match f.as_mut() {
            Some(file) => {
                if let Err(e) = writeln!(file, "{text}") {
                    tracing::warn!("writing the access log: {e}");
                }
            }
            None => tracing::info!(target: "deltaward_mirror::access", "{text}"),
        }
    }
}

/// `29/Nov/2026:10:33:36 +0000`.
fn clf_time(t: SystemTime) -> String {
    // 2026-11-29T10:33:36Z
    let s = humantime::format_rfc3339_seconds(t).to_string();
    let month = |m: &str| {
        [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ]
        .get(m.parse::<usize>().unwrap_or(1).saturating_sub(1))
        .copied()
        .unwrap_or("Jan")
    };
    match (s.get(0..4), s.get(5..7), s.get(8..10), s.get(11..19)) {
        (Some(y), Some(m), Some(d), Some(hms)) => format!("{d}/{}/{y}:{hms} +0000", month(m)),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_in_common_log_format() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_035_416 - 86_400 - 600);
        assert_eq!(clf_time(t), "29/Nov/2026:10:33:36 +0000");
    }

    #[test]
    fn lines_go_to_the_file_and_survive_rotation() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("access.log");
        let log = AccessLog::new(Some(&p)).expect("log");
        let line = Line {
            peer: "127.0.0.1:5000".parse().expect("addr"),
            user: None,
            method: "GET".into(),
            target: "/root.json".into(),
            version: "HTTP/1.1",
            status: 200,
            bytes: 42,
            agent: "curl/8".into(),
            took: Duration::from_millis(3),
            complete: true,
        };
        log.write(&line);
        let rotated = dir.path().join("access.log.1");
        #[allow(clippy::disallowed_methods)] // reason: the test rotates the log as logrotate would
        std::fs::rename(&p, &rotated).expect("rotate");
        log.reopen().expect("reopen");
        log.write(&Line {
            status: 404,
            complete: false,
            ..line
        });
        let old = std::fs::read_to_string(&rotated).expect("old");
        let new = std::fs::read_to_string(&p).expect("new");
        assert!(
            old.contains("\"GET /root.json HTTP/1.1\" 200 42 \"-\" \"curl/8\" 3 complete"),
            "{old}"
        );
        assert!(new.starts_with("127.0.0.1 - - ["), "{new}");
        assert!(
            new.contains(" 404 42 ") && new.trim_end().ends_with("cut"),
            "{new}"
        );
    }
}
