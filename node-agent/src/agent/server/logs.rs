//! `kubectl logs`: a container run's CRI log file, from its tail or a
//! time, turned into the text kubelet sends, followed as it grows (and
//! across rotations) until the run ends.

use super::query::{parse_query, LogOptions};
use super::*;
use crate::runtime::log::{format_rfc3339_nano, parse_entry, tail_start};

/// Turns CRI entries into the text kubelet sends for a log request:
/// the lines as written (pieces joined), each prefixed with its time
/// under `timestamps`, entries before `since` left out, at most
/// `limit_bytes` in all.
#[derive(Debug, Clone)]
pub struct LogWriter {
    timestamps: bool,
    since: Option<jiff::Timestamp>,
    remaining: Option<u64>,
    at_line_start: bool,
}

impl LogWriter {
    pub fn new(options: &LogOptions) -> LogWriter {
        LogWriter {
            timestamps: options.timestamps,
            since: options.since,
            remaining: options.limit_bytes,
            at_line_start: true,
        }
    }

    /// Appends what one entry (a line of the file without its newline)
    /// shows to `out`; `false` once `limitBytes` is reached (stop).
    pub fn entry(&mut self, line: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(entry) = parse_entry(line) else {
            // kubelet skips lines it cannot parse.
            return true;
        };
        let starts_line = self.at_line_start;
        self.at_line_start = !entry.partial;
        if self.since.is_some_and(|since| entry.time < since) {
            return true;
        }
        let mut piece = Vec::with_capacity(entry.text.len() + 32);
        if self.timestamps && starts_line {
            piece.extend_from_slice(format_rfc3339_nano(entry.time).as_bytes());
            piece.push(b' ');
        }
        piece.extend_from_slice(entry.text);
        if !entry.partial {
            piece.push(b'\n');
        }
        match &mut self.remaining {
            None => {
                out.extend_from_slice(&piece);
                true
            }
            Some(remaining) => {
                let n = piece
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                out.extend_from_slice(&piece[..n]);
                *remaining -= n as u64;
                *remaining > 0
            }
        }
    }

    /// Appends the output of a chunk of whole entries (newline-ended).
    pub fn entries(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> bool {
        for line in chunk.split_inclusive(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            if !self.entry(line, out) {
                return false;
            }
        }
        true
    }
}

/// Says when a followed run is over: another run became current (the
/// container restarted), the pod is gone, or the process ended.
pub(super) struct RunWatch {
    pub(super) registry: Arc<Registry>,
    pub(super) containers: Arc<dyn Containers>,
    pub(super) namespace: String,
    pub(super) pod: String,
    pub(super) container: String,
    pub(super) id: String,
}

impl RunWatch {
    pub(super) fn ended(&self) -> bool {
        let current = self
            .registry
            .container(&self.namespace, &self.pod, &self.container)
            .and_then(|runs| runs.current);
        current.is_none_or(|run| run.id != self.id) || !self.containers.is_running(&self.id)
    }
}

/// Reads a log file from an offset in chunks of whole entries, and with
/// a [`RunWatch`] goes on as the file grows until the run ended and the
/// file is read to its end.
pub(super) struct LogReader {
    pub(super) path: PathBuf,
    pub(super) file: Option<tokio::fs::File>,
    pub(super) position: u64,
    pub(super) pending: Vec<u8>,
    pub(super) follow: Option<RunWatch>,
    pub(super) ending: bool,
    pub(super) draining: bool,
}

impl LogReader {
    pub(super) fn new(path: PathBuf, position: u64, follow: Option<RunWatch>) -> LogReader {
        LogReader {
            path,
            file: None,
            position,
            pending: Vec::new(),
            follow,
            ending: false,
            draining: false,
        }
    }

    /// Whether the file at the path is no longer the one being read (the
    /// log rotated, see `runtime::log::LogFile`).
    pub(super) async fn rotated(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Some(file) = &self.file else {
            return false;
        };
        match (file.metadata().await, tokio::fs::metadata(&self.path).await) {
            (Ok(open), Ok(named)) => open.ino() != named.ino(),
            _ => false,
        }
    }

