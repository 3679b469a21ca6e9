//! Compiles the protobuf files with `protox` (pure Rust, no system `protoc`).
//!
//! The library gets prost messages only; the tests additionally get tonic
//! clients and servers, generated into a separate directory so the library
//! does not depend on tonic.
//!
//! The SolarNetwork ESI dialect (`proto/solarnetwork/esi/**`): the library
//! gets its messages (`crate::proto::solarnetwork::esi::domain`), the tests
//! get tonic clients/servers of its three services that use those messages.
use std::path::{Path, PathBuf};

/// Every `.proto` of one SolarNetwork ESI sub-package, sorted.
fn esi_protos(sub: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let dir = Path::new("proto/solarnetwork/esi").join(sub);
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "proto") {
            files.push(path.to_string_lossy().into_owned());
        }
    }
    files.sort();
    Ok(files)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let esi_domain = esi_protos("domain")?;
    let esi_service = esi_protos("service")?;
    let mut lib_protos: Vec<String> =
        ["proto/esi.proto", "proto/resi.proto", "proto/nkn/client.proto", "proto/nkn/payloads.proto", "proto/grpc/health/v1/health.proto"]
            .map(String::from)
            .into();
    lib_protos.extend(esi_domain);
    let mut test_protos: Vec<String> = ["proto/esi.proto", "tests/proto/echo.proto"].map(String::from).into();
    test_protos.extend(esi_service);
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
        .extern_path(".solarnetwork.esi.domain", "::resi::proto::solarnetwork::esi::domain")
        .out_dir(&test_out)
        .compile_fds(test_fds)?;
    Ok(())
}
