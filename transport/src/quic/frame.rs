//! Frames on a QUIC stream: `[kind: u8][length: u32 BE][payload]` (see `quic.proto`).
//!
//! HEAD and TRAILERS are small protobuf messages read whole (at most [`MAX_HEAD_LEN`]);
//! DATA payloads may be as large as a FAB, so they are passed on in pieces as they arrive
//! instead of being gathered first.

use crate::proto::v1::{QuicHead, QuicHeader};
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;
use prost::Message as _;
use quinn::{RecvStream, SendStream};

pub(crate) const HEAD: u8 = 1;
pub(crate) const DATA: u8 = 2;
pub(crate) const TRAILERS: u8 = 3;

/// Largest HEAD or TRAILERS payload: headers are a few hundred bytes; this bounds what a
/// peer can make us buffer before a call even starts.
pub(crate) const MAX_HEAD_LEN: usize = 64 * 1024;

/// Largest piece of a DATA payload handed on at once.
const PIECE: usize = 1024 * 1024;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Something the peer sent that is not this protocol.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("QUIC stream: unknown frame kind {0}")]
    Kind(u8),
    #[error("QUIC stream: a {what} frame of {len} bytes exceeds the limit of {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("QUIC stream: expected a HEAD frame, got kind {0}")]
    NotHead(u8),
    #[error("QUIC stream: the peer closed it before the call's head")]
    NoHead,
    #[error("QUIC stream: invalid head ({0})")]
    BadHead(String),
    #[error("QUIC stream: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("QUIC stream: the peer closed it in the middle of a frame")]
    Truncated,
    #[error("QUIC stream: {0}")]
    Write(#[from] quinn::WriteError),
}

fn header(kind: u8, len: usize) -> [u8; 5] {
    let mut h = [0u8; 5];
    h[0] = kind;
    // Lengths are bounded by the message limits (< 4 GiB) before they get here.
    h[1..].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    h
}

/// Writes a HEAD or TRAILERS frame.
pub(crate) async fn write_head(
    send: &mut SendStream,
    kind: u8,
    head: &QuicHead,
) -> Result<(), FrameError> {
    let body = head.encode_to_vec();
    let mut buf = BytesMut::with_capacity(5 + body.len());
    buf.put_slice(&header(kind, body.len()));
    buf.put_slice(&body);
    send.write_all(&buf).await?;
    Ok(())
}

