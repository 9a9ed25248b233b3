//! The mirror's delivery log: append-only JSON lines in files under a directory,
//! each record holding the BLAKE3 of the record before it (a hash chain), and every
//! `checkpoint_every` records or `checkpoint_interval` a checkpoint signed with the
//! mirror's own minisign key (made with `deltaward keygen`; it signs only log
//! checkpoints and site approvals, never releases).
//!
//! A record is one line: `{"seq":N,"time":"…","prev":"<hex>","kind":"…","data":{…}}`,
//! and its hash is the BLAKE3 of the line's bytes (without the newline). A checkpoint
//! is a record of kind `checkpoint` whose `data.signature` is a minisign signature,
//! by the log key, of the previous record's hash (hex), with the trusted comment
//! `deltaward-log checkpoint seq=N prev=<hex>`: it vouches for every record before
//! it, whatever file they are in.
//!
//! **fsync policy.** Each record is written with one `write(2)` when it happens; the
//! file is fsynced at every checkpoint, at least once a second while records arrive,
//! and when the mirror stops (which writes a final checkpoint). A power cut can lose
//! at most the last second of records; what it leaves is still a valid chain.
//!
//! **Torn records.** A `kill -9` or a power cut can leave a last line cut short. At
//! the next start it is detected and sealed, never dropped: a newline ends it, and a
//! `seal` record names its file, offset, length and BLAKE3, chained to the last whole
//! record. `audit verify` accepts a torn line only where a seal names it.
//!
//! **Rotation.** When a file passes `max_file_bytes`, a checkpoint closes it and the
//! next record starts `log-<seq>.jsonl`; the chain goes on across files.

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use deltaward_engine::{Digest, SecretKey, TrustedKeys};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// Settings of a delivery log.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LogConfig {
    /// Records between checkpoints (default 100).
    pub checkpoint_every: u64,
    /// Longest time between a record and the checkpoint that covers it (default 60 s).
    pub checkpoint_interval: Duration,
    /// Size at which a file is closed and the next begun (default 64 MiB).
    pub max_file_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            checkpoint_every: 100,
            checkpoint_interval: Duration::from_secs(60),
            max_file_bytes: 64 << 20,
        }
    }
}

/// One record as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Position in the chain, from 0.
    pub seq: u64,
    /// RFC 3339 time.
    pub time: String,
    /// BLAKE3 (hex) of the previous record's line; 64 zeros for the first.
    pub prev: String,
    /// `start`, `stop`, `fetch`, `serve`, `report`, `approval`, `seal`, `checkpoint`.
    pub kind: String,
    /// What happened.
    pub data: Value,
}

/// The trusted comment a checkpoint's signature carries.
pub fn checkpoint_comment(seq: u64, prev: &str) -> String {
    format!("deltaward-log checkpoint seq={seq} prev={prev}")
}

const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    file: std::fs::File,
    path: PathBuf,
    bytes: u64,
    seq: u64,
    head: String,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    unsynced: bool,
    last_sync: Instant,
}

/// An open delivery log, written by one process at a time (`DIR/lock`).
#[derive(Debug)]
pub struct DeliveryLog {
    inner: Mutex<Inner>,
    key: SecretKey,
    config: LogConfig,
    _lock: std::fs::File,
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The log files of `dir`, in chain order.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err("listing", dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("log-") && n.ends_with(".jsonl"))
        })
        .collect();
    v.sort();
    Ok(v)
}

fn file_name(seq: u64) -> String {
    format!("log-{seq:020}.jsonl")
}

