//! `kubectl exec` and `kubectl attach`: WebSocket sessions speaking the
//! `channel.k8s.io` protocols (v5, v4) between the client and a process in
//! a container.

use super::logs::{not_available, tail_offset, LogReader, RunWatch};
use super::query::{flag, parse_query};
use super::*;
use crate::runtime::log::parse_entry;

/// The query of an exec or attach request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Reads an exec/attach query as the kubelet does.
pub fn stream_options(query: &[(String, String)]) -> Result<StreamOptions, Refusal> {
    let mut options = StreamOptions {
        command: query
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.clone())
            .collect(),
        stdin: flag(query, "stdin")?,
        stdout: flag(query, "stdout")?,
        stderr: flag(query, "stderr")?,
        tty: flag(query, "tty")?,
    };
    if !options.stdin && !options.stdout && !options.stderr {
        return Err(Refusal::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    // A terminal has one output stream (kubelet drops stderr too).
    if options.tty {
        options.stderr = false;
    }
    Ok(options)
}

/// `metav1.Status` for the error channel at the end of a session, as
/// kubelet writes it (client-go turns `NonZeroExitCode` into the exit
/// code kubectl exits with).
pub fn exit_status(code: i32) -> serde_json::Value {
    if code == 0 {
        return serde_json::json!({"metadata": {}, "status": "Success"});
    }
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// `apierrors.NewInternalError(err)` as a status for the error channel.
pub fn internal_error_status(message: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {message}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    })
}

/// The terminal size of a resize message (`{"Width":…,"Height":…}`).
pub fn parse_resize(data: &[u8]) -> Option<(u16, u16)> {
    #[derive(serde::Deserialize)]
    struct Size {
        #[serde(rename = "Width")]
        width: u16,
        #[serde(rename = "Height")]
        height: u16,
    }
    let size: Size = serde_json::from_slice(data).ok()?;
    Some((size.width, size.height))
}

/// The WebSocket upgrade with our subprotocol, or why not.
pub(super) fn upgrade(
    ws: Result<WebSocketUpgrade, String>,
) -> Result<(WebSocketUpgrade, bool), Refusal> {
    let ws = ws.map_err(|why| {
        Refusal::bad_request(format!(
            "unable to upgrade: {why} (this agent speaks WebSocket, {PROTOCOL_V5} or {PROTOCOL_V4})"
        ))
    })?;
    let ws = ws.protocols([PROTOCOL_V5, PROTOCOL_V4]);
    let v5 = match ws.selected_protocol().map(|p| p.as_bytes()) {
        Some(p) if p == PROTOCOL_V5.as_bytes() => true,
        Some(_) => false,
        None => {
            let offered: Vec<String> = ws
                .requested_protocols()
                .map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned())
                .collect();
            return Err(Refusal::bad_request(format!(
                "unable to upgrade: unsupported protocol(s) [{}]; this agent speaks {PROTOCOL_V5} and {PROTOCOL_V4}",
                offered.join(", ")
            )));
        }
    };
    Ok((ws, v5))
}

pub(super) async fn websocket(request: Request) -> Result<WebSocketUpgrade, String> {
    let (mut parts, _) = request.into_parts();
    WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|rejection| rejection.body_text())
}

/// The running run of a container, for exec and attach.
pub(super) fn running_run(
    state: &AppState,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<String, Refusal> {
    if state.registry.containers_of(namespace, pod).is_none() {
        return Err(Refusal::new(StatusCode::NOT_FOUND, "pod does not exist"));
    }
    state
        .registry
        .container(namespace, pod, container)
        .and_then(|runs| runs.current)
        .map(|run| run.id)
        .filter(|id| state.containers.is_running(id))
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::NOT_FOUND,
                format!("container not found ({container:?})"),
            )
        })
}