    /// The next whole entries (newline-ended), or `None` at the end.
    pub(super) async fn next(&mut self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            if self.file.is_none() {
                if let Ok(mut file) = tokio::fs::File::open(&self.path).await {
                    if file.seek(io::SeekFrom::Start(self.position)).await.is_ok() {
                        self.file = Some(file);
                    }
                }
            }
            let n = match &mut self.file {
                Some(file) => file.read(&mut buf).await.unwrap_or(0),
                None => 0,
            };
            if n > 0 {
                self.position += n as u64;
                self.pending.extend_from_slice(&buf[..n]);
                if let Some(i) = self.pending.iter().rposition(|&b| b == b'\n') {
                    let rest = self.pending.split_off(i + 1);
                    return Some(std::mem::replace(&mut self.pending, rest));
                }
                continue;
            }
            // At the end of what is written so far.
            let watch = self.follow.as_ref()?;
            if self.ending {
                return None;
            }
            // Rotated (the path is a new file): one more read of the old
            // one for what reached it before the rename, then the new one
            // from its start.
            if self.rotated().await {
                if !self.draining {
                    self.draining = true;
                    continue;
                }
                self.draining = false;
                self.file = None;
                self.position = 0;
                continue;
            }
            // Checked before one last read, so that lines written just
            // before the run ended are not lost.
            if watch.ended() {
                self.ending = true;
                continue;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
}

/// Where reading starts for the last `n` lines of the file at `path`
/// (reading back from its end as far as needed).
pub(super) async fn tail_offset(path: &Path, n: Option<u64>) -> io::Result<u64> {
    let Some(n) = n else {
        return Ok(0);
    };
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let len = file.metadata().await?.len();
    let mut size = READ_CHUNK as u64;
    loop {
        let start = len.saturating_sub(size);
        file.seek(io::SeekFrom::Start(start)).await?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        (&mut file).take(len - start).read_to_end(&mut buf).await?;
        if let Some(offset) = tail_start(&buf, start == 0, n) {
            return Ok(start + offset as u64);
        }
        size = size.saturating_mul(2);
    }
}

// ---------------------------------------------------------------------------
// Logs

/// `GET /containerLogs/{namespace}/{pod}/{container}`.
pub(super) async fn logs(
    State(state): State<AppState>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Refusal> {
    let query = parse_query(raw.as_deref())?;
    let options = log_options(&query, jiff::Timestamp::now())?;
    let runs = state
        .registry
        .container(&namespace, &pod, &container)
        .ok_or_else(|| not_available(&container, &pod))?;
    let run = if options.previous {
        runs.previous.ok_or_else(|| {
            Refusal::bad_request(format!(
                "previous terminated container {container:?} in pod {pod:?} not found"
            ))
        })?
    } else {
        runs.current.ok_or_else(|| {
            Refusal::bad_request(format!(
                "container {container:?} in pod {pod:?} is waiting to start: ContainerCreating"
            ))
        })?
    };
    let start = tail_offset(&run.log_path, options.tail_lines)
        .await
        .map_err(|e| {
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to read the log of container {container:?}: {e}"),
            )
        })?;
    // A previous run is over: nothing to follow.
    let follow = (options.follow && !options.previous).then(|| RunWatch {
        registry: state.registry.clone(),
        containers: state.containers.clone(),
        namespace,
        pod,
        container,
        id: run.id.clone(),
    });
    let mut reader = LogReader::new(run.log_path, start, follow);
    let mut writer = LogWriter::new(&options);
    let (tx, mut rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        loop {
            let chunk = tokio::select! {
                chunk = reader.next() => chunk,
                // The client went away.
                _ = tx.closed() => return,
            };
            let Some(chunk) = chunk else { return };
            let mut out = Vec::new();
            let go_on = writer.entries(&chunk, &mut out);
            if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
                return;
            }
            if !go_on {
                return;
            }
        }
    });
    let body = futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|chunk| chunk.map(Ok::<_, std::convert::Infallible>))
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(body),
    )
        .into_response())
}

pub(super) fn not_available(container: &str, pod: &str) -> Refusal {
    Refusal::new(
        StatusCode::NOT_FOUND,
        format!("container {container:?} in pod {pod:?} is not available"),
    )
}