impl DeliveryLog {
    /// Opens (creating) the log in `dir`, signing with `key`: finds the chain's
    /// head, seals a torn last record, and writes a `start` record with `data`.
    pub fn open(dir: &Path, key: SecretKey, config: LogConfig, start: Value) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        let lock_path = dir.join("lock");
        let lock = deltaward_engine::try_lock_file(&lock_path)
            .map_err(io_err("locking", &lock_path))?
            .ok_or_else(|| Error::LogBusy {
                dir: dir.to_path_buf(),
            })?;
        let existing = files(dir)?;
        let (path, seq, head, torn) = match existing.last() {
            None => (dir.join(file_name(0)), 0, ZERO.to_owned(), None),
            Some(last) => {
                let (seq, head, torn) = scan_tail(last, &existing)?;
                (last.clone(), seq, head, torn)
            }
        };
        let file = deltaward_engine::open_append(&path).map_err(io_err("opening", &path))?;
        let bytes = file.metadata().map_err(io_err("reading", &path))?.len();
        let log = Self {
            inner: Mutex::new(Inner {
                dir: dir.to_path_buf(),
                file,
                path: path.clone(),
                bytes,
                seq,
                head,
                since_checkpoint: 0,
                last_checkpoint: Instant::now(),
                unsynced: false,
                last_sync: Instant::now(),
            }),
            key,
            config,
            _lock: lock,
        };
        if let Some(t) = torn {
            {
                let mut inner = log.lock();
                inner
                    .file
                    .write_all(b"\n")
                    .map_err(io_err("writing", &path))?;
                inner.bytes += 1;
            }
            log.append(
                "seal",
                json!({
                    "file": path.file_name().and_then(|n| n.to_str()).unwrap_or_default(),
                    "offset": t.offset,
                    "length": t.length,
                    "blake3": t.blake3.to_string(),
                    "reason": "a record cut short (the mirror was killed or lost power while writing it)",
                }),
            )?;
        }
        log.append("start", start)?;
        Ok(log)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a record, and a checkpoint when one is due.
    pub fn append(&self, kind: &str, data: Value) -> Result<()> {
        let mut inner = self.lock();
        self.write(&mut inner, kind, data)?;
        inner.since_checkpoint += 1;
        if inner.since_checkpoint >= self.config.checkpoint_every {
            self.checkpoint_locked(&mut inner)?;
        }
        Ok(())
    }

    fn write(&self, inner: &mut Inner, kind: &str, data: Value) -> Result<()> {
        if inner.bytes >= self.config.max_file_bytes && kind != "checkpoint" {
            self.checkpoint_locked(inner)?;
            let path = inner.dir.join(file_name(inner.seq));
            inner.file = deltaward_engine::open_append(&path).map_err(io_err("opening", &path))?;
            inner.path = path;
            inner.bytes = 0;
        }
        let rec = Record {
            seq: inner.seq,
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            prev: inner.head.clone(),
            kind: kind.to_owned(),
            data,
        };
        let line =
            serde_json::to_vec(&rec).map_err(|e| io_err("encoding", &inner.path)(e.into()))?;
        let mut buf = line.clone();
        buf.push(b'\n');
        let path = inner.path.clone();
        inner
            .file
            .write_all(&buf)
            .map_err(io_err("writing", &path))?;
        inner.bytes += buf.len() as u64;
        inner.head = Digest::of(&line).to_string();
        inner.seq += 1;
        inner.unsynced = true;
        Ok(())
    }

    fn checkpoint_locked(&self, inner: &mut Inner) -> Result<()> {
        let comment = checkpoint_comment(inner.seq, &inner.head);
        let signature = self
            .key
            .sign(inner.head.as_bytes(), &comment)
            .map_err(deltaward_engine::Error::from)?;
        self.write(inner, "checkpoint", json!({ "signature": signature }))?;
        inner.since_checkpoint = 0;
        inner.last_checkpoint = Instant::now();
        self.sync_locked(inner)
    }

    fn sync_locked(&self, inner: &mut Inner) -> Result<()> {
        if inner.unsynced {
            let path = inner.path.clone();
            inner.file.sync_data().map_err(io_err("syncing", &path))?;
            inner.unsynced = false;
        }
        inner.last_sync = Instant::now();
        Ok(())
    }

    /// Called about once a second: fsyncs what was written, and writes a checkpoint
    /// when records have waited `checkpoint_interval` for one.
    pub fn tick(&self) -> Result<()> {
        let mut inner = self.lock();
        if inner.since_checkpoint > 0
            && inner.last_checkpoint.elapsed() >= self.config.checkpoint_interval
        {
            return self.checkpoint_locked(&mut inner);
        }
        self.sync_locked(&mut inner)
    }

    /// Writes a `stop` record and a final checkpoint (a clean shutdown).
    pub fn close(&self) -> Result<()> {
        let mut inner = self.lock();
        self.write(&mut inner, "stop", json!({}))?;
        self.checkpoint_locked(&mut inner)
    }