/// `GET /exec/{namespace}/{pod}/{container}`.
pub(super) async fn exec(
    State(state): State<AppState>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    RawQuery(raw): RawQuery,
    request: Request,
) -> Result<Response, Refusal> {
    let options = stream_options(&parse_query(raw.as_deref())?)?;
    if options.command.is_empty() {
        return Err(Refusal::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    let id = running_run(&state, &namespace, &pod, &container)?;
    let (ws, v5) = upgrade(websocket(request).await)?;
    let containers = state.containers.clone();
    let span = tracing::debug_span!("exec", pod = %format!("{namespace}/{pod}"), %container);
    Ok(ws.on_upgrade(move |socket| {
        async move {
            let request = ExecRequest {
                command: options.command.clone(),
                tty: options.tty,
                stdin: options.stdin,
            };
            match containers.exec(&id, request).await {
                Ok(streams) => run_session(socket, v5, &options, streams, SessionKind::Exec).await,
                Err(e) => {
                    let status = internal_error_status(&format!(
                        "error executing command in container: {e}"
                    ));
                    let _ = finish(socket, &status).await;
                }
            }
        }
        .instrument(span)
    }))
}

pub(super) fn frame(channel: u8, data: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(data.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(data);
    Message::Binary(Bytes::from(bytes))
}

/// A close frame with code 1000: client-go takes any other (even one
/// without a code, 1005) for an error after the status.
pub(super) fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: 1000,
        reason: "".into(),
    }))
}

/// Sends the final status and closes the socket.
pub(super) async fn finish(
    mut socket: WebSocket,
    status: &serde_json::Value,
) -> Result<(), axum::Error> {
    let json = serde_json::to_vec(status).unwrap_or_default();
    socket.send(frame(channel::ERROR, &json)).await?;
    socket.send(normal_close()).await?;
    // Let the client read the close before the connection goes.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    Ok(())
}

/// How a session takes the end of the client's input (v5's close of
/// stdin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdinEnd {
    /// The process reads the end of its input and the session ends with
    /// the process (exec; attach to a `stdinOnce` container without a
    /// terminal, whose stdin closes with the client's).
    WaitForExit,
    /// The client detaches: the session ends, the process goes on.
    Detach,
    /// Not known which of the two: output is shown while it comes, and
    /// the client detaches once it has been quiet for [`ATTACH_QUIET`].
    DetachWhenQuiet,
}

/// What the end of an attached client's input means, as containerd's
/// attach decides it: with `stdinOnce` and no terminal the container's
/// stdin closes and its output is shown to the end; otherwise the client
/// detaches.
pub fn stdin_end(tty: bool, stdin_once: Option<bool>) -> StdinEnd {
    match (tty, stdin_once) {
        (true, _) | (false, Some(false)) => StdinEnd::Detach,
        (false, Some(true)) => StdinEnd::WaitForExit,
        (false, None) => StdinEnd::DetachWhenQuiet,
    }
}

/// What is on the other end of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SessionKind {
    /// A process started for the session: its exit code is the status.
    Exec,
    /// The container's own process: the status is Success however it
    /// ends (kubelet's attach reports no exit code; `kubectl run` reads
    /// it from the pod).
    Attach(StdinEnd),
}

/// Copies an output stream of the process to its channel.
pub(super) async fn pump(
    mut reader: ExecReader,
    channel: u8,
    out: mpsc::Sender<Message>,
    activity: Arc<tokio::sync::Notify>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out.send(frame(channel, &buf[..n])).await.is_err() {
                    return;
                }
                activity.notify_one();
            }
        }
    }
}

