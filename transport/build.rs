//! Compiles the .proto files into Rust with `protox` (pure Rust: no `protoc` binary is
//! needed) and `tonic-prost-build`: Flower's data messages (`proto/flwr/proto`, package
//! `flwr.proto`) and Floret's services (`proto/floret/v1`, package `floret.v1`: Fleet,
//! Control, and the AppIo services).

use std::path::PathBuf;

const PROTO_ROOT: &str = "proto";

const FILES: &[&str] = &[
    "flwr/proto/error.proto",
    "flwr/proto/fab.proto",
    "flwr/proto/message.proto",
    "flwr/proto/node.proto",
    "flwr/proto/recorddict.proto",
    "flwr/proto/run.proto",
    "flwr/proto/transport.proto",
    "floret/v1/run.proto",
    "floret/v1/fleet.proto",
    "floret/v1/control.proto",
    "floret/v1/appio.proto",
    "floret/v1/quic.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    for file in FILES {
        let path: PathBuf = [PROTO_ROOT, file].iter().collect();
        println!("cargo:rerun-if-changed={}", path.display());
    }

    let fds = protox::compile(FILES, [PROTO_ROOT])?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Decode errors become INVALID_ARGUMENT (tonic's own codec says INTERNAL).
        .codec_path("crate::grpc::codec::Codec")
        // `bytes` fields decode into `bytes::Bytes`: slicing the received buffer, not copying.
        .bytes(".")
        // Deterministic encoding (object ids are hashes of encoded bytes).
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
