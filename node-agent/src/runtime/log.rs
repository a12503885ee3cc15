//! Container logs in the CRI format kubelet reads (and `kubectl logs
//! --timestamps` shows): one line per line of output,
//! `<RFC 3339 UTC, 9 digits> <stdout|stderr> <F|P> <text>`, where `P`
//! marks a piece of a line longer than [`MAX_LINE`] that goes on in the
//! next entry and `F` ends a line. Files rotate by size ([`LogFile`]).

use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Longest piece of a line in one entry (containerd's limit).
pub const MAX_LINE: usize = 16 * 1024;

/// `2026-11-29T19:00:00.000000000Z`.
pub fn format_time(ts: jiff::Timestamp) -> String {
    let dt = jiff::tz::Offset::UTC.to_datetime(ts);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.subsec_nanosecond()
    )
}

/// The log entries for one chunk of output (`chunk` without its newline;
/// `complete` when a newline or the end of the stream ended it).
pub fn entries(ts: &str, stream: &str, chunk: &[u8], complete: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.len() + 48);
    let pieces: Vec<&[u8]> = if chunk.is_empty() {
        vec![chunk]
    } else {
        chunk.chunks(MAX_LINE).collect()
    };
    let last = pieces.len() - 1;
    for (i, piece) in pieces.into_iter().enumerate() {
        let tag = if i == last && complete { "F" } else { "P" };
        out.extend_from_slice(format!("{ts} {stream} {tag} ").as_bytes());
        out.extend_from_slice(piece);
        out.push(b'\n');
    }
    out
}

/// A container's log file, rotated by size as the kubelet's
/// `containerLogMaxSize`/`containerLogMaxFiles` do: when a write would take
/// it over `max_bytes`, `0.log` becomes `0.log.1` (`.1` becomes `.2`, ...,
/// keeping `max_files` files in all) and a new `0.log` starts.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: std::fs::File,
    written: u64,
    max_bytes: Option<u64>,
    max_files: u32,
}

impl LogFile {
    /// Opens `path` for appending; `max_bytes: None` never rotates.
    pub fn open(path: &Path, max_bytes: Option<u64>, max_files: u32) -> io::Result<LogFile> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let written = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            written,
            max_bytes,
            max_files: max_files.max(1),
        })
    }

    /// The name of the `n`-th rotated file.
    pub fn rotated(path: &Path, n: u32) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(max) = self.max_bytes {
            if self.written > 0 && self.written + bytes.len() as u64 > max {
                self.rotate()?;
            }
        }
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.max_files - 1;
        if keep == 0 {
            self.file.set_len(0)?;
        } else {
            let _ = std::fs::remove_file(Self::rotated(&self.path, keep));
            for n in (1..keep).rev() {
                let _ = std::fs::rename(
                    Self::rotated(&self.path, n),
                    Self::rotated(&self.path, n + 1),
                );
            }
            std::fs::rename(&self.path, Self::rotated(&self.path, 1))?;
            self.file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        }
        self.written = 0;
        Ok(())
    }
}

/// Copies `reader` into `log` as CRI entries tagged `stream` until the end
/// of the stream; keeps the last bytes of output in `tail` (for a start
/// error's message).
pub fn copy_stream(
    reader: impl io::Read,
    stream: &str,
    log: &Arc<Mutex<LogFile>>,
    tail: &Arc<Mutex<Vec<u8>>>,
) -> io::Result<()> {
    let mut reader = io::BufReader::with_capacity(MAX_LINE, reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        // Bounded read: a line without newline ends at MAX_LINE bytes.
        let n = io::Read::take(&mut reader, MAX_LINE as u64).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        let complete = line.last() == Some(&b'\n');
        if complete {
            line.pop();
        }
        // A full-length piece without newline goes on in the next entry;
        // a short one without newline is the end of the stream.
        let complete = complete || n < MAX_LINE;
        let bytes = entries(
            &format_time(jiff::Timestamp::now()),
            stream,
            &line,
            complete,
        );
        if let Ok(mut file) = log.lock() {
            file.write_all(&bytes)?;
        }
        if let Ok(mut tail) = tail.lock() {
            tail.extend_from_slice(&line);
            tail.push(b'\n');
            let excess = tail.len().saturating_sub(4096);
            tail.drain(..excess);
        }
    }
}

// Reading (what kubelet serves `kubectl logs` from).

/// One line of a CRI log file (runtime/log.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub time: jiff::Timestamp,
    /// `stdout` or `stderr`.
    pub stream: &'a [u8],
    /// `P`: the line goes on in the next entry.
    pub partial: bool,
    pub text: &'a [u8],
}

/// Parses one line of a CRI log file (without its newline).
pub fn parse_entry(line: &[u8]) -> Option<Entry<'_>> {
    let mut fields = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    let stream = fields.next()?;
    let tags = fields.next()?;
    // Tags are `:`-separated; the first says full or partial.
    let partial = match tags.split(|&b| b == b':').next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(Entry {
        time,
        stream,
        partial,
        text: fields.next().unwrap_or_default(),
    })
}

