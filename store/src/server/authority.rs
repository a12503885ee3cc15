//! Client connections whose requests name a URL as their authority.
//!
//! Given `http://` endpoints, etcdctl 3.4 (grpc-go behind etcd's endpoint
//! resolver) sends the whole URL as HTTP/2's `:authority`
//! (`http://127.0.0.1:2379`). etcd's server accepts that; h2, beneath
//! tonic, refuses such a request as malformed (PROTOCOL_ERROR). This
//! wrapper of an accepted connection reads the header block of its first
//! request and, only when that authority carries a scheme, passes every
//! header block of the connection on with the scheme dropped. Every other
//! connection is passed through untouched after its first request.
//!
//! ```text
//!  client bytes ─▶ preface ─▶ frames ─┬─ HEADERS/CONTINUATION ─▶ decode ─▶ fix ─▶ literal re-encode
//!                                     └─ anything else ───────────────────────────▶ as it came
//! ```
//!
//! Re-encoded blocks use literals without indexing only, so the server's
//! HPACK table stays empty and never disagrees with the client's, whose
//! blocks are decoded here with the client's own table.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::{Connected, TcpConnectInfo};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// HTTP/2's default SETTINGS_MAX_FRAME_SIZE, which h2 keeps for servers:
/// rewritten blocks are cut to it.
const MAX_FRAME: usize = 16_384;
/// The largest frame looked at before the connection is decided.
const MAX_BUFFERED_FRAME: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Before the client's connection preface.
    Preface,
    /// Reading frames until the first header block is decoded.
    Undecided,
    /// Every header block is re-encoded with its authority fixed.
    Rewrite,
    /// Bytes go through as they come.
    Passthrough,
}

/// A header block spread over HEADERS and CONTINUATION frames.
struct Block {
    stream: [u8; 4],
    /// HEADERS flags, padding dropped.
    flags: u8,
    /// The PRIORITY fields, when the flag is set.
    priority: Vec<u8>,
    fragment: Vec<u8>,
    /// The frames as they came (sent on unchanged if nothing is fixed).
    original: Vec<u8>,
}

/// A connection whose `:authority` is made valid (see the module's doc).
pub struct FixAuthority<IO> {
    inner: IO,
    mode: Mode,
    /// Bytes read from the client, not yet looked at.
    raw: Vec<u8>,
    /// Bytes ready for the server.
    out: Vec<u8>,
    out_at: usize,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
}

impl<IO> FixAuthority<IO> {
    pub fn new(inner: IO) -> FixAuthority<IO> {
        FixAuthority {
            inner,
            mode: Mode::Preface,
            raw: Vec::new(),
            out: Vec::new(),
            out_at: 0,
            block: None,
            decoder: loona_hpack::Decoder::new(),
        }
    }

    /// Moves what can be decided from `raw` to `out`.
    fn process(&mut self) {
        loop {
            match self.mode {
                Mode::Passthrough => {
                    self.out.append(&mut self.raw);
                    return;
                }
                Mode::Preface => {
                    let n = self.raw.len().min(PREFACE.len());
                    if self.raw[..n] != PREFACE[..n] {
                        self.mode = Mode::Passthrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return;
                    }
                    self.out.extend(self.raw.drain(..n));
                    self.mode = Mode::Undecided;
                }
                Mode::Undecided | Mode::Rewrite => {
                    if !self.next_frame() {
                        return;
                    }
                }
            }
        }
    }

