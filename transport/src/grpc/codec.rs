//! The protobuf codec of every Floret service: prost's, except that a body that is not
//! valid protobuf is refused with INVALID_ARGUMENT (the caller sent bad bytes) rather than
//! tonic's INTERNAL (which would blame the receiver).

use std::marker::PhantomData;
use tonic::Status;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Named by the generated code (`codec_path` in tests/generated.rs).
#[derive(Debug, Clone)]
pub(crate) struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec(PhantomData)
    }
}

/// What one call's encoder or decoder allocates up front: [`CALL_BUFFER`] bytes; a stream
/// hands its items on in batches of up to 256 KiB.
fn buffer_settings() -> BufferSettings {
    BufferSettings::new(CALL_BUFFER, 256 * 1024)
}

/// The first allocation of a call's encode or decode buffer, smaller than tonic's 8 KiB.
/// A server stream keeps its encode buffer for its whole life, and every SuperNode holds
/// one (its instruction subscription): at 64 KiB this buffer was the largest part of a
/// session's memory on the SuperLink (D3 in docs/BENCHMARKS.md). Large messages lose
/// nothing: the decoder reserves a message's announced length at once, and the encoder
/// grows the buffer by the size of each `bytes` field it writes, so a chunk of a few MiB
/// is still copied once.
const CALL_BUFFER: usize = 1024;

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = InvalidArgumentDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        InvalidArgumentDecoder(ProstCodec::<T, U>::raw_decoder(buffer_settings()))
    }
}

/// prost's decoder with its error code changed.
#[derive(Debug, Clone)]
pub(crate) struct InvalidArgumentDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for InvalidArgumentDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            Status::invalid_argument(format!(
                "{} is not valid protobuf: {}",
                short_type_name::<U>(),
                status.message()
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// `floret_transport::proto::floret::v1::PushObjectRequest` -> `PushObjectRequest`.
fn short_type_name<U>() -> &'static str {
    let full = std::any::type_name::<U>();
    full.rsplit("::").next().unwrap_or(full)
}