    /// The next sequence number and the chain's head.
    pub fn head(&self) -> (u64, String) {
        let inner = self.lock();
        (inner.seq, inner.head.clone())
    }
}

struct Torn {
    offset: u64,
    length: u64,
    blake3: Digest,
}

/// The next seq and the head of the chain, from the last file (or, if it holds no
/// whole record, the files before it), and a torn last line if there is one.
fn scan_tail(last: &Path, all: &[PathBuf]) -> Result<(u64, String, Option<Torn>)> {
    let mut bytes = Vec::new();
    std::fs::File::open(last)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_err("reading", last))?;
    let whole_end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let (whole, rest) = bytes.split_at(whole_end);
    let mut torn = (!rest.is_empty()).then(|| Torn {
        offset: whole_end as u64,
        length: rest.len() as u64,
        blake3: Digest::of(rest),
    });
    // The last whole line that is a record is the head; a whole last line that is
    // not a record (cut exactly before its newline was lost) is torn as well.
    let mut lines: Vec<&[u8]> = whole
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    if torn.is_none() {
        if let Some(l) = lines.last() {
            if serde_json::from_slice::<Record>(l).is_err() {
                let len = l.len() as u64;
                torn = Some(Torn {
                    offset: whole_end as u64 - len - 1,
                    length: len,
                    blake3: Digest::of(l),
                });
                lines.pop();
            }
        }
    }
    if let Some(l) = lines.last() {
        let rec: Record = serde_json::from_slice(l).map_err(|e| {
            io_err("reading", last)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })?;
        return Ok((rec.seq + 1, Digest::of(l).to_string(), torn));
    }
    // Nothing whole in the last file: the head is in the one before.
    let before: Vec<PathBuf> = all
        .iter()
        .filter(|p| p.as_path() != last)
        .cloned()
        .collect();
    match before.last() {
        Some(prev) => {
            let (seq, head, _) = scan_tail(prev, &before)?;
            Ok((seq, head, torn))
        }
        None => Ok((0, ZERO.to_owned(), torn)),
    }
}

/// What `audit verify` found wrong first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Tamper {
    /// A line that is not a record, and no seal names it.
    #[error("{file} line {line}: not a record (edited, or torn without a seal)")]
    NotARecord {
        /// File.
        file: String,
        /// Line number, from 1.
        line: usize,
    },
    /// The record before this one does not hash to what this one names.
    #[error("{file} line {line}: record {seq} names a previous record that is not the one before it: record {} was edited", seq.saturating_sub(1))]
    Edited {
        /// File.
        file: String,
        /// Line.
        line: usize,
        /// This record's seq.
        seq: u64,
    },
    /// Records are missing before this one.
    #[error("{file} line {line}: records {expected} to {} are missing (deleted)", seq - 1)]
    Deleted {
        /// File.
        file: String,
        /// Line.
        line: usize,
        /// The seq expected.
        expected: u64,
        /// The seq found.
        seq: u64,
    },
    /// A record that repeats a seq already seen.
    #[error("{file} line {line}: record {seq} appears again (inserted)")]
    Inserted {
        /// File.
        file: String,
        /// Line.
        line: usize,
        /// The seq.
        seq: u64,
    },
    /// A record out of order.
    #[error("{file} line {line}: record {seq} comes after record {after} (reordered)")]
    Reordered {
        /// File.
        file: String,
        /// Line.
        line: usize,
        /// The seq found.
        seq: u64,
        /// The seq before it.
        after: u64,
    },
    /// A checkpoint whose signature does not verify, or signs another chain.
    #[error("{file} line {line}: checkpoint {seq} does not verify under the mirror key ({reason}): records before it were changed, or it is not the mirror's")]
    BadCheckpoint {
        /// File.
        file: String,
        /// Line.
        line: usize,
        /// Its seq.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// The log ends with records that no checkpoint covers.
    #[error("the log ends {count} record(s) after its last checkpoint (records {first} to {last}): it was truncated after the last checkpoint, or is still being written")]
    Truncated {
        /// Records after the last checkpoint.
        count: u64,
        /// First of them.
        first: u64,
        /// Last of them.
        last: u64,
    },
    /// No record at all.
    #[error("the log holds no record")]
    Empty,
}

