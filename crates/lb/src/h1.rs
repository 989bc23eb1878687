//! One HTTP/1.1 exchange with a target on a kept-alive connection, driven from the task of the
//! client's connection: the request is written and the response head read there, and the
//! response body is read from the target's socket as the client's connection sends it. No task
//! of its own per upstream connection, so no hand-over between tasks per request (hyper's
//! client runs each connection in a task and passes the body across).

use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version, request};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use crate::upstream::{TargetStream, Upstream};

/// The most a response head may take; ELB answers 502 to larger ones.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
/// Room made in the read buffer before each read.
const READ_SIZE: usize = 16 * 1024;
/// A chunk-size line (with extensions) or trailer line longer than this is malformed.
const MAX_LINE: usize = 4096;

/// A connection to a target and what was read from it but not yet used.
pub(crate) struct Connection {
    stream: TargetStream,
    buf: BytesMut,
}

impl Connection {
    pub fn new(stream: TargetStream) -> Connection {
        Connection { stream, buf: BytesMut::new() }
    }

    /// Whether an idle connection is still usable: a read that would wait means open; end of
    /// stream (the target closed it), unexpected bytes or an error mean not.
    pub fn is_open(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        Pin::new(&mut self.stream).poll_read(&mut cx, &mut buf).is_pending()
    }

    async fn fill(&mut self) -> io::Result<usize> {
        self.buf.reserve(READ_SIZE);
        self.stream.read_buf(&mut self.buf).await
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_SIZE);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf)
    }
}

/// A request as written to targets: its head serialized once (so it can be written again on
/// another connection), and how its body is framed.
pub(crate) struct Outgoing {
    head: Vec<u8>,
    /// The client's body has no length (HTTP/1.1 chunked, or HTTP/2 without `content-length`):
    /// sent chunked.
    chunked: bool,
    pub head_request: bool,
    /// The request has no body: nothing is consumed by sending it, so it can be sent again.
    pub bodyless: bool,
    pub idempotent: bool,
}

impl Outgoing {
    /// `drop`: header names not passed on; `add`: header lines (`name: value\r\n`) added.
    pub fn new(parts: &request::Parts, body: &Incoming, drop: &[HeaderName], add: &[u8]) -> Outgoing {
        let bodyless = body.is_end_stream();
        let chunked = !bodyless && !parts.headers.contains_key(header::CONTENT_LENGTH);
        let mut head = Vec::with_capacity(512);
        head.extend_from_slice(parts.method.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in &parts.headers {
            if drop.contains(name) {
                continue;
            }
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(add);
        if chunked {
            head.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        head.extend_from_slice(b"\r\n");
        let method = &parts.method;
        Outgoing {
            head,
            chunked,
            head_request: method == Method::HEAD,
            bodyless,
            idempotent: matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE),
        }
    }
}

/// Writes the request (head and body, the body as the client sends it) and reads the response
/// head. The body is the caller's to read from the returned [`TargetBody`].
pub(crate) async fn exchange(
    conn: &mut Connection,
    request: &Outgoing,
    body: &mut Incoming,
) -> io::Result<(http::response::Parts, Framing)> {
    write_request(conn, request, body).await?;
    read_head(conn, request.head_request).await
}

async fn write_request(conn: &mut Connection, request: &Outgoing, body: &mut Incoming) -> io::Result<()> {
    if request.bodyless {
        // Most requests: the head alone, written as it is (it may be written again on another
        // connection, so not moved).
        conn.stream.write_all(&request.head).await?;
        return conn.stream.flush().await;
    }
    let mut out = request.head.clone();
    if !request.bodyless {
        // Each frame goes out as it comes (the head with the first), so a streaming client's
        // body streams on.
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(io::Error::other)?.into_data() else {
                continue;
            };
            if request.chunked {
                if data.is_empty() {
                    continue;
                }
                write!(out, "{:x}\r\n", data.len())?;
                out.extend_from_slice(&data);
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(&data);
            }
            if body.is_end_stream() {
                break;
            }
            conn.stream.write_all(&out).await?;
            out.clear();
        }
        if request.chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
    }
    conn.stream.write_all(&out).await?;
    conn.stream.flush().await
}

/// How a response body is delimited, and how far it has been read.
pub(crate) enum Framing {
    Length(u64),
    Chunked(Chunk),
    /// Until the target closes the connection.
    UntilClose,
    /// The connection now carries another protocol (`101 Switching Protocols`).
    Upgraded,
    Done,
}

#[derive(Clone, Copy)]
pub(crate) enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

async fn read_head(conn: &mut Connection, head_request: bool) -> io::Result<(http::response::Parts, Framing)> {
    loop {
        if let Some(parsed) = parse_head(&mut conn.buf, head_request)? {
            return Ok(parsed);
        }
        if conn.buf.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "response head too large"));
        }
        if conn.fill().await? == 0 {
            // Nothing at all back: the kind that tells a closed kept-alive connection.
            let kind = if conn.buf.is_empty() { io::ErrorKind::UnexpectedEof } else { io::ErrorKind::InvalidData };
            return Err(io::Error::new(kind, "the target closed the connection"));
        }
    }
}