/// A time as Go's `time.RFC3339Nano` prints it (kubelet's `--timestamps`
/// format): UTC, trailing zeros of the fraction dropped.
pub fn format_rfc3339_nano(time: jiff::Timestamp) -> String {
    let full = format_time(time);
    // `…:SS.nnnnnnnnnZ`
    let Some(dot) = full.rfind('.') else {
        return full;
    };
    let fraction = full[dot + 1..full.len() - 1].trim_end_matches('0');
    if fraction.is_empty() {
        format!("{}Z", &full[..dot])
    } else {
        format!("{}.{fraction}Z", &full[..dot])
    }
}

/// Where the last `n` lines of the log in `buf` start (a line being one
/// or more entries, the last of them `F`; a trailing run of `P` entries
/// counts as a line too). `buf` is the end of the file, from its start
/// when `whole`; without enough lines in a partial `buf`, `None`: read
/// more. Bytes after the last newline (an entry being written) are not
/// part of any line.
pub fn tail_start(buf: &[u8], whole: bool, n: u64) -> Option<usize> {
    let Some(last_newline) = buf.iter().rposition(|&b| b == b'\n') else {
        return whole.then_some(0);
    };
    let end = last_newline + 1;
    if n == 0 {
        return Some(end);
    }
    // The first whole entry: in a partial buffer, the first bytes are the
    // end of an entry that started before it.
    let first = if whole {
        0
    } else {
        buf.iter().position(|&b| b == b'\n')? + 1
    };
    let mut lines = 0u64;
    let mut entry_end = end;
    let mut is_last = true;
    while entry_end > first {
        let start = buf[first..entry_end - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(first, |i| first + i + 1);
        let partial = parse_entry(&buf[start..entry_end - 1]).is_some_and(|e| e.partial);
        if !partial || is_last {
            if lines == n {
                return Some(entry_end);
            }
            lines += 1;
        }
        is_last = false;
        entry_end = start;
    }
    whole.then_some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_nine_digits_in_utc() {
        let ts: jiff::Timestamp = "2026-11-29T19:00:00.5+01:00".parse().unwrap();
        assert_eq!(format_time(ts), "2026-11-29T18:00:00.500000000Z");
    }

    #[test]
    fn lines_become_entries() {
        let ts = "2026-11-29T19:00:00.000000000Z";
        assert_eq!(
            entries(ts, "stdout", b"hello", true),
            b"2026-11-29T19:00:00.000000000Z stdout F hello\n"
        );
        assert_eq!(
            entries(ts, "stderr", b"", true),
            b"2026-11-29T19:00:00.000000000Z stderr F \n"
        );
        let long = vec![b'a'; MAX_LINE + 3];
        let text = String::from_utf8(entries(ts, "stdout", &long, true)).unwrap();
        let tags: Vec<&str> = text.lines().map(|l| l.split(' ').nth(2).unwrap()).collect();
        assert_eq!(tags, ["P", "F"]);
    }

    #[test]
    fn streams_copy_with_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let log = Arc::new(Mutex::new(LogFile::open(&path, None, 5).unwrap()));
        let tail = Arc::new(Mutex::new(Vec::new()));
        let mut input = b"one\ntwo\n".to_vec();
        input.extend(vec![b'x'; MAX_LINE + 1]);
        input.extend(b"\nlast");
        copy_stream(&input[..], "stdout", &log, &tail).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let parts: Vec<(String, String)> = text
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.splitn(4, ' ').collect();
                (f[2].to_string(), f[3].chars().take(4).collect())
            })
            .collect();
        let expect: Vec<(String, String)> = [
            ("F", "one"),
            ("F", "two"),
            ("P", "xxxx"),
            ("F", "x"),
            ("F", "last"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(parts, expect);
        assert!(String::from_utf8_lossy(&tail.lock().unwrap()).ends_with("last\n"));
    }

    #[test]
    fn logs_rotate_by_size_keeping_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut log = LogFile::open(&path, Some(10), 3).unwrap();
        for line in ["aaaaaa\n", "bbbbbb\n", "cccccc\n", "dddddd\n"] {
            log.write_all(line.as_bytes()).unwrap();
        }
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        assert_eq!(read(path.clone()), "dddddd\n");
        assert_eq!(read(LogFile::rotated(&path, 1)), "cccccc\n");
        assert_eq!(read(LogFile::rotated(&path, 2)), "bbbbbb\n");
        assert!(!LogFile::rotated(&path, 3).exists(), "3 files in all");
        // Without a limit nothing rotates.
        let other = dir.path().join("1.log");
        let mut log = LogFile::open(&other, None, 3).unwrap();
        log.write_all(&[b'x'; 100]).unwrap();
        assert!(!LogFile::rotated(&other, 1).exists());
    }
}
