//! Compiles the protobuf files with `protox` (pure Rust, no system `protoc`).
//!
//! The library gets prost messages only; the tests additionally get tonic
//! clients and servers, generated into a separate directory so the library
//! does not depend on tonic.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let lib_protos = ["proto/esi.proto", "proto/resi.proto", "proto/nkn/client.proto", "proto/nkn/payloads.proto"];
    let test_protos = ["proto/esi.proto", "tests/proto/echo.proto"];
    for p in lib_protos.iter().chain(test_protos.iter()) {
        println!("cargo:rerun-if-changed={p}");
    }

    let lib_fds = protox::compile(lib_protos, ["proto"])?;
    let lib_out = out.join("lib");
    std::fs::create_dir_all(&lib_out)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .bytes(".")
        .out_dir(&lib_out)
        .compile_fds(lib_fds)?;

    let test_fds = protox::compile(test_protos, ["proto", "tests/proto"])?;
    let test_out = out.join("test");
    std::fs::create_dir_all(&test_out)?;
    tonic_prost_build::configure()
        .bytes(".")
        .out_dir(&test_out)
        .compile_fds(test_fds)?;
    Ok(())
}
