//! Compiles the Nomad and go-plugin protos with protox (no `protoc` binary needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = [
        "proto/goplugin.proto",
        "proto/structs.proto",
        "proto/hclspec.proto",
        "proto/base.proto",
        "proto/driver.proto",
    ];
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .include_file("mod.rs")
        .compile_fds(descriptors)?;
    Ok(())
}