/// Parses a response head off the front of `buf`; `None` until it is all there. Interim
/// responses (`100 Continue`) are consumed and skipped.
fn parse_head(buf: &mut BytesMut, head_request: bool) -> io::Result<Option<(http::response::Parts, Framing)>> {
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        let len = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(error) => return Err(io::Error::new(io::ErrorKind::InvalidData, error)),
        };
        let invalid = |what| io::Error::new(io::ErrorKind::InvalidData, what);
        let status = StatusCode::from_u16(parsed.code.unwrap_or(0)).map_err(|_| invalid("bad status"))?;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            buf.advance(len);
            continue;
        }
        let mut map = HeaderMap::with_capacity(parsed.headers.len());
        let (mut close, mut chunked, mut length) = (parsed.version != Some(1), false, None);
        for h in parsed.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| invalid("bad header name"))?;
            let value = HeaderValue::from_bytes(h.value).map_err(|_| invalid("bad header value"))?;
            if name == header::CONNECTION {
                close |= has_token(h.value, b"close");
            } else if name == header::TRANSFER_ENCODING {
                chunked = has_token(h.value, b"chunked");
            } else if name == header::CONTENT_LENGTH {
                let n = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<u64>().ok());
                length = Some(n.ok_or_else(|| invalid("bad content-length"))?);
            }
            map.append(name, value);
        }
        buf.advance(len);
        let framing = if status == StatusCode::SWITCHING_PROTOCOLS {
            Framing::Upgraded
        } else if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            Framing::Length(0)
        } else if chunked {
            Framing::Chunked(Chunk::Size)
        } else if let Some(length) = length {
            Framing::Length(length)
        } else {
            close = true;
            Framing::UntilClose
        };
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = Version::HTTP_11;
        *response.headers_mut() = map;
        let (mut parts, ()) = response.into_parts();
        if close {
            parts.extensions.insert(Close);
        }
        return Ok(Some((parts, framing)));
    }
}

/// Marks a response after which the target closes (or may close) the connection.
#[derive(Clone, Copy)]
struct Close;

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// A target's response body, read from its connection as it is sent on; the connection goes
/// back to the target's pool when the body ended cleanly and the target keeps it open.
pub(crate) struct TargetBody {
    conn: Option<Connection>,
    framing: Framing,
    keep_alive: bool,
    pool: Arc<Upstream>,
}

impl TargetBody {
    pub fn new(
        conn: Connection,
        parts: &mut http::response::Parts,
        framing: Framing,
        pool: Arc<Upstream>,
    ) -> TargetBody {
        let keep_alive = parts.extensions.remove::<Close>().is_none();
        let mut body = TargetBody { conn: Some(conn), framing, keep_alive, pool };
        if matches!(body.framing, Framing::Length(0)) {
            body.finish();
        }
        body
    }