/// Moves a session's bytes between the socket and the process until the
/// process ended and its output is sent (or, attached, the client
/// detached), then sends the status.
pub(super) async fn run_session(
    socket: WebSocket,
    v5: bool,
    options: &StreamOptions,
    mut streams: ExecStreams,
    kind: SessionKind,
) {
    let (mut sink, mut incoming) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(16);

    // kubelet's first message: an empty one on the lowest output channel,
    // which tells the client the streams are set up.
    let first = if options.stdout {
        channel::STDOUT
    } else if options.stderr {
        channel::STDERR
    } else {
        channel::ERROR
    };
    let _ = out_tx.send(frame(first, &[])).await;

    let activity = Arc::new(tokio::sync::Notify::new());
    let mut pumps = tokio::task::JoinSet::new();
    if let Some(stdout) = streams.stdout.take() {
        if options.stdout {
            pumps.spawn(pump(
                stdout,
                channel::STDOUT,
                out_tx.clone(),
                activity.clone(),
            ));
        } else {
            pumps.spawn(drain(stdout));
        }
    }
    if let Some(stderr) = streams.stderr.take() {
        if options.stderr {
            pumps.spawn(pump(
                stderr,
                channel::STDERR,
                out_tx.clone(),
                activity.clone(),
            ));
        } else {
            pumps.spawn(drain(stderr));
        }
    }

    // A client that did not ask for stdin leaves the process's alone:
    // closing it would close a `stdinOnce` container's stdin. (Declared
    // before `control`, so it is dropped after it.)
    let mut stdin = streams.stdin.take();
    let _untouched_stdin = if options.stdin { None } else { stdin.take() };

    // Socket → process: stdin, resizes, v5 close.
    let (resize_tx, mut resize_rx) = mpsc::unbounded_channel::<(u16, u16)>();
    let (gone_tx, mut client_gone) = tokio::sync::oneshot::channel::<()>();
    let (ended_tx, mut stdin_ended) = tokio::sync::oneshot::channel::<()>();
    let mut reader = tokio::spawn(async move {
        let mut ended_tx = Some(ended_tx);
        while let Some(Ok(message)) = incoming.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&id, payload)) = data.split_first() else {
                continue;
            };
            match id {
                channel::STDIN => {
                    if let Some(w) = &mut stdin {
                        if w.write_all(payload).await.is_err() || w.flush().await.is_err() {
                            stdin = None;
                        }
                    }
                }
                channel::RESIZE => {
                    if let Some(size) = parse_resize(payload) {
                        let _ = resize_tx.send(size);
                    }
                }
                channel::CLOSE if v5 && payload.first() == Some(&channel::STDIN) => {
                    if let Some(mut w) = stdin.take() {
                        let _ = w.shutdown().await;
                    }
                    if let Some(tx) = ended_tx.take() {
                        let _ = tx.send(());
                    }
                }
                _ => {}
            }
        }
        // The client closed or is gone.
        if let Some(mut w) = stdin.take() {
            let _ = w.shutdown().await;
        }
        let _ = gone_tx.send(());
    });

    // Process → socket; the socket is written from here only.
    let writer = tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
        sink
    });
    drop(out_tx);

    let on_stdin_end = match kind {
        SessionKind::Exec => StdinEnd::WaitForExit,
        SessionKind::Attach(end) => end,
    };
    // An attached process's output ends only when it ended (or its shim
    // went away), and AttachSession::wait loses the exit code if it is
    // dropped before it finished: the output decides.
    let waits = kind == SessionKind::Exec;
    let mut control = streams.control;
    let mut exit = None;
    let mut outputs_finished = false;
    {
        let outputs_done = async { while pumps.join_next().await.is_some() {} };
        tokio::pin!(outputs_done);
        // Output still coming after the process ended is a background child
        // of it holding the pipes: it gets a moment, not forever.
        let grace = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(grace);
        // Armed once the client's input ended and the session detaches
        // when output is quiet.
        let quiet = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(quiet);
        let mut quiet_armed = false;
        let mut stdin_done = on_stdin_end == StdinEnd::WaitForExit;
        loop {
            if outputs_finished && (exit.is_some() || !waits) {
                break;
            }
            tokio::select! {
                Some((cols, rows)) = resize_rx.recv() => control.resize(cols, rows),
                _ = &mut outputs_done, if !outputs_finished => outputs_finished = true,
                // (select! makes the futures of disabled branches too: this
                // one calls wait only when polled.)
                code = async { control.wait().await }, if waits && exit.is_none() => {
                    tracing::debug!(?code, "the process ended");
                    exit = Some(code);
                    grace.as_mut().reset(tokio::time::Instant::now() + OUTPUT_GRACE);
                }
                _ = &mut grace, if exit.is_some() => break,
                // The client went away: dropping the session ends an exec'd
                // process and detaches an attached one.
                _ = &mut client_gone, if exit.is_none() => {
                    tracing::debug!("the client went away");
                    reader.abort();
                    return;
                }
                ended = &mut stdin_ended, if !stdin_done => {
                    stdin_done = true;
                    if ended.is_ok() {
                        match on_stdin_end {
                            StdinEnd::WaitForExit => {}
                            StdinEnd::Detach => {
                                tracing::debug!("the client's input ended: detached");
                                break;
                            }
                            StdinEnd::DetachWhenQuiet => {
                                quiet_armed = true;
                                quiet.as_mut().reset(tokio::time::Instant::now() + ATTACH_QUIET);
                            }
                        }
                    }
                }
                _ = activity.notified(), if quiet_armed => {
                    quiet.as_mut().reset(tokio::time::Instant::now() + ATTACH_QUIET);
                }
                _ = &mut quiet, if quiet_armed && exit.is_none() => {
                    tracing::debug!("the client's input ended and output is quiet: detached");
                    break;
                }
            }
        }
    }
    if !waits && outputs_finished {
        if let Ok(code) = tokio::time::timeout(OUTPUT_GRACE, control.wait()).await {
            tracing::debug!(?code, "the attached process ended");
        }
    }
    // Their senders must go for the writer to end.
    pumps.abort_all();
    let Ok(mut sink) = writer.await else {
        return;
    };
    let status = match kind {
        SessionKind::Attach(_) => exit_status(0),
        SessionKind::Exec => match exit {
            Some(Ok(code)) => exit_status(code),
            Some(Err(e)) => {
                internal_error_status(&format!("error executing command in container: {e}"))
            }
            None => internal_error_status(
                "error executing command in container: the process did not end",
            ),
        },
    };
    let json = serde_json::to_vec(&status).unwrap_or_default();
    let _ = sink.send(frame(channel::ERROR, &json)).await;
    let _ = sink.send(normal_close()).await;
    // The client answers the close (its reader sees it and ends); then
    // the connection may go.
    let _ = tokio::time::timeout(Duration::from_secs(1), &mut reader).await;
    reader.abort();
}