    /// Handles one whole frame from `raw`; false when none is there yet.
    fn next_frame(&mut self) -> bool {
        if self.raw.len() < FRAME_HEADER {
            return false;
        }
        let length = (usize::from(self.raw[0]) << 16)
            | (usize::from(self.raw[1]) << 8)
            | usize::from(self.raw[2]);
        if length > MAX_BUFFERED_FRAME {
            // Bigger than any server here accepts: it is the server's to refuse.
            self.mode = Mode::Passthrough;
            return true;
        }
        if self.raw.len() < FRAME_HEADER + length {
            return false;
        }
        let frame: Vec<u8> = self.raw.drain(..FRAME_HEADER + length).collect();
        let (kind, flags) = (frame[3], frame[4]);
        let stream = [frame[5], frame[6], frame[7], frame[8]];
        let payload = &frame[FRAME_HEADER..];
        match (kind, self.block.take()) {
            (CONTINUATION, Some(mut block)) if block.stream == stream => {
                block.fragment.extend_from_slice(payload);
                block.original.extend_from_slice(&frame);
                self.continue_block(block, flags);
            }
            (HEADERS, None) => match split_headers(flags, payload) {
                Some((priority, fragment)) => {
                    let block = Block {
                        stream,
                        flags: flags & !PADDED,
                        priority: priority.to_vec(),
                        fragment: fragment.to_vec(),
                        original: frame.clone(),
                    };
                    self.continue_block(block, flags);
                }
                // Malformed: the server says so.
                None => self.give_up(&frame),
            },
            // Anything else inside a header block is the server's to refuse.
            (_, Some(block)) => {
                let mut bytes = block.original;
                bytes.extend_from_slice(&frame);
                self.give_up(&bytes);
            }
            (_, None) => self.out.extend_from_slice(&frame),
        }
        true
    }

    fn continue_block(&mut self, block: Block, flags: u8) {
        if flags & END_HEADERS == 0 {
            self.block = Some(block);
        } else {
            self.end_block(block);
        }
    }

    /// A whole header block: decoded, and passed on fixed or as it came.
    fn end_block(&mut self, block: Block) {
        let Ok(headers) = self.decoder.decode(&block.fragment) else {
            return self.give_up(&block.original);
        };
        if self.mode == Mode::Undecided {
            let has_url = headers
                .iter()
                .any(|(name, value)| name == b":authority" && url_authority(value).is_some());
            if !has_url {
                self.mode = Mode::Passthrough;
                self.out.extend_from_slice(&block.original);
                return;
            }
            self.mode = Mode::Rewrite;
        }
        let mut encoded = Vec::new();
        for (name, value) in &headers {
            let value = match name.as_slice() {
                b":authority" => url_authority(value).unwrap_or(value),
                _ => value,
            };
            encode_literal(&mut encoded, name, value);
        }
        write_block(&mut self.out, &block, &encoded);
    }

    /// Sends `bytes` on unchanged and stops looking at this connection.
    fn give_up(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
        self.mode = Mode::Passthrough;
    }
}

/// The PRIORITY fields and the block fragment of a HEADERS payload.
fn split_headers(flags: u8, payload: &[u8]) -> Option<(&[u8], &[u8])> {
    let (pad, rest) = if flags & PADDED != 0 {
        let (&pad, rest) = payload.split_first()?;
        (usize::from(pad), rest)
    } else {
        (0, payload)
    };
    let rest = rest.get(..rest.len().checked_sub(pad)?)?;
    if flags & PRIORITY != 0 {
        (rest.len() >= 5).then(|| rest.split_at(5))
    } else {
        Some((&rest[..0], rest))
    }
}

/// `host:port` of an authority written as a URL (`http://host:port/`).
fn url_authority(value: &[u8]) -> Option<&[u8]> {
    let at = value.windows(3).position(|w| w == b"://")?;
    let rest = &value[at + 3..];
    let end = rest.iter().position(|b| *b == b'/').unwrap_or(rest.len());
    Some(&rest[..end])
}

/// An HPACK literal header field without indexing, new name, no Huffman
/// (RFC 7541 6.2.2).
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    encode_string(out, name);
    encode_string(out, value);
}

fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_integer(out, s.len(), 7, 0);
    out.extend_from_slice(s);
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 5.1).
fn encode_integer(out: &mut Vec<u8>, value: usize, n: u32, first_bits: u8) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first_bits | value as u8);
        return;
    }
    out.push(first_bits | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// HEADERS, then CONTINUATION frames as needed, carrying `encoded`.
fn write_block(out: &mut Vec<u8>, block: &Block, encoded: &[u8]) {
    let first_room = MAX_FRAME - block.priority.len();
    let (first, mut rest) = encoded.split_at(encoded.len().min(first_room));
    let last = rest.is_empty();
    let flags = if last {
        block.flags | END_HEADERS
    } else {
        block.flags & !END_HEADERS
    };
    frame_header(
        out,
        block.priority.len() + first.len(),
        HEADERS,
        flags,
        block.stream,
    );
    out.extend_from_slice(&block.priority);
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(rest.len().min(MAX_FRAME));
        let flags = if after.is_empty() { END_HEADERS } else { 0 };
        frame_header(out, chunk.len(), CONTINUATION, flags, block.stream);
        out.extend_from_slice(chunk);
        rest = after;
    }
}

fn frame_header(out: &mut Vec<u8>, length: usize, kind: u8, flags: u8, stream: [u8; 4]) {
    out.extend_from_slice(&[
        (length >> 16) as u8,
        (length >> 8) as u8,
        length as u8,
        kind,
        flags,
    ]);
    out.extend_from_slice(&stream);
}

impl<IO: AsyncRead + Unpin> AsyncRead for FixAuthority<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_at < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_at);
                buf.put_slice(&this.out[this.out_at..this.out_at + n]);
                this.out_at += n;
                if this.out_at == this.out.len() {
                    this.out.clear();
                    this.out_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.mode == Mode::Passthrough && this.raw.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // End of input: whatever is left goes on as it is.
                this.out.append(&mut this.raw);
                if let Some(block) = this.block.take() {
                    this.out.extend_from_slice(&block.original);
                }
                if this.out.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.mode = Mode::Passthrough;
                continue;
            }
            this.raw.extend_from_slice(read.filled());
            this.process();
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FixAuthority<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Connected for FixAuthority<tokio::net::TcpStream> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

