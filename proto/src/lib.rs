//! The gRPC API of adlake (`adlake.v1`): the `.proto` files under
//! `proto/adlake/v1/` and the prost / tonic code generated from them at
//! build time (protox, so no system `protoc` is needed).
//!
//! This crate holds no logic: the server implements the services, clients
//! use the generated stubs. The encoded file descriptor set is exported
//! for gRPC server reflection.
//!
//! ```
//! use adlake_proto::v1::ListTablesRequest;
//! let request = ListTablesRequest {};
//! # let _ = request;
//! ```

/// `adlake.v1`.
pub mod v1 {
    // Generated code: exempt from the workspace lints, which it cannot
    // follow (missing docs, naming of generated items).
    #![allow(clippy::all, clippy::pedantic, unreachable_pub, missing_docs)]
    tonic::include_proto!("adlake.v1");
}

/// The encoded `FileDescriptorSet` of every `adlake.v1` file, for server
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/adlake_descriptor.bin"));