/// Reads a stream nobody asked for: the process must not block on a full
/// pipe.
pub(super) async fn drain(mut reader: ExecReader) {
    let _ = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
}

/// `GET /attach/{namespace}/{pod}/{container}`. A container created with
/// stdin or a tty is attached to through the runtime (its terminal, its
/// stdin, its output, as `kubectl run -it` wants); one with neither has
/// only its output, shown from its log from now on until the run ends
/// (stdin from the client is then read and dropped, as containerd does).
pub(super) async fn attach(
    State(state): State<AppState>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    RawQuery(raw): RawQuery,
    request: Request,
) -> Result<Response, Refusal> {
    let options = stream_options(&parse_query(raw.as_deref())?)?;
    let id = running_run(&state, &namespace, &pod, &container)?;
    let log_path = state
        .registry
        .container(&namespace, &pod, &container)
        .and_then(|runs| runs.current)
        .map(|run| run.log_path)
        .ok_or_else(|| not_available(&container, &pod))?;
    let start = tail_offset(&log_path, Some(0)).await.unwrap_or(0);
    let (ws, v5) = upgrade(websocket(request).await)?;
    let span = tracing::debug_span!("attach", pod = %format!("{namespace}/{pod}"), %container);
    let containers = state.containers.clone();
    let watch = RunWatch {
        registry: state.registry.clone(),
        containers: state.containers.clone(),
        namespace,
        pod,
        container,
        id: id.clone(),
    };
    Ok(ws.on_upgrade(move |socket| {
        async move {
            match containers.attach(&id, options.stdin).await {
                Ok(Some(attached)) => {
                    let kind = SessionKind::Attach(stdin_end(options.tty, attached.stdin_once));
                    run_session(socket, v5, &options, attached.streams, kind).await;
                }
                Ok(None) => {
                    let reader = LogReader::new(log_path, start, Some(watch));
                    stream_log(socket, &options, reader).await;
                }
                Err(e) => {
                    let status =
                        internal_error_status(&format!("error attaching to container: {e}"));
                    let _ = finish(socket, &status).await;
                }
            }
        }
        .instrument(span)
    }))
}

/// Attach to a container without stdin or a tty: its log from `reader`,
/// by stream, until the run ends.
pub(super) async fn stream_log(socket: WebSocket, options: &StreamOptions, mut reader: LogReader) {
    let (mut sink, mut incoming) = socket.split();
    let first = if options.stdout {
        channel::STDOUT
    } else {
        channel::STDERR
    };
    if sink.send(frame(first, &[])).await.is_err() {
        return;
    }
    loop {
        let chunk = tokio::select! {
            chunk = reader.next() => chunk,
            message = incoming.next() => match message {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
        };
        let Some(chunk) = chunk else { break };
        for line in chunk.split(|&b| b == b'\n') {
            let Some(entry) = parse_entry(line) else {
                continue;
            };
            let channel = match entry.stream {
                b"stderr" if options.stderr => channel::STDERR,
                b"stdout" if options.stdout => channel::STDOUT,
                _ => continue,
            };
            let mut data = entry.text.to_vec();
            if !entry.partial {
                data.push(b'\n');
            }
            if sink.send(frame(channel, &data)).await.is_err() {
                return;
            }
        }
    }
    let json = serde_json::to_vec(&exit_status(0)).unwrap_or_default();
    let _ = sink.send(frame(channel::ERROR, &json)).await;
    let _ = sink.send(normal_close()).await;
}