/// What `audit verify` checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// Files read.
    pub files: usize,
    /// Records.
    pub records: u64,
    /// Checkpoints verified.
    pub checkpoints: u64,
    /// Torn records found sealed.
    pub sealed: u64,
    /// First and last seq.
    pub first_seq: u64,
    /// Last seq.
    pub last_seq: u64,
    /// The key id that signed the checkpoints.
    pub key_id: String,
}

/// Verifies the chain and the checkpoints of log `files` (in chain order) under
/// `keys`, naming the first bad record.
pub fn verify(
    files: &[PathBuf],
    keys: &TrustedKeys,
) -> Result<std::result::Result<Verified, Tamper>> {
    let mut v = Verified {
        files: files.len(),
        ..Verified::default()
    };
    let mut expected: Option<u64> = None;
    let mut head: Option<String> = None;
    let mut last_checkpoint: Option<u64> = None;
    let mut pending_torn: Option<(String, Digest, u64, u64, usize)> = None;
    // Every line of every file first: a record out of place is told from a missing
    // one by looking ahead.
    let mut lines: Vec<(String, usize, u64, Vec<u8>)> = Vec::new();
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io_err("reading", path))?;
        let mut offset = 0u64;
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            let this_offset = offset;
            offset += line.len() as u64 + 1;
            if !line.is_empty() {
                lines.push((name.clone(), i + 1, this_offset, line.to_vec()));
            }
        }
    }
    let seq_at = |k: usize| {
        lines
            .get(k)
            .and_then(|(_, _, _, l)| serde_json::from_slice::<Record>(l).ok())
            .map(|r| r.seq)
    };
    for (k, (name, line_no, this_offset, line)) in lines.iter().enumerate() {
        let (name, line_no, this_offset) = (name.clone(), *line_no, *this_offset);
        {
            let Ok(rec) = serde_json::from_slice::<Record>(line) else {
                if pending_torn.is_some() {
                    return Ok(Err(Tamper::NotARecord {
                        file: name,
                        line: line_no,
                    }));
                }
                pending_torn = Some((
                    name.clone(),
                    Digest::of(line),
                    this_offset,
                    line.len() as u64,
                    line_no,
                ));
                continue;
            };
            if let Some((tfile, thash, toff, tlen, tline)) = pending_torn.take() {
                let d = &rec.data;
                let named = rec.kind == "seal"
                    && d["file"] == tfile.as_str()
                    && d["offset"] == toff
                    && d["length"] == tlen
                    && d["blake3"] == thash.to_string().as_str();
                if !named {
                    return Ok(Err(Tamper::NotARecord {
                        file: tfile,
                        line: tline,
                    }));
                }
                v.sealed += 1;
            }
            match expected {
                None => v.first_seq = rec.seq,
                Some(e) if rec.seq == e => {}
                Some(e) if rec.seq > e => {
                    if (k + 1..lines.len()).any(|j| seq_at(j) == Some(e)) {
                        return Ok(Err(Tamper::Reordered {
                            file: name,
                            line: line_no,
                            seq: rec.seq,
                            after: e - 1,
                        }));
                    }
                    return Ok(Err(Tamper::Deleted {
                        file: name,
                        line: line_no,
                        expected: e,
                        seq: rec.seq,
                    }));
                }
                Some(e) if rec.seq + 1 == e => {
                    return Ok(Err(Tamper::Inserted {
                        file: name,
                        line: line_no,
                        seq: rec.seq,
                    }))
                }
                Some(e) => {
                    return Ok(Err(Tamper::Reordered {
                        file: name,
                        line: line_no,
                        seq: rec.seq,
                        after: e - 1,
                    }))
                }
            }
            if let Some(h) = &head {
                if &rec.prev != h {
                    return Ok(Err(Tamper::Edited {
                        file: name,
                        line: line_no,
                        seq: rec.seq,
                    }));
                }
            } else if rec.seq == 0 && rec.prev != ZERO {
                return Ok(Err(Tamper::Edited {
                    file: name,
                    line: line_no,
                    seq: rec.seq,
                }));
            }
            if rec.kind == "checkpoint" {
                let sig = rec.data["signature"].as_str().unwrap_or_default();
                let bad = |reason: String| Tamper::BadCheckpoint {
                    file: name.clone(),
                    line: line_no,
                    seq: rec.seq,
                    reason,
                };
                match keys.verify(rec.prev.as_bytes(), sig) {
                    Ok(comment) if comment == checkpoint_comment(rec.seq, &rec.prev) => {
                        v.key_id = deltaward_engine::signature_key_id(sig).unwrap_or_default();
                    }
                    Ok(comment) => return Ok(Err(bad(format!("it signs {comment:?}")))),
                    Err(e) => return Ok(Err(bad(e.to_string()))),
                }
                v.checkpoints += 1;
                last_checkpoint = Some(rec.seq);
            }
            head = Some(Digest::of(line).to_string());
            expected = Some(rec.seq + 1);
            v.records += 1;
            v.last_seq = rec.seq;
        }
    }
    if let Some((file, _, _, _, line)) = pending_torn {
        return Ok(Err(Tamper::NotARecord { file, line }));
    }
    let Some(next) = expected else {
        return Ok(Err(Tamper::Empty));
    };
    let covered = last_checkpoint.map_or(v.first_seq, |c| c + 1);
    if covered < next {
        return Ok(Err(Tamper::Truncated {
            count: next - covered,
            first: covered,
            last: next - 1,
        }));
    }
    Ok(Ok(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key maker (secret keys are not Clone) and the trusted public key.
    fn key() -> (impl Fn() -> SecretKey, TrustedKeys) {
        let kp = deltaward_engine::generate_keypair(None).expect("keypair");
        let mut keys = TrustedKeys::new();
        keys.add_text(&kp.public).expect("public");
        let secret = kp.secret.clone();
        (
            move || SecretKey::from_text(&secret, None).expect("secret"),
            keys,
        )
    }

    #[test]
    fn the_chain_goes_on_across_files_and_restarts() {
        let dir = tempfile::tempdir().expect("tmp");
        let (sk, keys) = key();
        let config = LogConfig {
            checkpoint_every: 7,
            checkpoint_interval: Duration::from_secs(3600),
            max_file_bytes: 2048,
        };
        for run in 0..2 {
            let log = DeliveryLog::open(dir.path(), sk(), config.clone(), json!({"run": run}))
                .expect("open");
            for i in 0..40 {
                log.append("serve", json!({"i": i, "pad": "x".repeat(40)}))
                    .expect("append");
            }
            log.close().expect("close");
        }
        let f = files(dir.path()).expect("files");
        assert!(f.len() > 3, "{f:?}");
        let v = verify(&f, &keys).expect("read").expect("verifies");
        assert_eq!(v.records, v.last_seq + 1);
        assert!(v.checkpoints >= 10);
        // A second writer is refused while the first holds the log.
        let _a = DeliveryLog::open(dir.path(), sk(), config.clone(), json!({})).expect("open");
        assert!(matches!(
            DeliveryLog::open(dir.path(), sk(), config, json!({})),
            Err(Error::LogBusy { .. })
        ));
    }

    #[test]
    fn a_torn_record_is_sealed_at_the_next_start() {
        let dir = tempfile::tempdir().expect("tmp");
        let (sk, keys) = key();
        {
            let log =
                DeliveryLog::open(dir.path(), sk(), LogConfig::default(), json!({})).expect("open");
            log.append("serve", json!({"i": 1})).expect("append");
            log.close().expect("close");
        }
        let last = files(dir.path()).expect("files").pop().expect("a file");
        let mut f = deltaward_engine::open_append(&last).expect("append");
        f.write_all(b"{\"seq\":4,\"time\":\"2026").expect("torn");
        drop(f);
        let torn = verify(&files(dir.path()).expect("files"), &keys).expect("read");
        assert!(matches!(torn, Err(Tamper::NotARecord { .. })), "{torn:?}");
        let log =
            DeliveryLog::open(dir.path(), sk(), LogConfig::default(), json!({})).expect("reopen");
        log.close().expect("close");
        let v = verify(&files(dir.path()).expect("files"), &keys)
            .expect("read")
            .expect("verifies with the seal");
        assert_eq!(v.sealed, 1);
    }
}