    /// The connection of a `101 Switching Protocols` response and what the target already sent
    /// on it in the new protocol.
    pub fn into_upgraded(mut self) -> Option<(TargetStream, Bytes)> {
        if !matches!(self.framing, Framing::Upgraded) {
            return None;
        }
        let conn = self.conn.take()?;
        Some((conn.stream, conn.buf.freeze()))
    }

    fn finish(&mut self) {
        self.framing = Framing::Done;
        // Bytes past the end of the response mean the exchange is out of step: not reused.
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.buf.is_empty()
        {
            self.pool.give_back(conn);
        }
    }

    /// The next piece of the body, or `None` at its end.
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        let invalid = |what| io::Error::new(io::ErrorKind::InvalidData, what);
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(Ok(None));
            };
            match self.framing {
                Framing::Done | Framing::Upgraded => return Poll::Ready(Ok(None)),
                Framing::Length(0) => {
                    self.finish();
                    return Poll::Ready(Ok(None));
                }
                Framing::Length(left) | Framing::Chunked(Chunk::Data(left)) => {
                    if conn.buf.is_empty() && ready!(conn.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(invalid("the target closed the connection mid-body")));
                    }
                    let take = left.min(conn.buf.len() as u64);
                    let data = conn.buf.split_to(take as usize).freeze();
                    let length_framed = matches!(self.framing, Framing::Length(_));
                    self.framing = match (length_framed, left - take) {
                        (true, left) => Framing::Length(left),
                        (false, 0) => Framing::Chunked(Chunk::DataEnd),
                        (false, left) => Framing::Chunked(Chunk::Data(left)),
                    };
                    // The connection goes back as soon as the last byte is read.
                    if matches!(self.framing, Framing::Length(0)) {
                        self.finish();
                    }
                    return Poll::Ready(Ok(Some(data)));
                }
                Framing::UntilClose => {
                    if conn.buf.is_empty() && ready!(conn.poll_fill(cx))? == 0 {
                        self.framing = Framing::Done;
                        self.conn = None;
                        return Poll::Ready(Ok(None));
                    }
                    return Poll::Ready(Ok(Some(conn.buf.split().freeze())));
                }
                Framing::Chunked(state) => {
                    let Some(end) = conn.buf.windows(2).position(|w| w == b"\r\n") else {
                        if conn.buf.len() > MAX_LINE {
                            return Poll::Ready(Err(invalid("chunk line too long")));
                        }
                        if ready!(conn.poll_fill(cx))? == 0 {
                            return Poll::Ready(Err(invalid("the target closed the connection mid-body")));
                        }
                        continue;
                    };
                    let line = conn.buf.split_to(end + 2);
                    let line = &line[..end];
                    self.framing = match state {
                        Chunk::Size => {
                            let digits = line.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
                            let size = std::str::from_utf8(digits)
                                .ok()
                                .and_then(|d| u64::from_str_radix(d, 16).ok())
                                .ok_or_else(|| invalid("bad chunk size"))?;
                            Framing::Chunked(if size == 0 { Chunk::Trailers } else { Chunk::Data(size) })
                        }
                        Chunk::DataEnd if line.is_empty() => Framing::Chunked(Chunk::Size),
                        Chunk::DataEnd => return Poll::Ready(Err(invalid("chunk not ended by CRLF"))),
                        // Trailers are not passed on; an empty line ends them and the body.
                        Chunk::Trailers if line.is_empty() => {
                            self.finish();
                            return Poll::Ready(Ok(None));
                        }
                        Chunk::Trailers => Framing::Chunked(Chunk::Trailers),
                        Chunk::Data(_) => unreachable!("matched above"),
                    };
                }
            }
        }
    }
}

impl Body for TargetBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let body = self.get_mut();
        let result = ready!(body.poll_data(cx));
        if result.is_err() {
            body.framing = Framing::Done;
            body.conn = None;
        }
        Poll::Ready(result.transpose().map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(left) => SizeHint::with_exact(left),
            Framing::Done | Framing::Upgraded => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
