//! Frames on the pipes to a Python process: a little-endian `u32` length, a one-byte tag
//! and the body (length minus one bytes). Bodies that carry several byte strings are
//! parts, each a `u32` length and its bytes. `floret_bridge/frames.py` is the other end.

use bytes::{Bytes, BytesMut};
use std::io::{self, Read, Write};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame either side may send: 2 GiB, protobuf's own limit on one message.
const MAX_FRAME: usize = 1 << 31;

/// A body of parts, each prefixed by its `u32` length.
pub(crate) fn pack_parts<B: AsRef<[u8]>>(parts: impl IntoIterator<Item = B>) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        let part = part.as_ref();
        out.extend_from_slice(&len_prefix(part.len()));
        out.extend_from_slice(part);
    }
    out
}

/// The parts of a body; each shares `body`'s buffer.
pub(crate) fn unpack_parts(body: &Bytes) -> io::Result<Vec<Bytes>> {
    let mut parts = Vec::new();
    let mut at = 0usize;
    while at < body.len() {
        let len = read_u32(body, at)? as usize;
        at += 4;
        let end = at
            .checked_add(len)
            .filter(|&end| end <= body.len())
            .ok_or_else(|| bad("a part runs past the end of its frame"))?;
        parts.push(body.slice(at..end));
        at = end;
    }
    Ok(parts)
}

/// The little-endian `u32` at `at` in `buf`.
pub(crate) fn read_u32(buf: &[u8], at: usize) -> io::Result<u32> {
    buf.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| bad("a frame ends inside a length"))
}

fn len_prefix(len: usize) -> [u8; 4] {
    // Bodies are bounded by MAX_FRAME, so every length fits.
    u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes()
}

fn header(tag: u8, body_len: usize) -> io::Result<[u8; 5]> {
    if body_len >= MAX_FRAME {
        return Err(bad("a frame over 2 GiB"));
    }
    let [a, b, c, d] = len_prefix(body_len + 1);
    Ok([a, b, c, d, tag])
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("bridge protocol: {what}"),
    )
}

/// Writes one frame and flushes it.
pub(crate) fn write_frame(w: &mut impl Write, tag: u8, body: &[u8]) -> io::Result<()> {
    w.write_all(&header(tag, body.len())?)?;
    w.write_all(body)?;
    w.flush()
}

/// Writes one frame whose body is `parts` (as [`pack_parts`] lays them out), each part
/// given as the segments it is made of, and flushes it, without first copying them into
/// one body: a model's bytes go from their buffer to the pipe.
pub(crate) fn write_segmented_frame(
    w: &mut impl Write,
    tag: u8,
    parts: &[&[&[u8]]],
) -> io::Result<()> {
    let part_len = |part: &[&[u8]]| part.iter().map(|s| s.len()).sum::<usize>();
    let body_len = parts.iter().map(|p| 4 + part_len(p)).sum();
    w.write_all(&header(tag, body_len)?)?;
    for part in parts {
        w.write_all(&len_prefix(part_len(part)))?;
        for segment in *part {
            w.write_all(segment)?;
        }
    }
    w.flush()
}

/// Reads one frame; `None` when the pipe closed before a frame began.
pub(crate) fn read_frame(r: &mut impl Read) -> io::Result<Option<(u8, Bytes)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let body_len = body_len(&head)?;
    // Read into spare capacity: a model-sized body is not zeroed first.
    let mut body = Vec::with_capacity(body_len);
    let got = r.take(body_len as u64).read_to_end(&mut body)?;
    if got != body_len {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
    }
    Ok(Some((head[4], Bytes::from(body))))
}

fn body_len(head: &[u8; 5]) -> io::Result<usize> {
    let len = read_u32(head, 0)? as usize;
    if len == 0 {
        return Err(bad("a frame without a tag"));
    }
    Ok(len - 1)
}

/// Writes one frame and flushes it.
pub(crate) async fn write_frame_async(
    w: &mut (impl AsyncWrite + Unpin),
    tag: u8,
    body: &[u8],
) -> io::Result<()> {
    w.write_all(&header(tag, body.len())?).await?;
    w.write_all(body).await?;
    w.flush().await
}

/// [`write_segmented_frame`], async.
pub(crate) async fn write_segmented_frame_async(
    w: &mut (impl AsyncWrite + Unpin),
    tag: u8,
    parts: &[&[&[u8]]],
) -> io::Result<()> {
    let part_len = |part: &[&[u8]]| part.iter().map(|s| s.len()).sum::<usize>();
    let body_len = parts.iter().map(|p| 4 + part_len(p)).sum();
    w.write_all(&header(tag, body_len)?).await?;
    for part in parts {
        w.write_all(&len_prefix(part_len(part))).await?;
        for segment in *part {
            w.write_all(segment).await?;
        }
    }
    w.flush().await
}

/// Reads one frame; `None` when the pipe closed before a frame began.
pub(crate) async fn read_frame_async(
    r: &mut (impl AsyncRead + Unpin),
) -> io::Result<Option<(u8, Bytes)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let body_len = body_len(&head)?;
    let mut body = BytesMut::zeroed(body_len);
    r.read_exact(&mut body).await?;
    Ok(Some((head[4], body.freeze())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_and_frames_round_trip() {
        let body = pack_parts([&b"abc"[..], b"", b"de"]);
        let mut wire = Vec::new();
        write_frame(&mut wire, b'C', &body).unwrap();
        write_segmented_frame(&mut wire, b'D', &[&[b"a", b"bc"], &[], &[b"de"]]).unwrap();
        let mut r = &wire[..];
        let (tag, got) = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(tag, b'C');
        let parts = unpack_parts(&got).unwrap();
        assert_eq!(parts, vec![&b"abc"[..], b"", b"de"]);
        let (tag, got) = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(tag, b'D', "the unpacked parts make the same frame");
        assert_eq!(unpack_parts(&got).unwrap(), parts);
        assert!(
            read_frame(&mut r).unwrap().is_none(),
            "a closed pipe is None"
        );
    }

    #[test]
    fn a_frame_cut_short_is_an_error() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b'C', b"abcdef").unwrap();
        wire.truncate(wire.len() - 2);
        assert!(read_frame(&mut &wire[..]).is_err());
    }

    #[test]
    fn a_truncated_part_is_an_error_not_a_panic() {
        let mut body = pack_parts([b"abcdef"]);
        body.truncate(6);
        assert!(unpack_parts(&Bytes::from(body)).is_err());
    }
}
