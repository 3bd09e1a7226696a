//! Compiles every `.proto` under the workspace's `proto/` directory into Rust with a pure-Rust
//! protobuf compiler (`protox`), then generates prost messages and tonic clients/servers from
//! the resulting descriptor set. No system `protoc` is used (or looked for), so a fresh
//! machine builds this crate with cargo alone.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let proto_root = proto_root
        .canonicalize()
        .map_err(|e| format!("proto directory {}: {e}", proto_root.display()))?;

    // Cargo scans a directory given to rerun-if-changed recursively, so new, edited and
    // removed .proto files all trigger a rebuild.
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let mut protos = Vec::new();
    collect_protos(&proto_root, &mut protos)?;
    protos.sort();
    if protos.is_empty() {
        return Err(format!("no .proto files under {}", proto_root.display()).into());
    }

    // `protox::compile` keeps source info (so proto comments become rustdoc) and resolves
    // imports against the proto root, e.g. `import "runnel/controller/v1/controller.proto";`.
    let fds = protox::compile(&protos, [&proto_root])?;

    tonic_prost_build::configure()
        // `bytes` fields become `bytes::Bytes` (re-exported as `prost::bytes`): record batches
        // and serialized payloads are sliced out of the received buffer, not copied.
        .bytes(".")
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