impl Connected for FixAuthority<crate::tls::TlsConn> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame_header(&mut out, payload.len(), kind, flags, stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// A client's bytes: preface, SETTINGS, two requests (the second's
    /// block split over a CONTINUATION), a DATA frame.
    fn client(authority: &str) -> Vec<u8> {
        let mut encoder = loona_hpack::Encoder::new();
        let headers = |path: &'static [u8]| {
            vec![
                (&b":method"[..], &b"POST"[..]),
                (&b":scheme"[..], &b"http"[..]),
                (&b":path"[..], path),
                (&b":authority"[..], authority.as_bytes()),
                (&b"content-type"[..], &b"application/grpc"[..]),
            ]
        };
        let first = encoder.encode(headers(b"/etcdserverpb.Maintenance/Status"));
        let second = encoder.encode(headers(b"/etcdserverpb.KV/Range"));
        let (a, b) = second.split_at(second.len() / 2);
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]));
        bytes.extend(frame(HEADERS, END_HEADERS, 1, &first));
        bytes.extend(frame(0x0, 0x1, 1, b"\0\0\0\0\0"));
        bytes.extend(frame(
            HEADERS,
            PRIORITY,
            3,
            &[&[0, 0, 0, 0, 16][..], a].concat(),
        ));
        bytes.extend(frame(CONTINUATION, END_HEADERS, 3, b));
        bytes
    }

    async fn through(bytes: &[u8], read_size: usize) -> Vec<u8> {
        let mut fixed = FixAuthority::new(bytes);
        let mut out = Vec::new();
        let mut buf = vec![0u8; read_size];
        loop {
            let n = fixed.read(&mut buf).await.unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// The header blocks of a byte stream, as a server decodes them.
    fn blocks(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        assert!(bytes.starts_with(PREFACE));
        let mut rest = &bytes[PREFACE.len()..];
        let mut decoder = loona_hpack::Decoder::new();
        let (mut blocks, mut fragment) = (Vec::new(), Vec::new());
        while !rest.is_empty() {
            let length =
                (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            let (kind, flags) = (rest[3], rest[4]);
            let payload = &rest[FRAME_HEADER..FRAME_HEADER + length];
            if kind == HEADERS || kind == CONTINUATION {
                let (_, f) = if kind == HEADERS {
                    split_headers(flags, payload).unwrap()
                } else {
                    (&payload[..0], payload)
                };
                fragment.extend_from_slice(f);
                if flags & END_HEADERS != 0 {
                    blocks.push(decoder.decode(&fragment).unwrap());
                    fragment.clear();
                }
            }
            rest = &rest[FRAME_HEADER + length..];
        }
        blocks
    }

    fn authorities(bytes: &[u8]) -> Vec<String> {
        blocks(bytes)
            .iter()
            .flat_map(|b| b.iter().filter(|(n, _)| n == b":authority"))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_url_authority_loses_its_scheme_in_every_block() {
        let bytes = client("http://127.0.0.1:2379");
        for read_size in [1, 7, 4096] {
            let out = through(&bytes, read_size).await;
            assert_eq!(authorities(&out), ["127.0.0.1:2379", "127.0.0.1:2379"]);
            let original = blocks(&bytes);
            let fixed = blocks(&out);
            assert_eq!(original.len(), fixed.len());
            for (o, f) in original.iter().zip(&fixed) {
                let others = |b: &Vec<(Vec<u8>, Vec<u8>)>| -> Vec<(Vec<u8>, Vec<u8>)> {
                    b.iter()
                        .filter(|(n, _)| n != b":authority")
                        .cloned()
                        .collect()
                };
                assert_eq!(others(o), others(f));
            }
            // The DATA frame is still there, whole.
            assert!(out
                .windows(14)
                .any(|w| w == frame(0x0, 0x1, 1, b"\0\0\0\0\0")));
        }
    }

    #[tokio::test]
    async fn other_connections_pass_unchanged() {
        let bytes = client("127.0.0.1:2379");
        assert_eq!(through(&bytes, 5).await, bytes);
        let not_http2 = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(through(&not_http2, 3).await, not_http2);
        // Cut short, or garbage where a header block should be.
        let mut cut = client("http://127.0.0.1:2379");
        cut.truncate(PREFACE.len() + 20);
        assert_eq!(through(&cut, 64).await, cut);
        let mut junk = PREFACE.to_vec();
        junk.extend(frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0xff, 0xff]));
        assert_eq!(through(&junk, 64).await, junk);
    }

    #[test]
    fn url_authorities_and_long_literals() {
        assert_eq!(url_authority(b"http://a:1"), Some(&b"a:1"[..]));
        assert_eq!(url_authority(b"https://a:1/"), Some(&b"a:1"[..]));
        assert_eq!(url_authority(b"a:1"), None);
        let long = vec![b'x'; 300];
        let mut out = Vec::new();
        encode_literal(&mut out, b"n", &long);
        let decoded = loona_hpack::Decoder::new().decode(&out).unwrap();
        assert_eq!(decoded, vec![(b"n".to_vec(), long)]);
        // A block longer than one frame is cut into CONTINUATIONs.
        let block = Block {
            stream: 1u32.to_be_bytes(),
            flags: 0x1,
            priority: Vec::new(),
            fragment: Vec::new(),
            original: Vec::new(),
        };
        let big = vec![0u8; MAX_FRAME * 2 + 5];
        let mut framed = Vec::new();
        write_block(&mut framed, &block, &big);
        assert_eq!(framed.len(), big.len() + 3 * FRAME_HEADER);
        assert_eq!(framed[3..5], [HEADERS, 0x1]);
    }
}