/// Writes a DATA frame without copying `data`.
pub(crate) async fn write_data(send: &mut SendStream, data: Bytes) -> Result<(), FrameError> {
    if data.is_empty() {
        return Ok(());
    }
    let mut chunks = [Bytes::copy_from_slice(&header(DATA, data.len())), data];
    send.write_all_chunks(&mut chunks).await?;
    Ok(())
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` when the stream ended cleanly before the
/// first byte (a frame boundary).
async fn read_exact_or_end(recv: &mut RecvStream, buf: &mut [u8]) -> Result<bool, FrameError> {
    let mut filled = 0;
    while filled < buf.len() {
        match recv.read(&mut buf[filled..]).await? {
            Some(n) => filled += n,
            None if filled == 0 => return Ok(false),
            None => return Err(FrameError::Truncated),
        }
    }
    Ok(true)
}

/// Reads a frame header: `None` at a clean end of stream.
pub(crate) async fn read_header(recv: &mut RecvStream) -> Result<Option<(u8, usize)>, FrameError> {
    let mut h = [0u8; 5];
    if !read_exact_or_end(recv, &mut h).await? {
        return Ok(None);
    }
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    Ok(Some((h[0], len)))
}

/// Reads the payload of a HEAD or TRAILERS frame of `len` bytes.
pub(crate) async fn read_head_payload(
    recv: &mut RecvStream,
    len: usize,
) -> Result<QuicHead, FrameError> {
    if len > MAX_HEAD_LEN {
        return Err(FrameError::TooLong {
            what: "head",
            len,
            max: MAX_HEAD_LEN,
        });
    }
    let mut buf = vec![0u8; len];
    if len > 0 && !read_exact_or_end(recv, &mut buf).await? {
        return Err(FrameError::Truncated);
    }
    QuicHead::decode(buf.as_slice()).map_err(|e| FrameError::BadHead(e.to_string()))
}

/// Reads the HEAD frame that starts every stream.
pub(crate) async fn read_head(recv: &mut RecvStream) -> Result<QuicHead, FrameError> {
    match read_header(recv).await? {
        None => Err(FrameError::NoHead),
        Some((HEAD, len)) => read_head_payload(recv, len).await,
        Some((kind, _)) => Err(FrameError::NotHead(kind)),
    }
}

/// Headers to their wire form.
pub(crate) fn headers_to_wire(headers: &HeaderMap) -> Vec<QuicHeader> {
    headers
        .iter()
        .map(|(name, value)| QuicHeader {
            name: name.as_str().to_string(),
            value: Bytes::copy_from_slice(value.as_bytes()),
        })
        .collect()
}

/// Headers from their wire form; invalid names or values are refused, not dropped.
pub(crate) fn headers_from_wire(wire: Vec<QuicHeader>) -> Result<HeaderMap, FrameError> {
    let mut headers = HeaderMap::with_capacity(wire.len());
    for h in wire {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| FrameError::BadHead(format!("invalid header name {:?}", h.name)))?;
        let value = HeaderValue::from_maybe_shared(h.value)
            .map_err(|_| FrameError::BadHead(format!("invalid value of header {:?}", h.name)))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// The rest of a stream after its HEAD: DATA payloads (in pieces) and trailers, as
/// `http_body` frames. `max_data` bounds one DATA frame (the API's message limit plus
/// framing), so a peer cannot announce more than a message may hold.
pub(crate) struct BodyReader {
    recv: RecvStream,
    /// Bytes left of the DATA frame being read.
    remaining: usize,
    max_data: usize,
    done: bool,
}

impl BodyReader {
    pub(crate) fn new(recv: RecvStream, max_data: usize) -> BodyReader {
        BodyReader {
            recv,
            remaining: 0,
            max_data,
            done: false,
        }
    }

    /// The next body frame, `None` at the end.
    pub(crate) async fn next(&mut self) -> Option<Result<Frame<Bytes>, BoxError>> {
        if self.done {
            return None;
        }
        let result = self.next_inner().await;
        if !matches!(result, Some(Ok(_))) {
            self.done = true;
        }
        result.map(|r| r.map_err(Into::into))
    }

    async fn next_inner(&mut self) -> Option<Result<Frame<Bytes>, FrameError>> {
        loop {
            if self.remaining > 0 {
                let want = self.remaining.min(PIECE);
                return match self.recv.read_chunk(want, true).await {
                    Ok(Some(chunk)) => {
                        self.remaining -= chunk.bytes.len();
                        Some(Ok(Frame::data(chunk.bytes)))
                    }
                    Ok(None) => Some(Err(FrameError::Truncated)),
                    Err(e) => Some(Err(e.into())),
                };
            }
            match read_header(&mut self.recv).await {
                Ok(None) => return None,
                Ok(Some((DATA, len))) => {
                    if len > self.max_data {
                        return Some(Err(FrameError::TooLong {
                            what: "data",
                            len,
                            max: self.max_data,
                        }));
                    }
                    self.remaining = len;
                }
                Ok(Some((TRAILERS, len))) => {
                    let trailers = match read_head_payload(&mut self.recv, len).await {
                        Ok(head) => headers_from_wire(head.headers),
                        Err(e) => Err(e),
                    };
                    self.done = true;
                    return Some(trailers.map(Frame::trailers));
                }
                Ok(Some((kind, _))) => return Some(Err(FrameError::Kind(kind))),
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The body as an `http_body` for tonic.
    pub(crate) fn into_body(self) -> tonic::body::Body {
        let stream = futures_util::stream::unfold(self, |mut reader| async move {
            reader.next().await.map(|frame| (frame, reader))
        });
        tonic::body::Body::new(http_body_util::StreamBody::new(stream))
    }
}

/// Copies an `http_body` into DATA and TRAILERS frames, then finishes the stream.
pub(crate) async fn write_body<B>(send: &mut SendStream, body: B) -> Result<(), BoxError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt as _;
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Into::into)?;
        match frame.into_data() {
            Ok(data) => write_data(send, data).await?,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let head = QuicHead {
                        headers: headers_to_wire(&trailers),
                        ..QuicHead::default()
                    };
                    write_head(send, TRAILERS, &head).await?;
                }
            }
        }
    }
    // The peer may already have stopped reading (it had what it needed).
    let _ = send.finish();
    Ok(())
}
